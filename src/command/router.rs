//! From a command publish to a queued command, or to an immediate result.
//!
//! Order of checks, each with a result a person can act on:
//! size → JSON → `id` → retained flag → duplicate `id` → `expires_at` →
//! command name → arguments (the profile validates and encodes) → queue
//! space. Only a command that passes all of them is recorded (its `id` is
//! used from then on) and handed to the device task; nothing else ever
//! reaches the serial line.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, warn};

use super::{batch, parse, CommandResult, Status};
use crate::config::Config;
use crate::interface::Interface;
use crate::mqtt::Inbound;
use crate::profile::Profile;
use crate::queue::{gateway_command, BatchJob, Job, QueueSlot, QueueSlots, QueuedCommand};
use crate::store::{
    BatchProgress, CommandPhase, CommandRecord, CommandRequest, Op, ReplyTo, Store,
};
use serde_json::{Map, Value};

pub struct Router {
    pub machine: String,
    pub config: Arc<Config>,
    pub profile: Arc<Profile>,
    pub store: Store,
    pub device: mpsc::UnboundedSender<QueuedCommand>,
    /// The machine's queue: a command takes a slot or is refused `busy`.
    pub slots: QueueSlots,
    pub outbox_ready: Arc<Notify>,
}

/// Commands handled in one durable write when they arrive in a burst.
const BATCH: usize = 256;

/// The §4 command payload a publish carries, or one an interface's
/// `commands.parse` made from it.
type CommandBody = std::borrow::Cow<'static, [u8]>;

/// What one command publish came to.
enum Verdict {
    Accept(QueuedCommand),
    /// The result for `command`, and the MQTT 5 reply address to copy it to.
    Reply(String, CommandResult, Option<ReplyTo>),
    Ignore,
}

