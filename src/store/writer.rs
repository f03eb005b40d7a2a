//! The single writer thread. redb allows one write transaction at a time and each
//! durable commit costs an fsync, so every request waiting in the channel is applied
//! in one transaction and committed once: N devices writing together pay one fsync.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::error::At;
use super::tables::*;
use super::{
    CommandPhase, CommandRecord, Counters, ItemClass, Op, OutItem, StoreError, StoreOptions,
};

/// Caps one transaction so a flood cannot make a single commit (and every reply
/// waiting on it) arbitrarily slow.
const MAX_BATCH: usize = 256;

pub(crate) enum Kind {
    Write(Vec<Op>),
    Ack {
        session: String,
        ids: Vec<u64>,
    },
    /// Lets tests kill the thread to check that callers get an error instead of hanging.
    #[cfg(test)]
    Panic,
    /// Lets tests hold the writer until the receiver fires, so the requests queued
    /// meanwhile are guaranteed to land in one batch.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
}

pub(crate) struct Request {
    pub(crate) kind: Kind,
    /// Ids of the Append ops, in order (empty for acks). Sent only after the commit.
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>, StoreError>>,
}

pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) path: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) commits: Arc<AtomicU64>,
    pub(crate) counters: Arc<Counters>,
    /// Ack-only commits since the last durable one.
    pub(crate) lazy_commits: u64,
    pub(crate) ids: IdCursor,
}

/// Transactions that hand out outbox ids past the persisted bound raise it by
/// this many more, so the bound costs one META write per this many ids.
pub(crate) const ID_BLOCK: u64 = 4096;

/// Where outbox ids continue.
///
/// An id must never be handed out while an item with that id is stored: the
/// insert would replace the item, and lose it. So:
///
/// - While the process runs, `next` only grows, also past the ids of a
///   transaction that failed (after a failed commit redb cannot say whether
///   it reached the disk).
/// - At open, `next` starts above both the persisted bound and the largest id
///   in OUTBOX. The bound is raised in the same transaction as the appends
///   that pass it, and a transaction with appends is always durable (only
///   ack-only commits skip the fsync, see [`LAZY_ACK_COMMITS`]), so after a
///   crash the bound on disk covers every id on disk. Items whose lazy
///   removal a crash undid come back with their old ids, below both.
///
/// The largest stored id alone would keep the store correct: nothing holds
/// outbox ids across a restart (the sender's cursor, held set and in-flight
/// tags live in memory, per process). But it would reuse ids whenever the
/// outbox was empty at a restart, which makes log lines naming ids
/// ambiguous, and an earlier vendgate opening this file takes
/// NEXT_OUTBOX_ID as its next id. The bound keeps ids unique for good at
/// one META write per [`ID_BLOCK`] ids instead of one per commit.
#[derive(Debug)]
pub(crate) struct IdCursor {
    next: u64,
    /// NEXT_OUTBOX_ID as last committed (0 if absent): ids below it may be
    /// handed out without writing it again.
    bound: u64,
}

impl IdCursor {
    /// `bound`: NEXT_OUTBOX_ID if stored; `max_id`: the largest id in OUTBOX
    /// (0 if empty).
    pub(crate) fn at_open(bound: Option<u64>, max_id: u64) -> IdCursor {
        let bound = bound.unwrap_or(0);
        IdCursor {
            next: bound.max(max_id.saturating_add(1)).max(1),
            bound,
        }
    }

    fn take(&mut self) -> u64 {
        let id = self.next;
        self.next = id.saturating_add(1);
        id
    }

    /// The new bound to store with this transaction, if its ids passed the old one.
    fn bound_needed(&self) -> Option<u64> {
        (self.next > self.bound).then(|| self.next.saturating_add(ID_BLOCK))
    }
}

/// At most this many ack-only commits in a row skip the fsync.
const LAZY_ACK_COMMITS: u64 = 64;

