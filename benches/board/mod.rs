//! The bench board: a tight simulated VMC on a pseudo-terminal, in its own
//! thread (not `sim::Board`, which polls every 200 ms), plus the `/proc`
//! readers and small helpers both benches need. Included by
//! benches/gateway.rs and benches/versus.rs with
//! `#[path = "board/mod.rs"] mod board;` next to `mod common;`.
// Each bench uses a part of this module (versus.rs no `Job::Polls`,
// gateway.rs no `Report::sent`).
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder};
use vendgate::codec::{Frame, FrameCode, FrameCodec};
use vendgate::profile::Profile;

use crate::common::repo;

pub const POLL: u32 = 0x41;
pub const ACK: u32 = 0x42;
pub const MONEY_COLLECTED: u32 = 0x21;
/// Protocol §3: the VMC waits this long for an answer (POLL) or an ACK (data).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(100);
pub const RETRIES: u32 = 5;

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- the board

/// What one board job saw.
#[derive(Default, Debug)]
pub struct Report {
    /// From the POLL's write+flush returning to the answer's first byte.
    pub poll_latency: Vec<Duration>,
    /// The same from before the write started (includes our write and flush).
    pub poll_latency_from_write: Vec<Duration>,
    /// When each answered POLL was written.
    pub poll_at: Vec<Instant>,
    pub ack_latency: Vec<Duration>,
    pub events_sent: u32,
    pub first_amount: u32,
    pub last_amount: u32,
    pub polls_unanswered: u32,
    pub polls_non_ack: u32,
    pub retransmissions: u32,
    pub abandoned: u32,
    pub stray_frames: u32,
    pub unexpected: u32,
    /// Frames found waiting before the board sent anything.
    pub unasked: u32,
    pub elapsed: Duration,
    /// Per data frame: its amount and the instant its first write was
    /// flushed (the start of the board -> subscriber latency).
    pub sent: Vec<(u32, Instant)>,
}

pub enum Job {
    /// POLL, DATA, POLL, DATA, ..., POLL: `events` data frames back to back.
    Burst { events: u32 },
    /// Every `period`: a POLL, then half a period later a data frame, for `duration`.
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

pub struct BoardIo {
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
        r.sent.push((amount, t0));
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

pub type JobRequest = (Job, oneshot::Sender<Report>);

/// The board on its own thread and single-threaded runtime, so its timing is
/// not disturbed by the MQTT client. Between jobs it polls every 200 ms like
/// an idle VMC. Returns the job channel and the gateway end's path.
pub fn start_board() -> (mpsc::UnboundedSender<JobRequest>, String) {
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

pub async fn run_job(jobs: &mpsc::UnboundedSender<JobRequest>, job: Job) -> Report {
    let (tx, rx) = oneshot::channel();
    jobs.send((job, tx)).expect("board alive");
    rx.await.expect("board report")
}

// ---------------------------------------------------------------- /proc

pub fn status_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn write_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime and stime of the process (all its threads), in µs. The kernel
/// counts in clock ticks (usually 10 ms), so short spans are coarse.
pub fn cpu_us(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let (user, system) = (
        f.get(11).copied().unwrap_or(0),
        f.get(12).copied().unwrap_or(0),
    );
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (user * 1_000_000 / hz, system * 1_000_000 / hz)
}

/// utime + stime of the process, in ms.
pub fn cpu_ms(pid: u32) -> u64 {
    let (user, system) = cpu_us(pid);
    (user + system) / 1000
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
