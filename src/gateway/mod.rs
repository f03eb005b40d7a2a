//! The whole gateway wired together, in units a reload (DESIGN §2) can
//! start and stop on their own:
//! - a [`Line`] per serial line: its port task and, for each machine on
//!   it, an MQTT session and a command router (`line.rs`);
//! - the gateway's own session with the health report.
//!
//! The store, the health registry and the watchdog's liveness list outlive
//! every unit: a restarted machine finds its outbox, `seq` and command ids
//! where it left them.

mod line;
mod setup;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, TopicVars, TopicsConfig};
use crate::health::{self, Health};
use crate::mqtt::{self, status_payload, Availability, OfflineReason, SessionSpec};
use crate::store::{Store, StoreError, StoreOptions};
use crate::systemd::{self, Liveness, Notifier};

use line::{join_within, Line, LineKey};
pub use setup::{Setup, SetupError};

/// What every unit uses and no unit owns.
pub struct Shared {
    pub store: Store,
    pub liveness: Arc<Liveness>,
    pub health: Arc<Health>,
    /// Cancels every unit; each unit stops on a child of it.
    pub shutdown: CancellationToken,
    /// `run --capture DIR`: each device's line is recorded there.
    pub capture: Option<PathBuf>,
}

/// The gateway's own session and its health report.
struct Own {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The session's status; it stays `online` while this lives.
    _availability: watch::Sender<Availability>,
}

/// A running gateway; `reload` takes a changed config, `stop` ends it.
pub struct Gateway {
    setup: Setup,
    shared: Shared,
    lines: Vec<Line>,
    own: Own,
    notifier: Arc<Notifier>,
    /// The systemd watchdog and status line.
    background: Vec<JoinHandle<()>>,
    pub shutdown: CancellationToken,
    /// Every health counter, for `run --metrics-listen`.
    pub health: Arc<Health>,
}

fn vars<'a>(config: &'a Config, machine: &'a str) -> TopicVars<'a> {
    TopicVars {
        prefix: &config.mqtt.topic_prefix,
        machine,
        gateway: &config.gateway.id,
        name: "",
        command: "",
    }
}

fn loaded(setup: &Setup) -> health::Loaded {
    health::Loaded {
        config_sha256: setup.sources.config_sha256.clone(),
        at: chrono::Utc::now(),
    }
}

