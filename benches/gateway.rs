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

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{config_yaml, repo, with_mqtt_version, Broker, Client, Gateway, Msg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder};
use vendgate::codec::{Frame, FrameCode, FrameCodec};
use vendgate::profile::Profile;

const POLL: u32 = 0x41;
const ACK: u32 = 0x42;
const MONEY_COLLECTED: u32 = 0x21;
const EVENT_TOPIC: &str = "vending/vm-001/event/money_collected";
const STATUS_TOPIC: &str = "vending/vm-001/status";
/// Protocol §3: the VMC waits this long for an answer (POLL) or an ACK (data).
const ANSWER_WITHIN: Duration = Duration::from_millis(100);
const RETRIES: u32 = 5;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- the board

/// What one board job saw.
#[derive(Default, Debug)]
struct Report {
    /// From the POLL's write+flush returning to the answer's first byte.
    poll_latency: Vec<Duration>,
    /// The same from before the write started (includes our write and flush).
    poll_latency_from_write: Vec<Duration>,
    /// When each answered POLL was written.
    poll_at: Vec<Instant>,
    ack_latency: Vec<Duration>,
    events_sent: u32,
    first_amount: u32,
    last_amount: u32,
    polls_unanswered: u32,
    polls_non_ack: u32,
    retransmissions: u32,
    abandoned: u32,
    stray_frames: u32,
    unexpected: u32,
    /// Frames found waiting before the board sent anything.
    unasked: u32,
    elapsed: Duration,
}

enum Job {
    /// POLL, DATA, POLL, DATA, ..., POLL: `events` data frames back to back.
    Burst { events: u32 },
    /// Every `period`: a POLL, then `period` later a data frame, for `duration`.
    Paced {
        duration: Duration,
        period: Duration,
    },
    /// POLLs every `gap` until `stop` is set.
    Polls {
        gap: Duration,
        stop: Arc<AtomicBool>,
    },
}

struct BoardIo {
    port: tokio_serial::SerialStream,
    codec: FrameCodec,
    buf: BytesMut,
    out: BytesMut,
    packno: u8,
    amount: u32,
}

fn frame(code: u32, payload: Vec<u8>) -> Frame {
    Frame {
        address: None,
        code: FrameCode::Num(code),
        payload: Bytes::from(payload),
    }
}

impl BoardIo {
    /// Writes and flushes a frame; returns the instant the flush returned.
    async fn send(&mut self, frame: &Frame) -> io::Result<Instant> {
        self.send_timed(frame).await.map(|(_, flushed)| flushed)
    }

    /// Writes and flushes; returns when the write started and when the flush returned.
    async fn send_timed(&mut self, frame: &Frame) -> io::Result<(Instant, Instant)> {
        self.out.clear();
        self.codec.encode(frame, &mut self.out)?;
        let start = Instant::now();
        self.port.write_all(&self.out).await?;
        self.port.flush().await?;
        Ok((start, Instant::now()))
    }

