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

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, warn};

use super::{CommandResult, Status};
use crate::config::{Config, TopicVars, TopicsConfig};
use crate::device::QueuedCommand;
use crate::mqtt::Publish;
use crate::profile::Profile;
use crate::store::{CommandPhase, CommandRecord, Op, OutItem, Store};

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
                    ops.push(Op::PutCommand {
                        machine: self.machine.clone(),
                        record: CommandRecord {
                            id: cmd.id.clone(),
                            command: cmd.def.name.clone(),
                            phase: CommandPhase::Queued,
                            at_ms: cmd.accepted_ms,
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
        let reject = |id: Option<&str>, error: String| {
            Verdict::Reply(
                command.clone(),
                CommandResult::error(id, Status::Rejected, error),
            )
        };
        let limit = config.commands.max_payload;
        if publish.payload.len() > limit {
            return reject(
                None,
                format!(
                    "the payload is {} bytes; commands are limited to {limit} bytes",
                    publish.payload.len()
                ),
            );
        }
        let object = match serde_json::from_slice::<Value>(&publish.payload) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return reject(None, "the payload must be a JSON object".into()),
            Err(e) => return reject(None, format!("the payload is not valid JSON: {e}")),
        };
        let id = match object.get("id") {
            Some(Value::String(id)) if (1..=64).contains(&id.chars().count()) => id.clone(),
            Some(Value::String(_)) => return reject(None, "id: must be 1 to 64 characters".into()),
            Some(_) => return reject(None, "id: must be a string".into()),
            None => return reject(None, "id: missing; every command needs a unique id".into()),
        };
        if publish.retain {
            return reject(
                Some(&id),
                "retained commands are not executed; publish commands without the retain flag"
                    .into(),
            );
        }
        if let Some(duplicate) = self.duplicate(&id, in_batch) {
            return Verdict::Reply(command, duplicate);
        }
        let expires_at = match object.get("expires_at") {
            None => None,
            Some(Value::String(text)) => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(at) => Some(at.with_timezone(&chrono::Utc)),
                Err(e) => {
                    return reject(Some(&id), format!("expires_at: not an RFC 3339 time: {e}"))
                }
            },
            Some(_) => return reject(Some(&id), "expires_at: must be an RFC 3339 string".into()),
        };
        if expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Verdict::Reply(
                command,
                CommandResult::error(
                    Some(&id),
                    Status::Expired,
                    "expires_at has passed; the command was not executed",
                ),
            );
        }
        let Some(def) = self.profile.command(&command) else {
            let known: Vec<&str> = self
                .profile
                .commands()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return reject(
                Some(&id),
                format!(
                    "unknown command `{command}`; this machine accepts: {}",
                    known.join(", ")
                ),
            );
        };
        let body = match def.encode(&object) {
            Ok(body) => body,
            Err(e) => return reject(Some(&id), e.to_string()),
        };
        let queued = self.queued.load(Ordering::SeqCst) + accepted_now;
        if queued >= config.commands.queue_limit {
            return Verdict::Reply(command, CommandResult::error(Some(&id), Status::Busy, format!("the machine's command queue is full ({queued} commands); nothing was queued, retry later")));
        }
        let mut args: Map<String, Value> = object;
        args.remove("id");
        args.remove("expires_at");
        Verdict::Accept(QueuedCommand {
            id,
            def: def.clone(),
            body,
            args,
            expires_at,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
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
            result.original = serde_json::from_str(&original).ok();
        }
        Some(result)
    }

    fn result_op(&self, command: &str, result: &CommandResult) -> Op {
        let config = &self.config;
        let topic = TopicsConfig::render(
            &config.topics.result,
            &TopicVars {
                prefix: &config.mqtt.topic_prefix,
                machine: &self.machine,
                gateway: &config.gateway.id,
                name: "",
                command,
            },
        );
        Op::Append {
            session: self.machine.clone(),
            item: OutItem {
                topic,
                payload: result.to_json().into_bytes(),
                qos: 1,
                retain: false,
            },
        }
    }
}
