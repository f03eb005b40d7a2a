//! The append-only journal under the store: segments of preallocated,
//! zero-filled files holding framed records ([`record`]), each segment
//! opening with a header record that carries a snapshot of the state.
//!
//! A commit is one record written at the end of the active segment and, if
//! durable, one `fdatasync`: inside the preallocated length that writes the
//! page or two the record touched and no metadata. A segment whose records are
//! all delivered is renamed to a spare and written over later, so a steady
//! stream of events costs no new files.
//!
//! The journal knows nothing of what records mean: the store hands it bodies
//! and, at a roll, the snapshot to open the next segment with.

pub(crate) mod disk;
pub(crate) mod record;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use disk::{Dir, Segment};

/// First byte of a segment header's body.
const HEADER_KIND: u8 = 0x53; // 'S'

/// Spare segments kept for reuse; more are deleted.
const MAX_SPARES: usize = 2;

/// Length of a new segment. 4 MiB hold about 20,000 lock-step events; filling
/// one with zeros once costs about 200 bytes per event of them, and nothing
/// when a spare is reused.
pub(crate) const DEFAULT_SEGMENT_LEN: u64 = 4 * 1024 * 1024;

/// A record read back at open, in lsn order.
pub(crate) enum Visit<'a> {
    /// The snapshot that opens a segment.
    Snapshot(&'a [u8]),
    /// A commit: `at` is where its body starts in `segment`.
    Commit {
        segment: u64,
        at: u64,
        body: &'a [u8],
    },
}

/// Bytes of a segment that held no valid record although valid data lay
/// beyond them, or a record whose content could not be read: corruption,
/// skipped and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub(crate) segment: u64,
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) detail: String,
}

pub(crate) struct Journal {
    dir: Arc<dyn Dir>,
    /// Segments in use, oldest first; the last is the active one.
    segments: BTreeMap<u64, Arc<dyn Segment>>,
    spares: Vec<u64>,
    /// Write position in the active segment.
    offset: u64,
    /// Where the active segment's header ends: a commit always fits after
    /// it, however large, so a snapshot larger than a segment cannot make
    /// every commit roll.
    header_end: u64,
    next_lsn: u64,
    segment_len: u64,
    /// A write failed: what follows the last good record in the active
    /// segment is unknown, so the next commit goes to a new segment whose
    /// header says where this one really ends.
    broken: bool,
}

/// A segment read at open.
struct Loaded {
    n: u64,
    file: Arc<dyn Segment>,
    bytes: Vec<u8>,
    /// The header's (previous segment, where it ends).
    prev: (u64, u64),
}

impl Journal {
    /// Reads every segment of `dir` and feeds its records, oldest first, to
    /// `visit`; an empty directory gets its first segment, opened with
    /// `initial` as its snapshot. Returns the journal, ready to append, and
    /// the corruption it skipped.
    pub(crate) fn open(
        dir: Arc<dyn Dir>,
        segment_len: u64,
        initial: &[u8],
        mut visit: impl FnMut(Visit<'_>) -> Result<(), String>,
    ) -> Result<(Journal, Vec<Skipped>), OpenError> {
        let (used, spares, mut skipped) = load(dir.as_ref())?;
        let mut journal = Journal {
            dir,
            segments: BTreeMap::new(),
            spares,
            offset: 0,
            header_end: 0,
            next_lsn: 1,
            segment_len,
            broken: false,
        };
        if used.is_empty() {
            journal.start_segment(1, 0, initial)?;
            return Ok((journal, Vec::new()));
        }
        let mut last = 0u64;
        for (i, seg) in used.iter().enumerate() {
            let limit = used
                .get(i + 1)
                .filter(|next| next.prev.0 == seg.n)
                .map(|next| usize::try_from(next.prev.1).unwrap_or(usize::MAX));
            let scan = record::scan(&seg.bytes, 0, last, limit);
            skipped.extend(scan.skipped.iter().map(|&(from, to)| Skipped {
                segment: seg.n,
                from: from as u64,
                to: to as u64,
                detail: "no valid record (checksum or length wrong)".into(),
            }));
            let mut records = scan.records.iter();
            // `load` checked that a header opens the segment; if the lsn check
            // refused it, the segment's records are older than what came before.
            let Some(header) = records.next().filter(|r| r.offset == 0) else {
                return Err(OpenError::Order { segment: seg.n });
            };
            journal.header_end = header.end() as u64;
            let mut bad = |r: &record::Found<'_>, detail: String| {
                skipped.push(Skipped {
                    segment: seg.n,
                    from: r.offset as u64,
                    to: r.end() as u64,
                    detail,
                });
            };
            if let Err(detail) = visit(Visit::Snapshot(snapshot_of(header.body))) {
                bad(header, detail);
            }
            for r in records {
                let at = (r.offset + record::HEADER) as u64;
                let body = r.body;
                if let Err(detail) = visit(Visit::Commit {
                    segment: seg.n,
                    at,
                    body,
                }) {
                    bad(r, detail);
                }
            }
            last = scan.records.last().map_or(last, |r| r.lsn);
            journal.offset = scan.end as u64;
            journal.segments.insert(seg.n, seg.file.clone());
        }
        journal.next_lsn = last + 1;
        Ok((journal, skipped))
    }

