//! How one journal record sits in a segment, and how a segment's bytes are
//! read back into records. Pure: no files here.
//!
//! ```text
//! len  u32 LE   length of the body
//! lsn  u64 LE   the record's sequence number, larger than every record before it
//! crc  u32 LE   CRC-32C over len, lsn and body
//! body len bytes
//! ```
//!
//! The checksum tells a record that reached the disk whole from a torn one.
//! The lsn tells a record of this segment's current use from a stale one: a
//! recycled segment still holds the records of its previous use, which are
//! whole and checksummed but carry smaller lsns. So a scan accepts a record
//! only if its checksum holds and its lsn is above the last one accepted.
//! Zeros (a fresh segment) fail the lsn test too.

use crc::{Crc, CRC_32_ISCSI};

/// CRC-32C (Castagnoli), the checksum of ext4's and btrfs's metadata, from the
/// `crc` crate's catalogue: better error detection than CRC-32/ISO-HDLC at the
/// same cost.
const CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

pub(crate) const HEADER: usize = 16;

/// A body this large is not a record: nothing the store writes comes near it
/// (the outbox cap is far smaller per item), so a length above it is garbage.
pub(crate) const MAX_BODY: usize = 256 * 1024 * 1024;

/// How far above the last accepted lsn a record found by resynchronisation may
/// be: the writer skips lsns only after a failed write, a few at a time, so a
/// candidate far above is garbage that happened to look like a header.
const MAX_LSN_GAP: u64 = 1 << 20;

/// Appends one framed record to `out`.
pub(crate) fn encode(lsn: u64, body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut digest = CRC.digest();
    digest.update(&len.to_le_bytes());
    digest.update(&lsn.to_le_bytes());
    digest.update(body);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&digest.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

/// A record found in a segment: where it starts, its lsn, its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub(crate) offset: usize,
    pub(crate) lsn: u64,
    pub(crate) body: &'a [u8],
}

impl Found<'_> {
    /// Offset just past the record.
    pub(crate) fn end(&self) -> usize {
        self.offset + HEADER + self.body.len()
    }
}

/// The record at `offset`, if a whole, checksummed one with an lsn above
/// `after` starts there.
pub(crate) fn at(bytes: &[u8], offset: usize, after: u64) -> Option<Found<'_>> {
    let header = bytes.get(offset..offset.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let lsn = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    if lsn <= after || len > MAX_BODY {
        return None;
    }
    let start = offset + HEADER;
    let body = bytes.get(start..start.checked_add(len)?)?;
    let mut digest = CRC.digest();
    digest.update(&header[0..12]);
    digest.update(body);
    (digest.finalize() == crc).then_some(Found { offset, lsn, body })
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub(crate) struct Scan<'a> {
    pub(crate) records: Vec<Found<'a>>,
    /// Where the valid records end: the next record goes here.
    pub(crate) end: usize,
    /// Byte ranges skipped because they held no valid record although valid
    /// records followed them (or the segment's known end lay beyond them):
    /// corruption, reported, not a torn tail.
    pub(crate) skipped: Vec<(usize, usize)>,
}

/// Reads records from `start` on, each with an lsn above the one before it
/// (the first above `after`).
///
/// `limit` is where the segment is known to end (the next segment's header
/// says so), or `None` for the segment being written, whose end is wherever
/// the first torn or stale record is. A record that fails its checksum is
/// corruption rather than the end if a valid record follows it (searched byte
/// by byte, with an lsn close above the last good one) or if it lies before
/// `limit`; the bad bytes are skipped and reported. A torn tail, with nothing
/// valid after it, just ends the scan: it is the commit that never completed.
pub(crate) fn scan(bytes: &[u8], start: usize, after: u64, limit: Option<usize>) -> Scan<'_> {
    let bytes = &bytes[..limit.unwrap_or(bytes.len()).min(bytes.len())];
    let mut scan = Scan {
        end: start,
        ..Scan::default()
    };
    let mut offset = start;
    let mut last = after;
    while offset < bytes.len() {
        if let Some(found) = at(bytes, offset, last) {
            last = found.lsn;
            offset = found.end();
            scan.end = offset;
            scan.records.push(found);
            continue;
        }
        match resync(bytes, offset + 1, last) {
            Some(next) => {
                scan.skipped.push((offset, next));
                offset = next;
            }
            None => {
                if limit.is_some() {
                    scan.skipped.push((offset, bytes.len()));
                    scan.end = bytes.len();
                }
                break;
            }
        }
    }
    scan
}

