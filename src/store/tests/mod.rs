use std::time::Duration;

use tempfile::TempDir;

use super::codec::{self, decode_out, encode_out};
use super::*;

mod faults;
mod props;

fn item(n: u32) -> OutItem {
    OutItem {
        topic: format!("vending/vm-001/event/sale{n}"),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        qos: 1,
        retain: n % 2 == 0,
        class: ItemClass::Event,
        correlation: None,
    }
}

fn append(session: &str, n: u32) -> Op {
    Op::Append {
        session: session.into(),
        item: item(n),
    }
}

fn cmd(id: &str, phase: CommandPhase, at_ms: i64) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        command: "drive".into(),
        phase,
        at_ms,
        progress: None,
        reply: None,
    }
}

fn done(id: &str, at_ms: i64) -> CommandRecord {
    cmd(
        id,
        CommandPhase::Done {
            result: format!("{{\"id\":\"{id}\",\"status\":\"ok\"}}"),
        },
        at_ms,
    )
}

fn put(machine: &str, record: CommandRecord) -> Op {
    Op::PutCommand {
        machine: machine.into(),
        record,
    }
}

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path(), StoreOptions::default()).unwrap()
}

#[tokio::test]
async fn append_then_read_in_order_with_paging() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let ids = store
        .write(vec![append("vm1", 1), append("vm1", 2), append("vm1", 3)])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let all = store.outbox("vm1", None, 100).unwrap();
    assert_eq!(all.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(all[1].1, item(2));
    assert_eq!(store.outbox("vm1", None, 2).unwrap().len(), 2);
    let rest = store.outbox("vm1", Some(ids[0]), 100).unwrap();
    assert_eq!(rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[1..]);
    assert!(store.outbox("vm1", Some(u64::MAX), 10).unwrap().is_empty());
    assert_eq!(store.outbox_len("vm1").unwrap(), 3);
    assert!(store.path().ends_with(JOURNAL_DIR));
}

#[tokio::test]
async fn ids_increase_across_reopen_even_when_all_acked() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let first = store
        .write(vec![append("vm1", 1), append("vm1", 2)])
        .await
        .unwrap();
    store.ack("vm1", first.clone()).await.unwrap();
    assert_eq!(store.outbox_len("vm1").unwrap(), 0);
    drop(store);
    let store = open(&dir);
    let second = store.write(vec![append("vm1", 3)]).await.unwrap();
    assert!(second[0] > first[1], "{second:?} after {first:?}");
}

#[tokio::test]
async fn ack_removes_and_is_idempotent() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let ids = store
        .write(vec![append("vm1", 1), append("vm1", 2), append("vm1", 3)])
        .await
        .unwrap();
    store.ack("vm1", vec![ids[0], ids[2]]).await.unwrap();
    let left = store.outbox("vm1", None, 10).unwrap();
    assert_eq!(
        left.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    // Again, plus ids that never existed: nothing changes, the count stays right.
    store
        .ack("vm1", vec![ids[0], ids[2], 999_999])
        .await
        .unwrap();
    assert_eq!(store.outbox_len("vm1").unwrap(), 1);
    store.ack("vm1", vec![]).await.unwrap();
    assert_eq!(store.outbox_len("vm1").unwrap(), 1);
}

