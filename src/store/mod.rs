//! Durable state in one redb database: the outbox, per-machine sequence numbers and
//! link counters, command ids and outcomes. See docs/ARCHITECTURE.md.
//!
//! Writes go through one writer thread with group commit ([`writer`]); reads open
//! their own redb read transaction and never wait for the writer.

mod backend;
mod error;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use error::At;
pub use error::StoreError;
use tables::*;
use writer::{IdCursor, Kind, Request, Writer};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "vendgate.redb";

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Done command records kept per machine for duplicate detection.
    pub id_window: usize,
    /// Done command records older than this (by `at_ms`) are dropped.
    pub id_ttl: Duration,
    /// Size cap of the outbox: total encoded bytes of all items of all sessions.
    /// A write that takes the total past it drops the oldest items of the lowest
    /// class present (telemetry, then results, then events) in the same
    /// transaction, until the total is at most this.
    pub max_bytes: u64,
}

/// Default of [`StoreOptions::max_bytes`].
pub const DEFAULT_MAX_OUTBOX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            id_window: 10_000,
            id_ttl: Duration::from_secs(7 * 24 * 3600),
            max_bytes: DEFAULT_MAX_OUTBOX_BYTES,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Append {
        session: String,
        item: OutItem,
    },
    SetMachine {
        machine: String,
        state: MachineState,
    },
    PutCommand {
        machine: String,
        record: CommandRecord,
    },
    /// A batch's validated steps (JSON array), stored once at acceptance.
    PutBatch {
        machine: String,
        id: String,
        steps_json: String,
    },
    /// Drops a finished batch's steps.
    RemoveBatch {
        machine: String,
        id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutItem {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Decides which items go first when the outbox is over its size cap.
    pub class: ItemClass,
    /// MQTT 5 Correlation Data, on a result copied to a command's Response
    /// Topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Vec<u8>>,
}

/// Where an MQTT 5 command asked for its results: its Response Topic and
/// Correlation Data. Kept with the command's record so that results
/// published after a restart still reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Vec<u8>>,
}

/// What an outbox item is, in the order items are dropped when the outbox is over
/// its size cap: all telemetry first (a newer reading replaces it), then command
/// results (the caller can ask again), events last (they are money).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemClass {
    Telemetry,
    Result,
    Event,
}

impl ItemClass {
    /// Drop order: lowest priority first.
    pub const DROP_ORDER: [ItemClass; 3] =
        [ItemClass::Telemetry, ItemClass::Result, ItemClass::Event];

