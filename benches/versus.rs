//! vendgate against a hand-written Python bridge, side by side in one run:
//! `refgw.py` (shared/peers/refgw.py: paho-mqtt 2 + pyserial + PyYAML) and
//! the release `vendgate run`, against the same bench board (benches/board),
//! the same Mosquitto and the same config file (DESIGN §3).
//!
//! Run with `cargo bench --bench versus` (cargo builds the release binary;
//! about 3 minutes). Needs python3 with paho-mqtt>=2, pyserial and PyYAML.
//!
//! Rounds alternate, vendgate, refgw, vendgate, refgw, ..., so a slow drift
//! of the machine (thermal, another job) hits both alike. Each round is a
//! fresh gateway process with a fresh state directory:
//! 1. wait for `vending/vm-001/status` = `online`, then 3 s idle: VmRSS;
//! 2. a burst of money_collected events (POLL, data frame waiting for the
//!    ACK, POLL, ...);
//! 3. wait until the bench's own subscriber has every event: CPU counters
//!    again; 1 s later (vendgate's outbox removals after each PUBACK land
//!    lazily) the disk counters.
//!
//! Then vendgate only: idle RSS with 8 machines configured (7 of them on
//! ptys nobody answers, so offline), and disk bytes per event at a paced
//! 1 and 10 events/s. Every event is checked by amount and `seq`; a lost
//! one fails the run (exit 1) after the tables are printed.
//!
//! Both gateways run at their default log level (info), so their log lines
//! count in the disk bytes alike.
//!
//! Environment knobs: BENCH_EVENTS (default 2000), BENCH_ROUNDS (rounds per
//! gateway, default 3), BENCH_PACED_SECS (per paced rate, default 20).

#[path = "board/mod.rs"]
mod board;
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use board::{
    cpu_model, cpu_us, env_num, pct, run_job, start_board, status_kb, write_bytes, Job, JobRequest,
    Report,
};
use common::{config_yaml, repo, Broker, Client, Gateway, Msg};
use tokio::sync::mpsc;

const MACHINE: &str = "vm-001";
const EVENT_TOPIC: &str = "vending/vm-001/event/money_collected";
const STATUS_TOPIC: &str = "vending/vm-001/status";
/// vendgate's own default filter (src/cli/logging.rs): the harness's
/// `debug` would charge vendgate for log lines refgw.py never writes.
const VENDGATE_LOG: &str = "info,rumqttd=off,rumqttc=warn";
const PIP: &str = "python3 -m pip install --break-system-packages paho-mqtt pyserial pyyaml";
const IDLE: Duration = Duration::from_secs(3);
/// After the last event arrived: vendgate deletes each event from its
/// outbox once the broker's PUBACK is in; those writes belong to the event.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Vendgate,
    Python,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vendgate => "vendgate",
            Kind::Python => "refgw.py",
        }
    }
}

// ---------------------------------------------------------------- processes

fn refgw_path() -> PathBuf {
    repo().join("../shared/peers/refgw.py")
}

