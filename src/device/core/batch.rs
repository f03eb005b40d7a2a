//! A batch on the device: its steps go through the single-command path
//! (`commands.rs`) one at a time, as `Job::Step` commands; this file keeps
//! the batch's progress, its reports, cancel and its end. Resuming after a
//! restart is in `batch_resume.rs`, the faster polls in `batch_poll.rs`.
//!
//! Progress lives in the batch's `CommandRecord` and is written with each
//! step's `Written` record and with its completion, so a restart knows the
//! next step not acknowledged and whether a step may have been on the wire.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::info;

use super::batch_poll::BATCH_POLL_MS;
use super::writes::Purpose;
use super::Core;
use crate::command::batch::BATCH;
use crate::command::{CommandResult, Status};
use crate::queue::{BatchJob, Job, QueueSlot, QueuedCommand};
use crate::store::{CommandPhase, CommandRecord, Op, ReplyTo};

/// Progress reports at most this often (plus at every state change).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The batch whose steps are running.
#[derive(Debug)]
pub(super) struct Running {
    pub id: String,
    pub accepted: Instant,
    pub accepted_ms: i64,
    pub job: BatchJob,
    pub cancelled: bool,
    pub last_report: Instant,
    /// A poll interval (ms) to send before the next step (`batch_poll.rs`).
    pub tune: Option<u64>,
    /// The poll interval (ms) to restore before the batch ends.
    pub restore_ms: Option<u64>,
    /// The end decided while the poll interval is being restored.
    pub ending: Option<End>,
    /// MQTT 5: where its reports and result go too.
    pub reply: Option<ReplyTo>,
}

/// How a batch ends: `None` is what its steps give (`ok` or `failed`).
pub(super) type End = Option<(Status, String)>;

impl Core {
    /// A batch reaches the head of the queue: it runs from its progress.
    pub(super) fn start_batch(&mut self, cmd: QueuedCommand) {
        let Job::Batch(job) = cmd.job else { return };
        info!(machine = %self.machine, id = %cmd.id, steps = job.steps.len(), next = job.progress.next, "batch starts");
        let run = Running {
            id: cmd.id,
            accepted: cmd.accepted,
            accepted_ms: cmd.accepted_ms,
            job: *job,
            cancelled: false,
            last_report: self.now,
            tune: None,
            restore_ms: None,
            ending: None,
            reply: cmd.reply,
        };
        let ops = self.report_ops(&run, None);
        self.batch = Some(run);
        let restore = self.poll_to_restore();
        if let Some(run) = self.batch.as_mut() {
            run.tune = restore.map(|_| BATCH_POLL_MS);
            run.restore_ms = restore;
        }
        self.schedule(ops, Purpose::Done);
    }

    /// Stages the running batch's next step, or ends the batch. Called when
    /// nothing is in progress and the link can take a command.
    pub(super) fn next_step(&mut self) {
        let tune = self.batch.as_mut().and_then(|run| run.tune.take());
        if let Some(cmd) = tune.and_then(|ms| self.tune_command(ms)) {
            return self.stage_command(cmd);
        }
        let ending = self.batch.as_mut().and_then(|run| run.ending.take());
        if let Some(end) = ending {
            if let Some(run) = self.batch.take() {
                let ops = self.end_ops(run, end);
                self.schedule(ops, Purpose::Done);
            }
            return;
        }
        let Some(run) = self.batch.as_ref() else {
            return;
        };
        let progress = &run.job.progress;
        let end = if run.cancelled {
            Some((
                Status::Cancelled,
                "the batch was cancelled; steps after the last one done were not sent".to_owned(),
            ))
        } else if progress
            .expires_at_ms
            .is_some_and(|at| at <= chrono::Utc::now().timestamp_millis())
        {
            Some((Status::Expired, format!("the batch's expiry (expires_at or its MQTT message expiry interval) passed before step {} was sent; it and the steps after it were not sent", progress.next)))
        } else {
            None
        };
        let index = progress.next;
        let step = run.job.steps.get(index);
        if end.is_some() || step.is_none() {
            let ops = self.end_or_restore(end);
            self.schedule(ops, Purpose::Done);
            return;
        }
        let Some(step) = step else { return };
        let cmd = QueuedCommand {
            id: run.id.clone(),
            def: step.def.clone(),
            body: step.body.clone(),
            args: step.args.clone(),
            expires_at: None,
            accepted: run.accepted,
            accepted_ms: run.accepted_ms,
            job: Job::Step(index),
            // A step's outcome is reported by its batch.
            reply: None,
            slot: QueueSlot::none(),
        };
        self.stage_command(cmd);
    }

