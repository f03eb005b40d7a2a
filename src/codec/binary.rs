//! Binary frames: sync, address, code, length, payload, checksum, optional
//! byte stuffing and end byte (DESIGN §5). Pure functions over byte slices.

use std::collections::BTreeMap;
use std::io;

use bytes::{Bytes, BytesMut};

use super::checksum::{get_uint, put_uint, ByteOrder};
use super::framing::{BinaryFraming, Part};
use super::{Frame, FrameCode};

pub(super) enum Parse {
    Incomplete,
    Bad { reason: String, checksum: bool },
    Ok { frame: Frame, consumed: usize },
}

fn bad(reason: impl Into<String>) -> Parse {
    Parse::Bad {
        reason: reason.into(),
        checksum: false,
    }
}

enum Next {
    Byte(u8),
    NeedMore,
    End,
    /// A byte that stuffing forbids here: unescaped, or escaped needlessly.
    /// Such a frame is not one the sender's encoder could have produced.
    Invalid(&'static str, u8),
}

/// Reads unstuffed bytes after the sync bytes.
struct Reader<'a> {
    raw: &'a [u8],
    pos: usize,
    f: &'a BinaryFraming,
    end_delimits: bool,
}

impl Reader<'_> {
    fn next(&mut self) -> Next {
        let Some(&b) = self.raw.get(self.pos) else {
            return Next::NeedMore;
        };
        if self.end_delimits && Some(b) == self.f.end {
            return Next::End;
        }
        if let Some(s) = &self.f.stuffing {
            if b == s.escape {
                let Some(&n) = self.raw.get(self.pos + 1) else {
                    return Next::NeedMore;
                };
                let value = n ^ s.xor;
                if !s.escaped.contains(&value) {
                    return Next::Invalid("escape before a byte that needs none", value);
                }
                self.pos += 2;
                return Next::Byte(value);
            }
            if s.escaped.contains(&b) {
                return Next::Invalid("unescaped byte inside a stuffed frame", b);
            }
        }
        self.pos += 1;
        Next::Byte(b)
    }

    fn read(&mut self, n: usize, into: &mut Vec<u8>) -> Option<Parse> {
        for _ in 0..n {
            match self.next() {
                Next::Byte(b) => into.push(b),
                Next::NeedMore => return Some(Parse::Incomplete),
                Next::End => return Some(bad("end byte before the frame was complete")),
                Next::Invalid(why, b) => return Some(bad(format!("{why}: {b:#04x}"))),
            }
        }
        None
    }
}

/// Start offset and size of each part in the unstuffed frame.
fn layout(f: &BinaryFraming, payload_len: usize) -> BTreeMap<Part, (usize, usize)> {
    let mut map = BTreeMap::new();
    let mut at = 0;
    let mut parts = vec![Part::Sync];
    parts.extend(f.header_parts());
    parts.extend([Part::Payload, Part::Checksum]);
    for p in parts {
        let size = if p == Part::Payload {
            payload_len
        } else {
            f.part_size(p)
        };
        map.insert(p, (at, size));
        at += size;
    }
    map
}

fn covered_range(f: &BinaryFraming, lay: &BTreeMap<Part, (usize, usize)>) -> (usize, usize) {
    let Some(ck) = &f.checksum else { return (0, 0) };
    let start = lay.get(&ck.from).map_or(0, |(s, _)| *s);
    let end = lay.get(&ck.to).map_or(0, |(s, n)| s + n);
    (start, end.max(start))
}

/// Verifies the checksum and cuts the unstuffed `logical` frame into a [`Frame`].
fn finish(f: &BinaryFraming, logical: &[u8], consumed: usize) -> Parse {
    let head: usize = f.sync.len()
        + f.header_parts()
            .iter()
            .map(|p| f.part_size(*p))
            .sum::<usize>();
    let cks = f.checksum_size();
    let Some(payload_len) = logical.len().checked_sub(head + cks) else {
        return bad(format!("frame of {} bytes is too short", logical.len()));
    };
    let lay = layout(f, payload_len);
    if let Some(ck) = &f.checksum {
        let (s, e) = covered_range(f, &lay);
        let want = ck.algorithm.compute(&logical[s..e]);
        let got = get_uint(&logical[logical.len() - cks..], ck.order);
        if want != got {
            let reason = format!("checksum {got:#x} does not match computed {want:#x}");
            return Parse::Bad {
                reason,
                checksum: true,
            };
        }
    }
    let slice = |p: Part| lay.get(&p).map_or(&[][..], |(s, n)| &logical[*s..s + n]);
    let frame = Frame {
        address: (f.address > 0).then(|| get_uint(slice(Part::Address), ByteOrder::Big) as u16),
        code: FrameCode::Num(get_uint(slice(Part::Code), ByteOrder::Big) as u32),
        payload: Bytes::copy_from_slice(slice(Part::Payload)),
    };
    Parse::Ok { frame, consumed }
}

