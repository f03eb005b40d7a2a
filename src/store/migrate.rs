//! Converts the redb database of vendgate before the journal
//! (`vendgate.redb`) at the first open: its outbox items (same ids, same
//! bytes), machine states, command records, batches and drop counts become
//! the journal's first segment. The journal is built under `journal.tmp` and
//! renamed into place once complete, so a crash halfway leaves the old
//! database in charge; only then is the database renamed to
//! `vendgate.redb.migrated` (kept, not deleted: an operator may want it).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::codec::{class_of, encode_commit, encode_snapshot};
use super::journal::disk::FsDir;
use super::journal::{Journal, DEFAULT_SEGMENT_LEN};
use super::state::{Mutation, Snapshot};
use super::tables::*;
use super::{CommandRecord, MachineState, StoreError, LEGACY_DB_FILE};

pub(crate) fn if_needed(dir: &Path, journal: &Path) -> Result<(), StoreError> {
    let db_path = dir.join(LEGACY_DB_FILE);
    if !db_path.exists() {
        return Ok(());
    }
    let fail = |detail: String| StoreError::Migrate {
        path: db_path.clone(),
        detail,
    };
    if !journal.exists() {
        let tmp = dir.join("journal.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        }
        let (snapshot, items) = read_legacy(&db_path).map_err(fail)?;
        write_journal(&tmp, &snapshot, items.clone()).map_err(fail)?;
        std::fs::rename(&tmp, journal).map_err(|e| fail(e.to_string()))?;
        sync_dir(dir).map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            path = %db_path.display(),
            outbox_items = items.len(),
            machines = snapshot.machines.len(),
            commands = snapshot.commands.len(),
            "store: converted the state database of an earlier vendgate to the journal"
        );
    }
    let aside = dir.join(format!("{LEGACY_DB_FILE}.migrated"));
    std::fs::rename(&db_path, &aside).map_err(|e| fail(e.to_string()))?;
    sync_dir(dir).map_err(|e| fail(e.to_string()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

type Items = Vec<(String, u64, Vec<u8>)>;

/// Everything of the old database: a snapshot and the outbox items.
fn read_legacy(path: &Path) -> Result<(Snapshot, Items), String> {
    let db = Database::open(path).map_err(|e| e.to_string())?;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let e = |e: redb::Error| e.to_string();
    let mut snap = Snapshot::default();
    let mut max_id = 0u64;
    let mut items = Vec::new();
    if let Ok(meta) = txn.open_table(META) {
        let get = |key: &str| -> Result<u64, String> {
            Ok(meta
                .get(key)
                .map_err(|x| e(x.into()))?
                .map_or(0, |g| g.value()))
        };
        snap.next_id = get(NEXT_OUTBOX_ID)?;
        for (n, key) in snap.dropped.iter_mut().zip(DROPPED) {
            *n = get(key)?;
        }
    }
    if let Ok(outbox) = txn.open_table(OUTBOX) {
        for entry in outbox.iter().map_err(|x| e(x.into()))? {
            let (k, v) = entry.map_err(|x| e(x.into()))?;
            let (session, id) = k.value();
            let value = v.value().to_vec();
            if let Err(detail) = class_of(&value) {
                tracing::warn!(%session, id, %detail, "store: an unreadable outbox item of the old database is not converted");
                continue;
            }
            max_id = max_id.max(id);
            items.push((session.to_string(), id, value));
        }
    }
    snap.next_id = snap.next_id.max(max_id + 1).max(1);
    if let Ok(machines) = txn.open_table(MACHINES) {
        for entry in machines.iter().map_err(|x| e(x.into()))? {
            let (k, v) = entry.map_err(|x| e(x.into()))?;
            match serde_json::from_slice::<MachineState>(v.value()) {
                Ok(state) => snap.machines.push((k.value().to_string(), state)),
                Err(err) => return Err(format!("machine {:?}: {err}", k.value())),
            }
        }
    }
    if let Ok(commands) = txn.open_table(COMMANDS) {
        for entry in commands.iter().map_err(|x| e(x.into()))? {
            let (k, v) = entry.map_err(|x| e(x.into()))?;
            let (machine, id) = k.value();
            match serde_json::from_slice::<CommandRecord>(v.value()) {
                Ok(record) => snap.commands.push((machine.to_string(), record)),
                Err(err) => {
                    tracing::warn!(%machine, %id, error = %err, "store: an unreadable command record of the old database is not converted");
                }
            }
        }
    }
    // Oldest first, as a snapshot lists them.
    snap.commands.sort_by_key(|(_, r)| r.at_ms);
    if let Ok(batches) = txn.open_table(BATCHES) {
        for entry in batches.iter().map_err(|x| e(x.into()))? {
            let (k, v) = entry.map_err(|x| e(x.into()))?;
            let (machine, id) = k.value();
            snap.batches
                .push((machine.to_string(), id.to_string(), v.value().to_string()));
        }
    }
    Ok((snap, items))
}

fn write_journal(dir: &Path, snap: &Snapshot, items: Items) -> Result<(), String> {
    let fs = FsDir::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let initial = encode_snapshot(snap);
    let (mut journal, _) = Journal::open(Arc::new(fs), DEFAULT_SEGMENT_LEN, &initial, |_| Ok(()))
        .map_err(|e| e.to_string())?;
    let puts: Vec<Mutation> = items
        .into_iter()
        .map(|(session, id, item)| Mutation::Put { session, id, item })
        .collect();
    if !puts.is_empty() {
        let (body, _) = encode_commit(&puts);
        journal
            .append(&body, true)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}
