//! Everything the store holds, in memory, and the two pure steps that change
//! it: [`State::plan`] turns a group of requests into the mutations of one
//! commit (ids given, acks resolved, the size cap's victims chosen), and
//! [`State::apply`] applies a commit's mutations, live after the commit is on
//! disk and at open while the journal is read back. No I/O here; outbox item
//! bytes stay in the journal and only their place is kept ([`Loc`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::codec::encode_out;
use super::{CommandPhase, CommandRecord, ItemClass, MachineState, Op, StoreOptions};

/// Where an outbox item's encoded bytes are in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u64,
    pub(crate) at: u64,
    pub(crate) len: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) session: Arc<str>,
    pub(crate) class: ItemClass,
    pub(crate) loc: Loc,
}

/// One change of a commit, as journaled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mutation {
    /// An outbox item (encoded), new or moved to a newer segment under its id.
    Put {
        session: String,
        id: u64,
        item: Vec<u8>,
    },
    /// Delivered: acknowledged by the broker.
    Remove {
        id: u64,
    },
    /// Dropped by the size cap.
    Drop {
        id: u64,
    },
    Machine {
        machine: String,
        state: MachineState,
    },
    Command {
        machine: String,
        record: CommandRecord,
    },
    PutBatch {
        machine: String,
        id: String,
        steps: String,
    },
    RemoveBatch {
        machine: String,
        id: String,
    },
}

/// A request as the writer received it: the ops of one `Store::write`.
pub(crate) struct Change<'a>(pub(crate) &'a [Op]);

/// What [`State::plan`] decided for a group of writes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) mutations: Vec<Mutation>,
    /// Per request: the ids of its appends, or why an item of it cannot be
    /// stored (the request then contributes no mutation).
    pub(crate) replies: Vec<Result<Vec<u64>, String>>,
    /// Items the size cap drops, per class ([`ItemClass::as_u8`]).
    pub(crate) dropped_now: [u64; 3],
}

/// A machine's command records, indexed by age for `open_commands` and for
/// pruning the id window.
#[derive(Debug, Default, Clone)]
pub(crate) struct Commands {
    pub(crate) records: HashMap<String, CommandRecord>,
    open: BTreeSet<(i64, String)>,
    done: BTreeSet<(i64, String)>,
}

impl Commands {
    fn put(&mut self, record: CommandRecord) {
        if let Some(old) = self.records.get(&record.id) {
            let key = (old.at_ms, old.id.clone());
            self.open.remove(&key);
            self.done.remove(&key);
        }
        let key = (record.at_ms, record.id.clone());
        if matches!(record.phase, CommandPhase::Done { .. }) {
            self.done.insert(key);
        } else {
            self.open.insert(key);
        }
        self.records.insert(record.id.clone(), record);
    }

    /// Drops the oldest Done records while there are more than `id_window`
    /// or they are older than `id_ttl`; Queued/Written ones are kept.
    fn prune(&mut self, opts: &StoreOptions, now_ms: i64) {
        let ttl_ms = i64::try_from(opts.id_ttl.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(ttl_ms);
        while let Some((at, id)) = self.done.first().cloned() {
            if self.done.len() <= opts.id_window && at >= cutoff {
                break;
            }
            self.done.pop_first();
            self.records.remove(&id);
        }
    }

    /// Queued and Written commands, oldest first.
    pub(crate) fn open(&self) -> impl Iterator<Item = &CommandRecord> {
        self.open.iter().filter_map(|(_, id)| self.records.get(id))
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) items: BTreeMap<u64, Item>,
    pub(crate) sessions: HashMap<Arc<str>, BTreeSet<u64>>,
    /// Ids of telemetry and results (the cap drops those first), by class.
    by_class: [BTreeSet<u64>; 2],
    pub(crate) outbox_bytes: u64,
    /// Items alive per segment: a segment with none can be recycled.
    pub(crate) live: BTreeMap<u64, u64>,
    pub(crate) dropped: [u64; 3],
    pub(crate) machines: HashMap<String, MachineState>,
    pub(crate) commands: HashMap<String, Commands>,
    pub(crate) batches: HashMap<(String, String), String>,
    /// The next outbox id: above every id ever given, also across restarts
    /// (the snapshot of each segment carries it).
    pub(crate) next_id: u64,
}

fn class_slot(class: ItemClass) -> Option<usize> {
    match class {
        ItemClass::Telemetry => Some(0),
        ItemClass::Result => Some(1),
        ItemClass::Event => None,
    }
}

impl State {
    pub(crate) fn new() -> State {
        State {
            next_id: 1,
            ..State::default()
        }
    }

