//! The single writer thread: every request waiting in the channel becomes one
//! journal record and, unless the group is only acks, one `fdatasync`, so N
//! devices writing together pay one sync. The state is changed only after
//! the record is on disk, so a reader never sees what a crash could undo.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::oneshot;

use super::codec::{encode_commit, encode_snapshot};
use super::journal::disk::Segment;
use super::journal::Journal;
use super::state::{put_locs, Change, Mutation, Plan, State};
use super::{Op, StoreError, StoreOptions};

/// Caps one commit so a flood cannot make a single commit (and every reply
/// waiting on it) arbitrarily slow.
const MAX_BATCH: usize = 256;

/// At most this many commits of removals only in a row go unsynced: lost in
/// a crash, removals only make items be published again (same `seq`, dropped
/// by consumers), and the next durable commit's sync writes them anyway.
const LAZY_ACK_COMMITS: u64 = 64;

/// At a roll, a segment with at most this share of a segment's bytes still
/// undelivered has them copied forward, so that one item nobody acknowledges
/// cannot keep every later segment on disk.
const RELOCATE_SHARE: u64 = 4;

pub(crate) enum Kind {
    Write(Vec<Op>),
    /// Journal the removals waiting in [`Shared::removed`] now.
    Flush,
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

/// What readers share with the writer. The writer changes it, except that
/// `Store::ack` takes delivered items out of `state` at once and leaves their
/// ids in `removed` for the writer to journal with its next commit.
pub(crate) struct Shared {
    pub(crate) state: State,
    /// Segment files by number, to read outbox items from.
    pub(crate) files: BTreeMap<u64, Arc<dyn Segment>>,
    pub(crate) removed: Vec<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) commits: AtomicU64,
}