impl Writer {
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        #[cfg(test)]
        if batch.iter().any(|r| matches!(r.kind, Kind::Panic)) {
            panic!("store writer killed by test");
        }
        #[cfg(test)]
        for req in &batch {
            if let Kind::Hold(rx) = &req.kind {
                let _ = rx.recv();
            }
        }
        let kinds: Vec<&Kind> = batch.iter().map(|r| &r.kind).collect();
        match self.commit(&kinds) {
            Ok(results) => {
                for (req, ids) in batch.into_iter().zip(results) {
                    // The caller may have given up (task cancelled); the data is stored anyway.
                    let _ = req.reply.send(Ok(ids));
                }
            }
            Err(Failure::Apply(err)) if batch.len() > 1 => {
                // One bad request (say, an oversized item) must not fail its neighbours,
                // so retry each on its own; the aborted transaction left nothing behind.
                tracing::warn!(error = %err, n = batch.len(), "group commit failed; retrying requests one by one");
                for req in batch {
                    let res = self
                        .commit(&[&req.kind])
                        .map(|mut r| r.pop().unwrap_or_default())
                        .map_err(Failure::into_inner);
                    let _ = req.reply.send(res);
                }
            }
            // A failed commit is not retried: it is not caused by one request, and after an
            // I/O error redb cannot tell us whether the data reached the disk, so a retry
            // could store events twice. Callers see the error and do not ACK the frame.
            Err(err) => {
                let err = err.into_inner();
                for req in batch {
                    let _ = req.reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn commit(&mut self, kinds: &[&Kind]) -> Result<Vec<Vec<u64>>, Failure> {
        let mut txn = self
            .db
            .begin_write()
            .at(&self.path)
            .map_err(Failure::Commit)?;
        // Removing acknowledged items need not be fsynced: lost in a crash,
        // they are only published again (same `seq`, dropped by consumers).
        // This halves the flash writes of a steady event stream. Every
        // `LAZY_ACK_COMMITS`-th one is durable anyway to bound the repeats
        // and let redb free pages.
        let acks_only = kinds.iter().all(|k| matches!(k, Kind::Ack { .. }));
        let lazy = acks_only && self.lazy_commits < LAZY_ACK_COMMITS;
        let durability = if lazy {
            Durability::None
        } else {
            Durability::Immediate
        };
        txn.set_durability(durability)
            .at(&self.path)
            .map_err(Failure::Commit)?;
        let bytes = self.counters.outbox_bytes.load(Ordering::Relaxed);
        let applied = apply(&txn, &self.path, &self.opts, kinds, &mut self.ids, bytes);
        let (results, totals) = match applied {
            Ok(applied) => applied,
            Err(err) => {
                // Nothing of the batch lands; an abort error changes nothing for the caller.
                let _ = txn.abort();
                return Err(Failure::Apply(err));
            }
        };
        txn.commit().at(&self.path).map_err(Failure::Commit)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        if lazy {
            self.lazy_commits += 1;
        } else {
            self.lazy_commits = 0;
        }
        // Only now is it true: an aborted transaction stored and dropped nothing.
        if let Some(bound) = totals.id_bound {
            self.ids.bound = bound;
        }
        self.counters
            .outbox_bytes
            .store(totals.outbox_bytes, Ordering::Relaxed);
        self.counters.add_lens(totals.len_delta);
        for (counter, n) in self.counters.dropped.iter().zip(totals.dropped) {
            counter.store(n, Ordering::Relaxed);
        }
        if totals.dropped_now.iter().any(|&n| n > 0) {
            let [telemetry, results, events] = totals.dropped_now;
            tracing::warn!(
                dropped_telemetry = telemetry,
                dropped_results = results,
                dropped_events = events,
                max_bytes = self.opts.max_bytes,
                outbox_bytes = totals.outbox_bytes,
                "outbox over its size cap of {} bytes (store.max_outbox): dropped {}, oldest first",
                self.opts.max_bytes,
                Dropped(totals.dropped_now),
            );
        }
        Ok(results)
    }
}

/// Whether a batch failed while applying its ops (attributable to a request, so
/// worth retrying the others alone) or while beginning/committing (not).
enum Failure {
    Apply(StoreError),
    Commit(StoreError),
}

impl Failure {
    fn into_inner(self) -> StoreError {
        match self {
            Failure::Apply(e) | Failure::Commit(e) => e,
        }
    }
}

/// "2 telemetry, 1 event" for the drop log line; classes with none are left out.
struct Dropped([u64; 3]);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            ("telemetry item", "telemetry items"),
            ("result", "results"),
            ("event", "events"),
        ];
        let mut first = true;
        for (n, (one, many)) in self.0.into_iter().zip(names) {
            if n > 0 {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                write!(f, "{n} {}", if n == 1 { one } else { many })?;
            }
        }
        Ok(())
    }
}

/// The outbox totals as of the end of a transaction, published after its commit.
struct Totals {
    outbox_bytes: u64,
    /// Items added (+) and removed (-) per session.
    len_delta: HashMap<String, i64>,
    /// The id bound this transaction stored, if any.
    id_bound: Option<u64>,
    /// Persisted counts per class (index [`ItemClass::as_u8`]).
    dropped: [u64; 3],
    /// Dropped by this transaction.
    dropped_now: [u64; 3],
}