    /// Decides one commit for `changes`. Pure: the state changes only when
    /// the commit is on disk and its mutations are applied (removals of
    /// delivered items aside, see [`State::deliver`]).
    pub(crate) fn plan(&self, changes: &[Change<'_>], opts: &StoreOptions) -> Plan {
        let mut plan = Plan::default();
        let mut next_id = self.next_id.max(1);
        let mut bytes = self.outbox_bytes;
        let mut gone: HashSet<u64> = HashSet::new();
        let mut added: Vec<(u64, ItemClass, u64)> = Vec::new();
        for Change(ops) in changes {
            let mut ids = Vec::new();
            let mut muts = Vec::new();
            let mut new = Vec::new();
            let refused = ops.iter().try_for_each(|op| {
                muts.push(self.plan_op(op, &mut next_id, &mut ids, &mut new)?);
                Ok::<_, String>(())
            });
            match refused {
                Ok(()) => {
                    bytes += new.iter().map(|&(_, _, len)| len).sum::<u64>();
                    added.extend(new);
                    plan.mutations.extend(muts);
                    plan.replies.push(Ok(ids));
                }
                Err(e) => plan.replies.push(Err(e)),
            }
        }
        if !added.is_empty() && bytes > opts.max_bytes {
            self.plan_cap(&mut plan, &mut gone, &added, bytes, opts.max_bytes);
        }
        plan
    }

    fn plan_op(
        &self,
        op: &Op,
        next_id: &mut u64,
        ids: &mut Vec<u64>,
        new: &mut Vec<(u64, ItemClass, u64)>,
    ) -> Result<Mutation, String> {
        Ok(match op {
            Op::Append { session, item } => {
                let encoded = encode_out(item)?;
                let id = *next_id;
                *next_id += 1;
                ids.push(id);
                new.push((id, item.class, encoded.len() as u64));
                Mutation::Put {
                    session: session.clone(),
                    id,
                    item: encoded,
                }
            }
            Op::SetMachine { machine, state } => Mutation::Machine {
                machine: machine.clone(),
                state: state.clone(),
            },
            Op::PutCommand { machine, record } => Mutation::Command {
                machine: machine.clone(),
                record: record.clone(),
            },
            Op::PutBatch {
                machine,
                id,
                steps_json,
            } => Mutation::PutBatch {
                machine: machine.clone(),
                id: id.clone(),
                steps: steps_json.clone(),
            },
            Op::RemoveBatch { machine, id } => Mutation::RemoveBatch {
                machine: machine.clone(),
                id: id.clone(),
            },
        })
    }

    /// Drops the oldest items of the lowest class present until the total is
    /// at most `max`: telemetry, then results, then events; within a class
    /// stored items before this commit's (ids only grow).
    fn plan_cap(
        &self,
        plan: &mut Plan,
        gone: &mut HashSet<u64>,
        added: &[(u64, ItemClass, u64)],
        mut bytes: u64,
        max: u64,
    ) {
        for class in ItemClass::DROP_ORDER {
            let stored: Box<dyn Iterator<Item = (u64, u64)> + '_> = match class_slot(class) {
                Some(slot) => Box::new(self.by_class[slot].iter().filter_map(|id| {
                    let item = self.items.get(id)?;
                    Some((*id, u64::from(item.loc.len)))
                })),
                // Once no telemetry or result is left, the oldest item is the oldest event.
                None => Box::new(
                    self.items
                        .iter()
                        .map(|(id, item)| (*id, u64::from(item.loc.len))),
                ),
            };
            let fresh = added
                .iter()
                .filter(|(_, c, _)| *c == class)
                .map(|&(id, _, len)| (id, len));
            for (id, len) in stored.chain(fresh) {
                if bytes <= max {
                    return;
                }
                if !gone.insert(id) {
                    continue;
                }
                bytes = bytes.saturating_sub(len);
                plan.mutations.push(Mutation::Drop { id });
                plan.dropped_now[usize::from(class.as_u8())] += 1;
            }
        }
    }