#[tokio::test]
async fn sessions_are_isolated() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // "vm1" is a prefix of "vm10": a naive prefix scan would mix them.
    let a = store
        .write(vec![append("vm1", 1), append("vm10", 2)])
        .await
        .unwrap();
    let b = store.write(vec![append("vm1", 3)]).await.unwrap();
    let vm1: Vec<u64> = store
        .outbox("vm1", None, 10)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(vm1, vec![a[0], b[0]]);
    let vm10 = store.outbox("vm10", None, 10).unwrap();
    assert_eq!(vm10.len(), 1);
    assert_eq!(vm10[0].1, item(2));
    // Acking vm10's id through vm1 must not remove it.
    store.ack("vm1", vec![a[1]]).await.unwrap();
    assert_eq!(store.outbox_len("vm10").unwrap(), 1);
    assert_eq!(store.outbox_len("vm1").unwrap(), 2);
    assert!(store.outbox("other", None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn machine_state_round_trips_across_reopen() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut state = store.machine_state("vm1").unwrap();
    assert_eq!(state, MachineState::default());
    assert_eq!(state.take_seq(), 1);
    assert_eq!(state.take_seq(), 2);
    state.host_seq = 7;
    state.last_device_frame = Some(("0x21".into(), 42));
    store
        .write(vec![
            append("vm1", 1),
            Op::SetMachine {
                machine: "vm1".into(),
                state: state.clone(),
            },
        ])
        .await
        .unwrap();
    drop(store);
    let store = open(&dir);
    let mut back = store.machine_state("vm1").unwrap();
    assert_eq!(back, state);
    assert_eq!(back.take_seq(), 3);
    assert_eq!(store.machine_state("vm2").unwrap(), MachineState::default());
}

#[tokio::test]
async fn command_records_lifecycle() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store
        .write(vec![
            put("vm1", cmd("b", CommandPhase::Queued, 2_000)),
            put("vm1", cmd("a", CommandPhase::Queued, 1_000)),
            put("vm2", cmd("c", CommandPhase::Queued, 500)),
        ])
        .await
        .unwrap();
    let open_ids = |m: &str| -> Vec<String> {
        store
            .open_commands(m)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(open_ids("vm1"), ["a", "b"]);
    assert_eq!(open_ids("vm2"), ["c"]);

    store
        .write(vec![put("vm1", cmd("a", CommandPhase::Written, 1_000))])
        .await
        .unwrap();
    assert_eq!(
        store.command("vm1", "a").unwrap().unwrap().phase,
        CommandPhase::Written
    );
    assert_eq!(open_ids("vm1"), ["a", "b"]);

    let now = now_ms();
    store.write(vec![put("vm1", done("a", now))]).await.unwrap();
    assert_eq!(store.command("vm1", "a").unwrap(), Some(done("a", now)));
    assert_eq!(open_ids("vm1"), ["b"]);
    assert_eq!(store.command("vm1", "zzz").unwrap(), None);
    assert_eq!(store.command("vm2", "a").unwrap(), None);

    drop(store);
    let store = open(&dir);
    assert_eq!(store.command("vm1", "a").unwrap(), Some(done("a", now)));
    assert_eq!(
        store.open_commands("vm1").unwrap(),
        vec![cmd("b", CommandPhase::Queued, 2_000)]
    );
}

#[tokio::test]
async fn window_prunes_done_records_by_count_but_never_open_ones() {
    let dir = TempDir::new().unwrap();
    let opts = StoreOptions {
        id_window: 3,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let now = now_ms();
    store
        .write(vec![put(
            "vm1",
            cmd("q", CommandPhase::Queued, now - 10_000),
        )])
        .await
        .unwrap();
    for i in 0..5 {
        store
            .write(vec![put("vm1", done(&format!("d{i}"), now + i))])
            .await
            .unwrap();
    }
    // The same machine id on another machine is unaffected by vm1's window.
    store
        .write(vec![put("vm2", done("d0", now))])
        .await
        .unwrap();
    let kept: Vec<bool> = (0..5)
        .map(|i| store.command("vm1", &format!("d{i}")).unwrap().is_some())
        .collect();
    assert_eq!(kept, [false, false, true, true, true]);
    assert!(store.command("vm1", "q").unwrap().is_some());
    assert!(store.command("vm2", "d0").unwrap().is_some());
    // Re-putting an existing Done record must not inflate the count.
    store
        .write(vec![put("vm1", done("d4", now + 4))])
        .await
        .unwrap();
    assert!(store.command("vm1", "d2").unwrap().is_some());
}

#[tokio::test]
async fn window_prunes_done_records_by_age() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let now = now_ms();
    let week = 7 * 24 * 3600 * 1000;
    store
        .write(vec![
            put("vm1", done("old", now - week - 60_000)),
            put(
                "vm1",
                cmd("old-open", CommandPhase::Written, now - 2 * week),
            ),
            put("vm1", done("young", now - week + 60_000)),
        ])
        .await
        .unwrap();
    assert_eq!(store.command("vm1", "old").unwrap(), None);
    assert!(store.command("vm1", "young").unwrap().is_some());
    assert_eq!(store.open_commands("vm1").unwrap().len(), 1);
}

#[tokio::test]
async fn one_write_is_one_transaction() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let before = store.stats().commits;
    let ids = store
        .write(vec![
            append("vm1", 1),
            Op::SetMachine {
                machine: "vm1".into(),
                state: MachineState {
                    next_seq: 2,
                    ..Default::default()
                },
            },
            append("vm1", 2),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.stats().commits, before + 1);
    assert!(store.stats().bytes_written > 0);
    assert!(store.stats().syncs > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_serves_concurrent_writers() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let before = store.stats().commits;
    let tasks: Vec<_> = (0..50u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.write(vec![append(&format!("vm{}", i % 5), i)]).await })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap().unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 50, "every write got its own id");
    let total: u64 = (0..5)
        .map(|i| store.outbox_len(&format!("vm{i}")).unwrap())
        .sum();
    assert_eq!(total, 50);
    let commits = store.stats().commits - before;
    assert!(
        commits < 50,
        "expected grouped commits, got {commits} for 50 writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_does_not_fail_its_batch_neighbours() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let huge = OutItem {
        topic: "t".repeat(70_000),
        payload: vec![],
        qos: 1,
        retain: false,
        class: ItemClass::Event,
        correlation: None,
    };
    let release = store.hold_writer();
    let s = store.clone();
    let bad = tokio::spawn(async move {
        s.write(vec![
            append("vm1", 1),
            Op::Append {
                session: "vm1".into(),
                item: huge,
            },
        ])
        .await
    });
    let s = store.clone();
    let good = tokio::spawn(async move { s.write(vec![append("vm1", 2)]).await });
    // Both requests are queued behind the held writer, so they share one batch.
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    let bad = bad.await.unwrap();
    assert!(matches!(bad, Err(StoreError::TooLarge { .. })), "{bad:?}");
    assert_eq!(good.await.unwrap().unwrap().len(), 1);
    // The failed write left nothing behind: only the good item is stored.
    let items = store.outbox("vm1", None, 10).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].1, item(2));
    assert_eq!(store.outbox_len("vm1").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_together_share_one_commit() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let release = store.hold_writer();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = store.stats().commits;
    let tasks: Vec<_> = (0..20u32)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.write(vec![append("vm1", i)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // One commit for the held request, one for all twenty writes.
    let commits = store.stats().commits - before;
    assert!((1..=2).contains(&commits), "{commits} commits");
    assert_eq!(store.outbox_len("vm1").unwrap(), 20);
}

#[test]
fn second_open_reports_the_lock() {
    let dir = TempDir::new().unwrap();
    let _store = open(&dir);
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another vendgate"), "{err}");
}

#[tokio::test]
async fn dead_writer_gives_errors_not_hangs() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let killed = store.kill_writer().await;
    assert!(
        matches!(killed, Err(StoreError::WriterGone { .. })),
        "{killed:?}"
    );
    let res = tokio::time::timeout(Duration::from_secs(5), store.write(vec![append("vm1", 1)]))
        .await
        .expect("write must not hang");
    assert!(matches!(res, Err(StoreError::WriterGone { .. })), "{res:?}");
    // An ack only takes items out in memory; journaling them is what fails.
    let res = tokio::time::timeout(Duration::from_secs(5), store.ack("vm1", vec![1]))
        .await
        .expect("ack must not hang");
    assert!(res.is_ok());
    let res = tokio::time::timeout(Duration::from_secs(5), store.flush())
        .await
        .expect("flush must not hang");
    assert!(matches!(res, Err(StoreError::WriterGone { .. })), "{res:?}");
}

#[tokio::test]
async fn removals_ride_with_the_next_commit_or_are_journaled_within_the_delay() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let ids = store.write(vec![append("vm1", 1)]).await.unwrap();
    let commits = store.stats().commits;
    store.ack("vm1", ids.clone()).await.unwrap();
    assert_eq!(store.outbox_len("vm1").unwrap(), 0, "out at once");
    assert_eq!(store.stats().commits, commits, "no commit of its own yet");
    let more = store.write(vec![append("vm1", 2)]).await.unwrap();
    assert_eq!(store.stats().commits, commits + 1, "it rode along");
    store.ack("vm1", more).await.unwrap();
    tokio::time::sleep(REMOVAL_DELAY * 3).await;
    assert_eq!(
        store.stats().commits,
        commits + 2,
        "journaled after the delay"
    );
    drop(store);
    assert_eq!(open(&dir).outbox_len("vm1").unwrap(), 0);
}

