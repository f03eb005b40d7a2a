//! Property: any sequence of appends, acks, failing writes, full disks,
//! reopens and crashes (unsynced writes kept, torn or lost) reads back what
//! was committed, in order, exactly once; an acknowledged item may come back
//! only while its removal was not yet synced; an id is never given twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;

use super::super::journal::disk::mem::MemDir;
use super::*;

#[derive(Debug, Clone)]
enum Step {
    /// `n` events for machine `m` in one write.
    Append {
        m: usize,
        n: usize,
        big: bool,
    },
    /// Acknowledge the oldest `k` items of machine `m`.
    Ack {
        m: usize,
        k: usize,
    },
    /// A write while the disk fails (EIO half-way) or is full.
    Failing {
        m: usize,
        full: bool,
    },
    Reopen,
    /// Power loss: per segment, `keep` unsynced writes survive, the next is
    /// cut after `tear` bytes.
    Crash {
        keep: usize,
        tear: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, 1..4usize, any::<bool>()).prop_map(|(m, n, big)| Step::Append { m, n, big }),
        4 => (0..2usize, 0..5usize).prop_map(|(m, k)| Step::Ack { m, k }),
        1 => (0..2usize, any::<bool>()).prop_map(|(m, full)| Step::Failing { m, full }),
        1 => Just(Step::Reopen),
        2 => (0..3usize, 0..200usize).prop_map(|(keep, tear)| Step::Crash { keep, tear }),
    ]
}

const MACHINES: [&str; 2] = ["vm-a", "vm-b"];

fn ops(m: usize, from: u64, n: usize, big: bool) -> Vec<Op> {
    let machine = MACHINES[m];
    let mut ops = Vec::new();
    for seq in from..from + n as u64 {
        let pad = if big { 700 } else { 10 };
        ops.push(Op::Append {
            session: machine.into(),
            item: OutItem {
                topic: format!("v/{machine}/event"),
                payload: format!("{seq}:{}", "x".repeat(pad)).into_bytes(),
                qos: 1,
                retain: false,
                class: ItemClass::Event,
                correlation: None,
            },
        });
    }
    ops.push(Op::SetMachine {
        machine: machine.into(),
        state: MachineState {
            next_seq: from + n as u64,
            ..MachineState::default()
        },
    });
    ops
}

/// What the store must hold: per machine, the committed items not yet
/// acknowledged (id -> seq), those acknowledged (which may come back after a
/// crash), and the next seq.
#[derive(Default)]
struct Model {
    live: [BTreeMap<u64, u64>; 2],
    acked: [BTreeMap<u64, u64>; 2],
    next_seq: [u64; 2],
    ids: BTreeSet<u64>,
}

fn open_on(disk: &Arc<MemDir>) -> Store {
    let opts = StoreOptions {
        segment_len: 2048,
        ..StoreOptions::default()
    };
    Store::start(disk.clone(), PathBuf::from("mem"), opts, None).unwrap()
}

fn read(store: &Store, m: usize) -> Vec<(u64, u64)> {
    store
        .outbox(MACHINES[m], None, 100_000)
        .unwrap()
        .into_iter()
        .map(|(id, it)| {
            let text = String::from_utf8(it.payload).unwrap();
            (id, text.split(':').next().unwrap().parse().unwrap())
        })
        .collect()
}

/// Checks the store against the model after a reopen or crash, and takes
/// back into the model the acknowledged items that came back.
fn check(store: &Store, model: &mut Model) {
    for (m, machine) in MACHINES.iter().enumerate() {
        let got = read(store, m);
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
        let got: BTreeMap<u64, u64> = got.into_iter().collect();
        for (id, seq) in &model.live[m] {
            assert_eq!(got.get(id), Some(seq), "committed item {id} lost");
        }
        for (id, seq) in &got {
            if !model.live[m].contains_key(id) {
                let back = model.acked[m].remove(id);
                assert_eq!(back, Some(*seq), "item {id} was never committed");
                model.live[m].insert(*id, *seq);
            }
        }
        let next = store.machine_state(machine).unwrap().next_seq;
        assert_eq!(next.max(1), model.next_seq[m].max(1), "{machine}");
    }
}

async fn run(steps: Vec<Step>) {
    let disk = Arc::new(MemDir::default());
    let mut store = open_on(&disk);
    let mut model = Model::default();
    for step in steps {
        match step {
            Step::Append { m, n, big } => {
                let from = model.next_seq[m].max(1);
                let ids = store.write(ops(m, from, n, big)).await.unwrap();
                for (i, id) in ids.into_iter().enumerate() {
                    assert!(model.ids.insert(id), "id {id} given twice");
                    model.live[m].insert(id, from + i as u64);
                }
                model.next_seq[m] = from + n as u64;
            }
            Step::Ack { m, k } => {
                let oldest: Vec<(u64, u64)> = model.live[m]
                    .iter()
                    .take(k)
                    .map(|(a, b)| (*a, *b))
                    .collect();
                let ids = oldest.iter().map(|(id, _)| *id).collect();
                store.ack(MACHINES[m], ids).await.unwrap();
                for (id, seq) in oldest {
                    model.live[m].remove(&id);
                    model.acked[m].insert(id, seq);
                }
            }
            Step::Failing { m, full } => {
                let fault = if full {
                    &disk.faults.full
                } else {
                    &disk.faults.broken
                };
                fault.store(true, Ordering::Relaxed);
                let from = model.next_seq[m].max(1);
                let res = store.write(ops(m, from, 1, true)).await;
                fault.store(false, Ordering::Relaxed);
                if let Ok(ids) = res {
                    // A full disk only matters at a roll; this one fit.
                    for id in ids {
                        assert!(model.ids.insert(id), "id {id} given twice");
                        model.live[m].insert(id, from);
                    }
                    model.next_seq[m] = from + 1;
                }
            }
            Step::Reopen => {
                drop(store);
                store = open_on(&disk);
                check(&store, &mut model);
            }
            Step::Crash { keep, tear } => {
                drop(store);
                disk.crash(keep, tear);
                store = open_on(&disk);
                check(&store, &mut model);
            }
        }
    }
    drop(store);
    disk.crash(0, 0);
    check(&open_on(&disk), &mut model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn what_was_committed_is_read_back_in_order_exactly_once(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(steps));
    }
}