/// Applies the ops of `kinds` to `txn`, starting from the outbox byte total
/// `bytes`. Only the tables an op needs are written: each one touched costs
/// its copy-on-write pages in the commit.
fn apply(
    txn: &WriteTransaction,
    path: &Path,
    opts: &StoreOptions,
    kinds: &[&Kind],
    ids: &mut IdCursor,
    mut bytes: u64,
) -> Result<(Vec<Vec<u64>>, Totals), StoreError> {
    let mut meta = txn.open_table(META).at(path)?;
    let mut outbox = txn.open_table(OUTBOX).at(path)?;
    let mut index = txn.open_table(CLASS_INDEX).at(path)?;
    let mut machines = txn.open_table(MACHINES).at(path)?;
    let mut cmds = CommandTables::open(txn, path)?;
    let mut batches = txn.open_table(BATCHES).at(path)?;

    let mut appended = false;
    let mut len_delta: HashMap<String, i64> = HashMap::new();
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let mut results = Vec::with_capacity(kinds.len());

    for kind in kinds {
        let mut given = Vec::new();
        match kind {
            Kind::Write(ops) => {
                for op in ops {
                    match op {
                        Op::Append { session, item } => {
                            let id = ids.take();
                            bytes += append(&mut outbox, &mut index, path, session, id, item)?;
                            given.push(id);
                            appended = true;
                            *len_delta.entry(session.clone()).or_default() += 1;
                        }
                        Op::SetMachine { machine, state } => {
                            let json =
                                serde_json::to_vec(state).map_err(|err| StoreError::Corrupt {
                                    path: path.to_path_buf(),
                                    table: "machines",
                                    key: machine.clone(),
                                    detail: format!("cannot encode: {err}"),
                                })?;
                            machines
                                .insert(machine.as_str(), json.as_slice())
                                .at(path)?;
                            touched.insert(machine);
                        }
                        Op::PutCommand { machine, record } => {
                            cmds.put(machine, record)?;
                            touched.insert(machine);
                        }
                        Op::PutBatch {
                            machine,
                            id,
                            steps_json,
                        } => {
                            batches
                                .insert((machine.as_str(), id.as_str()), steps_json.as_str())
                                .at(path)?;
                        }
                        Op::RemoveBatch { machine, id } => {
                            batches.remove((machine.as_str(), id.as_str())).at(path)?;
                        }
                    }
                }
            }
            Kind::Ack {
                session,
                ids: acked,
            } => {
                for id in acked {
                    let removed = outbox.remove((session.as_str(), *id)).at(path)?;
                    if let Some(value) = removed {
                        let value = value.value();
                        bytes = bytes.saturating_sub(value.len() as u64);
                        unindex(&mut index, path, class_of(value).ok(), *id)?;
                        *len_delta.entry(session.clone()).or_default() -= 1;
                    }
                }
            }
            #[cfg(test)]
            Kind::Panic | Kind::Hold(_) => {}
        }
        results.push(given);
    }

    let mut dropped_now = [0u64; 3];
    if appended && bytes > opts.max_bytes {
        bytes = enforce_cap(
            &mut outbox,
            &mut index,
            path,
            opts.max_bytes,
            bytes,
            &mut len_delta,
            &mut dropped_now,
        )?;
    }
    let mut dropped = [0u64; 3];
    for ((total, now), key) in dropped.iter_mut().zip(dropped_now).zip(DROPPED) {
        *total = meta.get(key).at(path)?.map(|g| g.value()).unwrap_or(0) + now;
        if now > 0 {
            meta.insert(key, *total).at(path)?;
        }
    }
    let id_bound = ids.bound_needed();
    if let Some(bound) = id_bound {
        meta.insert(NEXT_OUTBOX_ID, bound).at(path)?;
    }
    // Pruning rides on the machines being written anyway, so its cost is a range
    // lookup per touched machine and needs no timer.
    let now_ms = now_ms();
    for machine in touched {
        cmds.prune(machine, opts, now_ms)?;
    }
    let totals = Totals {
        outbox_bytes: bytes,
        len_delta,
        id_bound,
        dropped,
        dropped_now,
    };
    Ok((results, totals))
}