    /// The next whole frame and the instant its first byte arrived.
    async fn recv(&mut self, within: Duration) -> io::Result<Option<(Frame, Instant)>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut first = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(Some((frame, first.unwrap_or_else(Instant::now))));
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            match tokio::time::timeout_at(deadline, self.port.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(io::Error::other("pty closed")),
                Ok(Ok(_)) => {
                    if first.is_none() {
                        first = Some(Instant::now());
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Frames that arrived unasked (nothing may be pending before we send).
    async fn discard_unasked(&mut self, r: &mut Report) -> io::Result<()> {
        while self.recv(Duration::ZERO).await?.is_some() {
            r.unasked += 1;
        }
        Ok(())
    }

    /// One POLL and its answer.
    async fn poll(&mut self, r: &mut Report) -> io::Result<()> {
        self.discard_unasked(r).await?;
        let (tw, t0) = self.send_timed(&frame(POLL, vec![])).await?;
        match self.recv(Duration::from_secs(1)).await? {
            Some((answer, t1)) => {
                r.poll_latency.push(t1 - t0);
                r.poll_latency_from_write.push(t1 - tw);
                r.poll_at.push(tw);
                if answer.code != FrameCode::Num(ACK) {
                    // A command (none are sent by this bench): ACK it as a VMC would.
                    r.polls_non_ack += 1;
                    self.send(&frame(ACK, vec![])).await?;
                }
            }
            None => r.polls_unanswered += 1,
        }
        Ok(())
    }

    /// One money_collected frame, retransmitted like a VMC until ACKed.
    async fn data(&mut self, r: &mut Report) -> io::Result<()> {
        self.amount += 1;
        let amount = self.amount;
        let mut payload = vec![self.packno, 2];
        payload.extend_from_slice(&amount.to_be_bytes());
        let data = frame(MONEY_COLLECTED, payload);
        self.discard_unasked(r).await?;
        let t0 = self.send(&data).await?;
        let mut retries = 0;
        let mut deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                Some((answer, t1)) if answer.code == FrameCode::Num(ACK) => {
                    r.ack_latency.push(t1 - t0);
                    break;
                }
                Some(_) => r.unexpected += 1,
                None if retries < RETRIES => {
                    retries += 1;
                    r.retransmissions += 1;
                    self.send(&data).await?;
                    deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
                }
                None => {
                    r.abandoned += 1;
                    break;
                }
            }
        }
        if retries > 0 {
            // A retransmission that crossed our ACK is ACKed again: drop those.
            while self.recv(Duration::from_millis(30)).await?.is_some() {
                r.stray_frames += 1;
            }
        }
        if r.events_sent == 0 {
            r.first_amount = amount;
        }
        r.events_sent += 1;
        r.last_amount = amount;
        self.packno = if self.packno == 255 {
            1
        } else {
            self.packno + 1
        };
        Ok(())
    }

    async fn run(&mut self, job: Job) -> io::Result<Report> {
        let mut r = Report::default();
        let start = Instant::now();
        match job {
            Job::Burst { events } => {
                for _ in 0..events {
                    self.poll(&mut r).await?;
                    self.data(&mut r).await?;
                }
                self.poll(&mut r).await?;
            }
            Job::Paced { duration, period } => {
                let mut tick = tokio::time::interval(period / 2);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                while start.elapsed() < duration {
                    tick.tick().await;
                    if n % 2 == 0 {
                        self.poll(&mut r).await?;
                    } else {
                        self.data(&mut r).await?;
                    }
                    n += 1;
                }
            }
            Job::Polls { gap, stop } => {
                let mut tick = tokio::time::interval(gap);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    self.poll(&mut r).await?;
                }
            }
        }
        r.elapsed = start.elapsed();
        Ok(r)
    }
}

type JobRequest = (Job, oneshot::Sender<Report>);

/// The board on its own thread and single-threaded runtime, so its timing is
/// not disturbed by the MQTT client. Between jobs it polls every 200 ms like
/// an idle VMC. Returns the job channel and the gateway end's path.
fn start_board() -> (mpsc::UnboundedSender<JobRequest>, String) {
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<JobRequest>();
    let (path_tx, path_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-board".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("board runtime");
            rt.block_on(async move {
                let (device_end, gateway_end, path) = vendgate::sim::pty_pair().expect("pty");
                let _keep_alive = gateway_end;
                let profile =
                    Profile::resolve(&repo().join("device-profiles"), "vmc-upper-computer")
                        .expect("profile");
                let mut board = BoardIo {
                    port: device_end,
                    codec: FrameCodec::new(&profile.framing),
                    buf: BytesMut::with_capacity(4096),
                    out: BytesMut::with_capacity(64),
                    packno: 1,
                    amount: 0,
                };
                path_tx.send(path).expect("path");
                let mut idle = Report::default();
                loop {
                    tokio::select! {
                        job = jobs_rx.recv() => match job {
                            Some((job, reply)) => {
                                let report = board.run(job).await.expect("board I/O");
                                let _ = reply.send(report);
                            }
                            None => return,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            board.poll(&mut idle).await.expect("board I/O");
                        }
                    }
                }
            });
        })
        .expect("board thread");
    let path = path_rx.recv().expect("board started");
    (jobs_tx, path)
}

async fn run_job(jobs: &mpsc::UnboundedSender<JobRequest>, job: Job) -> Report {
    let (tx, rx) = oneshot::channel();
    jobs.send((job, tx)).expect("board alive");
    rx.await.expect("board report")
}

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

// ---------------------------------------------------------------- /proc

fn status_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the process, in ms (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
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

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
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

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
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
