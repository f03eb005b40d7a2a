//! The whole gateway wired together: for each machine a device task, a
//! command router and an MQTT session; plus the gateway's own session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::command::Router;
use crate::config::{Config, TopicVars, TopicsConfig};
use crate::device::{self, DeviceContext};
use crate::health::{self, Health};
use crate::mqtt::{self, status_payload, Availability, OfflineReason, SessionSpec};
use crate::profile::{Profile, ProfileError};
use crate::queue::QueueSlots;
use crate::store::{Store, StoreError, StoreOptions};
use crate::systemd::{self, Liveness, Notifier};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::OptionsError),
    /// Devices share a line in a way that cannot work (`check` says so too).
    #[error(transparent)]
    Lines(#[from] crate::config::ConfigErrors),
}

/// Loads the profile of every device, once per distinct name.
pub fn load_profiles(config: &Config) -> Result<HashMap<String, Arc<Profile>>, ProfileError> {
    let mut profiles = HashMap::new();
    for device in &config.devices {
        if !profiles.contains_key(&device.profile) {
            let profile = Profile::resolve(&config.profiles_dir, &device.profile)?;
            profiles.insert(device.profile.clone(), Arc::new(profile));
        }
    }
    Ok(profiles)
}

/// A running gateway; `shutdown` ends it cleanly.
pub struct Gateway {
    devices: Vec<JoinHandle<()>>,
    routers: Vec<JoinHandle<()>>,
    sessions: Vec<JoinHandle<()>>,
    pub shutdown: CancellationToken,
    notifier: Arc<Notifier>,
    /// The gateway session's own status; it stays `online` while this lives.
    _gateway_availability: watch::Sender<Availability>,
    /// Every health counter, for `run --metrics-listen`.
    pub health: Arc<Health>,
}

type Statuses = Vec<(String, watch::Receiver<Availability>)>;

/// One line for `systemctl status`: which machines are online.
fn summary(statuses: &Statuses) -> String {
    let online: Vec<&str> = statuses
        .iter()
        .filter(|(_, rx)| matches!(&*rx.borrow(), Availability::Online))
        .map(|(id, _)| id.as_str())
        .collect();
    let offline: Vec<&str> = statuses
        .iter()
        .filter(|(_, rx)| !matches!(&*rx.borrow(), Availability::Online))
        .map(|(id, _)| id.as_str())
        .collect();
    let mut line = format!("{}/{} machines online", online.len(), statuses.len());
    if !offline.is_empty() {
        line.push_str(&format!("; offline: {}", offline.join(", ")));
    }
    line
}

/// Keeps systemd's STATUS= line current.
async fn report_status(notifier: Arc<Notifier>, statuses: Statuses) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = summary(&statuses);
        if line != last {
            notifier.notify(&format!("STATUS={line}"));
            last = line;
        }
    }
}

/// READY=1 once every port has been opened or has failed its first open
/// attempt (and every session was started before), then the STATUS= line.
async fn ready_when_opened(
    notifier: Arc<Notifier>,
    opened: Vec<oneshot::Receiver<()>>,
    statuses: Statuses,
) {
    // A task that ended before its first open has nothing more to wait for.
    futures::future::join_all(opened).await;
    notifier.notify(&format!("READY=1\nSTATUS={}", summary(&statuses)));
    report_status(notifier, statuses).await
}

