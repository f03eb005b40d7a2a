//! The gateway measured for real: the release `vendgate run` binary, Mosquitto,
//! and a tight VMC board loop on a pseudo-terminal (not `sim::Board`, which
//! polls every 200 ms).
//!
//! Run with `cargo bench --bench gateway` (release build; about 2–4 minutes).
//!
//! Phases:
//! 1. burst: POLL, money_collected, POLL, money_collected, ... as fast as the
//!    gateway answers (each data frame waits for the ACK, which follows the
//!    durable commit): POLL answer latency, ACK latency, events/s, MQTT
//!    delivery checked by `seq`, disk bytes per event.
//! 2. paced: one POLL and one event per 200 ms for 20 s (a real VMC's
//!    cadence), where group commit has nothing to batch: disk bytes per event.
//! 3. outage: broker stopped, N events as fast as ACKs allow, broker
//!    restarted; time until all N reach a subscriber, POLL latency meanwhile.
//!
//! Environment knobs (for quick runs): BENCH_EVENTS (default 10000),
//! BENCH_OUTAGE_EVENTS (default 3000), BENCH_PACED_SECS (default 20).

#[path = "board/mod.rs"]
mod board;
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use board::{
    cpu_model, cpu_ms, env_num, pct, run_job, start_board, status_kb, write_bytes, Job, Report,
    ANSWER_WITHIN,
};
use common::{config_yaml, with_mqtt_version, Broker, Client, Gateway, Msg};
use tokio::sync::oneshot;

const EVENT_TOPIC: &str = "vending/vm-001/event/money_collected";
const STATUS_TOPIC: &str = "vending/vm-001/status";

// ---------------------------------------------------------------- MQTT side

