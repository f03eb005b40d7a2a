//! The command in progress, from the device queue to its result.
//!
//! One command at a time: it is recorded durably as `Written` (with the
//! sequence number it will carry) before its frame can reach the wire, so a
//! gateway that dies mid-command reports it on restart instead of sending
//! it again. A command that completes with an answer blocks the next one
//! until the answer or its timeout, because answers carry no id.

use std::time::{Duration, Instant};

use tracing::info;

use super::messages::Decoded;
use super::writes::Purpose;
use super::Core;
use super::Restored;
use crate::command::{CommandResult, Status};
use crate::profile::{Completion, LinkMode};
use crate::queue::{Job, QueuedCommand};
use crate::store::{CommandPhase, CommandRecord, Op, ReplyTo};

/// How long a command waits for a machine whose link is down before its
/// result is `offline`.
pub const OFFLINE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct InProgress {
    pub cmd: QueuedCommand,
    pub token: u64,
    pub phase: Phase,
}

#[derive(Debug, PartialEq)]
pub(super) enum Phase {
    /// Its `Written` record is being committed.
    Recording,
    /// Held by the link for the next POLL.
    Staged,
    /// On the wire at least once, not yet acknowledged.
    Written,
    /// Acknowledged; waits for the answer message.
    Awaiting { message: String, deadline: Instant },
}

impl Core {
    /// Commands left open by a gateway that stopped: never sent again on
    /// their own (DESIGN §4), reported `failed` with what is known.
    pub(super) fn recover(&mut self, restored: Restored) {
        let Restored {
            open, mut batches, ..
        } = restored;
        let mut ops = Vec::new();
        // Oldest first at the head of the queue.
        for record in open.iter().rev().filter(|r| r.progress.is_some()) {
            let stored = batches.remove(&record.id);
            let resumed = self.resume_batch(record.clone(), stored);
            ops.extend(resumed);
        }
        for record in open.into_iter().filter(|r| r.progress.is_none()) {
            let error = match record.phase {
                CommandPhase::Queued => "the gateway stopped before this command was sent to the machine; it was not sent and will not be sent",
                _ => "the gateway stopped after this command was written to the machine and before it completed; its outcome is unknown, check the machine before retrying",
            };
            info!(machine = %self.machine, id = %record.id, "reporting command left open by the last run");
            let result = CommandResult::error(Some(&record.id), Status::Failed, error);
            ops.extend(self.result_ops(
                &record.id,
                &record.command,
                record.at_ms,
                record.reply.as_ref(),
                &result,
            ));
        }
        if !ops.is_empty() {
            self.schedule(ops, Purpose::Done);
        }
    }

    /// Takes the next queued command up when the link can carry it.
    pub(super) fn advance_queue(&mut self) {
        let can_send = self.link_can_send();
        while self.current.is_none() && can_send && !self.link.busy() {
            if self.batch.is_some() {
                self.next_step();
                continue;
            }
            let Some(cmd) = self.dequeue() else { return };
            if expired(&cmd) {
                self.finish(cmd, CommandResult::error(None, Status::Expired, EXPIRED));
                continue;
            }
            if matches!(cmd.job, Job::Batch(_)) {
                self.start_batch(cmd);
                continue;
            }
            self.stage_command(cmd);
        }
    }

    /// Records `cmd` as written (a step: its batch's progress, in flight)
    /// and hands it to the link once that is durable.
    pub(super) fn stage_command(&mut self, cmd: QueuedCommand) {
        let token = self.take_token();
        let seq = self.link.peek_next_seq().unwrap_or(0);
        let record = self.record_of(&cmd, CommandPhase::Written);
        let ops = vec![
            Op::PutCommand {
                machine: self.machine.clone(),
                record,
            },
            self.state_op_with(None, seq),
        ];
        self.current = Some(InProgress {
            cmd,
            token,
            phase: Phase::Recording,
        });
        self.schedule(ops, Purpose::Stage { token });
    }

