//! Durable state: the outbox, per-machine sequence numbers and link state,
//! command ids and outcomes, batches. See docs/ARCHITECTURE.md.
//!
//! The state lives in memory ([`state`]) and every change to it is first a
//! record of an append-only journal ([`journal`]) under `store.path`: one
//! record and one `fdatasync` per group commit, in preallocated segments, so
//! that a commit writes the page or two it touched and no file-system
//! metadata. Outbox items stay in the journal; memory holds where they are.
//! At open the journal is read back, checksum by checksum: a torn last record
//! (the commit a crash interrupted, never acknowledged) ends the scan, a
//! corrupted record in the middle is reported and skipped. A state database
//! of an earlier vendgate (`vendgate.redb`) is converted at the first open
//! ([`migrate`]).
//!
//! Writes go through one writer thread with group commit ([`writer`]);
//! reads take a shared lock on the state and never wait for the disk.

mod codec;
mod error;
mod journal;
mod migrate;
mod state;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use codec::{decode_commit, decode_out, decode_snapshot, encode_snapshot};
pub use error::StoreError;
use journal::disk::{Dir, FsDir};
use journal::{Journal, Visit};
use state::{Loc, Snapshot, State};
use writer::{read, Counts, Kind, Request, Shared, Writer};

/// Longest a delivered item's removal waits for a commit to ride along with.
pub const REMOVAL_DELAY: Duration = Duration::from_millis(100);
/// Removals waiting that make the writer journal them at once.
const MAX_WAITING_REMOVALS: usize = 256;

/// The journal's directory inside the state directory.
pub const JOURNAL_DIR: &str = "journal";
/// The lock file that keeps a second gateway off the same state.
pub const LOCK_FILE: &str = "vendgate.lock";
/// The redb database of vendgate before the journal, converted at open.
pub const LEGACY_DB_FILE: &str = "vendgate.redb";

/// A machine's `seq` jumps by this much when a corrupted journal record was
/// skipped at open: that record may have held the machine's last sequence
/// number, and a number used twice would make a consumer drop a new event
/// as a repeat. A gap says "lost" instead, which is what happened.
pub const SEQ_GAP_AFTER_CORRUPTION: u64 = 1_000_000;

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
    /// Length of a journal segment file (preallocated). Not a config key:
    /// the default suits any board; tests make it small to roll often.
    pub segment_len: u64,
}

/// Default of [`StoreOptions::max_bytes`].
pub const DEFAULT_MAX_OUTBOX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            id_window: 10_000,
            id_ttl: Duration::from_secs(7 * 24 * 3600),
            max_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            segment_len: journal::DEFAULT_SEGMENT_LEN,
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
    /// MQTT 5 Response Topic; empty when the command had none and only
    /// `request` is kept (an interface file's results need it).
    #[serde(default)]
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Vec<u8>>,
    /// With an interface file: the command as it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<CommandRequest>,
}