impl Gateway {
    /// Starts every line and session of `setup`; with `capture`, each
    /// device's line is recorded into that folder (DESIGN §8).
    pub fn start(setup: Setup, capture: Option<PathBuf>) -> Result<Gateway, StoreError> {
        let config = &setup.config;
        let store = Store::open(
            &config.store.path,
            StoreOptions {
                id_window: config.commands.id_window,
                id_ttl: config.commands.id_ttl,
                max_bytes: config.store.max_outbox,
                ..StoreOptions::default()
            },
        )?;
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(
            store.clone(),
            Default::default(),
            loaded(&setup),
        ));
        let shared = Shared {
            store,
            liveness: Arc::new(Liveness::default()),
            health: health.clone(),
            shutdown: shutdown.clone(),
            capture,
        };
        let own = start_own(&setup, &shared);
        let mut lines = Vec::new();
        let mut opened = Vec::new();
        for members in &setup.lines {
            let (line, first_open) = Line::start(&setup, members, &shared);
            lines.push(line);
            opened.push(first_open);
        }
        info!(gateway = %config.gateway.id, machines = config.devices.len(), "gateway started");
        let notifier = Arc::new(Notifier::from_env());
        let mut background = Vec::new();
        if notifier.enabled() {
            background.push(tokio::spawn(status::ready_then_report(
                notifier.clone(),
                opened,
                health.clone(),
            )));
            if let Some(period) = systemd::watchdog_period() {
                background.push(tokio::spawn(systemd::run_watchdog(
                    notifier.clone(),
                    shared.liveness.clone(),
                    period,
                )));
            }
        }
        Ok(Gateway {
            setup,
            shared,
            lines,
            own,
            notifier,
            background,
            shutdown,
            health,
        })
    }

    /// SIGHUP: reads the config at `path` and everything it names again. A
    /// config that would not start changes nothing; its errors are logged.
    pub async fn reload(&mut self, path: &Path) {
        self.notifier.notify(&systemd::reloading_message());
        info!(config = %path.display(), "reloading");
        match Setup::read(path) {
            Ok(setup) => self.apply(setup).await,
            Err(e) => error!("reload refused, the running config is unchanged:\n{e}"),
        }
        self.notifier.notify(&format!(
            "READY=1\nSTATUS={}",
            status::summary(&self.health)
        ));
    }

    /// Restarts what `setup` changed and keeps the rest running.
    async fn apply(&mut self, setup: Setup) {
        let old = &self.setup.sources;
        let new = &setup.sources;
        for warning in &setup.config.warnings {
            warn!("{warning}");
        }
        if old.store_differs(new) {
            warn!("store: the store is opened once; the changed section takes effect at the next restart");
        }
        let all_sessions = old.machine_sessions_differ(new);
        let own_session = old.gateway_session_differs(new);
        let keys: Vec<LineKey> = setup.lines.iter().map(|m| LineKey::of(&setup, m)).collect();
        let (mut kept, stopped): (Vec<Line>, Vec<Line>) = std::mem::take(&mut self.lines)
            .into_iter()
            .partition(|line| keys.contains(&line.key));
        // Old sessions and ports are closed before their successors open:
        // one client id, one serial port, one outbox reader at a time.
        let stopped_machines: Vec<String> = stopped
            .iter()
            .flat_map(|l| l.key.machines().map(str::to_owned))
            .collect();
        stop_lines(stopped, Vec::new()).await;
        for machine in &stopped_machines {
            self.shared.health.remove_machine(machine);
        }
        if own_session {
            self.own.stop().await;
            self.own = start_own(&setup, &self.shared);
        }
        if all_sessions {
            let restarts = kept
                .iter_mut()
                .map(|line| line.restart_sessions(&setup, &self.shared));
            futures::future::join_all(restarts).await;
        }
        let mut opened = Vec::new();
        let mut started = Vec::new();
        for (members, key) in setup.lines.iter().zip(&keys) {
            if kept.iter().any(|line| &line.key == key) {
                continue;
            }
            let (line, first_open) = Line::start(&setup, members, &self.shared);
            started.extend(line.key.machines().map(str::to_owned));
            self.lines.push(line);
            opened.push(first_open);
        }
        let kept_machines: Vec<&str> = kept.iter().flat_map(|l| l.key.machines()).collect();
        info!(
            kept = ?kept_machines,
            stopped = ?stopped_machines,
            started = ?started,
            machine_sessions_restarted = all_sessions,
            gateway_session_restarted = own_session,
            "reloaded"
        );
        self.lines.extend(kept);
        self.health.set_loaded(loaded(&setup));
        self.setup = setup;
        status::first_opens(opened, Duration::from_secs(5)).await;
    }

    /// Stops the device tasks (their durable writes complete), then the
    /// sessions (each publishes `offline` and disconnects).
    pub async fn stop(self) {
        self.notifier
            .notify("STOPPING=1\nSTATUS=stopping: publishing offline");
        self.shutdown.cancel();
        for task in &self.background {
            task.abort();
        }
        stop_lines(self.lines, self.own.tasks).await;
    }
}

/// Stops lines side by side: every port task first (their durable writes
/// complete), then every session, `more` (the gateway's own) among them.
async fn stop_lines(lines: Vec<Line>, more: Vec<JoinHandle<()>>) {
    let mut ports = Vec::new();
    let mut sessions = more;
    for line in lines {
        line.cancel();
        let (p, s) = line.into_tasks();
        ports.extend(p);
        sessions.extend(s);
    }
    join_within(ports, Duration::from_secs(5), "device tasks").await;
    join_within(sessions, Duration::from_secs(8), "MQTT sessions").await;
}

impl Own {
    /// The session publishes `offline` on its way out; a successor (same
    /// client id) may connect once this returns.
    async fn stop(&mut self) {
        self.token.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        join_within(tasks, Duration::from_secs(8), "the gateway session").await;
    }
}

/// Starts the gateway's own session and the health report on it.
fn start_own(setup: &Setup, shared: &Shared) -> Own {
    let config = &setup.config;
    let token = shared.shutdown.child_token();
    let will = status_payload(config, &Availability::offline(OfflineReason::GatewayLost));
    let session = mqtt::spawn_session(
        config,
        &setup.connection,
        SessionSpec {
            name: config.gateway.id.clone(),
            client_id: config.gateway.id.clone(),
            status_topic: TopicsConfig::render(&config.topics.gateway_status, &vars(config, "")),
            subscribe: None,
            online: config.status_payloads.online.clone(),
            offline: config.status_payloads.offline.clone(),
        },
        shared.store.clone(),
        will,
        shared
            .liveness
            .register(format!("mqtt {}", config.gateway.id)),
        token.clone(),
    );
    session.availability.send_replace(Availability::Online);
    shared.health.set_gateway_mqtt(session.counters);
    let mut tasks = session.tasks;
    tasks.push(tokio::spawn(health::publish(
        shared.health.clone(),
        TopicsConfig::render(&config.topics.health, &vars(config, "")),
        session.telemetry,
        config.health.interval,
        token.clone(),
    )));
    Own {
        token,
        tasks,
        _availability: session.availability,
    }
}