/// A machine's session: its status topic, payloads and will, and its
/// command subscriptions, from `topics:` or the interface file (§7).
fn machine_session(
    config: &Config,
    machine: &str,
    client_id: String,
    will: &str,
) -> (SessionSpec, String) {
    let vars = TopicVars {
        prefix: &config.mqtt.topic_prefix,
        machine,
        gateway: &config.gateway.id,
        name: "",
        command: "",
    };
    let Some(interface) = &config.interface else {
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
        return (spec, will.to_owned());
    };
    let vars = crate::interface::Vars {
        prefix: vars.prefix,
        machine,
        gateway: vars.gateway,
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
    let will = mqtt::render_status(
        online,
        offline,
        &Availability::offline(OfflineReason::GatewayLost),
    );
    (spec, will)
}

impl Gateway {
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let profiles = load_profiles(&config)?;
        let plan = device::port::plan_lines(&config, &profiles)?;
        // The TLS files are read here, once for all sessions.
        let connection = mqtt::Connection::from_config(&config)?;
        let store = Store::open(
            &config.store.path,
            StoreOptions {
                id_window: config.commands.id_window,
                id_ttl: config.commands.id_ttl,
                max_bytes: config.store.max_outbox,
                ..StoreOptions::default()
            },
        )?;
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let mut devices = Vec::new();
        let mut routers = Vec::new();
        let mut sessions = Vec::new();
        let mut liveness = Liveness::default();
        let mut statuses = Vec::new();
        // The devices of each serial line, by their index in the config.
        let mut contexts: Vec<Option<DeviceContext>> = Vec::new();

        fn vars<'a>(config: &'a Config, machine: &'a str) -> TopicVars<'a> {
            TopicVars {
                prefix: &config.mqtt.topic_prefix,
                machine,
                gateway: &config.gateway.id,
                name: "",
                command: "",
            }
        }
        let will = status_payload(&config, &Availability::offline(OfflineReason::GatewayLost));
        let gateway = mqtt::spawn_session(
            &config,
            &connection,
            SessionSpec {
                name: config.gateway.id.clone(),
                client_id: config.gateway.id.clone(),
                status_topic: TopicsConfig::render(
                    &config.topics.gateway_status,
                    &vars(&config, ""),
                ),
                subscribe: None,
                online: config.status_payloads.online.clone(),
                offline: config.status_payloads.offline.clone(),
            },
            store.clone(),
            will.clone(),
            liveness.register(format!("mqtt {}", config.gateway.id)),
            shutdown.clone(),
        );
        gateway.availability.send_replace(Availability::Online);
        sessions.extend(gateway.tasks);
        let gateway_availability = gateway.availability;
        let mut health = Health::new(store.clone(), gateway.counters);

        for device in &config.devices {
            let Some(profile) = profiles.get(&device.profile).cloned() else {
                contexts.push(None);
                continue;
            };
            let machine = device.id.as_str();
            let client_id = TopicsConfig::render(&config.mqtt.client_id, &vars(&config, machine));
            let (spec, machine_will) = machine_session(&config, machine, client_id, &will);
            let mut session = mqtt::spawn_session(
                &config,
                &connection,
                spec,
                store.clone(),
                machine_will,
                liveness.register(format!("mqtt {machine}")),
                shutdown.clone(),
            );
            sessions.append(&mut session.tasks);
            statuses.push((device.id.clone(), session.availability.subscribe()));
            let (device_tx, device_rx) = mpsc::unbounded_channel();
            let slots = QueueSlots::new(config.commands.queue_limit);
            if let Some(publishes) = session.commands.take() {
                let router = Router {
                    machine: device.id.clone(),
                    config: config.clone(),
                    profile: profile.clone(),
                    store: store.clone(),
                    device: device_tx,
                    slots,
                    outbox_ready: session.outbox_ready.clone(),
                };
                routers.push(tokio::spawn(router.run(publishes)));
            }
            let ctx = DeviceContext {
                config: config.clone(),
                device: device.clone(),
                profile,
                store: store.clone(),
                availability: session.availability,
                outbox_ready: session.outbox_ready,
                telemetry: session.telemetry,
                commands: device_rx,
                heartbeat: liveness.register(format!("device {machine}")),
                health: health.add_machine(
                    machine,
                    session.counters,
                    config
                        .interface
                        .as_ref()
                        .map(|i| i.error_counter(machine))
                        .unwrap_or_default(),
                ),
            };
            contexts.push(Some(ctx));
        }
        // Devices on one device file share its port task (a bus); the plan
        // refused every unsound combination.
        let mut opened = Vec::new();
        for members in plan {
            let line: Vec<DeviceContext> = members
                .into_iter()
                .filter_map(|i| contexts.get_mut(i).and_then(Option::take))
                .collect();
            if line.is_empty() {
                continue;
            }
            let (tell, first_open) = oneshot::channel();
            opened.push(first_open);
            devices.push(tokio::spawn(device::run_line(line, shutdown.clone(), tell)));
        }
        let health = Arc::new(health);
        // Aborted with the routers at `stop`.
        routers.push(tokio::spawn(health::publish(
            health.clone(),
            TopicsConfig::render(&config.topics.health, &vars(&config, "")),
            gateway.telemetry,
            config.health.interval,
            shutdown.clone(),
        )));
        info!(gateway = %config.gateway.id, machines = config.devices.len(), "gateway started");
        let notifier = Arc::new(Notifier::from_env());
        if notifier.enabled() {
            routers.push(tokio::spawn(ready_when_opened(
                notifier.clone(),
                opened,
                statuses,
            )));
            if let Some(period) = systemd::watchdog_period() {
                routers.push(tokio::spawn(systemd::run_watchdog(
                    notifier.clone(),
                    liveness,
                    period,
                )));
            }
        }
        Ok(Gateway {
            devices,
            routers,
            sessions,
            shutdown,
            notifier,
            _gateway_availability: gateway_availability,
            health,
        })
    }

    /// Stops the device tasks (their durable writes complete), then the
    /// sessions (each publishes `offline` and disconnects).
    pub async fn stop(self) {
        self.notifier
            .notify("STOPPING=1\nSTATUS=stopping: publishing offline");
        self.shutdown.cancel();
        for task in &self.routers {
            // A command recorded but not yet handed over is reported at the
            // next start; nothing is half-done by stopping here.
            task.abort();
        }
        let devices = futures::future::join_all(self.devices);
        if tokio::time::timeout(Duration::from_secs(5), devices)
            .await
            .is_err()
        {
            warn!("device tasks did not finish within 5 s");
        }
        let all = futures::future::join_all(self.sessions);
        if tokio::time::timeout(Duration::from_secs(8), all)
            .await
            .is_err()
        {
            warn!("MQTT sessions did not finish within 8 s; exiting anyway");
        }
    }
}
