//! The compiled framing of a profile (DESIGN §5): what the codec needs to cut
//! frames out of a byte stream. Built by `profile::compile`, read by the codec.

use std::time::Duration;

pub use super::checksum::{ByteOrder, Checksum};

/// How frames are delimited on the wire.
#[derive(Clone, Debug)]
pub struct Framing {
    /// Upper bound on one frame's wire size; also bounds the decode buffer.
    pub max_frame: usize,
    pub kind: FramingKind,
}

#[derive(Clone, Debug)]
pub enum FramingKind {
    Binary(BinaryFraming),
    AsciiLine(AsciiLineFraming),
}

/// The parts of a binary frame, in wire order (the length field may come
/// before the code, see [`LengthField::before_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Sync,
    Address,
    Code,
    Length,
    Payload,
    Checksum,
}

#[derive(Clone, Debug)]
pub struct BinaryFraming {
    /// Bytes every frame starts with; empty only with silence framing.
    pub sync: Vec<u8>,
    /// Bytes of the address field after the sync bytes (Modbus slave id:
    /// 1); 0 when frames carry no address. Two bytes are big-endian.
    pub address: usize,
    /// 1 or 2 (big-endian) bytes of frame code.
    pub code_size: usize,
    pub length: Option<LengthField>,
    pub checksum: Option<ChecksumField>,
    pub stuffing: Option<Stuffing>,
    /// A byte that ends every frame (ETX).
    pub end: Option<u8>,
    /// Frames end after this much line silence (Modbus RTU's 3.5 characters).
    pub silence: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct LengthField {
    pub size: usize,
    pub order: ByteOrder,
    /// The length field precedes the code on the wire.
    pub before_code: bool,
    /// Which parts the length value counts.
    pub covers: Vec<Part>,
    /// Added to the counted size to get the wire value.
    pub adjust: i64,
}

#[derive(Clone, Debug)]
pub struct ChecksumField {
    pub algorithm: Checksum,
    pub order: ByteOrder,
    /// First and last covered part (inclusive, unstuffed bytes).
    pub from: Part,
    pub to: Part,
}

/// Byte stuffing: every byte of `escaped` between sync and end is sent as
/// `escape`, `byte ^ xor`.
#[derive(Clone, Debug)]
pub struct Stuffing {
    pub escape: u8,
    pub escaped: Vec<u8>,
    pub xor: u8,
}

/// `$CODE,field,field*CS\r\n`: one text line per frame.
#[derive(Clone, Debug)]
pub struct AsciiLineFraming {
    pub start: Option<u8>,
    pub separator: u8,
    /// Checksum over the text between the start character and the marker,
    /// written as upper-case hex (2 digits per byte).
    pub checksum: Option<Checksum>,
    pub checksum_marker: u8,
    pub terminator: Vec<u8>,
}

impl Framing {
    /// The largest address the frames can carry, if they carry one.
    pub fn max_address(&self) -> Option<u16> {
        match &self.kind {
            FramingKind::Binary(b) if b.address == 1 => Some(u16::from(u8::MAX)),
            FramingKind::Binary(b) if b.address > 1 => Some(u16::MAX),
            _ => None,
        }
    }

    /// Whether frames carry the device's address.
    pub fn has_address(&self) -> bool {
        matches!(&self.kind, FramingKind::Binary(b) if b.address > 0)
    }
}

impl BinaryFraming {
    /// Wire order of the parts before the payload.
    pub fn header_parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        if self.address > 0 {
            parts.push(Part::Address);
        }
        match &self.length {
            Some(l) if l.before_code => parts.extend([Part::Length, Part::Code]),
            Some(_) => parts.extend([Part::Code, Part::Length]),
            None => parts.push(Part::Code),
        }
        parts
    }

    /// Bytes the length value counts besides the payload (the fixed parts
    /// it covers), shared by decoding and encoding.
    pub fn length_fixed_bytes(&self, len: &LengthField) -> usize {
        len.covers
            .iter()
            .filter(|p| **p != Part::Payload)
            .map(|p| self.part_size(*p))
            .sum()
    }

    pub fn part_size(&self, part: Part) -> usize {
        match part {
            Part::Sync => self.sync.len(),
            Part::Address => self.address,
            Part::Code => self.code_size,
            Part::Length => self.length.as_ref().map_or(0, |l| l.size),
            Part::Payload => 0,
            Part::Checksum => self.checksum.as_ref().map_or(0, |c| c.algorithm.size()),
        }
    }

    pub fn checksum_size(&self) -> usize {
        self.part_size(Part::Checksum)
    }
}