    /// Applies one commit. `locs` are the places of its Put items, in order.
    pub(crate) fn apply(
        &mut self,
        mutations: Vec<Mutation>,
        mut locs: impl Iterator<Item = Loc>,
        opts: &StoreOptions,
        now_ms: i64,
    ) -> Result<(), String> {
        for m in mutations {
            match m {
                Mutation::Put { session, id, item } => {
                    let loc = locs.next().ok_or("a put without its place")?;
                    let class = super::codec::class_of(&item)?;
                    self.put(&session, id, class, loc);
                }
                Mutation::Remove { id } => {
                    self.remove(id);
                }
                Mutation::Drop { id } => {
                    if let Some(class) = self.remove(id) {
                        self.dropped[usize::from(class.as_u8())] += 1;
                    }
                }
                Mutation::Machine { machine, state } => {
                    self.machines.insert(machine, state);
                }
                Mutation::Command { machine, record } => {
                    let cmds = self.commands.entry(machine).or_default();
                    cmds.put(record);
                    cmds.prune(opts, now_ms);
                }
                Mutation::PutBatch { machine, id, steps } => {
                    self.batches.insert((machine, id), steps);
                }
                Mutation::RemoveBatch { machine, id } => {
                    self.batches.remove(&(machine, id));
                }
            }
        }
        Ok(())
    }

    fn put(&mut self, session: &str, id: u64, class: ItemClass, loc: Loc) {
        if let Some(old) = self.items.get_mut(&id) {
            // Moved forward by a compaction: same item, new place.
            let from = std::mem::replace(&mut old.loc, loc);
            self.outbox_bytes = self.outbox_bytes - u64::from(from.len) + u64::from(loc.len);
            dec(&mut self.live, from.segment);
            *self.live.entry(loc.segment).or_default() += 1;
            return;
        }
        let session: Arc<str> = match self.sessions.get_key_value(session) {
            Some((s, _)) => s.clone(),
            None => Arc::from(session),
        };
        self.sessions.entry(session.clone()).or_default().insert(id);
        if let Some(slot) = class_slot(class) {
            self.by_class[slot].insert(id);
        }
        self.outbox_bytes += u64::from(loc.len);
        *self.live.entry(loc.segment).or_default() += 1;
        self.next_id = self.next_id.max(id + 1);
        self.items.insert(
            id,
            Item {
                session,
                class,
                loc,
            },
        );
    }

    /// An item the broker acknowledged, taken out at once (see `Store::ack`).
    /// False if the session holds no such item.
    pub(crate) fn deliver(&mut self, session: &str, id: u64) -> bool {
        let ours = self.items.get(&id).is_some_and(|i| &*i.session == session);
        ours && self.remove(id).is_some()
    }

    fn remove(&mut self, id: u64) -> Option<ItemClass> {
        let item = self.items.remove(&id)?;
        if let Some(ids) = self.sessions.get_mut(&item.session) {
            ids.remove(&id);
            if ids.is_empty() {
                self.sessions.remove(&item.session);
            }
        }
        if let Some(slot) = class_slot(item.class) {
            self.by_class[slot].remove(&id);
        }
        self.outbox_bytes = self.outbox_bytes.saturating_sub(u64::from(item.loc.len));
        dec(&mut self.live, item.loc.segment);
        Some(item.class)
    }