#[test]
fn outbox_encoding_round_trips_and_rejects_garbage() {
    let it = item(3);
    assert_eq!(decode_out(&encode_out(&it).unwrap()).unwrap(), it);
    for bad in [
        &[][..],
        &[1, 1],
        &[2, 1, 0, 0, 0],
        &[1, 9, 0, 0, 0],
        &[1, 1, 0, 5, 0, b'a'],
        &[2, 7, 1, 0, 0, 0],
        &[2, 2, 1, 0, 0],
        &[3, 2, 1, 0, 0, 0],
    ] {
        assert!(decode_out(bad).is_err(), "{bad:?}");
    }
    for class in ItemClass::DROP_ORDER {
        let it = OutItem { class, ..item(4) };
        let bytes = encode_out(&it).unwrap();
        assert_eq!(decode_out(&bytes).unwrap(), it);
        assert_eq!(codec::class_of(&bytes).unwrap(), class);
    }
}

/// Items written before the class existed (encoding version 1) still decode, as
/// events: the class that is dropped last, so an upgrade can never lose them early.
#[test]
fn version_1_items_decode_as_events() {
    // version, qos, retain, topic length (LE), topic, payload
    let mut v1 = vec![1u8, 1, 1, 3, 0];
    v1.extend_from_slice(b"a/b{\"n\":1}");
    let expected = OutItem {
        topic: "a/b".into(),
        payload: b"{\"n\":1}".to_vec(),
        qos: 1,
        retain: true,
        class: ItemClass::Event,
        correlation: None,
    };
    assert_eq!(decode_out(&v1).unwrap(), expected);
    assert_eq!(codec::class_of(&v1).unwrap(), ItemClass::Event);
    // Re-encoding writes the current version, one byte longer for the class.
    let v2 = encode_out(&expected).unwrap();
    assert_eq!(v2[0], 2);
    assert_eq!(v2.len(), v1.len() + 1);
}