/// Every money_collected event seen, by seq, with arrival bookkeeping.
#[derive(Default)]
struct Events {
    /// seq -> amount
    by_seq: BTreeMap<u64, u64>,
    amounts: BTreeSet<u64>,
    duplicates: u64,
    status: Vec<(Instant, String)>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl Events {
    fn take(&mut self, msgs: Vec<Msg>, at: Instant) {
        for m in msgs {
            if m.topic == STATUS_TOPIC {
                self.status.push((at, m.payload.clone()));
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
            self.amounts.insert(amount);
            self.first_at.get_or_insert(at);
            self.last_at = Some(at);
        }
    }

    fn has_all(&self, first: u32, last: u32) -> bool {
        (first..=last).all(|a| self.amounts.contains(&(a as u64)))
    }

    fn missing(&self, first: u32, last: u32) -> usize {
        (first..=last)
            .filter(|a| !self.amounts.contains(&(*a as u64)))
            .count()
    }
}

/// Collects until amounts first..=last have all arrived or `within` passed.
async fn collect(
    client: &mut Client,
    events: &mut Events,
    first: u32,
    last: u32,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let msgs = client.drain(Duration::from_millis(5)).await;
        events.take(msgs, Instant::now());
        if events.has_all(first, last) {
            return true;
        }
    }
    false
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn dir_len(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- output

struct Table {
    rows: Vec<(String, String, String)>,
}

impl Table {
    fn section(&mut self, title: &str) {
        self.rows
            .push((format!("## {title}"), String::new(), String::new()));
    }
    fn row(&mut self, what: &str, value: impl ToString, unit: &str) {
        self.rows
            .push((what.to_owned(), value.to_string(), unit.to_owned()));
    }
    fn print(&self) {
        let w0 = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        println!();
        for (a, b, c) in &self.rows {
            if a.starts_with("## ") {
                println!("{a}");
            } else {
                println!("  {a:<w0$}  {b:>w1$}  {c}");
            }
        }
        println!();
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn latency_rows(t: &mut Table, what: &str, lat: &[Duration]) {
    let mut v = lat.to_vec();
    v.sort();
    t.row(&format!("{what}: samples"), v.len(), "");
    t.row(&format!("{what}: median"), us(pct(&v, 0.50)), "µs");
    t.row(&format!("{what}: p90"), us(pct(&v, 0.90)), "µs");
    t.row(&format!("{what}: p99"), us(pct(&v, 0.99)), "µs");
    t.row(
        &format!("{what}: max"),
        us(v.last().copied().unwrap_or_default()),
        "µs",
    );
    let late = v.iter().filter(|d| **d > ANSWER_WITHIN).count();
    t.row(&format!("{what}: > 100 ms (protocol limit)"), late, "");
}

fn board_rows(t: &mut Table, r: &Report) {
    if r.polls_unanswered
        + r.polls_non_ack
        + r.retransmissions
        + r.abandoned
        + r.unexpected
        + r.stray_frames
        > 0
    {
        t.row(
            "board: unanswered POLLs / non-ACK answers",
            format!("{} / {}", r.polls_unanswered, r.polls_non_ack),
            "",
        );
        t.row(
            "board: retransmissions / abandoned / unexpected / stray / unasked",
            format!(
                "{} / {} / {} / {} / {}",
                r.retransmissions, r.abandoned, r.unexpected, r.stray_frames, r.unasked
            ),
            "",
        );
    } else {
        t.row("board: retransmissions, unanswered, unexpected", 0, "");
    }
}

fn mem_rows(t: &mut Table, pid: u32, when: &str) {
    t.row(&format!("VmRSS {when}"), status_kb(pid, "VmRSS:"), "KiB");
    t.row(&format!("VmHWM {when}"), status_kb(pid, "VmHWM:"), "KiB");
}

// ---------------------------------------------------------------- main

fn main() {
    // The main runtime hosts the MQTT client; the board has its own thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let burst_events = env_num("BENCH_EVENTS", 10_000) as u32;
    let outage_events = env_num("BENCH_OUTAGE_EVENTS", 3_000) as u32;
    let paced_secs = env_num("BENCH_PACED_SECS", 20);
    let bench_start = Instant::now();
    let mut t = Table { rows: Vec::new() };

    t.section("machine");
    t.row(
        "nproc",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        "",
    );
    t.row("CPU", cpu_model(), "");
    t.row("store filesystem", "ext4 under the system temp dir", "");
    t.row(
        "serial line",
        "pseudo-terminal (no 57600-baud transmission time)",
        "",
    );

    let mut broker = Broker::start();
    eprintln!(
        "bench: broker on port {} (mosquitto: {})",
        broker.port,
        broker.is_mosquitto()
    );
    let mut client = Client::connect(broker.port, "vending/#").await;
    let (board, path) = start_board();
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let mut config = config_yaml(broker.port, &store_dir, &[("vm-001", &path)]);
    // BENCH_MQTT_VERSION=5: the same figures with the gateway on MQTT 5.
    let version = env_num("BENCH_MQTT_VERSION", 3);
    if version != 3 {
        config = with_mqtt_version(&config, version as u8);
    }
    t.row("gateway MQTT version", version, "");
    let mut gateway = Gateway::start(dir.path(), &config);
    let pid = gateway.pid();
    client
        .expect_status("vm-001", "online", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut events = Events::default();

    t.section("2. resident memory of `vendgate run`, one machine");
    mem_rows(&mut t, pid, "after startup (link up, idle)");

    // Warm-up: not measured.
    let warm = run_job(&board, Job::Burst { events: 200 }).await;
    let ok = collect(
        &mut client,
        &mut events,
        warm.first_amount,
        warm.last_amount,
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "warm-up events did not all arrive");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ---- phase 1: burst
    eprintln!("bench: phase 1, {burst_events} events back to back");
    let log_before = file_len(&gateway.log);
    let io_before = write_bytes(pid);
    let cpu_before = cpu_ms(pid);
    let burst = run_job(
        &board,
        Job::Burst {
            events: burst_events,
        },
    )
    .await;
    let all = collect(
        &mut client,
        &mut events,
        burst.first_amount,
        burst.last_amount,
        Duration::from_secs(60),
    )
    .await;
    // Let the PUBACK removals from the outbox land before counting bytes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let io_burst = write_bytes(pid) - io_before;
    let cpu_burst = cpu_ms(pid) - cpu_before;
    let log_burst = file_len(&gateway.log) - log_before;
    let mem_after_burst = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));

    let missing = events.missing(burst.first_amount, burst.last_amount);
    let received = burst.events_sent as usize - missing;

    // ---- phase 2: paced
    eprintln!("bench: phase 2, 1 event per 200 ms for {paced_secs} s");
    let log_before = file_len(&gateway.log);
    let io_before = write_bytes(pid);
    let paced = run_job(
        &board,
        Job::Paced {
            duration: Duration::from_secs(paced_secs),
            period: Duration::from_millis(200),
        },
    )
    .await;
    let paced_all = collect(
        &mut client,
        &mut events,
        paced.first_amount,
        paced.last_amount,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let io_paced = write_bytes(pid) - io_before;
    let log_paced = file_len(&gateway.log) - log_before;

    // ---- phase 3: outage
    eprintln!("bench: phase 3, broker stopped, {outage_events} events");
    broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let io_before = write_bytes(pid);
    let outage = run_job(
        &board,
        Job::Burst {
            events: outage_events,
        },
    )
    .await;
    let outbox_bytes = dir_len(&store_dir);
    let io_queue = write_bytes(pid) - io_before;
    let io_before = write_bytes(pid);
    let mem_outage = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
    // Keep polling (every 1 ms, 200× a real VMC's rate) while it drains.
    let stop = Arc::new(AtomicBool::new(false));
    let (drain_tx, drain_rx) = oneshot::channel();
    board
        .send((
            Job::Polls {
                gap: Duration::from_millis(1),
                stop: stop.clone(),
            },
            drain_tx,
        ))
        .expect("board alive");
    let restarted = Instant::now();
    broker.restart();
    drop(client);
    let mut client = Client::connect(broker.port, "vending/#").await;
    let subscribed = Instant::now();
    let mut drain_events = Events::default();
    let drained = collect(
        &mut client,
        &mut drain_events,
        outage.first_amount,
        outage.last_amount,
        Duration::from_secs(90),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let drain_polls = drain_rx.await.expect("board report");
    // Everything the outage phase sent counts in the overall seq check too.
    for (seq, amount) in &drain_events.by_seq {
        if events.by_seq.insert(*seq, *amount).is_some() {
            events.duplicates += 1;
        }
        events.amounts.insert(*amount);
    }
    events.duplicates += drain_events.duplicates;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mem_end = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
    let io_drain = write_bytes(pid) - io_before;

    // ---- table
    t.section("1. burst: POLL / money_collected alternating, as fast as answered");
    t.row("events sent by the board", burst.events_sent, "");
    t.row(
        "board run time",
        format!("{:.2}", burst.elapsed.as_secs_f64()),
        "s",
    );
    t.row(
        "events/s achieved (ACKed by the gateway)",
        format!(
            "{:.0}",
            burst.events_sent as f64 / burst.elapsed.as_secs_f64()
        ),
        "events/s",
    );
    t.row(
        "gateway CPU time per event (utime+stime)",
        format!("{:.2}", cpu_burst as f64 / burst.events_sent.max(1) as f64),
        "ms/event",
    );
    latency_rows(&mut t, "POLL answer latency", &burst.poll_latency);
    latency_rows(
        &mut t,
        "POLL answer latency from write start",
        &burst.poll_latency_from_write,
    );
    latency_rows(
        &mut t,
        "data frame → ACK (durable commit)",
        &burst.ack_latency,
    );
    board_rows(&mut t, &burst);
    t.row(
        "events received on MQTT",
        format!("{received} of {}", burst.events_sent),
        "",
    );
    t.row("all received within 60 s", all, "");

    t.section("seq check (every money_collected event of the run)");
    let seqs: Vec<u64> = events.by_seq.keys().copied().collect();
    let (lo, hi) = (
        seqs.first().copied().unwrap_or(0),
        seqs.last().copied().unwrap_or(0),
    );
    let gaps = (hi - lo + 1) as usize - seqs.len();
    let total_sent = warm.events_sent + burst.events_sent + paced.events_sent + outage.events_sent;
    t.row("events sent in total", total_sent, "");
    t.row("distinct seq received", seqs.len(), "");
    t.row("seq range", format!("{lo}..={hi}"), "");
    t.row("seq missing inside the range", gaps, "");
    t.row(
        "duplicate deliveries (same seq twice)",
        events.duplicates,
        "",
    );
    let amounts_missing = events.missing(1, total_sent);
    t.row("board events never published", amounts_missing, "");

    t.section("2. resident memory (continued)");
    t.row(
        &format!("VmRSS after {} burst events", burst.events_sent),
        mem_after_burst.0,
        "KiB",
    );
    t.row("VmHWM after the burst", mem_after_burst.1, "KiB");
    t.row(
        &format!(
            "VmRSS with {} events queued (broker down)",
            outage.events_sent
        ),
        mem_outage.0,
        "KiB",
    );
    t.row("VmRSS at the end (outbox drained)", mem_end.0, "KiB");
    t.row("VmHWM at the end", mem_end.1, "KiB");

    t.section("3. disk bytes written (/proc/PID/io write_bytes of the gateway)");
    let per = |bytes: u64, n: u32| format!("{:.0}", bytes as f64 / n.max(1) as f64);
    t.row("burst: write_bytes total", io_burst, "B");
    t.row(
        "burst: write_bytes per event",
        per(io_burst, burst.events_sent),
        "B/event",
    );
    t.row(
        "burst: of which the log file (RUST_LOG=debug)",
        per(log_burst, burst.events_sent),
        "B/event",
    );
    t.row(
        &format!("paced (1 per 200 ms, {paced_secs} s): events"),
        paced.events_sent,
        "",
    );
    t.row(
        "paced: write_bytes per event",
        per(io_paced, paced.events_sent),
        "B/event",
    );
    t.row(
        "paced: of which the log file",
        per(log_paced, paced.events_sent),
        "B/event",
    );
    t.row("paced: all events received", paced_all, "");
    t.row(
        "broker down, queueing: write_bytes per event (no PUBACK removals)",
        per(io_queue, outage.events_sent),
        "B/event",
    );
    t.row(
        "drain: write_bytes per event (batched outbox removals)",
        per(io_drain, outage.events_sent),
        "B/event",
    );
    latency_rows(&mut t, "paced POLL answer latency", &paced.poll_latency);
    latency_rows(&mut t, "paced data → ACK", &paced.ack_latency);
    board_rows(&mut t, &paced);

    t.section("4. outbox drain after a broker outage");
    t.row(
        "N events queued while the broker was down",
        outage.events_sent,
        "(= 10 min of a machine producing 5 events/s)",
    );
    t.row(
        "queued at (board, broker down)",
        format!(
            "{:.0}",
            outage.events_sent as f64 / outage.elapsed.as_secs_f64()
        ),
        "events/s",
    );
    latency_rows(&mut t, "POLL latency while queueing", &outage.poll_latency);
    latency_rows(&mut t, "data → ACK while queueing", &outage.ack_latency);
    board_rows(&mut t, &outage);
    t.row(
        "store directory size with N queued",
        outbox_bytes / 1024,
        "KiB",
    );
    t.row(
        "restart → test client subscribed",
        subscribed.duration_since(restarted).as_millis(),
        "ms",
    );
    let status_at = drain_events.status.first().map(|(at, _)| *at);
    let ms = |a: Option<Instant>| {
        a.map(|a| a.duration_since(restarted).as_millis().to_string())
            .unwrap_or_else(|| "never".into())
    };
    t.row(
        "restart → machine status re-published (gateway reconnected)",
        ms(status_at),
        "ms",
    );
    t.row("restart → first event", ms(drain_events.first_at), "ms");
    t.row("restart → last event", ms(drain_events.last_at), "ms");
    let outage_missing = drain_events.missing(outage.first_amount, outage.last_amount);
    t.row(
        "events received",
        format!(
            "{} of {}",
            outage.events_sent as usize - outage_missing,
            outage.events_sent
        ),
        "",
    );
    t.row("all drained within 90 s", drained, "");
    if let (Some(first), Some(last)) = (drain_events.first_at, drain_events.last_at) {
        let span = last.duration_since(first).as_secs_f64();
        t.row(
            "drain time, first → last event",
            format!("{:.2}", span),
            "s",
        );
        t.row(
            "drain rate (first → last event)",
            format!("{:.0}", (outage.events_sent - 1) as f64 / span.max(1e-3)),
            "events/s",
        );
        let total = last.duration_since(restarted).as_secs_f64();
        t.row(
            "drain rate including reconnect (restart → last)",
            format!("{:.0}", outage.events_sent as f64 / total.max(1e-3)),
            "events/s",
        );
    }
    latency_rows(
        &mut t,
        "POLL latency restart → end (every 1 ms)",
        &drain_polls.poll_latency,
    );
    if let (Some(first), Some(last)) = (drain_events.first_at, drain_events.last_at) {
        // Only POLLs written while events were arriving (first → last event,
        // widened by the 5 ms granularity of the arrival clock).
        let from = first - Duration::from_millis(5);
        let during: Vec<Duration> = drain_polls
            .poll_at
            .iter()
            .zip(&drain_polls.poll_latency)
            .filter(|(at, _)| **at >= from && **at <= last)
            .map(|(_, d)| *d)
            .collect();
        latency_rows(
            &mut t,
            "POLL latency while draining (first → last event)",
            &during,
        );
    }
    board_rows(&mut t, &drain_polls);

    let exit = gateway.terminate();
    let log = gateway.log_text();
    t.section("gateway");
    t.row("exit on SIGTERM", format!("{exit:?}"), "");
    t.row(
        "log lines WARN / ERROR",
        format!(
            "{} / {}",
            log.lines().filter(|l| l.contains("WARN")).count(),
            log.lines().filter(|l| l.contains("ERROR")).count()
        ),
        "",
    );
    t.row("log size", log.len() / 1024, "KiB");
    t.row(
        "bench wall time",
        format!("{:.0}", bench_start.elapsed().as_secs_f64()),
        "s",
    );
    t.print();
    if std::env::var_os("BENCH_SHOW_WARNINGS").is_some() {
        for l in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(40)
        {
            eprintln!("{l}");
        }
    }
}