    /// The batch's record for step `index` in `phase`: written before the
    /// step can reach the wire (`in_flight`), and again when it is done.
    pub(super) fn step_record(&self, index: usize, in_flight: bool) -> Option<CommandRecord> {
        let run = self.batch.as_ref()?;
        let mut progress = run.job.progress.clone();
        progress.next = index;
        progress.in_flight = in_flight;
        Some(CommandRecord {
            id: run.id.clone(),
            command: BATCH.to_owned(),
            phase: CommandPhase::Written,
            at_ms: run.accepted_ms,
            progress: Some(progress),
            reply: run.reply.clone(),
        })
    }

    /// A step's outcome: the ops recording it (and reporting, or ending the
    /// batch), for the caller to write.
    pub(super) fn step_done(&mut self, index: usize, result: CommandResult) -> Vec<Op> {
        let Some(run) = self.batch.as_mut() else {
            return Vec::new();
        };
        let name = run
            .job
            .steps
            .get(index)
            .map(|s| s.def.name.clone())
            .unwrap_or_default();
        let failed = result.status != Status::Ok;
        let progress = &mut run.job.progress;
        // A step that ends `offline` was not sent, or its outcome is
        // unknown: it does not count as done.
        progress.next = index + usize::from(result.status != Status::Offline);
        progress.in_flight = false;
        if failed {
            let error = result.error.clone().unwrap_or_default();
            progress.failures.push((index, name.clone(), error));
        }
        let last = last_step(index, &name, &result);
        let end = if result.status == Status::Offline {
            Some(Some((Status::Offline, format!("step {index} ({name}): the machine's link is down and did not return in time; the batch stopped there"))))
        } else if (failed && !progress.continue_on_error)
            || progress.next >= run.job.steps.len()
            || run.cancelled
        {
            let status = run.cancelled.then(|| {
                let error = format!(
                    "the batch was cancelled after step {index}; later steps were not sent"
                );
                (Status::Cancelled, error)
            });
            Some(status)
        } else {
            None
        };
        let next = self
            .batch
            .as_ref()
            .map_or(index, |run| run.job.progress.next);
        let mut ops = Vec::new();
        if let Some(record) = self.step_record(next, false) {
            ops.push(Op::PutCommand {
                machine: self.machine.clone(),
                record,
            });
        }
        if let Some(end) = end {
            ops.extend(self.end_or_restore(end));
            return ops;
        }
        let due = self
            .batch
            .as_ref()
            .is_some_and(|run| run.last_report.elapsed() >= REPORT_EVERY);
        if failed || due {
            if let Some(run) = self.batch.as_ref() {
                ops.extend(self.report_ops(run, Some(last)));
            }
            if let Some(run) = self.batch.as_mut() {
                run.last_report = self.now;
            }
        }
        ops
    }

    /// The final result of a batch, its record and the removal of its steps.
    /// `end` overrides the outcome the steps give (`ok` or `failed`).
    pub(super) fn end_ops(&self, run: Running, end: End) -> Vec<Op> {
        let progress = &run.job.progress;
        let total = run.job.steps.len();
        let mut result = match end {
            Some((status, error)) => CommandResult::error(Some(&run.id), status, error),
            None if progress.failures.is_empty() => CommandResult::ok(&run.id),
            None => {
                let n = progress.failures.len();
                CommandResult::error(
                    Some(&run.id),
                    Status::Failed,
                    format!("{n} of {total} steps failed; see failed_step(s)"),
                )
            }
        };
        let done = progress.next.min(total);
        result.set("done", json!(done));
        result.set("total", json!(total));
        let failures: Vec<Value> = progress
            .failures
            .iter()
            .map(|(index, cmd, error)| json!({"index": index, "cmd": cmd, "error": error}))
            .collect();
        if progress.continue_on_error {
            if !failures.is_empty() {
                result.set("failed_steps", failures.into());
            }
        } else if let Some(first) = failures.into_iter().next() {
            result.set("failed_step", first);
        }
        info!(machine = %self.machine, id = %run.id, status = result.status.as_str(), done, total, "batch ends");
        let mut ops = self.result_ops(&run.id, BATCH, run.accepted_ms, run.reply.as_ref(), &result);
        ops.push(Op::RemoveBatch {
            machine: self.machine.clone(),
            id: run.id,
        });
        ops
    }