    /// The byte stored in the item encoding and the class index.
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            ItemClass::Telemetry => 0,
            ItemClass::Result => 1,
            ItemClass::Event => 2,
        }
    }

    pub(crate) fn from_u8(b: u8) -> Option<ItemClass> {
        match b {
            0 => Some(ItemClass::Telemetry),
            1 => Some(ItemClass::Result),
            2 => Some(ItemClass::Event),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// Next event seq to assign. `0` (the Default, i.e. a machine never seen) means
    /// "nothing assigned yet" and is read as 1: use [`MachineState::take_seq`].
    pub next_seq: u64,
    /// The gateway's link sequence number last used.
    pub host_seq: u8,
    /// (frame code key, device sequence) of the last accepted device frame.
    pub last_device_frame: Option<(String, u8)>,
}

impl MachineState {
    /// Returns the seq for the next event (starting at 1) and advances `next_seq`.
    /// The caller must persist the state in the same `write` as the event, so a seq
    /// is never reused after a restart.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        seq
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub command: String,
    pub phase: CommandPhase,
    /// Unix ms when accepted; orders `open_commands` and drives the id TTL.
    pub at_ms: i64,
    /// A batch's progress, written with each step's Written/done record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BatchProgress>,
    /// MQTT 5: the command's Response Topic and Correlation Data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
}

/// Where a batch stands, durably: the next step not yet acknowledged, and
/// whether that step may be on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProgress {
    pub next: usize,
    pub in_flight: bool,
    /// `true`: `on_error: continue`.
    pub continue_on_error: bool,
    /// Failed steps so far: (index, cmd, error).
    pub failures: Vec<(usize, String, String)>,
    /// The batch's `expires_at` (Unix ms), checked before each step.
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandPhase {
    Queued,
    Written,
    /// `result`: the published result JSON, repeated verbatim for duplicates.
    Done {
        result: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes this process wrote to the database file (pages and headers, counted at
    /// the storage backend, so this is exact rather than an estimate).
    pub bytes_written: u64,
    /// Durable transactions committed by this process.
    pub commits: u64,
    /// fsyncs (`sync_data`) issued by this process.
    pub syncs: u64,
    /// Total encoded size of the items now in the outbox (all sessions).
    pub outbox_bytes: u64,
    /// Items dropped by the outbox size cap since the database was created
    /// (persisted, so these survive restarts), per class.
    pub dropped_telemetry: u64,
    pub dropped_results: u64,
    pub dropped_events: u64,
}

/// The outbox totals. Only the drop counts are persisted; the byte total and
/// the per-session lengths live here alone, counted from OUTBOX at open: the
/// writer thread makes every change to OUTBOX, so it can keep them exact
/// without rewriting them on disk with every event. The writer updates them
/// only after a commit succeeded.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) outbox_bytes: AtomicU64,
    /// Indexed by [`ItemClass::as_u8`].
    pub(crate) dropped: [AtomicU64; 3],
    /// Items per session; sessions with none are left out.
    pub(crate) lens: Mutex<HashMap<String, u64>>,
}

impl Counters {
    /// Adds a committed transaction's per-session changes.
    pub(crate) fn add_lens(&self, delta: HashMap<String, i64>) {
        // A panic elsewhere while holding the lock leaves plain counts behind,
        // still as right as they were.
        let mut lens = self.lens.lock().unwrap_or_else(PoisonError::into_inner);
        for (session, delta) in delta {
            let n = lens.get(&session).copied().unwrap_or(0);
            match n.saturating_add_signed(delta) {
                0 => lens.remove(&session),
                n => lens.insert(session, n),
            };
        }
    }

    fn len(&self, session: &str) -> u64 {
        let lens = self.lens.lock().unwrap_or_else(PoisonError::into_inner);
        lens.get(session).copied().unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    written: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close the channel and wait for the writer, so the file lock is released when
        // the last Store goes away and a reopen in the same process succeeds. This may
        // wait for one in-flight commit (an fsync), which is what the caller's data needs.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) `dir/vendgate.redb` and starts the writer thread.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source: Arc::new(source),
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let backend = backend::CountingBackend::new(
            FileBackend::new(file).at(&path)?,
            written.clone(),
            syncs.clone(),
        );
        let db = Arc::new(Database::builder().create_with_backend(backend).at(&path)?);
        let (counters, ids) = prepare_tables(&db, &path)?;
        let counters = Arc::new(counters);

        let (tx, rx) = mpsc::channel();
        let w = Writer {
            db: db.clone(),
            path: path.clone(),
            opts,
            commits: commits.clone(),
            lazy_commits: 0,
            counters: counters.clone(),
            ids,
        };
        let thread = std::thread::Builder::new()
            .name("vendgate-store".into())
            .spawn(move || w.run(rx))
            .map_err(io_err)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                tx: Some(tx),
                thread: Some(thread),
                written,
                syncs,
                commits,
                counters,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Applies all ops in ONE durable transaction (fsync before returning) and returns
    /// the ids given to the Append ops, in order. Requests waiting together share one
    /// commit. The writer is a thread, so awaiting this never blocks the runtime.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<u64>, StoreError> {
        self.request(Kind::Write(ops)).await
    }

    /// Removes acknowledged outbox items; unknown ids are ignored. Group-committed.
    pub async fn ack(&self, session: &str, ids: Vec<u64>) -> Result<(), StoreError> {
        self.request(Kind::Ack {
            session: session.to_string(),
            ids,
        })
        .await
        .map(|_| ())
    }

    async fn request(&self, kind: Kind) -> Result<Vec<u64>, StoreError> {
        let gone = || StoreError::WriterGone {
            path: self.inner.path.clone(),
        };
        let (reply, rx) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or_else(gone)?;
        tx.send(Request { kind, reply }).map_err(|_| gone())?;
        // A dropped reply sender means the writer died mid-batch; that batch's
        // transaction never committed.
        rx.await.map_err(|_| gone())?
    }

    pub fn machine_state(&self, machine: &str) -> Result<MachineState, StoreError> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().at(path)?;
        let table = txn.open_table(MACHINES).at(path)?;
        match table.get(machine).at(path)? {
            Some(g) => decode_json(path, "machines", format_args!("{machine:?}"), g.value()),
            None => Ok(MachineState::default()),
        }
    }

    /// Outbox items of one session with id > `after` (or all), ascending, at most `limit`.
    pub fn outbox(
        &self,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError> {
        let path = &self.inner.path;
        let Some(from) = after.map_or(Some(0), |a| a.checked_add(1)) else {
            return Ok(Vec::new());
        };
        let txn = self.inner.db.begin_read().at(path)?;
        let table = txn.open_table(OUTBOX).at(path)?;
        let mut out = Vec::new();
        for entry in table
            .range((session, from)..=(session, u64::MAX))
            .at(path)?
            .take(limit)
        {
            let (k, v) = entry.at(path)?;
            let id = k.value().1;
            let item = decode_out(v.value()).map_err(|d| corrupt_out(path, session, id, d))?;
            out.push((id, item));
        }
        Ok(out)
    }

    /// Items in a session's outbox. Counted in memory, so this cannot fail any
    /// more; the `Result` stays for the callers written when it read the disk.
    pub fn outbox_len(&self, session: &str) -> Result<u64, StoreError> {
        Ok(self.inner.counters.len(session))
    }

    pub fn command(&self, machine: &str, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().at(path)?;
        let table = txn.open_table(COMMANDS).at(path)?;
        let guard = table.get((machine, id)).at(path)?;
        guard
            .map(|g| {
                decode_json(
                    path,
                    "commands",
                    format_args!("({machine:?}, {id:?})"),
                    g.value(),
                )
            })
            .transpose()
    }

    /// Commands of a machine still Queued or Written, oldest first (by `at_ms`, then id).
    pub fn open_commands(&self, machine: &str) -> Result<Vec<CommandRecord>, StoreError> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().at(path)?;
        let index = txn.open_table(OPEN_BY_AGE).at(path)?;
        let records = txn.open_table(COMMANDS).at(path)?;
        let mut out = Vec::new();
        for entry in index.range((machine, i64::MIN, "")..).at(path)? {
            let (k, _) = entry.at(path)?;
            let (m, _, id) = k.value();
            if m != machine {
                break;
            }
            let key = format_args!("({machine:?}, {id:?})").to_string();
            let Some(g) = records.get((machine, id)).at(path)? else {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    table: "commands_open_by_age",
                    key,
                    detail: "index entry without a command record".into(),
                });
            };
            out.push(decode_json(path, "commands", key, g.value())?);
        }
        Ok(out)
    }

    /// The steps JSON a batch was accepted with, while it is not finished.
    pub fn batch(&self, machine: &str, id: &str) -> Result<Option<String>, StoreError> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().at(path)?;
        let table = txn.open_table(BATCHES).at(path)?;
        let guard = table.get((machine, id)).at(path)?;
        Ok(guard.map(|g| g.value().to_owned()))
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            bytes_written: self.inner.written.load(Ordering::Relaxed),
            commits: self.inner.commits.load(Ordering::Relaxed),
            syncs: self.inner.syncs.load(Ordering::Relaxed),
            outbox_bytes: c.outbox_bytes.load(Ordering::Relaxed),
            dropped_telemetry: c.dropped[0].load(Ordering::Relaxed),
            dropped_results: c.dropped[1].load(Ordering::Relaxed),
            dropped_events: c.dropped[2].load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(crate) async fn kill_writer(&self) -> Result<Vec<u64>, StoreError> {
        self.request(Kind::Panic).await
    }

    /// Holds the writer until the returned sender is dropped or fires.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.clone();
        tokio::spawn(async move { store.request(Kind::Hold(rx)).await });
        tx
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }
}