/// An item of a fixed encoded size, so a cap can be stated in items.
fn sized(n: u32, class: ItemClass) -> OutItem {
    OutItem {
        topic: format!("vending/vm/x/{n:04}"),
        payload: vec![b'p'; 100],
        qos: 1,
        retain: false,
        class,
        correlation: None,
    }
}

fn item_size() -> u64 {
    encode_out(&sized(0, ItemClass::Event)).unwrap().len() as u64
}

fn capped(dir: &TempDir, items: u64) -> Store {
    let opts = StoreOptions {
        max_bytes: items * item_size(),
        ..StoreOptions::default()
    };
    Store::open(dir.path(), opts).unwrap()
}

/// (session, n) of every item left, per session in outbox order.
fn left(store: &Store, sessions: &[&str]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for s in sessions {
        for (_, it) in store.outbox(s, None, 1000).unwrap() {
            let n = it.topic.rsplit('/').next().unwrap().parse().unwrap();
            out.push((s.to_string(), n));
        }
    }
    out
}

fn ops(items: &[(&str, u32, ItemClass)]) -> Vec<Op> {
    items
        .iter()
        .map(|&(s, n, class)| Op::Append {
            session: s.into(),
            item: sized(n, class),
        })
        .collect()
}

fn dropped(store: &Store) -> (u64, u64, u64) {
    let s = store.stats();
    (s.dropped_telemetry, s.dropped_results, s.dropped_events)
}

