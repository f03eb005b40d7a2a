//! The devices: a core per device without I/O (`core/`), and a task per
//! serial line that does the I/O for every device on it (`port/`).
//!
//! Nothing here awaits the MQTT side: publishing goes through the durable
//! store (local disk) and a notification, so a slow or absent broker never
//! delays the answer to a POLL.

pub mod core;
pub mod port;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::error;

pub use port::{open_port, PortError};

use crate::config::{Config, DeviceConfig};
use crate::health::MachineHealth;
use crate::mqtt::Availability;
use crate::profile::Profile;
use crate::queue::QueuedCommand;
use crate::store::{OutItem, Store};
use core::{Core, CoreContext, Restored};

/// Everything a device needs, handed over at spawn.
pub struct DeviceContext {
    pub config: Arc<Config>,
    pub device: DeviceConfig,
    pub profile: Arc<Profile>,
    pub store: Store,
    pub availability: watch::Sender<Availability>,
    pub outbox_ready: Arc<Notify>,
    pub telemetry: mpsc::Sender<OutItem>,
    pub commands: mpsc::UnboundedReceiver<QueuedCommand>,
    /// Shown to the systemd watchdog at every loop tick.
    pub heartbeat: crate::systemd::Heartbeat,
    /// The machine's health counters.
    pub health: Arc<MachineHealth>,
    /// `run --capture`: what crosses the line goes here too.
    pub capture: Option<crate::capture::Capture>,
}

/// A machine's new MQTT session, for its running port task: a reload that
/// changed `mqtt`, `topics`, `status_payloads`, `commands` or the interface
/// restarts the machines' sessions but not their serial lines (DESIGN §2).
/// The command channel stays: nothing queued is lost.
pub struct SessionEnds {
    pub config: Arc<Config>,
    pub availability: watch::Sender<Availability>,
    pub outbox_ready: Arc<Notify>,
    pub telemetry: mpsc::Sender<OutItem>,
    pub health: Arc<MachineHealth>,
}

/// Runs the devices of one serial line until `shutdown`; `first_open` is
/// told once the port has been opened or has failed its first attempt;
/// `sessions` brings new sessions for all of them, in the same order.
pub async fn run_line(
    devices: Vec<DeviceContext>,
    sessions: mpsc::UnboundedReceiver<Vec<SessionEnds>>,
    shutdown: CancellationToken,
    first_open: oneshot::Sender<()>,
) {
    let now = Instant::now();
    let stations = devices
        .into_iter()
        .map(|ctx| {
            let restored = restore(&ctx);
            let core = Core::new(
                CoreContext {
                    config: ctx.config.clone(),
                    device: ctx.device.clone(),
                    profile: ctx.profile.clone(),
                    health: ctx.health.clone(),
                },
                restored,
                now,
            );
            port::Station {
                core,
                ctx,
                started: now,
            }
        })
        .collect();
    port::PortTask::new(stations, first_open, sessions)
        .run(shutdown)
        .await
}

/// What the last run left in the store for this machine.
fn restore(ctx: &DeviceContext) -> Restored {
    let machine = &ctx.device.id;
    let state = ctx.store.machine_state(machine).unwrap_or_else(|e| {
        error!(machine = %machine, error = %e, "cannot read the machine's state; starting afresh");
        Default::default()
    });
    let open = ctx.store.open_commands(machine).unwrap_or_else(|e| {
        error!(machine = %machine, error = %e, "cannot read open commands");
        Vec::new()
    });
    let batches = open
        .iter()
        .filter(|r| r.progress.is_some())
        .map(|r| {
            let steps = ctx.store.batch(machine, &r.id).map_err(|e| e.to_string());
            (r.id.clone(), steps)
        })
        .collect();
    Restored {
        state,
        open,
        batches,
    }
}