    /// Whether a commit of `len` body bytes must go to a new segment: the
    /// active one is full, or a write to it failed.
    pub(crate) fn needs_roll(&self, len: usize) -> bool {
        self.broken
            || (self.offset > self.header_end
                && self.offset + (record::HEADER + len) as u64 > self.segment_len)
    }

    /// Appends one record; with `durable`, returns only once it is on disk.
    /// Returns the segment and offset of the body.
    pub(crate) fn append(&mut self, body: &[u8], durable: bool) -> io::Result<(u64, u64)> {
        let (&n, file) = self
            .segments
            .last_key_value()
            .ok_or_else(|| io::Error::other("the journal has no active segment"))?;
        let mut buf = Vec::with_capacity(record::HEADER + body.len());
        record::encode(self.next_lsn, body, &mut buf);
        // An lsn is used up even by a failed write: whatever of it reached
        // the disk must never pass for a later record.
        self.next_lsn += 1;
        let written =
            file.write_at(&buf, self.offset)
                .and_then(|()| if durable { file.sync() } else { Ok(()) });
        if let Err(e) = written {
            self.broken = true;
            return Err(e);
        }
        let at = self.offset + record::HEADER as u64;
        self.offset += buf.len() as u64;
        Ok((n, at))
    }

    /// Opens a new active segment with `snapshot`, the state as of now. The
    /// old active segment is synced first, so that the new header's word on
    /// where it ends is true on disk.
    pub(crate) fn roll(&mut self, snapshot: &[u8]) -> io::Result<()> {
        let (&prev, file) = self
            .segments
            .last_key_value()
            .ok_or_else(|| io::Error::other("the journal has no active segment"))?;
        // After a failed write the sync is still tried: it makes the records
        // before the failure durable, which the header is about to vouch for.
        // If it fails again there is nothing better to do than move on.
        if let Err(e) = file.sync() {
            if !self.broken {
                return Err(e);
            }
        }
        // Spares are numbered past every segment in use (see `load`, `recycle`).
        let n = self.spares.iter().copied().min().unwrap_or(prev + 1);
        self.start_segment(n, prev, snapshot)
    }

    fn start_segment(&mut self, n: u64, prev: u64, snapshot: &[u8]) -> io::Result<()> {
        let file = match self.spares.iter().position(|&s| s == n) {
            Some(i) => {
                self.spares.swap_remove(i);
                self.dir.open(n)?
            }
            None => self.dir.create(n, self.segment_len)?,
        };
        let mut body = Vec::with_capacity(25 + snapshot.len());
        body.push(HEADER_KIND);
        body.extend_from_slice(&n.to_le_bytes());
        body.extend_from_slice(&prev.to_le_bytes());
        body.extend_from_slice(&self.offset.to_le_bytes());
        body.extend_from_slice(snapshot);
        let mut buf = Vec::with_capacity(record::HEADER + body.len());
        record::encode(self.next_lsn, &body, &mut buf);
        self.next_lsn += 1;
        if let Err(e) = file.write_at(&buf, 0).and_then(|()| file.sync()) {
            // Without a header that names it, the file is a spare at the next open too.
            self.spares.push(n);
            return Err(e);
        }
        self.segments.insert(n, file);
        self.offset = buf.len() as u64;
        self.header_end = self.offset;
        self.broken = false;
        Ok(())
    }

