//! A batch polls faster: where the profile has a `poll_interval_command`,
//! the running batch first sets [`BATCH_POLL_MS`] and, before its final
//! result, the interval it found. Both are `Job::Tune` commands, sent like
//! steps but not counted as steps.

use serde_json::{json, Map};
use tracing::warn;

use super::batch::End;
use super::Core;
use crate::command::{CommandResult, Status};
use crate::queue::{Job, QueueSlot, QueuedCommand};
use crate::store::Op;

/// The poll interval while a batch runs, when the profile can set it.
pub(super) const BATCH_POLL_MS: u64 = 100;

impl Core {
    /// The current poll interval, when the profile's `poll_interval_command`
    /// can lower it to [`BATCH_POLL_MS`] for the batch and set it back.
    pub(super) fn poll_to_restore(&self) -> Option<u64> {
        let current = u64::try_from(self.link.poll_interval().as_millis()).ok()?;
        let can = current > BATCH_POLL_MS
            && self.tune_command(BATCH_POLL_MS).is_some()
            && self.tune_command(current).is_some();
        can.then_some(current)
    }

    /// The running batch's poll interval change to `ms`.
    pub(super) fn tune_command(&self, ms: u64) -> Option<QueuedCommand> {
        let rule = self.ctx.profile.link.poll_interval_command.as_ref()?;
        let def = self.ctx.profile.command(&rule.command)?;
        let mut args = Map::new();
        args.insert(rule.arg.clone(), json!(ms));
        let body = def.encode(&args).ok()?;
        let run = self.batch.as_ref()?;
        Some(QueuedCommand {
            id: run.id.clone(),
            def: def.clone(),
            body,
            args,
            expires_at: None,
            reply: None,
            accepted: run.accepted,
            accepted_ms: run.accepted_ms,
            job: Job::Tune,
            slot: QueueSlot::none(),
        })
    }

    /// A poll interval change completed; the batch goes on either way.
    pub(super) fn tune_done(&mut self, result: CommandResult) {
        if result.status != Status::Ok {
            warn!(machine = %self.machine, status = result.status.as_str(), error = ?result.error, "batch: poll interval change failed");
        }
    }

    /// Ends the batch, or first sets the poll interval back (the end then
    /// follows that command).
    pub(super) fn end_or_restore(&mut self, end: End) -> Vec<Op> {
        let link_up = self.link.is_up();
        if let Some(run) = self.batch.as_mut().filter(|_| link_up) {
            if let Some(ms) = run.restore_ms.take() {
                run.tune = Some(ms);
                run.ending = Some(end);
                return Vec::new();
            }
        }
        match self.batch.take() {
            Some(run) => self.end_ops(run, end),
            None => Vec::new(),
        }
    }
}