/// Read transactions fail on tables that were never created, so create them all up
/// front. Counts the outbox totals kept in memory from OUTBOX itself, finds where
/// outbox ids continue, and brings a database of an earlier version (or one an
/// earlier version opened since) to the current layout: telemetry and results
/// indexed, events not, no stored totals. One scan of OUTBOX, which the size cap
/// bounds.
fn prepare_tables(db: &Database, path: &Path) -> Result<(Counters, IdCursor), StoreError> {
    let txn = db.begin_write().at(path)?;
    let counters = Counters::default();
    let ids;
    {
        let mut meta = txn.open_table(META).at(path)?;
        let outbox = txn.open_table(OUTBOX).at(path)?;
        let mut index = txn.open_table(CLASS_INDEX).at(path)?;
        meta.remove(OUTBOX_BYTES).at(path)?;
        let mut bytes = 0u64;
        let mut lens: HashMap<String, u64> = HashMap::new();
        let mut max_id = 0u64;
        for entry in outbox.iter().at(path)? {
            let (k, v) = entry.at(path)?;
            let (session, id) = k.value();
            let value = v.value();
            bytes += value.len() as u64;
            match lens.get_mut(session) {
                Some(n) => *n += 1,
                None => {
                    lens.insert(session.to_owned(), 1);
                }
            }
            max_id = max_id.max(id);
            // Checked, not trusted: a database from before the size cap has no
            // index, and without a stored byte total nothing marks such a file.
            // An unreadable item stays unindexed, so the cap takes it as an
            // event: it is reported when read, and must not be dropped early.
            if let Ok(class @ (ItemClass::Telemetry | ItemClass::Result)) = class_of(value) {
                let key = (class.as_u8(), id);
                if index.get(key).at(path)?.is_none() {
                    index.insert(key, session).at(path)?;
                }
            }
        }
        let event = ItemClass::Event.as_u8();
        index
            .retain_in((event, 0)..=(event, u64::MAX), |_, _| false)
            .at(path)?;
        counters.outbox_bytes.store(bytes, Ordering::Relaxed);
        *counters.lens.lock().unwrap_or_else(PoisonError::into_inner) = lens;
        for (counter, key) in counters.dropped.iter().zip(DROPPED) {
            let n = meta.get(key).at(path)?.map(|g| g.value()).unwrap_or(0);
            counter.store(n, Ordering::Relaxed);
        }
        let bound = meta.get(NEXT_OUTBOX_ID).at(path)?.map(|g| g.value());
        ids = IdCursor::at_open(bound, max_id);
    }
    txn.delete_table(OUTBOX_LEN).at(path)?;
    txn.open_table(MACHINES).at(path)?;
    txn.open_table(COMMANDS).at(path)?;
    txn.open_table(OPEN_BY_AGE).at(path)?;
    txn.open_table(DONE_BY_AGE).at(path)?;
    txn.open_table(DONE_COUNT).at(path)?;
    txn.open_table(BATCHES).at(path)?;
    txn.commit().at(path)?;
    Ok((counters, ids))
}
