//! Health counters (DESIGN §2, §3): what an operator needs to tell a healthy
//! machine link from a sick one without a serial sniffer.
//!
//! - [`MachineHealth`]: one per machine, shared by `Arc` between the device
//!   task and the machine's MQTT driver, which update it with one call per
//!   event. Counters are relaxed atomics: no lock on the serial hot path
//!   (only a link state change takes a mutex, a few times a day).
//! - [`Histogram`]: POLL answer latency in fixed log-scale buckets, from
//!   which p50/p99 are estimated.
//! - [`Health`]: every machine's counters plus the gateway session's and the
//!   store's, turned into a [`Snapshot`] for the two renderings:
//!   `report.rs` (the retained JSON document on `topics.health`) and
//!   `prometheus.rs` (served by `http.rs` for `run --metrics-listen`).

mod http;
mod prometheus;
mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

pub use http::serve;
pub use prometheus::render as render_prometheus;
pub use report::{publish, render_json};

use crate::codec::CodecStats;
use crate::mqtt::{Availability, SessionCounters};
use crate::store::{Store, StoreStats};

/// Upper bounds of the latency buckets in µs (1-2-5 log scale, 10 µs to
/// 1 s); one more bucket counts everything slower.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A fixed-bucket latency histogram; recording is two relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last bucket is "above the last bound".
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The counts of a [`Histogram`] at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q` quantile (0..=1) in µs, interpolated linearly inside its
    /// bucket as Prometheus' `histogram_quantile` does; `None` without
    /// samples. A quantile in the overflow bucket reports the last bound
    /// (the histogram cannot say how much slower it was).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                    return LATENCY_BOUNDS_US.last().copied();
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + ((upper - lower) as f64 * within).round() as u64);
            }
            below += n;
        }
        LATENCY_BOUNDS_US.last().copied()
    }
}

/// A machine's link as its status topic shows it, and the reason it was
/// last offline (kept while it is online again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub online: bool,
    pub last_offline_reason: Option<&'static str>,
    pub since: DateTime<Utc>,
}

/// One machine's counters.
#[derive(Debug)]
pub struct MachineHealth {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    checksum_errors: AtomicU64,
    resyncs: AtomicU64,
    skipped_bytes: AtomicU64,
    retransmissions: AtomicU64,
    unexpected_frames: AtomicU64,
    error_answers: AtomicU64,
    /// Capture chunks dropped because the capture writer was behind.
    capture_dropped: AtomicU64,
    /// Interface programs that failed for this machine (owned by the
    /// interface, which counts them).
    interface_errors: Arc<AtomicU64>,
    poll_latency: Histogram,
    mqtt: Arc<SessionCounters>,
    link: Mutex<LinkState>,
    /// Wakes the health publisher on a link state change.
    changed: Arc<Notify>,
}

impl MachineHealth {
    /// `mqtt` are the machine session's counters.
    pub fn new(
        mqtt: Arc<SessionCounters>,
        interface_errors: Arc<AtomicU64>,
        changed: Arc<Notify>,
    ) -> MachineHealth {
        MachineHealth {
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            checksum_errors: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
            unexpected_frames: AtomicU64::new(0),
            error_answers: AtomicU64::new(0),
            capture_dropped: AtomicU64::new(0),
            interface_errors,
            poll_latency: Histogram::default(),
            mqtt,
            link: Mutex::new(LinkState {
                online: false,
                last_offline_reason: Some("starting"),
                since: Utc::now(),
            }),
            changed,
        }
    }

    /// The line codec's error totals, after a batch of decoding (they only
    /// grow). On a bus they are the line's, shared by its devices: a garbled
    /// frame belongs to nobody.
    pub fn codec(&self, stats: CodecStats) {
        self.checksum_errors
            .store(stats.checksum_errors, Ordering::Relaxed);
        self.resyncs.store(stats.resyncs, Ordering::Relaxed);
        self.skipped_bytes
            .store(stats.skipped_bytes, Ordering::Relaxed);
    }

    /// A valid frame routed to this device.
    /// A chunk the capture writer could not take (`run --capture`).
    pub fn capture_dropped(&self) {
        self.capture_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frame_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retransmission(&self) {
        self.retransmissions.fetch_add(1, Ordering::Relaxed);
    }

    /// `host_polls`: a frame no request waited for (another device's, late).
    pub fn unexpected_frame(&self) {
        self.unexpected_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// `host_polls`: a poll answered with the request's error message.
    pub fn error_answer(&self) {
        self.error_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// A POLL answered: from the POLL's decoding to its answer's write.
    pub fn poll_answered(&self, latency: Duration) {
        self.poll_latency.record(latency);
    }

    /// The availability the machine's status topic now shows.
    pub fn link_changed(&self, availability: &Availability) {
        let state = match availability {
            Availability::Online => LinkState {
                online: true,
                last_offline_reason: self.link_state().last_offline_reason,
                since: Utc::now(),
            },
            Availability::Offline { reason, since } => LinkState {
                online: false,
                last_offline_reason: Some(reason.as_str()),
                since: *since,
            },
        };
        if let Ok(mut link) = self.link.lock() {
            *link = state;
        }
        self.changed.notify_one();
    }

    pub fn link_state(&self) -> LinkState {
        match self.link.lock() {
            Ok(link) => link.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Every counter of the gateway, for the publisher and the HTTP endpoint.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Machines come and go with reloads; the device tasks hold their own
    /// `Arc<MachineHealth>`, so this lock is taken only by reports.
    machines: Mutex<Vec<(String, Arc<MachineHealth>)>>,
    gateway_mqtt: Mutex<Arc<SessionCounters>>,
    loaded: Mutex<Loaded>,
    store: Store,
    changed: Arc<Notify>,
}

/// Which config the gateway runs with: what `systemctl reload` took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// SHA-256 of the config file's bytes, hex: compare with `sha256sum`.
    pub config_sha256: String,
    pub at: DateTime<Utc>,
}

impl Health {
    pub fn new(store: Store, gateway_mqtt: Arc<SessionCounters>, loaded: Loaded) -> Health {
        Health {
            started: Instant::now(),
            machines: Mutex::new(Vec::new()),
            gateway_mqtt: Mutex::new(gateway_mqtt),
            loaded: Mutex::new(loaded),
            store,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Registers a machine (its MQTT session's counters, its interface's
    /// error counter) and returns the counters its device task updates. A
    /// machine registered again (restarted by a reload) starts from zero.
    pub fn add_machine(
        &self,
        machine: &str,
        mqtt: Arc<SessionCounters>,
        interface_errors: Arc<AtomicU64>,
    ) -> Arc<MachineHealth> {
        let counters = Arc::new(MachineHealth::new(
            mqtt,
            interface_errors,
            self.changed.clone(),
        ));
        let mut machines = lock(&self.machines);
        machines.retain(|(id, _)| id != machine);
        machines.push((machine.to_owned(), counters.clone()));
        counters
    }

    /// A machine a reload removed.
    pub fn remove_machine(&self, machine: &str) {
        lock(&self.machines).retain(|(id, _)| id != machine);
    }

    /// The gateway session was restarted by a reload.
    pub fn set_gateway_mqtt(&self, counters: Arc<SessionCounters>) {
        *lock(&self.gateway_mqtt) = counters;
    }

    /// A reload took a new config.
    pub fn set_loaded(&self, loaded: Loaded) {
        *lock(&self.loaded) = loaded;
        self.changed.notify_one();
    }

    /// Each machine and whether its status shows `online`, in start order.
    pub fn links(&self) -> Vec<(String, bool)> {
        lock(&self.machines)
            .iter()
            .map(|(id, m)| (id.clone(), m.link_state().online))
            .collect()
    }

    /// Woken when a machine's link state changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    pub fn snapshot(&self) -> Snapshot {
        let machines = lock(&self.machines)
            .iter()
            .map(|(id, m)| MachineSnapshot {
                id: id.clone(),
                link: m.link_state(),
                frames_in: m.frames_in.load(Ordering::Relaxed),
                frames_out: m.frames_out.load(Ordering::Relaxed),
                checksum_errors: m.checksum_errors.load(Ordering::Relaxed),
                resyncs: m.resyncs.load(Ordering::Relaxed),
                skipped_bytes: m.skipped_bytes.load(Ordering::Relaxed),
                retransmissions: m.retransmissions.load(Ordering::Relaxed),
                unexpected_frames: m.unexpected_frames.load(Ordering::Relaxed),
                error_answers: m.error_answers.load(Ordering::Relaxed),
                interface_errors: m.interface_errors.load(Ordering::Relaxed),
                capture_dropped: m.capture_dropped.load(Ordering::Relaxed),
                poll_latency: m.poll_latency.snapshot(),
                // A store that cannot be read is reported by the device task
                // and the sender; here it only makes the depth unknown.
                outbox_depth: self.store.outbox_len(id).ok(),
                mqtt_reconnects: m.mqtt.reconnects.load(Ordering::Relaxed),
                mqtt_refused: m.mqtt.refused.load(Ordering::Relaxed),
            })
            .collect();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime: self.started.elapsed(),
            ts: Utc::now(),
            machines,
            store: self.store.stats(),
            mqtt_reconnects: lock(&self.gateway_mqtt).reconnects.load(Ordering::Relaxed),
            loaded: lock(&self.loaded).clone(),
        }
    }
}

/// The gateway's counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: &'static str,
    pub uptime: Duration,
    pub ts: DateTime<Utc>,
    pub machines: Vec<MachineSnapshot>,
    pub store: StoreStats,
    /// Reconnects of the gateway's own session.
    pub mqtt_reconnects: u64,
    pub loaded: Loaded,
}

#[derive(Debug, Clone)]
pub struct MachineSnapshot {
    pub id: String,
    pub link: LinkState,
    pub frames_in: u64,
    pub frames_out: u64,
    pub checksum_errors: u64,
    pub resyncs: u64,
    pub skipped_bytes: u64,
    pub retransmissions: u64,
    /// Frames no request waited for, dropped (`host_polls`).
    pub unexpected_frames: u64,
    /// Polls answered with their error message (`host_polls`).
    pub error_answers: u64,
    /// Interface programs that failed for this machine's messages.
    pub interface_errors: u64,
    /// Capture chunks dropped (`run --capture` writer behind).
    pub capture_dropped: u64,
    pub poll_latency: HistogramSnapshot,
    /// Items in the machine's outbox; `None` if the store could not be read.
    pub outbox_depth: Option<u64>,
    pub mqtt_reconnects: u64,
    /// Publishes the broker refused (MQTT 5 reason codes).
    pub mqtt_refused: u64,
}

/// Counters stay meaningful after a panic elsewhere; never poison a report.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