pub(crate) struct Writer {
    pub(crate) journal: Journal,
    pub(crate) shared: Arc<RwLock<Shared>>,
    pub(crate) path: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) counts: Arc<Counts>,
    pub(crate) lazy_commits: u64,
}

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
        for req in &batch {
            match &req.kind {
                Kind::Panic => panic!("store writer killed by test"),
                Kind::Hold(rx) => {
                    let _ = rx.recv();
                }
                _ => {}
            }
        }
        let changes: Vec<Change<'_>> = batch.iter().filter_map(|r| change(&r.kind)).collect();
        let plan = read(&self.shared).state.plan(&changes, &self.opts);
        let acks_only = changes.is_empty();
        drop(changes);
        let Plan {
            mut mutations,
            replies,
            dropped_now,
        } = plan;
        // Removals ride along: in a steady stream each event's commit carries
        // the removal of the one before, at no extra write or wake-up.
        let removed = std::mem::take(&mut write(&self.shared).removed);
        mutations.extend(removed.into_iter().map(|id| Mutation::Remove { id }));
        let committed = self.commit(mutations, acks_only);
        let mut replies = replies.into_iter();
        for req in batch {
            if matches!(req.kind, Kind::Flush) {
                let _ = req.reply.send(committed.clone().map(|()| Vec::new()));
                continue;
            }
            #[cfg(test)]
            if matches!(req.kind, Kind::Hold(_)) {
                let _ = req.reply.send(Ok(Vec::new()));
                continue;
            }
            let reply = replies.next().unwrap_or(Ok(Vec::new()));
            let reply = match (&committed, reply) {
                // The caller may have given up (task cancelled); the data is stored anyway.
                (Ok(()), Ok(ids)) => Ok(ids),
                (_, Err(detail)) => Err(StoreError::TooLarge {
                    path: self.path.clone(),
                    detail,
                }),
                (Err(e), Ok(_)) => Err(e.clone()),
            };
            let _ = req.reply.send(reply);
        }
        if committed.is_ok() && dropped_now.iter().any(|&n| n > 0) {
            self.log_drops(dropped_now);
        }
    }

    /// Writes one commit (rolling to a new segment first if needed), then
    /// applies it to the state. A failed write is not retried: the callers
    /// see the error and do not ACK their frames, and the journal moves to a
    /// new segment, so whatever the failed write left on disk is never read.
    fn commit(&mut self, mutations: Vec<Mutation>, acks_only: bool) -> Result<(), StoreError> {
        if mutations.is_empty() {
            return Ok(());
        }
        let (body, item_at) = encode_commit(&mutations);
        let rolled = self.journal.needs_roll(body.len());
        if rolled {
            let snapshot = encode_snapshot(&read(&self.shared).state.snapshot());
            self.journal
                .roll(&snapshot)
                .map_err(|e| StoreError::write(&self.path, e))?;
            self.counts
                .written
                .fetch_add(snapshot.len() as u64, Ordering::Relaxed);
            self.counts.syncs.fetch_add(2, Ordering::Relaxed);
            write(&self.shared).files = self.journal.files();
        }
        let durable = !acks_only || self.lazy_commits >= LAZY_ACK_COMMITS;
        let (segment, at) = self
            .journal
            .append(&body, durable)
            .map_err(|e| StoreError::write(&self.path, e))?;
        self.lazy_commits = if durable { 0 } else { self.lazy_commits + 1 };
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        self.counts
            .written
            .fetch_add((body.len() + 16) as u64, Ordering::Relaxed);
        if durable {
            self.counts.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let locs = put_locs(&mutations, segment, at, item_at);
        let applied = write(&self.shared).state.apply(
            mutations,
            locs.into_iter(),
            &self.opts,
            super::now_ms(),
        );
        if let Err(detail) = applied {
            tracing::error!(%detail, "store: a commit on disk did not apply in memory (a bug)");
        }
        if rolled {
            self.relocate();
        }
        self.recycle();
        Ok(())
    }

    /// Recycles the oldest segments while nothing in them is undelivered.
    fn recycle(&mut self) {
        while let Some(oldest) = self.journal.oldest_inactive() {
            if read(&self.shared).state.live.contains_key(&oldest) {
                return;
            }
            if let Err(e) = self.journal.recycle(oldest) {
                tracing::warn!(path = %self.journal.path(oldest).display(), error = %e, "store: cannot recycle a journal segment");
                return;
            }
            write(&self.shared).files = self.journal.files();
        }
    }

    /// Copies the few undelivered items of the oldest segments forward (same
    /// ids), durably, so that those segments can be recycled.
    fn relocate(&mut self) {
        let budget = self.journal.segment_len() / RELOCATE_SHARE;
        let mut moved = Vec::new();
        let mut bytes = 0u64;
        {
            let shared = read(&self.shared);
            for n in self.journal.segment_numbers() {
                let Some(file) = shared.files.get(&n) else {
                    break;
                };
                if n == *shared.files.keys().last().unwrap_or(&n) {
                    break;
                }
                let items = shared.state.items_in(n);
                let size: u64 = items.iter().map(|(_, _, l)| u64::from(l.len)).sum();
                if bytes + size > budget {
                    break;
                }
                for (id, session, loc) in items {
                    let mut buf = vec![0u8; loc.len as usize];
                    if file.read_at(&mut buf, loc.at).is_err() {
                        return;
                    }
                    moved.push(Mutation::Put {
                        session: session.to_string(),
                        id,
                        item: buf,
                    });
                }
                bytes += size;
            }
        }
        if moved.is_empty() {
            return;
        }
        let n = moved.len();
        match self.commit(moved, false) {
            Ok(()) => tracing::debug!(items = n, "store: moved undelivered items forward"),
            Err(e) => tracing::warn!(error = %e, "store: cannot move undelivered items forward"),
        }
    }

    fn log_drops(&self, dropped_now: [u64; 3]) {
        let [telemetry, results, events] = dropped_now;
        let outbox_bytes = read(&self.shared).state.outbox_bytes;
        tracing::warn!(
            dropped_telemetry = telemetry,
            dropped_results = results,
            dropped_events = events,
            max_bytes = self.opts.max_bytes,
            outbox_bytes,
            "outbox over its size cap of {} bytes (store.max_outbox): dropped {}, oldest first",
            self.opts.max_bytes,
            Dropped(dropped_now),
        );
    }
}

fn change(kind: &Kind) -> Option<Change<'_>> {
    match kind {
        Kind::Write(ops) => Some(Change(ops)),
        Kind::Flush => None,
        #[cfg(test)]
        Kind::Panic | Kind::Hold(_) => None,
    }
}

/// A panic elsewhere while holding the lock leaves a state that is still
/// consistent: the writer changes it only in `apply`, which does not panic.
pub(crate) fn read(shared: &RwLock<Shared>) -> std::sync::RwLockReadGuard<'_, Shared> {
    shared.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write(shared: &RwLock<Shared>) -> std::sync::RwLockWriteGuard<'_, Shared> {
    shared.write().unwrap_or_else(PoisonError::into_inner)
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
