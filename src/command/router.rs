//! From a command publish to a queued command, or to an immediate result.
//!
//! Order of checks, each with a result a person can act on:
//! size → JSON → `id` → retained flag → duplicate `id` → `expires_at` →
//! command name → arguments (the profile validates and encodes) → queue
//! space. Only a command that passes all of them is recorded (its `id` is
//! used from then on) and handed to the device task; nothing else ever
//! reaches the serial line.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, warn};

use super::{batch, parse, CommandResult, Status};
use crate::config::Config;
use crate::device::{gateway_command, BatchJob, Job, QueuedCommand};
use crate::mqtt::Publish;
use crate::profile::Profile;
use crate::store::{BatchProgress, CommandPhase, CommandRecord, Op, Store};

pub struct Router {
    pub machine: String,
    pub config: Arc<Config>,
    pub profile: Arc<Profile>,
    pub store: Store,
    pub device: mpsc::UnboundedSender<QueuedCommand>,
    pub queued: Arc<AtomicUsize>,
    pub outbox_ready: Arc<Notify>,
}

/// Commands handled in one durable write when they arrive in a burst.
const BATCH: usize = 256;

/// What one command publish came to.
enum Verdict {
    Accept(QueuedCommand),
    Reply(String, CommandResult),
    Ignore,
}

