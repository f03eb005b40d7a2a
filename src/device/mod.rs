//! One task per machine: owns its serial port and its link state.
//!
//! - `port.rs` opens the port with the profile's settings;
//! - `task.rs` is the loop: reopen with backoff, read frames, answer POLLs at
//!   once, persist what the machine says before ACKing it, run commands;
//! - `messages.rs` turns a decoded data frame into what gets published;
//! - `commands.rs` follows the command in progress to its result.
//!
//! Nothing here awaits the MQTT side: publishing goes through the durable
//! store (local disk) and a notification, so a slow or absent broker never
//! delays the answer to a POLL.

mod commands;
mod messages;
mod port;
mod task;
pub mod usb;

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
use crate::store::{OutItem, Store};

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