    /// The oldest segment, if it is not the active one.
    pub(crate) fn oldest_inactive(&self) -> Option<u64> {
        let oldest = *self.segments.keys().next()?;
        (self.segments.len() > 1).then_some(oldest)
    }

    /// Lets go of the oldest segment once nothing in it is needed: every item
    /// it holds was delivered, and the headers after it hold its state. It
    /// becomes a spare, named past every segment, or is deleted.
    pub(crate) fn recycle(&mut self, n: u64) -> io::Result<()> {
        if self.oldest_inactive() != Some(n) {
            return Ok(());
        }
        self.segments.remove(&n);
        if self.spares.len() >= MAX_SPARES {
            return self.dir.remove(n);
        }
        let max = self.segments.keys().chain(&self.spares).max().copied();
        let to = max.unwrap_or(n) + 1;
        self.dir.rename(n, to)?;
        self.spares.push(to);
        Ok(())
    }

    pub(crate) fn segment_len(&self) -> u64 {
        self.segment_len
    }

    /// The segments in use, for readers of item bytes.
    pub(crate) fn files(&self) -> BTreeMap<u64, Arc<dyn Segment>> {
        self.segments.clone()
    }

    /// Segments in use (oldest first), for tests and health.
    pub(crate) fn segment_numbers(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }

    pub(crate) fn path(&self, n: u64) -> std::path::PathBuf {
        self.dir.path(n)
    }
}

/// The snapshot part of a segment header's body.
fn snapshot_of(body: &[u8]) -> &[u8] {
    body.get(25..).unwrap_or_default()
}

/// The (segment, previous segment, its end) a header body names.
fn header_of(body: &[u8]) -> Option<(u64, u64, u64)> {
    let [HEADER_KIND, rest @ ..] = body else {
        return None;
    };
    let word = |i: usize| {
        rest.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Some((word(0)?, word(1)?, word(2)?))
}

/// Reads every segment file; those whose first record is a header naming
/// them are in use, the others (recycled, or a roll a crash cut short) spare
/// if they are numbered past the last one in use. One numbered before it
/// without a valid header is a segment whose header was corrupted: reported,
/// and left alone rather than written over.
type Loads = (Vec<Loaded>, Vec<u64>, Vec<Skipped>);

fn load(dir: &dyn Dir) -> Result<Loads, OpenError> {
    let mut numbers = dir.list().map_err(|e| OpenError::Io {
        path: dir.path(0),
        source: e,
    })?;
    numbers.sort_unstable();
    let mut used = Vec::new();
    let mut spares = Vec::new();
    for n in numbers {
        let io = |source| OpenError::Io {
            path: dir.path(n),
            source,
        };
        let file = dir.open(n).map_err(io)?;
        let bytes = file.read_all().map_err(io)?;
        let header = record::at(&bytes, 0, 0).and_then(|r| header_of(r.body));
        match header {
            Some((named, prev, end)) if named == n => used.push(Loaded {
                n,
                file,
                bytes,
                prev: (prev, end),
            }),
            _ => spares.push((n, bytes.len() as u64)),
        }
    }
    let last_used = used.last().map_or(0, |l| l.n);
    let (spares, lost): (Vec<_>, Vec<_>) = spares.into_iter().partition(|&(n, _)| n > last_used);
    let skipped = lost
        .into_iter()
        .map(|(segment, len)| Skipped {
            segment,
            from: 0,
            to: len,
            detail: "the segment's header is unreadable; the file is left as it is".into(),
        })
        .collect();
    Ok((used, spares.into_iter().map(|(n, _)| n).collect(), skipped))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal segment {segment:016x}: its records are older than those of the segment before it"
    )]
    Order { segment: u64 },
}

impl From<io::Error> for OpenError {
    fn from(source: io::Error) -> Self {
        OpenError::Io {
            path: std::path::PathBuf::from("journal"),
            source,
        }
    }
}