#[tokio::test]
async fn cap_drops_oldest_telemetry_then_results_then_events() {
    use ItemClass::{Event as E, Result as R, Telemetry as T};
    let dir = TempDir::new().unwrap();
    let size = item_size();
    let store = capped(&dir, 10);
    // 8 items, under the cap of 10. vm2 holds some of the oldest, so "oldest" is
    // checked across sessions.
    store
        .write(ops(&[
            ("vm1", 1, E),
            ("vm1", 2, T),
            ("vm1", 3, R),
            ("vm1", 4, E),
            ("vm2", 5, T),
            ("vm2", 6, R),
            ("vm1", 7, E),
            ("vm1", 8, T),
        ]))
        .await
        .unwrap();
    assert_eq!(dropped(&store), (0, 0, 0));
    assert_eq!(store.stats().outbox_bytes, 8 * size);

    // 12 items: the two oldest telemetry items go, one per session.
    store
        .write(ops(&[
            ("vm1", 9, E),
            ("vm1", 10, T),
            ("vm1", 11, R),
            ("vm1", 12, E),
        ]))
        .await
        .unwrap();
    assert_eq!(dropped(&store), (2, 0, 0));
    let v = |s: &str, ns: &[u32]| ns.iter().map(|&n| (s.to_string(), n)).collect::<Vec<_>>();
    let expected = [v("vm1", &[1, 3, 4, 7, 8, 9, 10, 11, 12]), v("vm2", &[6])].concat();
    assert_eq!(left(&store, &["vm1", "vm2"]), expected);
    assert_eq!(store.outbox_len("vm2").unwrap(), 1);

    // 14 items: the remaining telemetry (8, and 10 from the previous write), then
    // the two oldest results (3 in vm1, 6 in vm2); no event is touched.
    store
        .write(ops(&[
            ("vm1", 13, E),
            ("vm1", 14, E),
            ("vm1", 15, E),
            ("vm1", 16, E),
        ]))
        .await
        .unwrap();
    assert_eq!(dropped(&store), (4, 2, 0));
    let expected = v("vm1", &[1, 4, 7, 9, 11, 12, 13, 14, 15, 16]);
    assert_eq!(left(&store, &["vm1", "vm2"]), expected);
    assert_eq!(store.outbox_len("vm2").unwrap(), 0);

    // 13 items: the last result, then the two oldest events. The new telemetry
    // item is lower than every result and event, so it goes first although newest.
    store
        .write(ops(&[("vm2", 17, E), ("vm2", 18, T), ("vm2", 19, E)]))
        .await
        .unwrap();
    assert_eq!(dropped(&store), (5, 3, 1));
    let expected = [
        v("vm1", &[4, 7, 9, 12, 13, 14, 15, 16]),
        v("vm2", &[17, 19]),
    ]
    .concat();
    assert_eq!(left(&store, &["vm1", "vm2"]), expected);
    assert_eq!(store.outbox_len("vm1").unwrap(), 8);
    assert_eq!(store.outbox_len("vm2").unwrap(), 2);
    assert_eq!(store.stats().outbox_bytes, 10 * size);

    // Counters and the byte total are persisted.
    drop(store);
    let store = capped(&dir, 10);
    assert_eq!(dropped(&store), (5, 3, 1));
    assert_eq!(store.stats().outbox_bytes, 10 * size);
    assert_eq!(left(&store, &["vm1", "vm2"]), expected);

    // Acks free room: after acking vm1, five more fit without a drop.
    let ids: Vec<u64> = store
        .outbox("vm1", None, 100)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    store.ack("vm1", ids).await.unwrap();
    assert_eq!(store.stats().outbox_bytes, 2 * size);
    store
        .write(ops(&[("vm1", 20, T), ("vm1", 21, R), ("vm1", 22, E)]))
        .await
        .unwrap();
    assert_eq!(dropped(&store), (5, 3, 1));
    assert_eq!(store.stats().outbox_bytes, 5 * size);
    drop(store);
    let store = capped(&dir, 10);
    assert_eq!(store.stats().outbox_bytes, 5 * size);
    assert_eq!(dropped(&store), (5, 3, 1));
}