/// A command publish as it arrived, kept for an interface's `results`
/// program (`.request`, `{topic}`), also after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub topic: String,
    /// The payload text; `None` when it was over [`CommandRequest::KEPT_PAYLOAD`]
    /// (a batch's script): its command record is written again with every
    /// step's progress, and tens of KB each time would be most of the disk
    /// writes. The program then sees `payload: null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl CommandRequest {
    pub const KEPT_PAYLOAD: usize = 4096;

    pub fn new(topic: &str, payload: &[u8]) -> CommandRequest {
        CommandRequest {
            topic: topic.to_owned(),
            payload: (payload.len() <= Self::KEPT_PAYLOAD)
                .then(|| String::from_utf8_lossy(payload).into_owned()),
        }
    }

    /// `{topic, levels, payload}` as `results` programs see it.
    pub fn to_json(&self) -> serde_json::Value {
        let payload = self
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "topic": self.topic,
            "levels": self.topic.split('/').collect::<Vec<_>>(),
            "payload": payload,
        })
    }
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
    /// Bytes this process wrote to the journal (records, snapshots), as
    /// handed to the kernel; the disk writes whole pages of them.
    pub bytes_written: u64,
    /// Commits (journal records) written by this process.
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
    shared: Arc<RwLock<Shared>>,
    path: PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
    /// Held (locked) for the store's life; dropped after the writer stopped.
    _lock: Option<File>,
    /// A timer to journal waiting removals is running.
    nudge_armed: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Journal the waiting removals, close the channel and wait for the
        // writer, so the lock is released when the last Store goes away and a
        // reopen in the same process succeeds. This may wait for one commit.
        if let Some(tx) = self.tx.take() {
            let (reply, _) = oneshot::channel();
            let _ = tx.send(Request {
                kind: Kind::Flush,
                reply,
            });
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the journal in `dir/journal`, converting an
    /// earlier vendgate's `dir/vendgate.redb` first, and starts the writer thread.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = lock(dir)?;
        let journal_dir = dir.join(JOURNAL_DIR);
        migrate::if_needed(dir, &journal_dir)?;
        let fs = FsDir::open(&journal_dir).map_err(|e| StoreError::io(&journal_dir, e))?;
        Store::start(Arc::new(fs), journal_dir, opts, Some(lock))
    }

    /// The store on any segment directory (the tests' in-memory disk).
    pub(crate) fn start(
        dir: Arc<dyn Dir>,
        path: PathBuf,
        opts: StoreOptions,
        lock: Option<File>,
    ) -> Result<Store, StoreError> {
        let (state, journal) = load(dir, &path, &opts)?;
        let files = journal.files();
        let shared = Arc::new(RwLock::new(Shared {
            state,
            files,
            removed: Vec::new(),
        }));
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::channel();
        let w = Writer {
            journal,
            shared: shared.clone(),
            path: path.clone(),
            opts,
            counts: counts.clone(),
            lazy_commits: 0,
        };
        let thread = std::thread::Builder::new()
            .name("vendgate-store".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                path,
                tx: Some(tx),
                thread: Some(thread),
                counts,
                _lock: lock,
                nudge_armed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The journal directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Applies all ops in ONE durable commit (fsync before returning) and returns
    /// the ids given to the Append ops, in order. Requests waiting together share one
    /// commit. The writer is a thread, so awaiting this never blocks the runtime.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<u64>, StoreError> {
        self.request(Kind::Write(ops)).await
    }

    /// Removes acknowledged outbox items; unknown ids are ignored.
    ///
    /// They leave the outbox at once; their removal reaches the journal
    /// with the next commit, or within [`REMOVAL_DELAY`] if none comes,
    /// without a sync of its own. The delivered items are then never written
    /// for again, and an ack costs neither a wake-up of the writer nor a
    /// write per event. A crash before it is journaled only publishes the
    /// items again, with their `seq`. Never waits for the disk.
    pub async fn ack(&self, session: &str, ids: Vec<u64>) -> Result<(), StoreError> {
        let waiting = {
            let mut shared = writer::write(&self.inner.shared);
            for id in ids {
                if shared.state.deliver(session, id) {
                    shared.removed.push(id);
                }
            }
            shared.removed.len()
        };
        if waiting >= MAX_WAITING_REMOVALS {
            self.nudge();
        } else if waiting > 0 && !self.inner.nudge_armed.swap(true, Ordering::AcqRel) {
            // Weak: a store dropped meanwhile journals its removals itself,
            // and its lock must not outlive it by the timer.
            let inner = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                tokio::time::sleep(REMOVAL_DELAY).await;
                if let Some(inner) = inner.upgrade() {
                    inner.nudge_armed.store(false, Ordering::Release);
                    Store { inner }.nudge();
                }
            });
        }
        Ok(())
    }

    /// Asks the writer to journal the waiting removals now (no reply awaited).
    fn nudge(&self) {
        if let Some(tx) = &self.inner.tx {
            let (reply, _) = oneshot::channel();
            let _ = tx.send(Request {
                kind: Kind::Flush,
                reply,
            });
        }
    }

    /// Journals the waiting removals and returns once they are written.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.request(Kind::Flush).await.map(|_| ())
    }

    async fn request(&self, kind: Kind) -> Result<Vec<u64>, StoreError> {
        let gone = || StoreError::WriterGone {
            path: self.inner.path.clone(),
        };
        let (reply, rx) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or_else(gone)?;
        tx.send(Request { kind, reply }).map_err(|_| gone())?;
        // A dropped reply sender means the writer died mid-batch; that batch
        // was never applied.
        rx.await.map_err(|_| gone())?
    }

    pub fn machine_state(&self, machine: &str) -> Result<MachineState, StoreError> {
        let shared = read(&self.inner.shared);
        Ok(shared
            .state
            .machines
            .get(machine)
            .cloned()
            .unwrap_or_default())
    }

    /// Outbox items of one session with id > `after` (or all), ascending, at most `limit`.
    pub fn outbox(
        &self,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError> {
        // Read under the lock: a segment is recycled only after its items
        // were removed, which needs the lock too.
        let shared = read(&self.inner.shared);
        let mut out = Vec::new();
        for (id, loc) in shared.state.outbox(session, after, limit) {
            let item = read_item(&shared, loc).map_err(|detail| StoreError::Corrupt {
                path: self.inner.path.clone(),
                table: "outbox",
                key: format!("({session:?}, {id})"),
                detail,
            })?;
            out.push((id, item));
        }
        Ok(out)
    }

    /// Items in a session's outbox. Counted in memory, so this cannot fail any
    /// more; the `Result` stays for the callers written when it read the disk.
    pub fn outbox_len(&self, session: &str) -> Result<u64, StoreError> {
        Ok(read(&self.inner.shared).state.outbox_len(session))
    }

    pub fn command(&self, machine: &str, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let shared = read(&self.inner.shared);
        let cmds = shared.state.commands.get(machine);
        Ok(cmds.and_then(|c| c.records.get(id)).cloned())
    }

    /// Commands of a machine still Queued or Written, oldest first (by `at_ms`, then id).
    pub fn open_commands(&self, machine: &str) -> Result<Vec<CommandRecord>, StoreError> {
        let shared = read(&self.inner.shared);
        let cmds = shared.state.commands.get(machine);
        Ok(cmds.map_or_else(Vec::new, |c| c.open().cloned().collect()))
    }

    /// The steps JSON a batch was accepted with, while it is not finished.
    pub fn batch(&self, machine: &str, id: &str) -> Result<Option<String>, StoreError> {
        let shared = read(&self.inner.shared);
        let key = (machine.to_string(), id.to_string());
        Ok(shared.state.batches.get(&key).cloned())
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counts;
        let shared = read(&self.inner.shared);
        let [dropped_telemetry, dropped_results, dropped_events] = shared.state.dropped;
        StoreStats {
            bytes_written: c.written.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            outbox_bytes: shared.state.outbox_bytes,
            dropped_telemetry,
            dropped_results,
            dropped_events,
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

    /// Journal segments in use, oldest first.
    #[cfg(test)]
    pub(crate) fn segments(&self) -> Vec<u64> {
        read(&self.inner.shared).files.keys().copied().collect()
    }
}

fn read_item(shared: &Shared, loc: Loc) -> Result<OutItem, String> {
    let file = shared
        .files
        .get(&loc.segment)
        .ok_or_else(|| format!("journal segment {:016x} is gone", loc.segment))?;
    let mut buf = vec![0u8; loc.len as usize];
    file.read_at(&mut buf, loc.at)
        .map_err(|e| format!("cannot read it back: {e}"))?;
    decode_out(&buf)
}

/// Takes the state directory's lock, or says who holds it.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    use std::os::fd::AsRawFd;
    // flock, not File::try_lock: that needs Rust 1.89, above the MSRV. The
    // lock goes with the descriptor, so it ends with the process however it
    // ends. SAFETY: the descriptor is open and owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(StoreError::Locked { path }),
        _ => Err(StoreError::io(&path, err)),
    }
}