    /// A `running` report with `done`, `total` and the last step's outcome.
    fn report_ops(&self, run: &Running, last: Option<Value>) -> Vec<Op> {
        let mut result = CommandResult::new(Some(&run.id), Status::Running);
        let done = run.job.progress.next;
        result.set("done", json!(done));
        result.set("total", json!(run.job.steps.len()));
        if let Some(last) = last {
            result.set("last", last);
        }
        result
            .publication(&self.ctx.config, &self.machine, BATCH, run.reply.as_ref())
            .0
    }

    /// Ops for a batch that ends while still queued (`expired`, `offline`,
    /// `cancelled`): its result carries `done`/`total`, its steps go.
    pub(super) fn queued_batch_end(
        &self,
        cmd: &QueuedCommand,
        result: &mut CommandResult,
    ) -> Option<Op> {
        let Job::Batch(job) = &cmd.job else {
            return None;
        };
        result.set("done", json!(job.progress.next));
        result.set("total", json!(job.steps.len()));
        Some(Op::RemoveBatch {
            machine: self.machine.clone(),
            id: cmd.id.clone(),
        })
    }

    /// `cancel`: a running batch stops after its current step; a queued one
    /// is removed. The cancel's own result is `ok`, or `rejected` when the
    /// target is unknown or finished.
    pub(super) fn cancel(&mut self, cmd: QueuedCommand, target: &str) {
        let running = self.batch.as_mut().filter(|run| run.id == target);
        if let Some(run) = running {
            run.cancelled = true;
            info!(machine = %self.machine, id = %target, "batch cancelled; stops after the current step");
            if self.current.is_none() {
                self.next_step();
            }
            return self.finish(cmd, CommandResult::new(None, Status::Ok));
        }
        let queued = self
            .queue
            .iter()
            .position(|c| c.id == target && matches!(c.job, Job::Batch(_)));
        if let Some(mut batch) = queued.and_then(|at| self.queue.remove(at)) {
            batch.slot.release();
            let error = "the batch was cancelled before it started; no step was sent";
            self.finish(batch, CommandResult::error(None, Status::Cancelled, error));
            return self.finish(cmd, CommandResult::new(None, Status::Ok));
        }
        let error = format!("no queued or running batch has the id `{target}` (unknown or already finished); nothing was cancelled");
        self.finish(cmd, CommandResult::error(None, Status::Rejected, error));
    }

    /// A running batch waiting for a link that stayed down: `offline`.
    /// A batch whose end was decided keeps it: only restoring the poll
    /// interval was left.
    pub(super) fn batch_offline(&mut self) {
        if self.current.is_some() {
            return;
        }
        if let Some(mut run) = self.batch.take() {
            let end = run.ending.take().unwrap_or_else(|| {
                let error = format!("the machine's link is down and did not return in time; steps from {} on were not sent", run.job.progress.next);
                Some((Status::Offline, error))
            });
            let ops = self.end_ops(run, end);
            self.schedule(ops, Purpose::Done);
        }
    }
}

/// `last` of a progress report.
fn last_step(index: usize, name: &str, result: &CommandResult) -> Value {
    let mut last = json!({"index": index, "cmd": name, "status": result.status.as_str()});
    if let Some(response) = &result.response {
        last["response"] = Value::Object(response.clone());
    }
    if let Some(error) = &result.error {
        last["error"] = json!(error);
    }
    last
}