/// The Python modules refgw.py imports; `CallbackAPIVersion` exists only
/// from paho-mqtt 2 on. Returns "Python x.y.z, paho-mqtt a.b.c".
fn check_python() -> Result<String, String> {
    let script = "import sys, paho.mqtt, paho.mqtt.client as c, serial, yaml; \
                  c.CallbackAPIVersion; \
                  print('Python', sys.version.split()[0] + ', paho-mqtt', paho.mqtt.__version__)";
    let missing = || {
        format!(
            "refgw.py needs python3 with paho-mqtt>=2, pyserial and PyYAML \
             (`python3 -c \"import paho.mqtt, serial, yaml\"` fails); install them with: {PIP}"
        )
    };
    let out = Command::new("python3")
        .args(["-c", script])
        .stderr(Stdio::null())
        .output()
        .map_err(|_| missing())?;
    if !out.status.success() {
        return Err(missing());
    }
    if !refgw_path().is_file() {
        return Err(format!(
            "{} not found (the shared dir is the repository's sibling)",
            refgw_path().display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// refgw.py as a child process; killed if dropped while running.
struct Refgw {
    child: Child,
    log: PathBuf,
}

impl Refgw {
    fn start(dir: &Path, config: &str) -> Result<Refgw, String> {
        let config_path = dir.join("config.yaml");
        let log = dir.join("refgw.log");
        std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let log_file = std::fs::File::create(&log).map_err(|e| format!("create log: {e}"))?;
        let child = Command::new("python3")
            .arg(refgw_path())
            .args(["run", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start python3 {}: {e}", refgw_path().display()))?;
        Ok(Refgw { child, log })
    }

    /// SIGTERM (refgw.py's orderly exit), SIGKILL after 15 s.
    fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Refgw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway under test.
enum Proc {
    Vendgate(Gateway),
    Python(Refgw),
}

impl Proc {
    fn start(kind: Kind, dir: &Path, config: &str) -> Result<Proc, String> {
        match kind {
            Kind::Vendgate => Ok(Proc::Vendgate(Gateway::start_with_env(
                dir,
                config,
                &[("RUST_LOG", VENDGATE_LOG)],
            ))),
            Kind::Python => Refgw::start(dir, config).map(Proc::Python),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Proc::Vendgate(g) => g.pid(),
            Proc::Python(p) => p.child.id(),
        }
    }

    fn log(&self) -> &Path {
        match self {
            Proc::Vendgate(g) => &g.log,
            Proc::Python(p) => &p.log,
        }
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        match self {
            Proc::Vendgate(g) => g.terminate(),
            Proc::Python(p) => p.terminate(),
        }
    }

    /// Running (not exited, not a zombie waiting to be reaped).
    fn alive(&self) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        matches!(state, Some(s) if s != "Z" && s != "X")
    }

    /// The last lines of its log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn died(&self, kind: Kind, when: &str) -> String {
        format!(
            "{} (pid {}) exited {when}; its log {} ends with:\n{}",
            kind.name(),
            self.pid(),
            self.log().display(),
            self.log_tail()
        )
    }
}

/// CPU, disk and log counters of one process at one instant.
#[derive(Clone, Copy, Default)]
struct Counters {
    user_us: u64,
    system_us: u64,
    write_bytes: u64,
    log_bytes: u64,
}

impl Counters {
    fn read(proc: &Proc) -> Counters {
        let pid = proc.pid();
        let (user_us, system_us) = cpu_us(pid);
        Counters {
            user_us,
            system_us,
            write_bytes: write_bytes(pid),
            log_bytes: std::fs::metadata(proc.log()).map(|m| m.len()).unwrap_or(0),
        }
    }

    fn since(self, before: Counters) -> Counters {
        Counters {
            user_us: self.user_us.saturating_sub(before.user_us),
            system_us: self.system_us.saturating_sub(before.system_us),
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
            log_bytes: self.log_bytes.saturating_sub(before.log_bytes),
        }
    }
}

// ---------------------------------------------------------------- MQTT side

/// The bench's broker, subscriber and board, shared by every round.
struct Rig {
    broker: Broker,
    client: Client,
    board: mpsc::UnboundedSender<JobRequest>,
    /// The gateway end of the board's pty.
    path: String,
}

/// Every money_collected event of vm-001 seen, and its status changes.
#[derive(Default)]
struct Arrivals {
    /// amount -> when the first event carrying it reached the subscriber
    at: HashMap<u64, Instant>,
    /// seq -> amount
    by_seq: BTreeMap<u64, u64>,
    duplicates: u64,
    /// vm-001's status payloads meanwhile (a link flap shows here).
    status: Vec<String>,
}

impl Arrivals {
    fn take(&mut self, msgs: Vec<Msg>) {
        for m in msgs {
            if m.topic == STATUS_TOPIC {
                self.status.push(m.payload.clone());
                continue;
            }
            if m.topic != EVENT_TOPIC {
                continue;
            }
            let v = m.json();
            let (Some(seq), Some(amount)) = (v["seq"].as_u64(), v["amount"].as_u64()) else {
                continue;
            };
            if self.by_seq.insert(seq, amount).is_some() {
                self.duplicates += 1;
            }
            self.at.entry(amount).or_insert(m.received);
        }
    }

    fn missing(&self, reports: &[&Report]) -> usize {
        reports
            .iter()
            .flat_map(|r| &r.sent)
            .filter(|(amount, _)| !self.at.contains_key(&u64::from(*amount)))
            .count()
    }

    /// Board flush -> subscriber, per event that arrived.
    fn latencies(&self, r: &Report) -> Vec<Duration> {
        let mut v: Vec<Duration> = r
            .sent
            .iter()
            .filter_map(|(amount, flushed)| {
                let at = self.at.get(&u64::from(*amount))?;
                Some(at.saturating_duration_since(*flushed))
            })
            .collect();
        v.sort();
        v
    }
}

/// Collects until every event of `reports` has arrived or `within` passed.
async fn collect(
    client: &mut Client,
    arrivals: &mut Arrivals,
    reports: &[&Report],
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // The arrival instants come from the client's event loop, so the
        // drain period only sets how soon we notice the last one.
        arrivals.take(client.drain(Duration::from_millis(5)).await);
        if arrivals.missing(reports) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Starts a gateway and waits until vm-001 is online, failing early with
/// its log if the process dies. Messages other than vm-001's status stay in
/// `client.seen` for the caller (refgw.py says `offline` before `online`,
/// which is no link flap).
async fn start_online(rig: &mut Rig, kind: Kind, dir: &Path, config: &str) -> Result<Proc, String> {
    // The previous gateway's last statuses must not count for this one.
    rig.client.drain(Duration::from_millis(300)).await;
    let proc = Proc::start(kind, dir, config)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut kept = Vec::new();
    while Instant::now() < deadline {
        let msgs = rig.client.drain(Duration::from_millis(50)).await;
        let online = msgs
            .iter()
            .any(|m| m.topic == STATUS_TOPIC && m.payload == "online");
        kept.extend(msgs.into_iter().filter(|m| m.topic != STATUS_TOPIC));
        if online {
            rig.client.seen = kept;
            return Ok(proc);
        }
        if !proc.alive() {
            return Err(proc.died(kind, &format!("before {MACHINE} was online")));
        }
    }
    Err(format!(
        "{}: {MACHINE} not online within 20 s; its log {} ends with:\n{}",
        kind.name(),
        proc.log().display(),
        proc.log_tail()
    ))
}

// ---------------------------------------------------------------- rounds

/// What the subscriber got against what the board sent.
#[derive(Default)]
struct Loss {
    sent: usize,
    missing: usize,
    seq_lo: u64,
    seq_hi: u64,
    /// seq numbers absent inside seq_lo..=seq_hi
    seq_gaps: u64,
    duplicates: u64,
    retransmissions: u32,
    abandoned: u32,
    /// vm-001 status messages during the measurement (0 = no link flap)
    status_changes: usize,
}

impl Loss {
    fn check(arrivals: &Arrivals, reports: &[&Report]) -> Loss {
        let seq_lo = arrivals.by_seq.keys().next().copied().unwrap_or(0);
        let seq_hi = arrivals.by_seq.keys().next_back().copied().unwrap_or(0);
        let distinct = arrivals.by_seq.len() as u64;
        Loss {
            sent: reports.iter().map(|r| r.sent.len()).sum(),
            missing: arrivals.missing(reports),
            seq_lo,
            seq_hi,
            seq_gaps: if distinct == 0 {
                0
            } else {
                seq_hi - seq_lo + 1 - distinct
            },
            duplicates: arrivals.duplicates,
            retransmissions: reports.iter().map(|r| r.retransmissions).sum(),
            abandoned: reports.iter().map(|r| r.abandoned).sum(),
            status_changes: arrivals.status.len(),
        }
    }

    fn failed(&self) -> bool {
        self.missing > 0 || self.seq_gaps > 0
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} events never reached the subscriber, {} seq missing in {}..={}",
            self.missing, self.sent, self.seq_gaps, self.seq_lo, self.seq_hi
        )
    }
}

struct Round {
    kind: Kind,
    events: u32,
    idle_rss_kib: u64,
    idle_cpu_ms_per_s: f64,
    cpu_us: f64,
    user_us: f64,
    p50: Duration,
    p99: Duration,
    events_per_s: f64,
    bytes_per_event: f64,
    log_bytes_per_event: f64,
    loss: Loss,
}

/// One round: a fresh `kind` gateway with a fresh state dir, idle, burst.
async fn run_round(rig: &mut Rig, kind: Kind, events: u32) -> Result<Round, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let store = dir.path().join("store");
    let config = config_yaml(rig.broker.port, &store, &[(MACHINE, rig.path.as_str())]);
    let mut proc = start_online(rig, kind, dir.path(), &config).await?;
    let idle_start = (Instant::now(), Counters::read(&proc));
    tokio::time::sleep(IDLE).await;
    let idle_rss_kib = status_kb(proc.pid(), "VmRSS:");
    let before = Counters::read(&proc);
    let idle = before.since(idle_start.1);
    let idle_secs = idle_start.0.elapsed().as_secs_f64();

    let report = run_job(&rig.board, Job::Burst { events }).await;
    let mut arrivals = Arrivals::default();
    arrivals.take(std::mem::take(&mut rig.client.seen));
    collect(
        &mut rig.client,
        &mut arrivals,
        &[&report],
        Duration::from_secs(120),
    )
    .await;
    // CPU up to the last event's arrival: idle time after it is not the
    // events' cost. Disk bytes after SETTLE (see there).
    let cpu = Counters::read(&proc).since(before);
    tokio::time::sleep(SETTLE).await;
    if !proc.alive() {
        return Err(proc.died(kind, "during the burst"));
    }
    let disk = Counters::read(&proc).since(before);
    arrivals.take(rig.client.drain(Duration::ZERO).await);
    proc.stop();

    let n = f64::from(report.events_sent.max(1));
    let lat = arrivals.latencies(&report);
    Ok(Round {
        kind,
        events: report.events_sent,
        idle_rss_kib,
        idle_cpu_ms_per_s: (idle.user_us + idle.system_us) as f64 / 1000.0 / idle_secs,
        cpu_us: (cpu.user_us + cpu.system_us) as f64 / n,
        user_us: cpu.user_us as f64 / n,
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        events_per_s: f64::from(report.events_sent) / report.elapsed.as_secs_f64(),
        bytes_per_event: disk.write_bytes as f64 / n,
        log_bytes_per_event: disk.log_bytes as f64 / n,
        loss: Loss::check(&arrivals, &[&report]),
    })
}

/// vendgate with vm-001 on the bench board and vm-002..vm-008 on ptys
/// nobody answers: its idle VmRSS and how many of the seven it reported
/// offline.
async fn idle_rss_8(rig: &mut Rig) -> Result<(u64, usize), String> {
    // Both ends of each quiet pty stay open for the whole measurement: a
    // closed device end would give the gateway EIO and reopen churn instead
    // of a silent line.
    let mut quiet = Vec::new();
    for _ in 0..7 {
        quiet.push(vendgate::sim::pty_pair().map_err(|e| format!("pty: {e}"))?);
    }
    let ids: Vec<String> = (2..=8).map(|i| format!("vm-{i:03}")).collect();
    let mut devices = vec![(MACHINE, rig.path.as_str())];
    devices.extend(
        ids.iter()
            .zip(&quiet)
            .map(|(id, (_, _, path))| (id.as_str(), path.as_str())),
    );
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let config = config_yaml(rig.broker.port, &dir.path().join("store"), &devices);
    let mut proc = start_online(rig, Kind::Vendgate, dir.path(), &config).await?;
    tokio::time::sleep(IDLE).await;
    let rss = status_kb(proc.pid(), "VmRSS:");
    if !proc.alive() {
        return Err(proc.died(Kind::Vendgate, "while idle with 8 machines"));
    }
    let mut last: HashMap<String, String> = HashMap::new();
    for m in rig.client.drain(Duration::ZERO).await {
        last.insert(m.topic, m.payload);
    }
    let offline = ids
        .iter()
        .filter(|id| {
            last.get(&format!("vending/{id}/status"))
                .map(String::as_str)
                == Some("offline")
        })
        .count();
    proc.stop();
    drop(quiet);
    Ok((rss, offline))
}

/// Disk bytes per event at a paced rate: (label, events, bytes/event).
struct PacedFigure {
    label: &'static str,
    events: u32,
    bytes_per_event: f64,
}

/// vendgate alone at 1 and then 10 events/s (one POLL per event, the
/// existing Paced job), `secs` each; returns the figures and the loss
/// check over both.
async fn paced(rig: &mut Rig, secs: u64) -> Result<(Vec<PacedFigure>, Loss), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let config = config_yaml(
        rig.broker.port,
        &dir.path().join("store"),
        &[(MACHINE, rig.path.as_str())],
    );
    let mut proc = start_online(rig, Kind::Vendgate, dir.path(), &config).await?;
    // Startup writes (the store's creation) are not the events'.
    tokio::time::sleep(IDLE).await;
    let mut arrivals = Arrivals::default();
    arrivals.take(std::mem::take(&mut rig.client.seen));
    let mut reports = Vec::new();
    let mut figures = Vec::new();
    for (label, period) in [
        ("1 event/s", Duration::from_secs(1)),
        ("10 events/s", Duration::from_millis(100)),
    ] {
        let before = Counters::read(&proc);
        let duration = Duration::from_secs(secs);
        let report = run_job(&rig.board, Job::Paced { duration, period }).await;
        collect(
            &mut rig.client,
            &mut arrivals,
            &[&report],
            Duration::from_secs(30),
        )
        .await;
        tokio::time::sleep(SETTLE).await;
        if !proc.alive() {
            return Err(proc.died(Kind::Vendgate, &format!("during the paced run at {label}")));
        }
        let used = Counters::read(&proc).since(before);
        figures.push(PacedFigure {
            label,
            events: report.events_sent,
            bytes_per_event: used.write_bytes as f64 / f64::from(report.events_sent.max(1)),
        });
        reports.push(report);
    }
    arrivals.take(rig.client.drain(Duration::ZERO).await);
    proc.stop();
    let refs: Vec<&Report> = reports.iter().collect();
    Ok((figures, Loss::check(&arrivals, &refs)))
}

// ---------------------------------------------------------------- output

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A row of the comparison: its label, how to read it off a round, decimals.
type Figure = (&'static str, fn(&Round) -> f64, usize);

const FIGURES: [Figure; 9] = [
    ("CPU per event, user + kernel (µs)", |r| r.cpu_us, 1),
    ("user CPU per event (µs)", |r| r.user_us, 1),
    (
        "event latency board → subscriber, p50 (µs)",
        |r| micros(r.p50),
        0,
    ),
    (
        "event latency board → subscriber, p99 (µs)",
        |r| micros(r.p99),
        0,
    ),
    (
        "events/s (burst; each data frame waits for its ACK)",
        |r| r.events_per_s,
        0,
    ),
    (
        "bytes written to disk per event (write_bytes)",
        |r| r.bytes_per_event,
        1,
    ),
    ("… of which its log file", |r| r.log_bytes_per_event, 1),
    ("idle RSS, 1 machine (KiB)", |r| r.idle_rss_kib as f64, 0),
    (
        "idle CPU, 3 s window (ms per s; 10 ms ticks)",
        |r| r.idle_cpu_ms_per_s,
        2,
    ),
];

fn median_of(rounds: &[Round], kind: Kind, get: fn(&Round) -> f64) -> f64 {
    median(rounds.iter().filter(|r| r.kind == kind).map(get).collect())
}

fn print_comparison(rounds: &[Round], per_kind: usize) {
    println!(
        "| figure | vendgate (median of {per_kind}) | Python bridge (median of {per_kind}) | ratio vendgate/python |"
    );
    println!("|---|---:|---:|---:|");
    for (label, get, dec) in FIGURES {
        let v = median_of(rounds, Kind::Vendgate, get);
        let p = median_of(rounds, Kind::Python, get);
        let ratio = if p.abs() < 1e-9 {
            "n/a (python 0)".to_owned()
        } else {
            format!("{:.2}", v / p)
        };
        println!("| {label} | {v:.dec$} | {p:.dec$} | {ratio} |");
    }
}

fn print_rounds(rounds: &[Round]) {
    println!("\nPer round (raw):\n");
    println!(
        "| # | gateway | events | CPU µs/ev | user µs/ev | p50 µs | p99 µs | events/s | disk B/ev | log B/ev | idle RSS KiB | idle CPU ms/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.2} |",
            i + 1,
            r.kind.name(),
            r.events,
            r.cpu_us,
            r.user_us,
            micros(r.p50),
            micros(r.p99),
            r.events_per_s,
            r.bytes_per_event,
            r.log_bytes_per_event,
            r.idle_rss_kib,
            r.idle_cpu_ms_per_s
        );
    }
}

fn print_losses(rows: &[(String, &Loss)]) {
    println!("\nDelivery check (by amount and seq):\n");
    println!(
        "| run | sent | received | missing | seq range | seq gaps | duplicates | board retransmissions / abandoned | status messages meanwhile |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---|---:|");
    for (what, l) in rows {
        println!(
            "| {what} | {} | {} | {} | {}..={} | {} | {} | {} / {} | {} |",
            l.sent,
            l.sent - l.missing,
            l.missing,
            l.seq_lo,
            l.seq_hi,
            l.seq_gaps,
            l.duplicates,
            l.retransmissions,
            l.abandoned,
            l.status_changes
        );
    }
}

struct Extras {
    rss_8: u64,
    offline_of_7: usize,
    paced: Vec<PacedFigure>,
    paced_secs: u64,
}

fn print_extras(rounds: &[Round], x: &Extras, events: u32) {
    println!("\nvendgate only:\n");
    println!("| figure | vendgate |");
    println!("|---|---:|");
    println!(
        "| idle RSS, 8 machines configured (vm-001 on the bench board; vm-002..vm-008 on ptys \
         nobody answers, so offline: {} of 7 reported offline) (KiB) | {} |",
        x.offline_of_7, x.rss_8
    );
    let rss_1 = median_of(rounds, Kind::Vendgate, |r| r.idle_rss_kib as f64);
    println!("| idle RSS, 1 machine (median of the rounds above) (KiB) | {rss_1:.0} |");
    for p in &x.paced {
        println!(
            "| bytes written to disk per event, paced {} ({} events in {} s) | {:.1} |",
            p.label, p.events, x.paced_secs, p.bytes_per_event
        );
    }
    let burst = median_of(rounds, Kind::Vendgate, |r| r.bytes_per_event);
    println!(
        "| bytes written to disk per event, burst ({events} back to back, median above) | {burst:.1} |"
    );
}

fn print_machine(python: &str, broker: &Broker) {
    let path = common::binary();
    let bin = path.display();
    let size = std::fs::metadata(&path)
        .map(|m| m.len().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    println!();
    println!(
        "- date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "- CPU: {} ({} cores)",
        cpu_model(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("- vendgate binary: {size} bytes ({bin})");
    println!("- {python}; refgw.py: {}", refgw_path().display());
    println!(
        "- broker: {} on 127.0.0.1; serial line: pseudo-terminal (no transmission time)",
        if broker.is_mosquitto() {
            "Mosquitto"
        } else {
            "the embedded broker (Mosquitto not found)"
        }
    );
}

// ---------------------------------------------------------------- main

fn main() {
    // The main runtime hosts the MQTT client; the board has its own thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let failure = rt.block_on(bench());
    drop(rt);
    if let Some(failure) = failure {
        eprintln!("versus: FAILED: {failure}");
        std::process::exit(1);
    }
}

/// The whole run; Some(why) when it failed.
async fn bench() -> Option<String> {
    let python = match check_python() {
        Ok(v) => v,
        Err(e) => return Some(e),
    };
    let events = env_num("BENCH_EVENTS", 2000) as u32;
    let per_kind = env_num("BENCH_ROUNDS", 3).max(1) as usize;
    let paced_secs = env_num("BENCH_PACED_SECS", 20);
    let broker = Broker::start();
    let client = Client::connect(broker.port, "vending/#").await;
    let (board, path) = start_board();
    let mut rig = Rig {
        broker,
        client,
        board,
        path,
    };
    match measure(&mut rig, events, per_kind, paced_secs).await {
        Ok((rounds, extras, paced_loss)) => print_report(
            &rig,
            &python,
            &rounds,
            &extras,
            &paced_loss,
            per_kind,
            events,
        ),
        Err(e) => Some(e),
    }
}

async fn measure(
    rig: &mut Rig,
    events: u32,
    per_kind: usize,
    paced_secs: u64,
) -> Result<(Vec<Round>, Extras, Loss), String> {
    let mut rounds = Vec::new();
    for i in 0..per_kind {
        for kind in [Kind::Vendgate, Kind::Python] {
            eprintln!(
                "versus: round {} of {per_kind}: {}, {events} events",
                i + 1,
                kind.name()
            );
            rounds.push(run_round(rig, kind, events).await?);
        }
    }
    eprintln!("versus: vendgate, 8 machines configured, idle");
    let (rss_8, offline_of_7) = idle_rss_8(rig).await?;
    eprintln!("versus: vendgate, paced 1 and 10 events/s, {paced_secs} s each");
    let (paced, paced_loss) = paced(rig, paced_secs).await?;
    let extras = Extras {
        rss_8,
        offline_of_7,
        paced,
        paced_secs,
    };
    Ok((rounds, extras, paced_loss))
}

/// Prints everything; Some(why) if an event was lost anywhere.
fn print_report(
    rig: &Rig,
    python: &str,
    rounds: &[Round],
    extras: &Extras,
    paced_loss: &Loss,
    per_kind: usize,
    events: u32,
) -> Option<String> {
    println!("\n## vendgate vs a hand-written Python bridge (refgw.py), {events} events per round, rounds alternating\n");
    print_comparison(rounds, per_kind);
    print_rounds(rounds);
    print_extras(rounds, extras, events);
    let mut losses: Vec<(String, &Loss)> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("round {} ({})", i + 1, r.kind.name()), &r.loss))
        .collect();
    losses.push(("vendgate paced, both rates".to_owned(), paced_loss));
    print_losses(&losses);
    print_machine(python, &rig.broker);
    let failed: Vec<String> = losses
        .iter()
        .filter(|(_, l)| l.failed())
        .map(|(what, l)| format!("{what}: {}", l.describe()))
        .collect();
    (!failed.is_empty()).then(|| format!("events lost: {}", failed.join("; ")))
}