    /// The record of `cmd` in `phase`; for a batch step the batch's record
    /// with the step in flight while `Written`.
    fn record_of(&self, cmd: &QueuedCommand, phase: CommandPhase) -> CommandRecord {
        let step = match cmd.job {
            Job::Step(index) => Some((index, phase == CommandPhase::Written)),
            // Not a step: the batch's record stays as it is.
            Job::Tune => self.batch.as_ref().map(|b| (b.job.progress.next, false)),
            _ => None,
        };
        if let Some(record) = step.and_then(|(index, in_flight)| self.step_record(index, in_flight))
        {
            return record;
        }
        CommandRecord {
            id: cmd.id.clone(),
            command: cmd.def.name.clone(),
            phase,
            at_ms: cmd.accepted_ms,
            progress: None,
            reply: cmd.reply.clone(),
        }
    }

    pub(super) fn staged(&mut self, token: u64, ok: bool) {
        let Some(current) = self.current.as_mut().filter(|c| c.token == token) else {
            return;
        };
        if !ok {
            let cmd = self.current.take().map(|c| c.cmd);
            if let Some(cmd) = cmd {
                let error = "the gateway could not record the command durably (see its log); it was not sent";
                self.finish(cmd, CommandResult::error(None, Status::Failed, error));
            }
            return;
        }
        current.phase = Phase::Staged;
        let code = current.cmd.def.code.clone();
        let body = current.cmd.body.clone();
        self.link.stage(token, code, &body);
    }

    pub(super) fn written(&mut self, token: u64) {
        if let Some(current) = self.current.as_mut().filter(|c| c.token == token) {
            if current.phase == Phase::Staged {
                current.phase = Phase::Written;
            }
        }
    }

    pub(super) fn on_acked(&mut self, token: u64) {
        let Some(current) = self.current.as_mut().filter(|c| c.token == token) else {
            return;
        };
        if let Some(rule) = &self.ctx.profile.link.poll_interval_command {
            if rule.command == current.cmd.def.name {
                if let Some(ms) = current.cmd.args.get(&rule.arg).and_then(|v| v.as_u64()) {
                    self.link.set_poll_interval(Duration::from_millis(ms));
                }
            }
        }
        match &current.cmd.def.completion {
            Completion::Ack => {
                if let Some(done) = self.current.take() {
                    self.finish(done.cmd, CommandResult::new(None, Status::Ok));
                }
            }
            Completion::Answer { message, timeout } => {
                current.phase = Phase::Awaiting {
                    message: message.clone(),
                    deadline: self.now + *timeout,
                };
            }
        }
    }

    /// The result ops when `decoded` is the answer the current command waits
    /// for (also accepted before its ACK: an answer proves receipt).
    pub(super) fn complete_with_answer(&mut self, decoded: &Decoded) -> Vec<Op> {
        let waits = match &self.current {
            Some(InProgress {
                cmd,
                phase: Phase::Written | Phase::Awaiting { .. },
                ..
            }) => {
                matches!(&cmd.def.completion, Completion::Answer { message, .. } if *message == decoded.name)
            }
            _ => false,
        };
        if !waits {
            return Vec::new();
        }
        let Some(done) = self.current.take() else {
            return Vec::new();
        };
        // If it was still outstanding on the link, the answer ends that too.
        if self.link.busy() {
            self.link.release();
        }
        let result = CommandResult::new(Some(&done.cmd.id), Status::Ok)
            .with_response(decoded.fields.clone());
        match done.cmd.job {
            Job::Step(index) => return self.step_done(index, result),
            Job::Tune => return Vec::new(),
            _ => {}
        }
        self.result_ops(
            &done.cmd.id,
            &done.cmd.def.name,
            done.cmd.accepted_ms,
            done.cmd.reply.as_ref(),
            &result,
        )
    }

    /// The record that puts a staged, never-written current command back
    /// to `Queued` (see `drain_writes`).
    pub(super) fn unsent_current_record(&self) -> Option<Op> {
        let current = self
            .current
            .as_ref()
            .filter(|c| matches!(c.phase, Phase::Recording | Phase::Staged))?;
        Some(Op::PutCommand {
            machine: self.machine.clone(),
            record: self.record_of(&current.cmd, CommandPhase::Queued),
        })
    }

