//! MQTT sessions: one per machine, plus the gateway's own.
//!
//! Each session is two tasks, because rumqttc deadlocks when one task both
//! publishes and polls the event loop:
//! - the **driver** (`driver.rs`) owns the `EventLoop`: it polls, reconnects
//!   with capped exponential backoff (rumqttc itself retries at once), and
//!   reports connection changes, packet ids and PUBACKs;
//! - the **sender** (`sender.rs`) owns the `AsyncClient`: it drains the
//!   durable outbox, matches PUBACKs to outbox items by packet id (rumqttc's
//!   `publish()` gives no per-message ack), re-publishes the machine's status
//!   after every connect, and forwards telemetry.
//!
//! The outbox, not rumqttc's in-memory queue, is the source of truth: after
//! every reconnect the sender publishes again everything not yet
//! acknowledged, and rumqttc's own pending queue is discarded (it is dropped
//! anyway on a clean-session reconnect).

mod client;
mod driver;
mod options;
mod sender;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::Inbound;
pub use options::{Connection, OptionsError};

use crate::config::Config;
use crate::store::{OutItem, Store};

/// Whether a machine (or the gateway) is available, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Online,
    Offline {
        reason: OfflineReason,
        since: chrono::DateTime<chrono::Utc>,
    },
}

impl Availability {
    pub fn offline(reason: OfflineReason) -> Availability {
        Availability::Offline {
            reason,
            since: chrono::Utc::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// The serial link is silent (profile link rules).
    LinkLost,
    /// The serial port cannot be opened or vanished.
    PortMissing,
    /// The gateway died: the will.
    GatewayLost,
    /// Clean shutdown.
    Shutdown,
    /// Not yet known: the gateway just started. Never published; the device
    /// task replaces it within one link-down period.
    Starting,
}

impl OfflineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::LinkLost => "link_lost",
            OfflineReason::PortMissing => "port_missing",
            OfflineReason::GatewayLost => "gateway_lost",
            OfflineReason::Shutdown => "shutdown",
            OfflineReason::Starting => "starting",
        }
    }
}

/// Renders a status payload from the config's templates.
pub fn status_payload(config: &Config, availability: &Availability) -> String {
    let templates = &config.status_payloads;
    render_status(&templates.online, &templates.offline, availability)
}

/// Renders a status payload: `online`, or `offline` with `{reason}` and
/// `{since}` filled in.
pub fn render_status(online: &str, offline: &str, availability: &Availability) -> String {
    match availability {
        Availability::Online => online.to_owned(),
        Availability::Offline { reason, since } => {
            offline.replace("{reason}", reason.as_str()).replace(
                "{since}",
                &since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        }
    }
}

/// What one session publishes and listens to.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The outbox session key: the machine id, or the gateway id.
    pub name: String,
    pub client_id: String,
    pub status_topic: String,
    /// Topic filters for commands (machines only; an interface file may
    /// give several, or none).
    pub subscribe: Option<Vec<String>>,
    /// The status payload templates: `status_payloads`, or an interface
    /// file's for machines.
    pub online: String,
    pub offline: String,
}

/// The handles a device task and the command router use to reach a session.
pub struct SessionHandle {
    /// Set by the device task; the sender publishes every change, and the
    /// current value after every reconnect.
    pub availability: watch::Sender<Availability>,
    /// Wakes the sender when something was appended to this session's outbox.
    pub outbox_ready: Arc<Notify>,
    /// Telemetry is state, not history: it bypasses the durable outbox and
    /// only the latest value per topic is kept while the broker is away.
    pub telemetry: mpsc::Sender<OutItem>,
    /// Command publishes received on this session.
    pub commands: Option<mpsc::Receiver<Inbound>>,
    pub counters: Arc<SessionCounters>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Capacity of rumqttc's request channel; the sender never has more than
/// `WINDOW` publishes in flight, so `try_publish` never finds it full in
/// normal operation and the sender never blocks on it.
const REQUEST_CAPACITY: usize = 128;
/// Outbox items published and not yet acknowledged, per session.
const WINDOW: usize = 64;
/// rumqttc wraps packet ids at `inflight`; keeping it above `WINDOW` plus
/// status and telemetry publishes avoids packet-id collisions.
const INFLIGHT: u16 = 100;
/// The largest packet accepted from the broker. Larger than any command we
/// accept, so an oversized command is answered `rejected` rather than
/// killing the connection (rumqttc's default is 10 KB).
pub const MAX_INCOMING_PACKET: usize = 4 * 1024 * 1024;
/// The largest packet the gateway publishes; results and events are far
/// smaller.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

/// What a session counts, for the health report.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Reconnects (the first connect is not counted).
    pub reconnects: AtomicU64,
    /// Outbox publishes the broker refused with an MQTT 5 reason code (each
    /// refusal; the item stays in the outbox and is published again).
    pub refused: AtomicU64,
}

/// Capped exponential backoff with jitter, for reconnects and reopens.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay to wait now; doubles the next one, up to the cap. Jitter
    /// (±20%) keeps a fleet from reconnecting in lock-step after an outage.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = chrono::Utc::now().timestamp_subsec_nanos() as u64;
        let jitter = (nanos % 400) as i64 - 200; // per mille
        let ms = base.as_millis() as i64;
        Duration::from_millis((ms + ms * jitter / 1000).max(1) as u64)
    }
}

/// Starts one session. `will` is the payload the broker publishes on the
/// status topic if this session dies.
pub fn spawn_session(
    config: &Config,
    connection: &Connection,
    spec: SessionSpec,
    store: Store,
    will: String,
    heartbeat: crate::systemd::Heartbeat,
    shutdown: CancellationToken,
) -> SessionHandle {
    let (client, eventloop, brokers) = options::session_client(config, connection, &spec, will);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (telemetry_tx, telemetry_rx) = mpsc::channel(256);
    let (availability, availability_rx) =
        watch::channel(Availability::offline(OfflineReason::Starting));
    let outbox_ready = Arc::new(Notify::new());
    let counters = Arc::new(SessionCounters::default());
    let driver = tokio::spawn(driver::run(
        spec.name.clone(),
        eventloop,
        brokers,
        counters.clone(),
        events_tx,
        spec.subscribe.is_some().then_some(commands_tx),
        shutdown.clone(),
    ));
    let sender = tokio::spawn(
        sender::Sender {
            spec: spec.clone(),
            client,
            store,
            outbox_ready: outbox_ready.clone(),
            availability: availability_rx,
            telemetry: telemetry_rx,
            events: events_rx,
            heartbeat,
            shutdown,
            counters: counters.clone(),
        }
        .run(),
    );
    SessionHandle {
        availability,
        outbox_ready,
        telemetry: telemetry_tx,
        commands: spec.subscribe.is_some().then_some(commands_rx),
        counters,
        tasks: vec![driver, sender],
    }
}

/// What the driver tells the sender.
#[derive(Debug)]
enum DriverEvent {
    Connected,
    /// The connection is gone. The driver waits for the sender to confirm
    /// (it stops publishing) before it empties rumqttc's queues and
    /// reconnects, so no publish can slip into the new connection unseen
    /// and break the packet-id bookkeeping.
    Disconnected(tokio::sync::oneshot::Sender<()>),
    /// rumqttc wrote a publish with this packet id (0 for QoS 0), in the
    /// order the sender handed them over.
    Published(u16),
    /// The broker acknowledged this packet id; `refused`: with an MQTT 5
    /// reason code that is not a success (the message was not taken).
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
}