/// The next offset from `from` where a valid record with an lsn just above
/// `last` starts.
fn resync(bytes: &[u8], from: usize, last: u64) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER - 1)).find(|&offset| {
        let lsn = bytes
            .get(offset + 4..offset + 12)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes);
        lsn.is_some_and(|lsn| lsn > last && lsn - last <= MAX_LSN_GAP)
            && at(bytes, offset, last).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(bodies: &[&[u8]], first_lsn: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            starts.push(out.len());
            encode(first_lsn + i as u64, body, &mut out);
        }
        (out, starts)
    }

    fn bodies<'a>(scan: &Scan<'a>) -> Vec<&'a [u8]> {
        scan.records.iter().map(|r| r.body).collect()
    }

    #[test]
    fn records_read_back_and_zeros_end_the_scan() {
        let (mut seg, _) = segment(&[b"one", b"", b"three"], 1);
        let written = seg.len();
        seg.resize(4096, 0);
        let scan = scan(&seg, 0, 0, None);
        assert_eq!(bodies(&scan), [&b"one"[..], b"", b"three"]);
        assert_eq!(scan.end, written);
        assert!(scan.skipped.is_empty());
    }

    #[test]
    fn a_cut_anywhere_in_the_last_record_loses_only_that_record() {
        let (seg, starts) = segment(&[b"first", b"second", b"the last record"], 7);
        let last = starts[2];
        for cut in last..seg.len() {
            let mut torn = seg[..cut].to_vec();
            // What follows a torn write: old bytes or zeros, whatever was there.
            torn.resize(seg.len() + 64, 0);
            let scan = scan(&torn, 0, 6, None);
            assert_eq!(bodies(&scan), [&b"first"[..], b"second"], "cut at {cut}");
            assert_eq!(scan.end, last, "cut at {cut}");
            assert!(scan.skipped.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_in_the_middle_is_skipped_and_reported() {
        let (seg, starts) = segment(&[b"first", b"second", b"third"], 1);
        for offset in starts[1]..starts[2] {
            let mut bad = seg.clone();
            bad[offset] ^= 0x10;
            let scan = scan(&bad, 0, 0, None);
            assert_eq!(bodies(&scan), [&b"first"[..], b"third"], "flip at {offset}");
            assert_eq!(scan.skipped, [(starts[1], starts[2])], "flip at {offset}");
            assert_eq!(scan.end, seg.len());
        }
    }

    #[test]
    fn stale_records_of_a_recycled_segment_are_not_read() {
        // The segment's previous use wrote lsns 1..=3; its new use starts at 10.
        let (mut seg, _) = segment(&[b"old one", b"old two", b"old three"], 1);
        let mut fresh = Vec::new();
        encode(10, b"new", &mut fresh);
        seg[..fresh.len()].copy_from_slice(&fresh);
        let scan = scan(&seg, 0, 9, None);
        assert_eq!(bodies(&scan), [&b"new"[..]]);
        assert_eq!(scan.end, fresh.len());
        assert!(scan.skipped.is_empty());
    }

    #[test]
    fn a_known_end_makes_a_bad_tail_corruption_and_bounds_the_scan() {
        let (seg, starts) = segment(&[b"first", b"second"], 1);
        let mut bad = seg.clone();
        bad[starts[1] + HEADER] ^= 1;
        let scan = scan(&bad, 0, 0, Some(seg.len()));
        assert_eq!(bodies(&scan), [&b"first"[..]]);
        assert_eq!(scan.skipped, [(starts[1], seg.len())]);
        // Records past the known end (a failed write's leftovers) are not read.
        let scan = super::scan(&seg, 0, 0, Some(starts[1]));
        assert_eq!(bodies(&scan), [&b"first"[..]]);
        assert!(scan.skipped.is_empty());
    }

    #[test]
    fn garbage_lengths_and_short_buffers_are_no_records() {
        assert!(at(&[0xff; 40], 0, 0).is_none());
        assert!(at(&[1, 0, 0, 0, 1], 0, 0).is_none());
        assert!(at(&[], 0, 0).is_none());
        let scan = scan(&[0xff; 100], 0, 0, None);
        assert!(scan.records.is_empty());
        assert_eq!(scan.end, 0);
    }
}
