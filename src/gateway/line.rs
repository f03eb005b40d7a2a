//! A serial line as the unit a reload starts and stops: the port task of
//! its devices (one device, or several on a bus) and, for each of them, its
//! MQTT session and command router.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::setup::Setup;
use super::Shared;
use crate::capture::{Capture, Header};
use crate::command::Router;
use crate::config::{Config, DeviceConfig, TopicVars, TopicsConfig};
use crate::device::{self, DeviceContext, SessionEnds};
use crate::mqtt::{self, Availability, OfflineReason, SessionSpec};
use crate::queue::{QueueSlots, QueuedCommand};

/// What a line is made of: when a reload finds the same key, the line runs on
/// untouched (its port, sessions and state); otherwise it is restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct LineKey(Vec<(DeviceConfig, Vec<u8>)>);

impl LineKey {
    /// The devices `members` (indices into the config) with their profiles'
    /// bytes.
    pub fn of(setup: &Setup, members: &[usize]) -> LineKey {
        let devices = members.iter().filter_map(|&i| setup.config.devices.get(i));
        LineKey(
            devices
                .map(|d| {
                    let bytes = setup.sources.profiles.get(&d.profile).cloned();
                    (d.clone(), bytes.unwrap_or_default())
                })
                .collect(),
        )
    }

    pub fn machines(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(d, _)| d.id.as_str())
    }
}

/// A running line.
pub struct Line {
    pub key: LineKey,
    /// Stops the port task.
    port_token: CancellationToken,
    port: JoinHandle<()>,
    /// New sessions for the port task's devices, in station order.
    to_port: mpsc::UnboundedSender<Vec<SessionEnds>>,
    sessions: Sessions,
}

/// The MQTT sessions and command routers of a line's machines: what a
/// reload of `mqtt`, `topics`, ... restarts without touching the port.
struct Sessions {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    routers: Vec<JoinHandle<()>>,
    /// Each machine's command channel into the port task; it outlives the
    /// sessions, so a command queued during a session restart is not lost.
    queues: Vec<mpsc::UnboundedSender<QueuedCommand>>,
}

impl Line {
    /// Starts the sessions, routers and port task of the devices `members`.
    /// The receiver is told once the port was opened or failed its first try.
    pub fn start(
        setup: &Setup,
        members: &[usize],
        shared: &Shared,
    ) -> (Line, oneshot::Receiver<()>) {
        let config = &setup.config;
        let devices: Vec<&DeviceConfig> = members
            .iter()
            .filter_map(|&i| config.devices.get(i))
            .collect();
        let mut receivers = Vec::new();
        let mut queues = Vec::new();
        for _ in &devices {
            let (tx, rx) = mpsc::unbounded_channel();
            queues.push(tx);
            receivers.push(rx);
        }
        let (sessions, ends) = Sessions::start(setup, &devices, shared, queues);
        let port_token = shared.shutdown.child_token();
        let mut contexts = Vec::new();
        for ((device, ends), commands) in devices.iter().zip(ends).zip(receivers) {
            // `Setup` loaded a profile for every device.
            let Some(profile) = setup.profiles.get(&device.profile).cloned() else {
                continue;
            };
            contexts.push(DeviceContext {
                config: config.clone(),
                device: (*device).clone(),
                profile,
                store: shared.store.clone(),
                availability: ends.availability,
                outbox_ready: ends.outbox_ready,
                telemetry: ends.telemetry,
                commands,
                heartbeat: shared.liveness.register(format!("device {}", device.id)),
                health: ends.health,
                capture: start_capture(shared, device, &profile_name(setup, device)),
            });
        }
        let (tell, first_open) = oneshot::channel();
        let (to_port, from_line) = mpsc::unbounded_channel();
        let port = tokio::spawn(device::run_line(
            contexts,
            from_line,
            port_token.clone(),
            tell,
        ));
        let line = Line {
            key: LineKey::of(setup, members),
            port_token,
            port,
            to_port,
            sessions,
        };
        (line, first_open)
    }

    /// Restarts the machines' MQTT sessions and routers with `setup`'s
    /// config; the port task and its devices' state run on.
    pub async fn restart_sessions(&mut self, setup: &Setup, shared: &Shared) {
        let queues = std::mem::take(&mut self.sessions.queues);
        let old = std::mem::replace(
            &mut self.sessions,
            Sessions {
                token: CancellationToken::new(),
                tasks: Vec::new(),
                routers: Vec::new(),
                queues: Vec::new(),
            },
        );
        // The routers are not aborted: each ends once its session's driver
        // is gone, after handing the device what it already accepted.
        old.token.cancel();
        join_within(old.tasks, Duration::from_secs(8), "MQTT sessions").await;
        join_within(old.routers, Duration::from_secs(5), "command routers").await;
        let devices: Vec<&DeviceConfig> = self.key.0.iter().map(|(d, _)| d).collect();
        let (sessions, ends) = Sessions::start(setup, &devices, shared, queues);
        self.sessions = sessions;
        // A port task that ended has no devices to move over.
        let _ = self.to_port.send(ends);
    }

    /// Tells every task of the line to stop, without waiting.
    pub fn cancel(&self) {
        self.port_token.cancel();
        self.sessions.cancel();
    }

