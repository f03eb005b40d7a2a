//! The journal under faults, through the store's API: a torn last record, a
//! corrupted one in the middle, a full disk, a failing disk, the database of
//! the redb store before it, and segments that must not pile up.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tempfile::TempDir;

use super::super::journal::disk::mem::MemDir;
use super::super::journal::disk::Dir;
use super::*;

fn event(machine: &str, seq: u64) -> Vec<Op> {
    vec![
        Op::Append {
            session: machine.into(),
            item: OutItem {
                topic: format!("vending/{machine}/event/sale"),
                payload: format!("{{\"seq\":{seq}}}").into_bytes(),
                qos: 1,
                retain: false,
                class: ItemClass::Event,
                correlation: None,
            },
        },
        Op::SetMachine {
            machine: machine.into(),
            state: MachineState {
                next_seq: seq + 1,
                host_seq: seq as u8,
                last_device_frame: Some(("0x21".into(), seq as u8)),
            },
        },
    ]
}

fn seqs(store: &Store, machine: &str) -> Vec<u64> {
    store
        .outbox(machine, None, 10_000)
        .unwrap()
        .into_iter()
        .map(|(_, it)| {
            let v: serde_json::Value = serde_json::from_slice(&it.payload).unwrap();
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

/// The one segment file of a fresh store's journal.
fn only_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join(JOURNAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.pop().unwrap()
}

fn copy_state(segment: &[u8], name: &Path) -> TempDir {
    let dir = TempDir::new().unwrap();
    let journal = dir.path().join(JOURNAL_DIR);
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join(name.file_name().unwrap()), segment).unwrap();
    dir
}

/// A store with 16 KiB segments, so that copying one is cheap.
fn small(dir: &TempDir) -> Store {
    let opts = StoreOptions {
        segment_len: 16 * 1024,
        ..StoreOptions::default()
    };
    Store::open(dir.path(), opts).unwrap()
}

#[tokio::test]
async fn a_cut_anywhere_in_the_last_record_loses_only_that_record() {
    let dir = TempDir::new().unwrap();
    let store = small(&dir);
    store.write(event("vm1", 1)).await.unwrap();
    store.write(event("vm1", 2)).await.unwrap();
    let segment = only_segment(dir.path());
    let before = std::fs::read(&segment).unwrap();
    store.write(event("vm1", 3)).await.unwrap();
    drop(store);
    let after = std::fs::read(&segment).unwrap();
    let start = before.iter().zip(&after).position(|(a, b)| a != b).unwrap();
    let end = after.len() - after.iter().rev().take_while(|&&b| b == 0).count();
    assert!(end > start + 16, "the last record spans {start}..{end}");
    for cut in start..end {
        // A power cut leaves the preallocated zeros (or the old bytes) after
        // what reached the disk; a file cut short is the other shape.
        let mut zeroed = after.clone();
        zeroed[cut..].fill(0);
        for bytes in [zeroed, after[..cut].to_vec()] {
            let copy = copy_state(&bytes, &segment);
            let store = small(&copy);
            assert_eq!(seqs(&store, "vm1"), [1, 2], "cut at {cut}");
            assert_eq!(store.machine_state("vm1").unwrap().next_seq, 3);
            // The board was never ACKed for seq 3: it sends it again.
            store.write(event("vm1", 3)).await.unwrap();
            drop(store);
            assert_eq!(seqs(&small(&copy), "vm1"), [1, 2, 3], "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn a_corrupted_record_in_the_middle_is_skipped_and_seq_moves_past_it() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.write(event("vm1", 1)).await.unwrap();
    let segment = only_segment(dir.path());
    let one = std::fs::read(&segment).unwrap();
    store.write(event("vm1", 2)).await.unwrap();
    let two = std::fs::read(&segment).unwrap();
    store.write(event("vm1", 3)).await.unwrap();
    drop(store);
    let middle = one.iter().zip(&two).position(|(a, b)| a != b).unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[middle + 20] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let store = open(&dir);
    assert_eq!(seqs(&store, "vm1"), [1, 3]);
    // The machine's next seq is the last one read plus the gap: no number the
    // lost record may have used is used again.
    assert_eq!(
        store.machine_state("vm1").unwrap().next_seq,
        4 + SEQ_GAP_AFTER_CORRUPTION
    );
    store.write(event("vm1", 4)).await.unwrap();
}

fn on_mem(dir: &Arc<MemDir>, segment_len: u64) -> Store {
    let opts = StoreOptions {
        segment_len,
        ..StoreOptions::default()
    };
    Store::start(dir.clone(), PathBuf::from("mem"), opts, None).unwrap()
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_stores_nothing_and_passes() {
    let disk = Arc::new(MemDir::default());
    let store = on_mem(&disk, 2048);
    let mut seq = 0;
    // Fill the first segment: the next write needs a new one.
    while store.segments().len() == 1 {
        seq += 1;
        store.write(event("vm1", seq)).await.unwrap();
    }
    let stored = seq;
    disk.faults.full.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for _ in 0..40 {
        match store.write(event("vm1", seq + 1)).await {
            Ok(_) => seq += 1,
            Err(err) => {
                assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
                assert!(err.to_string().contains("the disk is full"), "{err}");
                assert!(err.to_string().contains("NOT stored"), "{err}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the disk never filled up");
    assert!(seq > stored, "the spare segment was not used");
    let accepted = seq;
    assert_eq!(seqs(&store, "vm1"), (1..=accepted).collect::<Vec<_>>());
    assert_eq!(store.machine_state("vm1").unwrap().next_seq, accepted + 1);
    disk.faults.full.store(false, Ordering::Relaxed);
    store.write(event("vm1", accepted + 1)).await.unwrap();
    drop(store);
    let store = on_mem(&disk, 2048);
    assert_eq!(seqs(&store, "vm1"), (1..=accepted + 1).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_write_is_not_acknowledged_and_never_read_back() {
    let disk = Arc::new(MemDir::default());
    let store = on_mem(&disk, 64 * 1024);
    store.write(event("vm1", 1)).await.unwrap();
    disk.faults.broken.store(true, Ordering::Relaxed);
    let err = store.write(event("vm1", 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    disk.faults.broken.store(false, Ordering::Relaxed);
    assert_eq!(seqs(&store, "vm1"), [1]);
    store.write(event("vm1", 2)).await.unwrap();
    drop(store);
    let store = on_mem(&disk, 64 * 1024);
    assert_eq!(seqs(&store, "vm1"), [1, 2]);
    drop(store);
    disk.crash(0, 0);
    assert_eq!(seqs(&on_mem(&disk, 64 * 1024), "vm1"), [1, 2]);
}

#[tokio::test]
async fn delivered_segments_are_recycled_and_a_stuck_item_is_moved_forward() {
    let disk = Arc::new(MemDir::default());
    let store = on_mem(&disk, 4096);
    // One item nobody acknowledges (a machine removed from the config, say).
    store.write(event("gone", 1)).await.unwrap();
    for seq in 1..=2000 {
        let ids = store.write(event("vm1", seq)).await.unwrap();
        store.ack("vm1", ids).await.unwrap();
    }
    assert!(
        store.segments().len() <= 3,
        "segments in use: {:?}",
        store.segments()
    );
    assert!(disk.list().unwrap().len() <= 5, "{:?}", disk.list());
    drop(store);
    let store = on_mem(&disk, 4096);
    assert_eq!(seqs(&store, "gone"), [1]);
    assert!(
        seqs(&store, "vm1").len() <= 64,
        "only unsynced acks may be repeated"
    );
    assert_eq!(store.machine_state("vm1").unwrap().next_seq, 2001);
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store/redb-1/vendgate.redb")
}

#[tokio::test]
async fn the_database_of_the_redb_store_is_converted_at_open() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(fixture(), dir.path().join(LEGACY_DB_FILE)).unwrap();
    let store = open(&dir);
    let check = |store: &Store| {
        // vm-001: three events, the first delivered before the upgrade.
        let vm1 = store.outbox("vm-001", None, 100).unwrap();
        let topics: Vec<&str> = vm1.iter().map(|(_, it)| it.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["vending/vm-001/event/sale2", "vending/vm-001/event/sale3"]
        );
        assert_eq!(vm1[0].1.payload, br#"{"seq":2,"amount":150}"#);
        let m = store.machine_state("vm-001").unwrap();
        assert_eq!(m.next_seq, 4);
        assert_eq!(m.host_seq, 3);
        assert_eq!(m.last_device_frame, Some(("0x21".into(), 3)));
        // vm-002: the cap had dropped the older telemetry item.
        let vm2 = store.outbox("vm-002", None, 100).unwrap();
        assert_eq!(vm2.len(), 2);
        assert_eq!(vm2[0].1.payload, br#"{"temp":5}"#);
        assert!(vm2[0].1.retain);
        assert_eq!(vm2[1].1.class, ItemClass::Result);
        assert_eq!(vm2[1].1.correlation.as_deref(), Some(&b"corr-9"[..]));
        assert_eq!(store.stats().dropped_telemetry, 1);
        let done = store.command("vm-002", "c-9").unwrap().unwrap();
        assert!(matches!(done.phase, CommandPhase::Done { .. }));
        assert_eq!(done.reply.unwrap().topic, "replies/shop-7");
        let open: Vec<String> = store
            .open_commands("vm-002")
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(open, ["c-10", "b-1"]);
        let b1 = store.command("vm-002", "b-1").unwrap().unwrap();
        assert_eq!(b1.progress.unwrap().failures.len(), 1);
        assert!(store
            .batch("vm-002", "b-1")
            .unwrap()
            .unwrap()
            .contains("slot"));
        vm1.iter().chain(&vm2).map(|(id, _)| *id).max().unwrap()
    };
    let max_old = check(&store);
    assert!(!dir.path().join(LEGACY_DB_FILE).exists());
    assert!(dir
        .path()
        .join(format!("{LEGACY_DB_FILE}.migrated"))
        .exists());
    // Ids go on above the old ones; the old ones can be acknowledged.
    let new = event("vm-003", 1).swap_remove(0);
    let ids = store.write(vec![new]).await.unwrap();
    assert!(ids[0] > max_old);
    drop(store);
    let store = open(&dir);
    assert_eq!(check(&store), max_old, "converted once, not again");
    assert_eq!(store.outbox("vm-003", None, 10).unwrap()[0].0, ids[0]);
    let old: Vec<u64> = store
        .outbox("vm-001", None, 10)
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    store.ack("vm-001", old).await.unwrap();
    assert_eq!(store.outbox_len("vm-001").unwrap(), 0);
}

#[test]
fn a_conversion_cut_short_is_done_again_from_the_old_database() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(fixture(), dir.path().join(LEGACY_DB_FILE)).unwrap();
    // What a crash during the conversion leaves: a half-built journal.tmp.
    let tmp = dir.path().join("journal.tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("0000000000000001.log"), [0x5a; 100]).unwrap();
    let store = open(&dir);
    assert_eq!(store.outbox_len("vm-001").unwrap(), 2);
    assert!(!tmp.exists());
}
