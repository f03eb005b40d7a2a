//! ASCII-line frames: `[start]CODE[,fields...][*CS]<terminator>`, e.g.
//! `$TEMP,21.5,OK*3A\r\n` (DESIGN §5). The payload is the text after the
//! code's separator; the checksum covers the text between start and marker.

use std::io;

use bytes::{Bytes, BytesMut};

use super::framing::AsciiLineFraming;
use super::{Frame, FrameCode};

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A byte that framing reserves: it may not appear in a code or payload
/// (the encoder refuses it, so the decoder refuses it too).
fn reserved(a: &AsciiLineFraming, b: u8) -> bool {
    Some(b) == a.start
        || a.terminator.contains(&b)
        || (a.checksum.is_some() && b == a.checksum_marker)
}

/// Parses one line (terminator removed). Errors say why it was dropped and
/// whether it was a checksum mismatch.
pub(super) fn parse_line(a: &AsciiLineFraming, line: &[u8]) -> Result<Frame, (String, bool)> {
    let text = match a.start {
        Some(s) if line.first() == Some(&s) => &line[1..],
        Some(_) => return Err(("line does not begin with the start character".into(), false)),
        None => line,
    };
    let body = match &a.checksum {
        None => text,
        Some(ck) => {
            let Some(m) = text.iter().rposition(|b| *b == a.checksum_marker) else {
                return Err(("line has no checksum marker".into(), false));
            };
            let digits = &text[m + 1..];
            let got = std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.len() == 2 * ck.size())
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| ("checksum is not hex of the right length".to_string(), true))?;
            let want = ck.compute(&text[..m]);
            if want != got {
                return Err((
                    format!("checksum {got:#x} does not match computed {want:#x}"),
                    true,
                ));
            }
            &text[..m]
        }
    };
    if let Some(b) = body.iter().find(|b| reserved(a, **b)) {
        return Err((
            format!("line contains the framing character {b:#04x}"),
            false,
        ));
    }
    let (code, payload) = match body.iter().position(|b| *b == a.separator) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    let code = std::str::from_utf8(code)
        .ok()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ("line has no printable code token".to_string(), false))?;
    Ok(Frame {
        address: None,
        code: FrameCode::Text(code.to_string()),
        payload: Bytes::copy_from_slice(payload),
    })
}

pub(super) fn encode(
    a: &AsciiLineFraming,
    max: usize,
    frame: &Frame,
    out: &mut BytesMut,
) -> io::Result<()> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let FrameCode::Text(code) = &frame.code else {
        return Err(invalid(format!(
            "ASCII-line framing needs a text code, got {:?}",
            frame.code
        )));
    };
    let forbidden = |b: &u8| reserved(a, *b);
    if code.is_empty()
        || code
            .bytes()
            .any(|b| b == a.separator || !b.is_ascii_graphic() || forbidden(&b))
    {
        return Err(invalid(format!(
            "code {code:?} cannot be written as a token"
        )));
    }
    if frame.payload.iter().any(forbidden) {
        return Err(invalid("payload contains a framing character".into()));
    }
    let mut body = code.as_bytes().to_vec();
    if !frame.payload.is_empty() {
        body.push(a.separator);
        body.extend_from_slice(&frame.payload);
    }
    let start = out.len();
    out.extend_from_slice(a.start.as_slice());
    out.extend_from_slice(&body);
    if let Some(ck) = &a.checksum {
        let digits = format!("{:0width$X}", ck.compute(&body), width = 2 * ck.size());
        out.extend_from_slice(&[a.checksum_marker]);
        out.extend_from_slice(digits.as_bytes());
    }
    out.extend_from_slice(&a.terminator);
    if out.len() - start > max {
        out.truncate(start);
        return Err(invalid(format!(
            "line is longer than the maximum of {max} bytes"
        )));
    }
    Ok(())
}