type Outbox<'t> = redb::Table<'t, (&'static str, u64), &'static [u8]>;
type ClassIndex<'t> = redb::Table<'t, (u8, u64), &'static str>;

/// Stores an item under `id` and returns its encoded size. Only telemetry and
/// results are indexed (see CLASS_INDEX).
fn append(
    outbox: &mut Outbox<'_>,
    index: &mut ClassIndex<'_>,
    path: &Path,
    session: &str,
    id: u64,
    item: &OutItem,
) -> Result<u64, StoreError> {
    let encoded = encode_out(item).map_err(|detail| StoreError::TooLarge {
        path: path.to_path_buf(),
        detail,
    })?;
    outbox.insert((session, id), encoded.as_slice()).at(path)?;
    if item.class != ItemClass::Event {
        index.insert((item.class.as_u8(), id), session).at(path)?;
    }
    Ok(encoded.len() as u64)
}

/// Removes an outbox item's class-index entry, if it has one: an event has
/// none unless an earlier version wrote it, and removing a missing key writes
/// nothing. `class` is `None` when the stored item is unreadable; it was then
/// indexed under whatever class it claimed, if at all, so every class is tried.
fn unindex(
    index: &mut ClassIndex<'_>,
    path: &Path,
    class: Option<ItemClass>,
    id: u64,
) -> Result<(), StoreError> {
    match class {
        Some(class) => {
            index.remove((class.as_u8(), id)).at(path)?;
        }
        None => {
            for class in ItemClass::DROP_ORDER {
                index.remove((class.as_u8(), id)).at(path)?;
            }
        }
    }
    Ok(())
}

/// Drops the oldest item of the lowest class present until `bytes` is at most
/// `max`, and returns the new total. Ids only grow, so "oldest" also means the
/// items this transaction appended go last within their class. Counts each drop
/// in `dropped_now` and its session in `len_delta`.
///
/// Telemetry and results come from the class index. Once neither is left, every
/// remaining item is an event (or unreadable, which counts as one), so the
/// oldest event is the oldest item of any session.
fn enforce_cap(
    outbox: &mut Outbox<'_>,
    index: &mut ClassIndex<'_>,
    path: &Path,
    max: u64,
    mut bytes: u64,
    len_delta: &mut HashMap<String, i64>,
    dropped_now: &mut [u64; 3],
) -> Result<u64, StoreError> {
    while bytes > max {
        let victim = match oldest_indexed(index, path)? {
            Some((class, id, session)) => {
                // Removed first: an entry whose item is gone must not stop the loop.
                index.remove((class.as_u8(), id)).at(path)?;
                Some((session, id, Some(class)))
            }
            None => oldest_item(outbox, path)?.map(|(session, id)| (session, id, None)),
        };
        let Some((session, id, indexed_as)) = victim else {
            // The outbox is empty, so the total was off: start again from 0.
            tracing::warn!(
                outbox_bytes = bytes,
                "outbox byte total is over the cap but no item is left to drop; resetting it to 0"
            );
            return Ok(0);
        };
        let removed = outbox.remove((session.as_str(), id)).at(path)?;
        if let Some(value) = removed {
            let value = value.value();
            let class = class_of(value).ok();
            if indexed_as.is_none() {
                // An event indexed by an earlier version, or an unreadable item.
                unindex(index, path, class, id)?;
            }
            bytes = bytes.saturating_sub(value.len() as u64);
            let class = indexed_as.or(class).unwrap_or(ItemClass::Event);
            dropped_now[usize::from(class.as_u8())] += 1;
            *len_delta.entry(session).or_default() -= 1;
        }
    }
    Ok(bytes)
}

/// The oldest indexed item: telemetry first, then results.
fn oldest_indexed(
    index: &ClassIndex<'_>,
    path: &Path,
) -> Result<Option<(ItemClass, u64, String)>, StoreError> {
    for class in [ItemClass::Telemetry, ItemClass::Result] {
        let c = class.as_u8();
        let mut range = index.range((c, 0)..=(c, u64::MAX)).at(path)?;
        if let Some(entry) = range.next() {
            let (k, v) = entry.at(path)?;
            return Ok(Some((class, k.value().1, v.value().to_owned())));
        }
    }
    Ok(None)
}

/// (session, id) of the item with the smallest id in OUTBOX: the first item of
/// each session, compared. One seek per session, and a gateway has few.
fn oldest_item(outbox: &Outbox<'_>, path: &Path) -> Result<Option<(String, u64)>, StoreError> {
    let mut oldest: Option<(String, u64)> = None;
    let mut after: Option<String> = None;
    loop {
        let start = match &after {
            Some(session) => Bound::Excluded((session.as_str(), u64::MAX)),
            None => Bound::Unbounded,
        };
        let mut range = outbox.range((start, Bound::Unbounded)).at(path)?;
        let Some(entry) = range.next() else { break };
        let (k, _) = entry.at(path)?;
        let (session, id) = k.value();
        if oldest.as_ref().is_none_or(|&(_, old)| id < old) {
            oldest = Some((session.to_owned(), id));
        }
        after = Some(session.to_owned());
    }
    Ok(oldest)
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct CommandTables<'t> {
    path: &'t Path,
    records: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    open: redb::Table<'t, (&'static str, i64, &'static str), ()>,
    done: redb::Table<'t, (&'static str, i64, &'static str), ()>,
    done_count: redb::Table<'t, &'static str, u64>,
}

impl<'t> CommandTables<'t> {
    fn open(txn: &'t WriteTransaction, path: &'t Path) -> Result<Self, StoreError> {
        Ok(CommandTables {
            path,
            records: txn.open_table(COMMANDS).at(path)?,
            open: txn.open_table(OPEN_BY_AGE).at(path)?,
            done: txn.open_table(DONE_BY_AGE).at(path)?,
            done_count: txn.open_table(DONE_COUNT).at(path)?,
        })
    }

    fn done_count(&self, machine: &str) -> Result<u64, StoreError> {
        Ok(self
            .done_count
            .get(machine)
            .at(self.path)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    fn set_done_count(&mut self, machine: &str, n: u64) -> Result<(), StoreError> {
        let r = if n == 0 {
            self.done_count.remove(machine).map(|_| ())
        } else {
            self.done_count.insert(machine, n).map(|_| ())
        };
        r.at(self.path)
    }

    /// Keeps the two age indexes and the Done count in step with the record.
    fn put(&mut self, machine: &str, record: &CommandRecord) -> Result<(), StoreError> {
        let key = (machine, record.id.as_str());
        let old = match self.records.get(key).at(self.path)? {
            Some(g) => Some(decode_json::<CommandRecord>(
                self.path,
                "commands",
                format_args!("({machine:?}, {:?})", record.id),
                g.value(),
            )?),
            None => None,
        };
        let mut count = self.done_count(machine)?;
        if let Some(old) = old {
            let idx = (machine, old.at_ms, old.id.as_str());
            if matches!(old.phase, CommandPhase::Done { .. }) {
                if self.done.remove(idx).at(self.path)?.is_some() {
                    count = count.saturating_sub(1);
                }
            } else {
                self.open.remove(idx).at(self.path)?;
            }
        }
        let idx = (machine, record.at_ms, record.id.as_str());
        if matches!(record.phase, CommandPhase::Done { .. }) {
            if self.done.insert(idx, ()).at(self.path)?.is_none() {
                count += 1;
            }
        } else {
            self.open.insert(idx, ()).at(self.path)?;
        }
        self.set_done_count(machine, count)?;
        let json = serde_json::to_vec(record).map_err(|err| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            table: "commands",
            key: format!("({machine:?}, {:?})", record.id),
            detail: format!("cannot encode: {err}"),
        })?;
        self.records.insert(key, json.as_slice()).at(self.path)?;
        Ok(())
    }

    /// Drops the oldest Done records while there are more than `id_window` of them or
    /// they are older than `id_ttl`. Queued/Written records live in the other index and
    /// are never touched.
    fn prune(&mut self, machine: &str, opts: &StoreOptions, now_ms: i64) -> Result<(), StoreError> {
        let ttl_ms = i64::try_from(opts.id_ttl.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(ttl_ms);
        let mut count = self.done_count(machine)?;
        let start = count;
        loop {
            let oldest = {
                let mut range = self.done.range((machine, i64::MIN, "")..).at(self.path)?;
                match range.next() {
                    Some(entry) => {
                        let (k, _) = entry.at(self.path)?;
                        let (m, at, id) = k.value();
                        (m == machine).then(|| (at, id.to_string()))
                    }
                    None => None,
                }
            };
            let Some((at, id)) = oldest else { break };
            if count as usize <= opts.id_window && at >= cutoff {
                break;
            }
            self.done.remove((machine, at, id.as_str())).at(self.path)?;
            self.records.remove((machine, id.as_str())).at(self.path)?;
            count = count.saturating_sub(1);
        }
        if count != start {
            self.set_done_count(machine, count)?;
        }
        Ok(())
    }
}
