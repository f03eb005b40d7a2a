//! Frame checksums: the simple byte sums and any CRC of the `crc` crate's
//! catalogue (DESIGN §5). CRCs are never hand-rolled here.

use crc::{Algorithm, Crc, NoTable};

/// A checksum algorithm named in a profile.
#[derive(Clone, Copy, Debug)]
pub enum Checksum {
    /// XOR of all covered bytes (VMC protocol §2).
    Xor,
    /// Sum of all covered bytes modulo 256.
    Sum8,
    /// Two's complement of the 8-bit sum (Modbus ASCII style).
    Lrc,
    Crc8(&'static str, &'static Algorithm<u8>),
    Crc16(&'static str, &'static Algorithm<u16>),
    Crc32(&'static str, &'static Algorithm<u32>),
    Crc64(&'static str, &'static Algorithm<u64>),
}

impl Checksum {
    /// `xor`, `sum8`, `lrc` or a catalogue name such as `CRC_16_MODBUS`.
    pub fn from_name(name: &str) -> Option<Checksum> {
        match name {
            "xor" => Some(Checksum::Xor),
            "sum8" => Some(Checksum::Sum8),
            "lrc" => Some(Checksum::Lrc),
            other => super::crc_catalog::lookup(other),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Checksum::Xor => "xor",
            Checksum::Sum8 => "sum8",
            Checksum::Lrc => "lrc",
            Checksum::Crc8(n, _)
            | Checksum::Crc16(n, _)
            | Checksum::Crc32(n, _)
            | Checksum::Crc64(n, _) => n,
        }
    }

    /// Bytes the checksum takes on the wire (a CRC's width rounded up to bytes).
    pub fn size(&self) -> usize {
        let width = match self {
            Checksum::Xor | Checksum::Sum8 | Checksum::Lrc => 8,
            Checksum::Crc8(_, a) => a.width,
            Checksum::Crc16(_, a) => a.width,
            Checksum::Crc32(_, a) => a.width,
            Checksum::Crc64(_, a) => a.width,
        };
        (width as usize).div_ceil(8)
    }

    pub fn compute(&self, data: &[u8]) -> u64 {
        match self {
            Checksum::Xor => u64::from(data.iter().fold(0u8, |a, b| a ^ b)),
            Checksum::Sum8 => u64::from(data.iter().fold(0u8, |a, b| a.wrapping_add(*b))),
            Checksum::Lrc => u64::from(
                data.iter()
                    .fold(0u8, |a, b| a.wrapping_add(*b))
                    .wrapping_neg(),
            ),
            Checksum::Crc8(_, a) => u64::from(Crc::<u8, NoTable>::new(a).checksum(data)),
            Checksum::Crc16(_, a) => u64::from(Crc::<u16, NoTable>::new(a).checksum(data)),
            Checksum::Crc32(_, a) => u64::from(Crc::<u32, NoTable>::new(a).checksum(data)),
            Checksum::Crc64(_, a) => Crc::<u64, NoTable>::new(a).checksum(data),
        }
    }
}

/// Byte order of multi-byte values on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

/// Writes the low `size` bytes of `value` in `order`.
pub fn put_uint(out: &mut Vec<u8>, value: u64, size: usize, order: ByteOrder) {
    let be = value.to_be_bytes();
    let bytes = &be[8usize.saturating_sub(size)..];
    match order {
        ByteOrder::Big => out.extend_from_slice(bytes),
        ByteOrder::Little => out.extend(bytes.iter().rev()),
    }
}

/// Reads an unsigned integer of `bytes.len()` (<= 8) bytes.
pub fn get_uint(bytes: &[u8], order: ByteOrder) -> u64 {
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    match order {
        ByteOrder::Big => bytes.iter().fold(0, fold),
        ByteOrder::Little => bytes.iter().rev().fold(0, fold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_crcs_match_their_check_values() {
        // "123456789" is the catalogue's standard check input.
        let modbus = Checksum::from_name("CRC_16_MODBUS").unwrap();
        assert_eq!(modbus.compute(b"123456789"), 0x4B37);
        assert_eq!(modbus.size(), 2);
        let kermit = Checksum::from_name("CRC_16_KERMIT").unwrap();
        assert_eq!(kermit.compute(b"123456789"), 0x2189);
        assert!(Checksum::from_name("CRC_16_NOPE").is_none());
    }

    #[test]
    fn byte_sums() {
        assert_eq!(Checksum::Xor.compute(&[0xFA, 0xFB, 0x41, 0x00]), 0x40);
        assert_eq!(Checksum::Sum8.compute(&[0xFF, 0x02]), 0x01);
        assert_eq!(Checksum::Lrc.compute(&[0x01, 0x02]), 0xFD);
    }

    #[test]
    fn uint_round_trip() {
        let mut v = Vec::new();
        put_uint(&mut v, 0x1234, 2, ByteOrder::Little);
        assert_eq!(v, [0x34, 0x12]);
        assert_eq!(get_uint(&v, ByteOrder::Little), 0x1234);
    }
}