    /// Items of a session with id > `after`, ascending, at most `limit`.
    pub(crate) fn outbox(
        &self,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<(u64, Loc)> {
        let Some(ids) = self.sessions.get(session) else {
            return Vec::new();
        };
        let from = match after {
            Some(a) => std::ops::Bound::Excluded(a),
            None => std::ops::Bound::Unbounded,
        };
        ids.range((from, std::ops::Bound::Unbounded))
            .take(limit)
            .filter_map(|id| Some((*id, self.items.get(id)?.loc)))
            .collect()
    }

    pub(crate) fn outbox_len(&self, session: &str) -> u64 {
        self.sessions.get(session).map_or(0, |s| s.len() as u64)
    }

    /// Live items of a segment, to move them forward before recycling it.
    pub(crate) fn items_in(&self, segment: u64) -> Vec<(u64, Arc<str>, Loc)> {
        self.items
            .iter()
            .filter(|(_, item)| item.loc.segment == segment)
            .map(|(id, item)| (*id, item.session.clone(), item.loc))
            .collect()
    }
}

fn dec(live: &mut BTreeMap<u64, u64>, segment: u64) {
    if let Some(n) = live.get_mut(&segment) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            live.remove(&segment);
        }
    }
}

/// Where the items of a commit's Puts are: the commit's body starts at `at`
/// in `segment`, and `item_at` are the items' offsets in the body, in order.
pub(crate) fn put_locs(
    mutations: &[Mutation],
    segment: u64,
    at: u64,
    item_at: Vec<u64>,
) -> Vec<Loc> {
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Put { item, .. } => Some(item.len()),
            _ => None,
        })
        .zip(item_at)
        .map(|(len, off)| Loc {
            segment,
            at: at + off,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        })
        .collect()
}

/// The state of a snapshot: what a segment header carries. Outbox items are
/// not in it: they stay where they were written.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) next_id: u64,
    pub(crate) dropped: [u64; 3],
    pub(crate) machines: Vec<(String, MachineState)>,
    pub(crate) commands: Vec<(String, CommandRecord)>,
    pub(crate) batches: Vec<(String, String, String)>,
}

impl State {
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut machines: Vec<_> = self
            .machines
            .iter()
            .map(|(m, s)| (m.clone(), s.clone()))
            .collect();
        machines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut commands = Vec::new();
        for (machine, cmds) in &self.commands {
            // Oldest first within each index, so that pruning at replay keeps
            // what it kept live.
            for (_, id) in cmds.done.iter().chain(cmds.open.iter()) {
                if let Some(r) = cmds.records.get(id) {
                    commands.push((machine.clone(), r.clone()));
                }
            }
        }
        let mut batches: Vec<_> = self
            .batches
            .iter()
            .map(|((m, id), s)| (m.clone(), id.clone(), s.clone()))
            .collect();
        batches.sort();
        Snapshot {
            next_id: self.next_id,
            dropped: self.dropped,
            machines,
            commands,
            batches,
        }
    }

    /// Replaces everything but the outbox with a snapshot's content.
    pub(crate) fn restore(&mut self, snap: Snapshot, opts: &StoreOptions, now_ms: i64) {
        self.next_id = self.next_id.max(snap.next_id).max(1);
        self.dropped = snap.dropped;
        self.machines = snap.machines.into_iter().collect();
        self.commands.clear();
        for (machine, record) in snap.commands {
            self.commands.entry(machine).or_default().put(record);
        }
        for cmds in self.commands.values_mut() {
            cmds.prune(opts, now_ms);
        }
        self.batches = snap
            .batches
            .into_iter()
            .map(|(m, id, s)| ((m, id), s))
            .collect();
    }
}