    pub(super) fn collect_gave_up(&mut self) {
        for token in self.link.take_gave_up() {
            if let Some(done) = self.current.take_if(|c| c.token == token) {
                let attempts = self.ctx.profile.link.retries + 1;
                // Say what happened on this link: as master we wait for an
                // answer, elsewhere for an ACK.
                let error = match self.link.mode() {
                    LinkMode::HostPolls => format!(
                        "the machine did not answer the command; it was sent {attempts} times"
                    ),
                    _ => format!(
                        "the machine did not acknowledge the command after {attempts} attempts"
                    ),
                };
                self.finish(done.cmd, CommandResult::error(None, Status::Timeout, error));
            }
        }
    }

    pub(super) fn check_deadlines(&mut self) {
        let now = self.now;
        if let Some(InProgress {
            phase: Phase::Awaiting { message, deadline },
            ..
        }) = &self.current
        {
            if now >= *deadline {
                let error = format!("the machine acknowledged the command but did not answer with `{message}` in time");
                if let Some(done) = self.current.take() {
                    self.finish(done.cmd, CommandResult::error(None, Status::Timeout, error));
                }
            }
        }
        let down_long = self
            .down_since
            .is_some_and(|since| now.saturating_duration_since(since) >= OFFLINE_WAIT);
        if down_long {
            self.fail_current_offline();
            self.batch_offline();
        }
        let offline = |cmd: &QueuedCommand| {
            down_long && now.saturating_duration_since(cmd.accepted) >= OFFLINE_WAIT
        };
        if !self.queue.iter().any(|cmd| expired(cmd) || offline(cmd)) {
            return;
        }
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|cmd| expired(cmd) || offline(cmd));
        self.queue = keep.into();
        for mut cmd in done {
            cmd.slot.release();
            if expired(&cmd) {
                self.finish(cmd, CommandResult::error(None, Status::Expired, EXPIRED));
            } else {
                let error = format!(
                    "the machine's link is down and did not return within {}s; the command was not sent",
                    OFFLINE_WAIT.as_secs()
                );
                self.finish(cmd, CommandResult::error(None, Status::Offline, error));
            }
        }
    }

    fn fail_current_offline(&mut self) {
        let error = match self.current.as_ref().map(|c| &c.phase) {
            Some(Phase::Staged) => {
                self.link.unstage();
                "the machine's link is down and did not return in time; the command was not sent"
            }
            Some(Phase::Written) => {
                self.link.release();
                "the machine's link was lost after the command was written; its outcome is unknown"
            }
            _ => return,
        };
        if let Some(done) = self.current.take() {
            self.finish(done.cmd, CommandResult::error(None, Status::Offline, error));
        }
    }

    /// Publishes the result and records the outcome for `duplicate`.
    pub(super) fn finish(&mut self, cmd: QueuedCommand, mut result: CommandResult) {
        result.id = Some(cmd.id.clone());
        match cmd.job {
            Job::Step(index) => {
                let ops = self.step_done(index, result);
                return self.schedule(ops, Purpose::Done);
            }
            Job::Tune => return self.tune_done(result),
            _ => {}
        }
        let removal = self.queued_batch_end(&cmd, &mut result);
        if result.status != Status::Ok {
            info!(machine = %self.machine, id = %cmd.id, command = %cmd.def.name, status = result.status.as_str(), error = ?result.error, "command result");
        }
        let mut ops = self.result_ops(
            &cmd.id,
            &cmd.def.name,
            cmd.accepted_ms,
            cmd.reply.as_ref(),
            &result,
        );
        ops.extend(removal);
        self.schedule(ops, Purpose::Done);
    }

    pub(super) fn result_ops(
        &self,
        id: &str,
        command: &str,
        at_ms: i64,
        reply: Option<&ReplyTo>,
        result: &CommandResult,
    ) -> Vec<Op> {
        let (mut ops, json) = result.publication(&self.ctx.config, &self.machine, command, reply);
        ops.push(Op::PutCommand {
            machine: self.machine.clone(),
            record: CommandRecord {
                id: id.to_owned(),
                command: command.to_owned(),
                phase: CommandPhase::Done { result: json },
                at_ms,
                progress: None,
                // Done: no result is published for it any more.
                reply: None,
            },
        });
        ops
    }
}

const EXPIRED: &str =
    "the command's expiry (expires_at or its MQTT message expiry interval) passed before it could be sent to the machine; it was not executed";

fn expired(cmd: &QueuedCommand) -> bool {
    cmd.expires_at.is_some_and(|at| at <= chrono::Utc::now())
}