/// Reads the journal back into a state.
fn load(
    dir: Arc<dyn Dir>,
    path: &Path,
    opts: &StoreOptions,
) -> Result<(State, Journal), StoreError> {
    let mut state = State::new();
    let now = now_ms();
    let initial = encode_snapshot(&Snapshot {
        next_id: 1,
        ..Snapshot::default()
    });
    let opened = Journal::open(dir, opts.segment_len, &initial, |visit| match visit {
        Visit::Snapshot(body) => {
            state.restore(decode_snapshot(body)?, opts, now);
            Ok(())
        }
        Visit::Commit { segment, at, body } => {
            let (mutations, item_at) = decode_commit(body)?;
            let locs = state::put_locs(&mutations, segment, at, item_at);
            state.apply(mutations, locs.into_iter(), opts, now)
        }
    });
    let (journal, skipped) = opened.map_err(|e| StoreError::CorruptFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !skipped.is_empty() {
        for s in &skipped {
            tracing::error!(
                segment = %journal.path(s.segment).display(),
                from = s.from,
                to = s.to,
                detail = %s.detail,
                "store: corrupted journal bytes skipped; what they held is lost"
            );
        }
        for (machine, m) in state.machines.iter_mut() {
            m.next_seq = m.next_seq.max(1).saturating_add(SEQ_GAP_AFTER_CORRUPTION);
            tracing::warn!(%machine, next_seq = m.next_seq, "store: seq moved past what the skipped bytes may have used");
        }
    }
    Ok((state, journal))
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
