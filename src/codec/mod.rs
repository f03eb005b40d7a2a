//! Frames on the wire (ARCHITECTURE.md, `codec`), driven by a compiled
//! profile's [`Framing`]. Modelled on tokio-modbus: bad data never ends the
//! stream; the decoder drops one byte, searches the next sync and counts it.

mod ascii;
mod binary;
mod checksum;
mod crc_catalog;
pub mod framing;
pub mod hex;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use checksum::{get_uint, put_uint, ByteOrder, Checksum};
pub use framing::{
    AsciiLineFraming, BinaryFraming, ChecksumField, Framing, FramingKind, LengthField, Part,
    Stuffing,
};

/// A frame's command code: a number for binary framings, a token for ASCII lines.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameCode {
    Num(u32),
    Text(String),
}

impl std::fmt::Display for FrameCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameCode::Num(n) => write!(f, "{n:#04x}"),
            FrameCode::Text(t) => f.write_str(t),
        }
    }
}

/// One frame: everything but sync, length, checksum and stuffing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub address: Option<u16>,
    pub code: FrameCode,
    /// Includes the link's sequence byte, if the link has one.
    pub payload: Bytes,
}

/// Counters for health reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecStats {
    pub frames: u64,
    pub checksum_errors: u64,
    pub resyncs: u64,
    pub skipped_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct FrameCodec {
    // Shared so `decode` can borrow it while updating the stats.
    framing: Arc<Framing>,
    stats: CodecStats,
}

impl FrameCodec {
    pub fn new(framing: &Framing) -> FrameCodec {
        FrameCodec {
            framing: Arc::new(framing.clone()),
            stats: CodecStats::default(),
        }
    }

    pub fn stats(&self) -> CodecStats {
        self.stats
    }

    /// With silence framing, the caller must call [`decode_silence`](Self::decode_silence)
    /// once the line has been quiet this long.
    pub fn needs_silence(&self) -> Option<Duration> {
        match &self.framing.kind {
            FramingKind::Binary(b) => b.silence,
            FramingKind::AsciiLine(_) => None,
        }
    }

    /// Takes everything buffered as one frame (silence framing). A bad frame
    /// is counted and dropped.
    pub fn decode_silence(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let FramingKind::Binary(b) = &self.framing.kind else {
            return None;
        };
        if buf.is_empty() {
            return None;
        }
        let raw = buf.split();
        match binary::parse_silent(b, &raw) {
            Ok(frame) => {
                self.stats.frames += 1;
                Some(frame)
            }
            Err(reason) => {
                self.stats.checksum_errors += u64::from(reason.contains("checksum"));
                self.stats.resyncs += 1;
                self.stats.skipped_bytes += raw.len() as u64;
                tracing::debug!(skipped = %hex::encode(&raw), %reason, "dropped a silence-delimited frame");
                None
            }
        }
    }

    fn skip(&mut self, buf: &mut BytesMut, n: usize, why: &str) {
        let n = n.min(buf.len());
        if n == 0 {
            return;
        }
        tracing::debug!(skipped = %hex::encode(&buf[..n]), why, "codec skipped bytes");
        self.stats.skipped_bytes += n as u64;
        buf.advance(n);
    }

    fn reject(&mut self, buf: &mut BytesMut, n: usize, reason: &str, checksum: bool) {
        self.stats.resyncs += 1;
        self.stats.checksum_errors += u64::from(checksum);
        self.skip(buf, n, reason);
    }