impl Router {
    pub async fn run(self, mut publishes: mpsc::Receiver<Publish>) {
        let mut batch = Vec::with_capacity(BATCH);
        while publishes.recv_many(&mut batch, BATCH).await > 0 {
            self.handle_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn handle_batch(&self, publishes: Vec<Publish>) {
        let mut ops = Vec::new();
        let mut accepted = Vec::new();
        let mut in_batch = HashSet::new();
        for publish in publishes {
            match self.judge(&publish, &in_batch, accepted.len()) {
                Verdict::Accept(cmd) => {
                    in_batch.insert(cmd.id.clone());
                    let mut progress = None;
                    if let Job::Batch(job) = &cmd.job {
                        progress = Some(job.progress.clone());
                        ops.push(Op::PutBatch {
                            machine: self.machine.clone(),
                            id: cmd.id.clone(),
                            steps_json: job.steps_json.clone(),
                        });
                    }
                    ops.push(Op::PutCommand {
                        machine: self.machine.clone(),
                        record: CommandRecord {
                            id: cmd.id.clone(),
                            command: cmd.def.name.clone(),
                            phase: CommandPhase::Queued,
                            at_ms: cmd.accepted_ms,
                            progress,
                        },
                    });
                    accepted.push(cmd);
                }
                Verdict::Reply(command, result) => ops.push(self.result_op(&command, &result)),
                Verdict::Ignore => {}
            }
        }
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self.store.write(ops).await {
            // Nothing was recorded, so nothing is queued: the business side
            // sees no result and may retry with the same id.
            error!(machine = %self.machine, error = %e, "cannot record commands; {} dropped", accepted.len());
            return;
        }
        self.outbox_ready.notify_one();
        for cmd in accepted {
            self.queued.fetch_add(1, Ordering::SeqCst);
            if self.device.send(cmd).is_err() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                warn!(machine = %self.machine, "device task is gone; command left for the restart report");
            }
        }
    }

    fn judge(&self, publish: &Publish, in_batch: &HashSet<String>, accepted_now: usize) -> Verdict {
        debug!(machine = %self.machine, topic = %publish.topic, retain = publish.retain, bytes = publish.payload.len(), "command publish");
        let config = &self.config;
        let Some(command) = config.topics.command_of(
            &publish.topic,
            &config.mqtt.topic_prefix,
            &self.machine,
            &config.gateway.id,
        ) else {
            debug!(topic = %publish.topic, "not a command topic");
            return Verdict::Ignore;
        };
        let envelope = match parse::envelope(
            &publish.payload,
            publish.retain,
            config.commands.max_payload,
        ) {
            Ok(envelope) => envelope,
            Err(result) => return Verdict::Reply(command, result),
        };
        let id = envelope.id.clone();
        if let Some(duplicate) = self.duplicate(&id, in_batch) {
            return Verdict::Reply(command, duplicate);
        }
        // The gateway's own commands come before the profile's.
        let gateway = match command.as_str() {
            batch::BATCH => Some(batch_job(&self.profile, &envelope)),
            batch::CANCEL => Some(batch::parse_cancel(&envelope).map(Job::Cancel)),
            _ => None,
        };
        let parsed = match gateway {
            Some(Ok(job)) => parse::Parsed {
                def: gateway_command(&command),
                body: Vec::new(),
                args: Default::default(),
                // A batch still queued when it passes ends `expired` there.
                expires_at: match &job {
                    Job::Batch(b) => b
                        .progress
                        .expires_at_ms
                        .and_then(chrono::DateTime::from_timestamp_millis),
                    _ => None,
                },
                job,
            },
            Some(Err(result)) => return Verdict::Reply(command, result),
            None => match parse::body(&self.profile, &command, envelope, chrono::Utc::now()) {
                Ok(parsed) => parsed,
                Err(result) => return Verdict::Reply(command, result),
            },
        };
        let queued = self.queued.load(Ordering::SeqCst) + accepted_now;
        let is_cancel = matches!(parsed.job, Job::Cancel(_));
        if queued >= config.commands.queue_limit && !is_cancel {
            return Verdict::Reply(
                command,
                CommandResult::error(
                    Some(&id),
                    Status::Busy,
                    format!("the machine's command queue is full ({queued} commands); nothing was queued, retry later"),
                ),
            );
        }
        Verdict::Accept(QueuedCommand {
            id,
            def: parsed.def,
            body: parsed.body,
            args: parsed.args,
            expires_at: parsed.expires_at,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            job: parsed.job,
        })
    }

    /// `duplicate` with the original's published result, or without it
    /// while the original is still in progress.
    fn duplicate(&self, id: &str, in_batch: &HashSet<String>) -> Option<CommandResult> {
        const IN_PROGRESS: &str =
            "a command with this id is still in progress; nothing was sent again";
        if in_batch.contains(id) {
            return Some(CommandResult::error(
                Some(id),
                Status::Duplicate,
                IN_PROGRESS,
            ));
        }
        let record = match self.store.command(&self.machine, id) {
            Ok(record) => record?,
            Err(e) => {
                // Unknown is not "new": refusing is the safe side.
                error!(machine = %self.machine, error = %e, "cannot look up command id");
                return Some(CommandResult::error(Some(id), Status::Failed, "the gateway cannot check this id against the commands already executed (store error); nothing was sent"));
            }
        };
        let mut result = CommandResult::error(Some(id), Status::Duplicate, IN_PROGRESS);
        if let CommandPhase::Done { result: original } = record.phase {
            result.error = Some("this id was already executed; nothing was sent again, the original result is in `original`".into());
            if let Ok(original) = serde_json::from_str(&original) {
                result.set("original", original);
            }
        }
        Some(result)
    }

    fn result_op(&self, command: &str, result: &CommandResult) -> Op {
        result.publication(&self.config, &self.machine, command).0
    }
}

/// A validated batch, ready to queue, with its progress at step 0.
fn batch_job(profile: &Profile, envelope: &parse::Envelope) -> Result<Job, CommandResult> {
    let batch = batch::parse_batch(profile, envelope, chrono::Utc::now())?;
    let progress = BatchProgress {
        continue_on_error: batch.continue_on_error,
        expires_at_ms: batch.expires_at.map(|at| at.timestamp_millis()),
        ..BatchProgress::default()
    };
    Ok(Job::Batch(Box::new(BatchJob {
        steps: batch.steps,
        progress,
        steps_json: batch.steps_json,
    })))
}