/// Parses the frame at the start of `raw`, which starts with the sync bytes.
pub(super) fn parse_at(f: &BinaryFraming, max: usize, raw: &[u8]) -> Parse {
    let end_delimits = f.end.is_some() && (f.stuffing.is_some() || f.length.is_none());
    let mut r = Reader {
        raw,
        pos: f.sync.len(),
        f,
        end_delimits,
    };
    let mut logical = raw[..f.sync.len().min(raw.len())].to_vec();
    let header: Vec<Part> = f.header_parts();
    let head_size: usize = header.iter().map(|p| f.part_size(*p)).sum();
    if let Some(p) = r.read(head_size, &mut logical) {
        return p;
    }
    if let Some(len) = &f.length {
        let lay = layout(f, 0);
        let (off, size) = lay.get(&Part::Length).copied().unwrap_or((0, 0));
        let value = get_uint(&logical[off..off + size], len.order) as i64;
        let fixed = f.length_fixed_bytes(len);
        let payload_len = value - len.adjust - fixed as i64;
        let total = logical.len() as i64
            + payload_len
            + f.checksum_size() as i64
            + i64::from(f.end.is_some());
        if payload_len < 0 || total > max as i64 {
            return bad(format!("impossible length value {value}"));
        }
        if let Some(p) = r.read(payload_len as usize + f.checksum_size(), &mut logical) {
            return p;
        }
        if let Some(e) = f.end {
            match raw.get(r.pos) {
                None => return Parse::Incomplete,
                Some(b) if *b == e => r.pos += 1,
                Some(b) => return bad(format!("expected end byte {e:#04x}, got {b:#04x}")),
            }
        }
    } else {
        loop {
            match r.next() {
                Next::Byte(b) => logical.push(b),
                Next::NeedMore => return Parse::Incomplete,
                Next::End => {
                    r.pos += 1;
                    break;
                }
                Next::Invalid(why, b) => return bad(format!("{why}: {b:#04x}")),
            }
            if logical.len() >= max {
                return bad("no end byte within the maximum frame size");
            }
        }
    }
    // Stuffing makes the wire frame longer than its content: the limit is
    // on what was read, so acceptance never depends on how reads were split.
    if r.pos > max {
        return bad(format!(
            "frame of {} bytes exceeds the maximum of {max}",
            r.pos
        ));
    }
    finish(f, &logical, r.pos)
}

/// Parses a whole silence-delimited frame (Modbus RTU).
pub(super) fn parse_silent(f: &BinaryFraming, raw: &[u8]) -> Result<Frame, String> {
    if !raw.starts_with(&f.sync) {
        return Err("frame does not start with the sync bytes".into());
    }
    let mut r = Reader {
        raw,
        pos: f.sync.len(),
        f,
        end_delimits: false,
    };
    let mut logical = f.sync.clone();
    while let Next::Byte(b) = r.next() {
        logical.push(b);
    }
    if f.end.is_some() && logical.last() == f.end.as_ref() {
        logical.pop();
    }
    match finish(f, &logical, raw.len()) {
        Parse::Ok { frame, .. } => Ok(frame),
        Parse::Bad { reason, .. } => Err(reason),
        Parse::Incomplete => Err("frame is incomplete".into()),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

pub(super) fn encode(
    f: &BinaryFraming,
    max: usize,
    frame: &Frame,
    out: &mut BytesMut,
) -> io::Result<()> {
    let FrameCode::Num(code) = &frame.code else {
        return Err(invalid(format!(
            "binary framing needs a numeric code, got {:?}",
            frame.code
        )));
    };
    if f.code_size < 4 && u64::from(*code) >= 1u64 << (8 * f.code_size) {
        return Err(invalid(format!(
            "code {code:#x} does not fit {} byte(s)",
            f.code_size
        )));
    }
    let mut logical = f.sync.clone();
    for part in f.header_parts() {
        match part {
            Part::Address => put_uint(
                &mut logical,
                u64::from(frame.address.unwrap_or(0)),
                f.address,
                ByteOrder::Big,
            ),
            Part::Code => put_uint(&mut logical, u64::from(*code), f.code_size, ByteOrder::Big),
            Part::Length => {
                let Some(len) = &f.length else { continue };
                let fixed = f.length_fixed_bytes(len);
                let value = (fixed + frame.payload.len()) as i64 + len.adjust;
                if value < 0 || (len.size < 8 && value >= 1i64 << (8 * len.size)) {
                    return Err(invalid(format!(
                        "payload of {} bytes does not fit the length field",
                        frame.payload.len()
                    )));
                }
                put_uint(&mut logical, value as u64, len.size, len.order);
            }
            _ => {}
        }
    }
    logical.extend_from_slice(&frame.payload);
    if let Some(ck) = &f.checksum {
        let lay = layout(f, frame.payload.len());
        let (s, e) = covered_range(f, &lay);
        let sum = ck.algorithm.compute(&logical[s..e.min(logical.len())]);
        put_uint(&mut logical, sum, ck.algorithm.size(), ck.order);
    }
    let start = out.len();
    out.extend_from_slice(&f.sync);
    for &b in &logical[f.sync.len()..] {
        match &f.stuffing {
            Some(s) if s.escaped.contains(&b) => out.extend_from_slice(&[s.escape, b ^ s.xor]),
            _ => out.extend_from_slice(&[b]),
        }
    }
    if let Some(e) = f.end {
        out.extend_from_slice(&[e]);
    }
    if out.len() - start > max {
        out.truncate(start);
        return Err(invalid(format!(
            "frame is longer than the maximum of {max} bytes"
        )));
    }
    Ok(())
}
