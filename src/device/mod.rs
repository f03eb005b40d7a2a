//! One task per machine: owns its serial port and its link state.
//!
//! - `port.rs` opens the port with the profile's settings (`usb.rs` finds an
//!   adapter by USB identity);
//! - `task.rs` is the loop: reopen with backoff, read frames, answer POLLs at
//!   once, persist what the machine says before ACKing it, run commands;
//! - `writes.rs` makes things durable one commit at a time and acts on each
//!   commit (ACK the frame, hand the command to the link);
//! - `status.rs` reports availability (first status, debounce);
//! - `messages.rs` turns a decoded data frame into what gets published;
//! - `commands.rs` follows the command in progress to its result;
//! - `batch*.rs` run a batch's steps through the same path, resume it after a
//!   restart, and lower the poll interval while it runs.
//!
//! Nothing here awaits the MQTT side: publishing goes through the durable
//! store (local disk) and a notification, so a slow or absent broker never
//! delays the answer to a POLL.

mod batch;
mod batch_poll;
mod batch_resume;
mod commands;
mod messages;
mod port;
mod status;
mod task;
pub mod usb;
mod writes;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch, Notify};

pub use port::{open_port, PortError};
pub use task::run;

use crate::config::{Config, DeviceConfig};
use crate::health::MachineHealth;
use crate::mqtt::Availability;
use crate::profile::{Command, Profile};
use crate::store::{OutItem, ReplyTo, Store};

/// A command that passed validation and was accepted for a machine.
#[derive(Debug, Clone)]
pub struct QueuedCommand {
    pub id: String,
    pub def: Command,
    /// The encoded command body (without sequence number).
    pub body: Vec<u8>,
    /// The validated arguments, for commands the link follows
    /// (`set_poll_interval`).
    pub args: Map<String, Value>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub accepted: Instant,
    pub accepted_ms: i64,
    /// What the device does with it.
    pub job: Job,
    /// MQTT 5: where its results go too.
    pub reply: Option<ReplyTo>,
}

/// A profile command, or one of the gateway's own (`batch`, `cancel`).
#[derive(Debug, Clone, Default)]
pub enum Job {
    #[default]
    Single,
    /// A batch; `def` is [`gateway_command`]`("batch")`.
    Batch(Box<BatchJob>),
    /// Cancels the batch with this id (handled as soon as it arrives).
    Cancel(String),
    /// Step `index` of the running batch, sent like a single command.
    Step(usize),
    /// The poll interval change around a running batch (not a step).
    Tune,
}

/// A batch's steps and where it stands.
#[derive(Debug, Clone)]
pub struct BatchJob {
    pub steps: Vec<crate::command::batch::Step>,
    pub progress: crate::store::BatchProgress,
    /// Stored once at acceptance (see `Op::PutBatch`).
    pub steps_json: String,
}

/// The definition under which a gateway command's results are published.
pub fn gateway_command(name: &str) -> Command {
    Command {
        name: name.to_owned(),
        code: crate::codec::FrameCode::Num(0),
        completion: crate::profile::Completion::Ack,
        idempotent: false,
        layout: Default::default(),
    }
}

/// Everything a device task needs, handed over at spawn.
pub struct DeviceContext {
    pub config: Arc<Config>,
    pub device: DeviceConfig,
    pub profile: Arc<Profile>,
    pub store: Store,
    pub availability: watch::Sender<Availability>,
    pub outbox_ready: Arc<Notify>,
    pub telemetry: mpsc::Sender<OutItem>,
    pub commands: mpsc::UnboundedReceiver<QueuedCommand>,
    /// Accepted commands not yet taken up by the device: the router answers
    /// `busy` when this reaches the queue limit.
    pub queued: Arc<AtomicUsize>,
    /// Shown to the systemd watchdog at every loop tick.
    pub heartbeat: crate::systemd::Heartbeat,
    /// The machine's health counters.
    pub health: Arc<MachineHealth>,
}

/// RFC 3339 UTC with milliseconds, as DESIGN §4 asks for `ts`.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
