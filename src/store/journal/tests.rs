use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::disk::mem::MemDir;
use super::disk::Dir;
use super::*;

const LEN: u64 = 4096;

/// What a reopen reads: the snapshots and commit bodies, in order.
fn reopen(dir: &Arc<MemDir>) -> (Journal, Vec<String>, Vec<Skipped>) {
    let mut seen = Vec::new();
    let d: Arc<dyn Dir> = dir.clone();
    let (j, skipped) = Journal::open(d, LEN, b"snap-0", |v| {
        seen.push(match v {
            Visit::Snapshot(b) => format!("S:{}", String::from_utf8_lossy(b)),
            Visit::Commit { body, .. } => String::from_utf8_lossy(body).into_owned(),
        });
        Ok(())
    })
    .unwrap();
    (j, seen, skipped)
}

fn commits(seen: &[String]) -> Vec<&str> {
    seen.iter()
        .filter(|s| !s.starts_with("S:"))
        .map(String::as_str)
        .collect()
}

#[test]
fn commits_are_read_back_in_order_after_a_reopen() {
    let dir = Arc::new(MemDir::default());
    let (mut j, seen, _) = reopen(&dir);
    // A new journal starts with the initial snapshot, which the caller has.
    assert!(seen.is_empty());
    j.append(b"one", true).unwrap();
    j.append(b"two", false).unwrap();
    j.append(b"three", true).unwrap();
    drop(j);
    let (mut j, seen, skipped) = reopen(&dir);
    assert_eq!(seen, ["S:snap-0", "one", "two", "three"]);
    assert!(skipped.is_empty());
    // ... and appending continues after them, not over them.
    j.append(b"four", true).unwrap();
    let (_, seen, _) = reopen(&dir);
    assert_eq!(commits(&seen), ["one", "two", "three", "four"]);
}

#[test]
fn a_crash_loses_only_the_unsynced_tail() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    j.append(b"synced", true).unwrap();
    j.append(b"lazy ack", false).unwrap();
    j.append(b"lazy too", false).unwrap();
    drop(j);
    // The first unsynced write reached the disk, the second was cut.
    dir.crash(1, 5);
    let (_, seen, skipped) = reopen(&dir);
    assert_eq!(commits(&seen), ["synced", "lazy ack"]);
    assert!(skipped.is_empty());
}

#[test]
fn rolls_read_across_segments_and_recycled_segments_are_written_over() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    let body = vec![b'x'; 1000];
    let mut written = 0;
    for i in 0..20u8 {
        let mut b = body.clone();
        b[0] = b'a' + i;
        if j.needs_roll(b.len()) {
            j.roll(format!("snap-{i}").as_bytes()).unwrap();
        }
        j.append(&b, true).unwrap();
        written += 1;
        // Keep only the active segment and the one before it.
        while j.segment_numbers().len() > 2 {
            let oldest = j.oldest_inactive().unwrap();
            j.recycle(oldest).unwrap();
        }
    }
    assert_eq!(written, 20);
    let used = j.segment_numbers();
    drop(j);
    let (j, seen, skipped) = reopen(&dir);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(j.segment_numbers(), used);
    // Only what the two kept segments hold, each once, in order: nothing
    // stale of the recycled files is read.
    let firsts: Vec<u8> = commits(&seen).iter().map(|c| c.as_bytes()[0]).collect();
    let last = *firsts.last().unwrap();
    assert_eq!(last, b'a' + 19);
    assert!(firsts.windows(2).all(|w| w[1] == w[0] + 1), "{firsts:?}");
    assert!(dir.list().unwrap().len() <= 2 + MAX_SPARES);
}

#[test]
fn after_a_failed_write_the_journal_moves_on_and_never_reads_it() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    j.append(b"before", true).unwrap();
    dir.faults.broken.store(true, Ordering::Relaxed);
    assert!(j.append(b"failed write, maybe half on disk", true).is_err());
    dir.faults.broken.store(false, Ordering::Relaxed);
    assert!(j.needs_roll(5), "a failed write must move the journal on");
    j.roll(b"snap-1").unwrap();
    j.append(b"after", true).unwrap();
    drop(j);
    let (_, seen, skipped) = reopen(&dir);
    assert_eq!(seen, ["S:snap-0", "before", "S:snap-1", "after"]);
    assert!(skipped.is_empty(), "{skipped:?}");
}

#[test]
fn a_full_disk_fails_the_roll_and_the_journal_recovers_when_space_returns() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    j.append(&[7; 3000], true).unwrap();
    assert!(j.needs_roll(2000));
    dir.faults.full.store(true, Ordering::Relaxed);
    let err = j.roll(b"snap-1").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    assert!(j.needs_roll(2000));
    dir.faults.full.store(false, Ordering::Relaxed);
    j.roll(b"snap-1").unwrap();
    j.append(&[8; 2000], true).unwrap();
    drop(j);
    let (_, seen, _) = reopen(&dir);
    assert_eq!(seen.len(), 4);
}

#[test]
fn a_corrupted_commit_between_good_ones_is_skipped_and_reported() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    j.append(b"first", true).unwrap();
    let (seg, at) = j.append(b"second", true).unwrap();
    j.append(b"third", true).unwrap();
    drop(j);
    dir.edit(seg, |bytes| bytes[at as usize + 2] ^= 0x40);
    let (_, seen, skipped) = reopen(&dir);
    assert_eq!(commits(&seen), ["first", "third"]);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].segment, seg);
}

#[test]
fn a_snapshot_larger_than_a_segment_does_not_make_every_commit_roll() {
    let dir = Arc::new(MemDir::default());
    let (mut j, _, _) = reopen(&dir);
    j.roll(&vec![b's'; 3 * LEN as usize]).unwrap();
    assert!(!j.needs_roll(100));
    j.append(b"fits after the header", true).unwrap();
    assert!(j.needs_roll(100));
    let (_, seen, _) = reopen(&dir);
    assert_eq!(commits(&seen), ["fits after the header"]);
}