impl Router {
    pub async fn run(self, mut publishes: mpsc::Receiver<Inbound>) {
        let mut batch = Vec::with_capacity(BATCH);
        while publishes.recv_many(&mut batch, BATCH).await > 0 {
            self.handle_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn handle_batch(&self, publishes: Vec<Inbound>) {
        let mut ops = Vec::new();
        let mut accepted = Vec::new();
        let mut in_batch = HashSet::new();
        for publish in publishes {
            match self.judge(&publish, &in_batch) {
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
                            reply: cmd.reply.clone(),
                        },
                    });
                    accepted.push(cmd);
                }
                Verdict::Reply(command, result, reply) => {
                    ops.extend(self.result_ops(&command, &result, reply.as_ref()))
                }
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
            if self.device.send(cmd).is_err() {
                warn!(machine = %self.machine, "device task is gone; command left for the restart report");
            }
        }
    }

    fn judge(&self, publish: &Inbound, in_batch: &HashSet<String>) -> Verdict {
        debug!(machine = %self.machine, topic = %publish.topic, retain = publish.retain, bytes = publish.payload.len(), "command publish");
        let config = &self.config;
        // A reply address that is not a topic name cannot be answered; the
        // command is refused on its result topic alone.
        let (mut reply, bad_reply) = match publish.reply.clone().map(checked_reply) {
            Some(Ok(reply)) => (Some(reply), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        // An empty payload is how MQTT clears a retained message (DESIGN
        // §4): nothing to run and nobody to answer, so no result at all.
        if publish.payload.is_empty() {
            debug!(machine = %self.machine, topic = %publish.topic, retain = publish.retain, "empty command payload ignored");
            return Verdict::Ignore;
        }
        let (command, payload) = match &config.interface {
            None => {
                let Some(command) = config.topics.command_of(
                    &publish.topic,
                    &config.mqtt.topic_prefix,
                    &self.machine,
                    &config.gateway.id,
                ) else {
                    debug!(topic = %publish.topic, "not a command topic");
                    return Verdict::Ignore;
                };
                (command, std::borrow::Cow::Borrowed(&publish.payload[..]))
            }
            Some(interface) => {
                // Results of this command need it as it arrived, also after
                // a restart: it is kept with the command's record.
                let request = CommandRequest::new(&publish.topic, &publish.payload);
                let reply = reply.get_or_insert_with(|| ReplyTo {
                    topic: String::new(),
                    correlation: None,
                    request: None,
                });
                reply.request = Some(request);
                match self.through_interface(interface, publish) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => return Verdict::Ignore,
                    Err((command, result)) => {
                        return Verdict::Reply(command, result, Some(reply.clone()))
                    }
                }
            }
        };
        let envelope = match parse::envelope(&payload, publish.retain, config.commands.max_payload)
        {
            Ok(envelope) => parse::Envelope {
                message_expiry: publish.expires_at,
                ..envelope
            },
            Err(result) => return Verdict::Reply(command, result, reply),
        };
        let id = envelope.id.clone();
        if let Some(why) = bad_reply {
            return Verdict::Reply(command, parse::rejected(Some(&id), why), reply);
        }
        if let Some(duplicate) = self.duplicate(&id, in_batch) {
            return Verdict::Reply(command, duplicate, reply);
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
            Some(Err(result)) => return Verdict::Reply(command, result, reply),
            None => match parse::body(&self.profile, &command, envelope, chrono::Utc::now()) {
                Ok(parsed) => parsed,
                Err(result) => return Verdict::Reply(command, result, reply),
            },
        };
        // `cancel` acts as soon as it reaches the device: it takes no slot.
        let slot = match parsed.job {
            Job::Cancel(_) => Some(QueueSlot::none()),
            _ => self.slots.take(),
        };
        let Some(slot) = slot else {
            let queued = self.slots.depth();
            return Verdict::Reply(
                command,
                CommandResult::error(
                    Some(&id),
                    Status::Busy,
                    format!("the machine's command queue is full ({queued} commands); nothing was queued, retry later"),
                ),
                reply,
            );
        };
        Verdict::Accept(QueuedCommand {
            id,
            def: parsed.def,
            body: parsed.body,
            args: parsed.args,
            expires_at: parsed.expires_at,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            job: parsed.job,
            reply,
            slot,
        })
    }

    /// Runs the interface's `commands.parse` on a publish (DESIGN §7): the
    /// command name and an envelope of §4 (`id`, the arguments,
    /// `expires_at`) for the usual checks; `None` for a message that is not
    /// a command; a program error is a `rejected` result.
    fn through_interface(
        &self,
        interface: &Interface,
        publish: &Inbound,
    ) -> Result<Option<(String, CommandBody)>, (String, CommandResult)> {
        let vars = crate::interface::Vars {
            prefix: &self.config.mqtt.topic_prefix,
            machine: &self.machine,
            gateway: &self.config.gateway.id,
        };
        if !interface.is_command_topic(vars, &publish.topic) {
            debug!(topic = %publish.topic, "not a command topic of the interface");
            return Ok(None);
        }
        let parsed = interface
            .parse(&self.machine, &publish.topic, &publish.payload)
            .map_err(|e| {
                let why = format!("the interface's commands.parse program: {e}");
                (String::new(), parse::rejected(None, why))
            })?;
        let Some(Value::Object(mut parsed)) = parsed else {
            return Ok(None);
        };
        let id = parsed.remove("id").unwrap_or(Value::Null);
        let Some(Value::String(command)) = parsed.remove("command") else {
            let id = id.as_str().map(str::to_owned);
            let why = "the interface's commands.parse program gave no `command` name (a string)";
            return Err((
                String::new(),
                parse::rejected(id.as_deref(), why.to_owned()),
            ));
        };
        let mut envelope = match parsed.remove("args") {
            Some(Value::Object(args)) => args,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                let why = format!("the interface's commands.parse program gave `args` {other}; it must be an object");
                return Err((command, parse::rejected(id.as_str(), why)));
            }
        };
        envelope.insert("id".into(), id);
        if let Some(expires_at) = parsed.remove("expires_at").filter(|v| !v.is_null()) {
            envelope.insert("expires_at".into(), expires_at);
        }
        let bytes = Value::Object(envelope).to_string().into_bytes();
        Ok(Some((command, std::borrow::Cow::Owned(bytes))))
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

    fn result_ops(
        &self,
        command: &str,
        result: &CommandResult,
        reply: Option<&ReplyTo>,
    ) -> Vec<Op> {
        result
            .publication(&self.config, &self.machine, command, reply)
            .0
    }
}

/// The reply address of an MQTT 5 command if it is a topic name the gateway
/// can publish to (MQTT 5 §3.3.2.3.5: no wildcards; §4.7.3: not empty).
fn checked_reply(reply: ReplyTo) -> Result<ReplyTo, String> {
    let topic = &reply.topic;
    if topic.is_empty() || topic.contains(['+', '#', '\0']) || topic.len() > 65535 {
        return Err(format!(
            "the MQTT 5 response topic `{topic}` is not a topic name the gateway can publish to \
             (empty, or with a wildcard); nothing was sent"
        ));
    }
    Ok(reply)
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