#[tokio::test]
async fn byte_total_follows_appends_and_acks_across_reopen() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let items = [item(1), item(22), item(333)];
    let sizes: Vec<u64> = items
        .iter()
        .map(|it| encode_out(it).unwrap().len() as u64)
        .collect();
    let ids = store
        .write(
            items
                .iter()
                .map(|it| Op::Append {
                    session: "vm1".into(),
                    item: it.clone(),
                })
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(store.stats().outbox_bytes, sizes.iter().sum::<u64>());
    // Acks of unknown ids, or through the wrong session, change nothing.
    store.ack("vm1", vec![ids[1], 999_999]).await.unwrap();
    store.ack("vm2", vec![ids[0]]).await.unwrap();
    assert_eq!(store.stats().outbox_bytes, sizes[0] + sizes[2]);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.stats().outbox_bytes, sizes[0] + sizes[2]);
    store.ack("vm1", vec![ids[0], ids[2]]).await.unwrap();
    assert_eq!(store.stats().outbox_bytes, 0);
    assert_eq!(dropped(&store), (0, 0, 0));
    drop(store);
    assert_eq!(open(&dir).stats().outbox_bytes, 0);
}

#[tokio::test]
async fn batch_steps_are_stored_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let put = Op::PutBatch {
        machine: "m".into(),
        id: "b1".into(),
        steps_json: "[{\"cmd\":\"buy\"}]".into(),
    };
    store.write(vec![put]).await.unwrap();
    assert_eq!(
        store.batch("m", "b1").unwrap().as_deref(),
        Some("[{\"cmd\":\"buy\"}]")
    );
    assert_eq!(store.batch("m", "b2").unwrap(), None);
    let remove = Op::RemoveBatch {
        machine: "m".into(),
        id: "b1".into(),
    };
    store.write(vec![remove]).await.unwrap();
    assert_eq!(store.batch("m", "b1").unwrap(), None);
}

#[test]
fn records_without_progress_still_decode() {
    let old = r#"{"id":"a","command":"drive","phase":"Queued","at_ms":5}"#;
    let record: CommandRecord = serde_json::from_str(old).unwrap();
    assert_eq!(record.progress, None);
}

/// A reply to an MQTT 5 Response Topic keeps its correlation data across the
/// store (encoding version 3); items without any keep the shorter version 2.
#[test]
fn correlation_data_round_trips_and_truncation_is_an_error() {
    let reply = OutItem {
        correlation: Some(b"corr-\x00\xff".to_vec()),
        class: ItemClass::Result,
        ..item(7)
    };
    let bytes = encode_out(&reply).unwrap();
    assert_eq!(bytes[0], 3);
    assert_eq!(decode_out(&bytes).unwrap(), reply);
    assert_eq!(codec::class_of(&bytes).unwrap(), ItemClass::Result);
    assert_eq!(encode_out(&item(7)).unwrap()[0], 2);
    // Every prefix of a valid record is refused, never misread or a panic.
    let topic_end = 6 + reply.topic.len();
    for cut in 0..topic_end + 2 {
        assert!(decode_out(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let err = decode_out(&bytes[..topic_end + 3]).unwrap_err();
    assert!(err.contains("correlation data length 7 exceeds"), "{err}");
}