    fn decode_binary(&mut self, b: &BinaryFraming, buf: &mut BytesMut) -> Option<Frame> {
        let max = self.framing.max_frame;
        loop {
            match ascii::find(buf, &b.sync) {
                Some(0) => {}
                Some(i) => self.skip(buf, i, "garbage before sync"),
                None => {
                    // Keep a tail that may be the start of the next sync.
                    let keep = (1..b.sync.len())
                        .rev()
                        .find(|k| buf.ends_with(&b.sync[..*k]))
                        .unwrap_or(0);
                    let n = buf.len().saturating_sub(keep);
                    self.skip(buf, n, "no sync");
                    return None;
                }
            }
            match binary::parse_at(b, max, buf) {
                binary::Parse::Ok { frame, consumed } => {
                    buf.advance(consumed);
                    self.stats.frames += 1;
                    return Some(frame);
                }
                binary::Parse::Bad { reason, checksum } => self.reject(buf, 1, &reason, checksum),
                binary::Parse::Incomplete => {
                    // A false sync (in garbage or in text, VMC §2) may announce a long
                    // frame; a valid frame already behind it must not wait or be lost.
                    let later = (1..buf.len()).find(|j| {
                        buf[*j..].starts_with(&b.sync)
                            && matches!(
                                binary::parse_at(b, max, &buf[*j..]),
                                binary::Parse::Ok { .. }
                            )
                    });
                    match later {
                        Some(j) => {
                            self.reject(buf, j, "incomplete candidate before a valid frame", false)
                        }
                        None if buf.len() >= max => {
                            self.reject(buf, 1, "candidate exceeds the maximum frame size", false)
                        }
                        None => return None,
                    }
                }
            }
        }
    }

    fn decode_ascii(&mut self, a: &AsciiLineFraming, buf: &mut BytesMut) -> Option<Frame> {
        let max = self.framing.max_frame;
        loop {
            if let Some(s) = a.start {
                match buf.iter().position(|x| *x == s) {
                    Some(i) => self.skip(buf, i, "garbage before start character"),
                    None => {
                        let n = buf.len();
                        self.skip(buf, n, "no start character");
                        return None;
                    }
                }
            }
            let from = usize::from(a.start.is_some());
            let drop_bad = |consumed: usize| if a.start.is_some() { 1 } else { consumed };
            match ascii::find(&buf[from.min(buf.len())..], &a.terminator) {
                None if buf.len() >= max => {
                    let n = drop_bad(buf.len());
                    self.reject(buf, n, "line exceeds the maximum frame size", false);
                }
                None => return None,
                Some(k) if from + k + a.terminator.len() > max => {
                    let n = drop_bad(from + k + a.terminator.len());
                    self.reject(buf, n, "line exceeds the maximum frame size", false);
                }
                Some(k) => {
                    let end = from + k;
                    let consumed = end + a.terminator.len();
                    match ascii::parse_line(a, &buf[..end]) {
                        Ok(frame) => {
                            buf.advance(consumed);
                            self.stats.frames += 1;
                            return Some(frame);
                        }
                        Err((reason, checksum)) => {
                            self.reject(buf, drop_bad(consumed), &reason, checksum)
                        }
                    }
                }
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        let framing = Arc::clone(&self.framing);
        let frame = match &framing.kind {
            FramingKind::Binary(b) if b.silence.is_some() => {
                let excess = buf.len().saturating_sub(self.framing.max_frame);
                if excess > 0 {
                    self.reject(
                        buf,
                        excess,
                        "no silence within the maximum frame size",
                        false,
                    );
                }
                None
            }
            FramingKind::Binary(b) => self.decode_binary(b, buf),
            FramingKind::AsciiLine(a) => self.decode_ascii(a, buf),
        };
        Ok(frame)
    }

    /// End of stream ends a silence frame; other leftovers are dropped, not errors.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.needs_silence().is_some() {
            return Ok(self.decode_silence(buf));
        }
        let n = buf.len();
        self.skip(buf, n, "trailing bytes at end of stream");
        Ok(None)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> io::Result<()> {
        match &self.framing.kind {
            FramingKind::Binary(b) => binary::encode(b, self.framing.max_frame, frame, out),
            FramingKind::AsciiLine(a) => ascii::encode(a, self.framing.max_frame, frame, out),
        }
    }
}
