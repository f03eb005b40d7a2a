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
use std::sync::{Arc, Mutex, Weak};
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

/// The `RELOADING=1` message: systemd (`Type=notify-reload` and
/// `systemctl reload` alike) wants `MONOTONIC_USEC` beside it, the
/// CLOCK_MONOTONIC time the reload began, to tell this reload from an
/// earlier one. `READY=1` ends it, whether the new config was taken or not.
pub fn reloading_message() -> String {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
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

/// The heartbeats of every task the watchdog vouches for. Tasks come and go
/// with reloads: an entry lives as long as its task holds its `Heartbeat`,
/// so a stopped device is not mistaken for a stuck one.
pub struct Liveness {
    epoch: Instant,
    tasks: Mutex<Vec<(String, Weak<AtomicU64>)>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            epoch: Instant::now(),
            tasks: Mutex::new(Vec::new()),
        }
    }
}

impl Liveness {
    /// Registers a task; it must call `beat()` at least once per period.
    pub fn register(&self, name: impl Into<String>) -> Heartbeat {
        // Starts alive: a task registered now has not yet had a chance to beat.
        let last_ms = Arc::new(AtomicU64::new(self.epoch.elapsed().as_millis() as u64));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|(_, last)| last.strong_count() > 0);
        tasks.push((name.into(), Arc::downgrade(&last_ms)));
        Heartbeat {
            epoch: self.epoch,
            last_ms,
        }
    }

    /// The first task whose last heartbeat is older than `limit`.
    pub fn stuck(&self, limit: Duration) -> Option<String> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let limit = limit.as_millis() as u64;
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .iter()
            .filter_map(|(name, last)| Some((name, last.upgrade()?)))
            .find(|(_, last)| now.saturating_sub(last.load(Ordering::Relaxed)) > limit)
            .map(|(name, _)| name.clone())
    }
}

/// Pets the watchdog every half period while every task is alive.
pub async fn run_watchdog(notifier: Arc<Notifier>, liveness: Arc<Liveness>, period: Duration) {
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
                        task = %task,
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
        let liveness = Liveness::default();
        let a = liveness.register("device vm-001");
        let b = liveness.register("mqtt vm-001");
        a.beat();
        b.beat();
        assert_eq!(liveness.stuck(Duration::from_millis(50)), None);
        std::thread::sleep(Duration::from_millis(80));
        a.beat();
        assert_eq!(
            liveness.stuck(Duration::from_millis(50)),
            Some("mqtt vm-001".to_owned())
        );
        drop(b);
        assert_eq!(liveness.stuck(Duration::from_millis(50)), None);
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