    /// The port task and the session tasks, to wait for after `cancel`:
    /// the port task first (its durable writes complete), then the sessions
    /// (each publishes `offline`, reason `shutdown`, and disconnects).
    pub fn into_tasks(self) -> (Vec<JoinHandle<()>>, Vec<JoinHandle<()>>) {
        (vec![self.port], self.sessions.tasks)
    }
}

impl Sessions {
    /// A session and router per device, feeding `queues` (one per device).
    fn start(
        setup: &Setup,
        devices: &[&DeviceConfig],
        shared: &Shared,
        queues: Vec<mpsc::UnboundedSender<QueuedCommand>>,
    ) -> (Sessions, Vec<SessionEnds>) {
        let config = &setup.config;
        let token = shared.shutdown.child_token();
        let mut tasks = Vec::new();
        let mut routers = Vec::new();
        let mut all_ends = Vec::new();
        for (device, queue) in devices.iter().zip(&queues) {
            let machine = device.id.as_str();
            let vars = super::vars(config, machine);
            let client_id = TopicsConfig::render(&config.mqtt.client_id, &vars);
            let (spec, will) = machine_session(config, machine, client_id);
            let mut session = mqtt::spawn_session(
                config,
                &setup.connection,
                spec,
                shared.store.clone(),
                will,
                shared.liveness.register(format!("mqtt {machine}")),
                token.clone(),
            );
            tasks.append(&mut session.tasks);
            let profile = setup.profiles.get(&device.profile);
            if let (Some(publishes), Some(profile)) = (session.commands.take(), profile) {
                let router = Router {
                    machine: device.id.clone(),
                    config: config.clone(),
                    profile: profile.clone(),
                    store: shared.store.clone(),
                    device: queue.clone(),
                    slots: QueueSlots::new(config.commands.queue_limit),
                    outbox_ready: session.outbox_ready.clone(),
                };
                routers.push(tokio::spawn(router.run(publishes)));
            }
            let interface_errors = config
                .interface
                .as_ref()
                .map(|i| i.error_counter(machine))
                .unwrap_or_default();
            all_ends.push(SessionEnds {
                config: config.clone(),
                availability: session.availability,
                outbox_ready: session.outbox_ready,
                telemetry: session.telemetry,
                health: shared
                    .health
                    .add_machine(machine, session.counters, interface_errors),
            });
        }
        let sessions = Sessions {
            token,
            tasks,
            routers,
            queues,
        };
        (sessions, all_ends)
    }

    fn cancel(&self) {
        self.token.cancel();
        for task in &self.routers {
            // A command recorded but not yet handed over is reported at the
            // next start of the machine; nothing is half-done by stopping here.
            task.abort();
        }
    }
}

/// The profile's name for a capture header.
fn profile_name(setup: &Setup, device: &DeviceConfig) -> (String, u32) {
    match setup.profiles.get(&device.profile) {
        Some(p) => (p.name.clone(), device.baud.unwrap_or(p.serial.baud)),
        None => (device.profile.clone(), device.baud.unwrap_or(0)),
    }
}

/// The device's capture, with `run --capture`. One that cannot start is
/// logged: the gateway runs on without it rather than not at all.
fn start_capture(
    shared: &Shared,
    device: &DeviceConfig,
    (profile, baud): &(String, u32),
) -> Option<Capture> {
    let dir = shared.capture.as_ref()?;
    let header = Header {
        profile: profile.clone(),
        machine: device.id.clone(),
        baud: *baud,
    };
    Capture::start(dir, header)
        .map_err(|e| error!(machine = %device.id, dir = %dir.display(), error = %e, "cannot start the capture"))
        .ok()
}

/// Waits for `tasks` at most `limit`.
pub async fn join_within(tasks: Vec<JoinHandle<()>>, limit: Duration, what: &str) {
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(limit, all).await.is_err() {
        warn!("{what} did not finish within {} s", limit.as_secs());
    }
}

/// A machine's session: its status topic, payloads and will, and its
/// command subscriptions, from `topics:` or the interface file (§7).
fn machine_session(config: &Config, machine: &str, client_id: String) -> (SessionSpec, String) {
    let gone = Availability::offline(OfflineReason::GatewayLost);
    let Some(interface) = &config.interface else {
        let vars: TopicVars = super::vars(config, machine);
        let spec = SessionSpec {
            name: machine.to_owned(),
            client_id,
            status_topic: TopicsConfig::render(&config.topics.status, &vars),
            subscribe: Some(vec![config.topics.command_filter(
                &config.mqtt.topic_prefix,
                machine,
                &config.gateway.id,
            )]),
            online: config.status_payloads.online.clone(),
            offline: config.status_payloads.offline.clone(),
        };
        return (spec, mqtt::status_payload(config, &gone));
    };
    let vars = crate::interface::Vars {
        prefix: &config.mqtt.topic_prefix,
        machine,
        gateway: &config.gateway.id,
    };
    let (online, offline) = interface.status_templates();
    let spec = SessionSpec {
        name: machine.to_owned(),
        client_id,
        status_topic: interface.status_topic(vars),
        subscribe: Some(interface.subscriptions(vars)),
        online: online.to_owned(),
        offline: offline.to_owned(),
    };
    (spec, mqtt::render_status(online, offline, &gone))
}
