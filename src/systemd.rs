//! systemd integration without libsystemd: `sd_notify` datagrams to
//! `$NOTIFY_SOCKET` (READY, STATUS, WATCHDOG) and the liveness check that
//! decides whether the watchdog may be petted.
//!
//! The watchdog is petted (every half period) only while every registered
//! task (each device task, each MQTT sender; they beat every 20–200 ms) has
//! shown a heartbeat within the last period: a task stuck in a write or a
//! loop stops the petting, and systemd restarts the service.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

/// Where `sd_notify` messages go, if the service manager asked for them.
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
}

enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Notifier {
        let target = match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) => {
                let bytes = value.as_encoded_bytes();
                match bytes.strip_prefix(b"@") {
                    Some(name) => Target::Abstract(name.to_vec()),
                    None => Target::Path(PathBuf::from(value)),
                }
            }
            None => return Notifier { socket: None },
        };
        match UnixDatagram::unbound() {
            Ok(socket) => Notifier {
                socket: Some((socket, target)),
            },
            Err(e) => {
                error!(error = %e, "cannot create the sd_notify socket");
                Notifier { socket: None }
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification, e.g. `READY=1` or `STATUS=...`. Failures
    /// are logged, never fatal: the gateway works without a supervisor.
    pub fn notify(&self, state: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The watchdog period systemd asked for (`$WATCHDOG_USEC`, for this
/// process if `$WATCHDOG_PID` is set).
pub fn watchdog_period() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A task's sign of life: the milliseconds since `Liveness` was created at
/// its last loop iteration.
#[derive(Clone)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// The heartbeats of every task the watchdog vouches for.
pub struct Liveness {
    epoch: Instant,
    tasks: Vec<(String, Arc<AtomicU64>)>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            epoch: Instant::now(),
            tasks: Vec::new(),
        }
    }
}

impl Liveness {
    /// Registers a task; it must call `beat()` at least once per period.
    pub fn register(&mut self, name: impl Into<String>) -> Heartbeat {
        let last_ms = Arc::new(AtomicU64::new(0));
        self.tasks.push((name.into(), last_ms.clone()));
        Heartbeat {
            epoch: self.epoch,
            last_ms,
        }
    }

    /// The first task whose last heartbeat is older than `limit`.
    pub fn stuck(&self, limit: Duration) -> Option<&str> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let limit = limit.as_millis() as u64;
        self.tasks
            .iter()
            .find(|(_, last)| now.saturating_sub(last.load(Ordering::Relaxed)) > limit)
            .map(|(name, _)| name.as_str())
    }
}

/// Pets the watchdog every half period while every task is alive.
pub async fn run_watchdog(notifier: Arc<Notifier>, liveness: Liveness, period: Duration) {
    info!(period = ?period, "systemd watchdog enabled");
    let mut ticker = tokio::time::interval(period / 2);
    let mut reported = false;
    loop {
        ticker.tick().await;
        match liveness.stuck(period) {
            None => {
                reported = false;
                notifier.notify("WATCHDOG=1");
            }
            Some(task) => {
                if !reported {
                    error!(
                        task,
                        "task is stuck; no longer petting the systemd watchdog"
                    );
                    notifier.notify(&format!("STATUS=stuck: {task}"));
                    reported = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_without_recent_heartbeat_is_stuck() {
        let mut liveness = Liveness::default();
        let a = liveness.register("device vm-001");
        let b = liveness.register("mqtt vm-001");
        a.beat();
        b.beat();
        assert_eq!(liveness.stuck(Duration::from_millis(50)), None);
        std::thread::sleep(Duration::from_millis(80));
        a.beat();
        assert_eq!(
            liveness.stuck(Duration::from_millis(50)),
            Some("mqtt vm-001")
        );
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), Target::Path(path))),
        };
        notifier.notify("READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
