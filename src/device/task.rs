//! The device task's loop: the port's life cycle and every frame.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::commands::InProgress;
use super::messages::{self, code_key, parse_code_key};
use super::writes::{poll_write, Purpose, WriteFuture};
use super::{open_port, DeviceContext, QueuedCommand};
use crate::codec::{Frame, FrameCode, FrameCodec};
use crate::link::{Change, Link, PollAnswer, Received};
use crate::mqtt::{Availability, Backoff, OfflineReason};
use crate::profile::{LinkMode, MessageKind};
use crate::store::{MachineState, Op};

/// Why the device stopped serving an open port.
enum Stop {
    Shutdown,
    PortLost(String),
}

pub(super) struct Device {
    pub ctx: DeviceContext,
    pub machine: String,
    pub codec: FrameCodec,
    pub link: Link,
    pub next_seq: u64,
    /// Accepted commands taken from the router, oldest first.
    pub queue: VecDeque<QueuedCommand>,
    pub current: Option<InProgress>,
    /// The batch whose steps are running (`batch.rs`).
    pub batch: Option<super::batch::Running>,
    pub next_token: u64,
    /// Since when the link is down (for the `offline` command results).
    pub down_since: Option<Instant>,
    pub(super) started: Instant,
    /// An offline state waiting out its debounce, and when it is due.
    pub(super) pending_offline: Option<(Availability, Instant)>,
    /// Data frames whose publications are being made durable: the board
    /// retransmits them while it waits for our ACK; they are not new.
    pub(super) persisting: HashSet<(FrameCode, Option<u8>)>,
    /// The last frame from the device, to know whether it still waits for
    /// our answer when a durable write completes.
    pub(super) last_rx: Option<(FrameCode, Option<u8>)>,
    /// One durable write at a time, so the machine state is committed in the
    /// order it changed; what comes meanwhile is merged into the next one.
    pub(super) writing: Option<WriteFuture>,
    pub(super) pending_ops: Vec<Op>,
    pub(super) pending_purposes: Vec<Purpose>,
    out: BytesMut,
}

/// How often deadlines (link-down, answers, expiry) are checked.
const TICK: Duration = Duration::from_millis(20);
/// The read buffer; the codec bounds what it keeps.
const READ_CHUNK: usize = 4096;

pub async fn run(ctx: DeviceContext, shutdown: CancellationToken) {
    let machine = ctx.device.id.clone();
    let state = ctx.store.machine_state(&machine).unwrap_or_else(|e| {
        error!(machine = %machine, error = %e, "cannot read the machine's state; starting afresh");
        MachineState::default()
    });
    let mut device = Device::new(ctx, state);
    device.recover();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last_error = String::new();
    loop {
        let baud = device
            .ctx
            .device
            .baud
            .unwrap_or(device.ctx.profile.serial.baud);
        let opened = port_path(&device.ctx.device).and_then(|path| {
            open_port(&path, baud, &device.ctx.profile.serial).map_err(|e| e.to_string())
        });
        match opened {
            Ok(port) => {
                info!(machine = %machine, "serial port open");
                last_error.clear();
                backoff.reset();
                match device.serve(port, &shutdown).await {
                    Stop::Shutdown => return device.drain_writes().await,
                    Stop::PortLost(why) => {
                        warn!(machine = %machine, reason = %why, "serial port lost; reopening");
                        device.port_lost();
                    }
                }
            }
            Err(error) => {
                if error != last_error {
                    warn!(machine = %machine, %error, "cannot open the serial port; retrying with backoff");
                    last_error = error;
                }
                device.set_availability(Availability::offline(OfflineReason::PortMissing));
            }
        }
        if device.idle(backoff.next_delay(), &shutdown).await {
            return device.drain_writes().await;
        }
    }
}

/// Where the device's port is now: its `port` path (a by-id link is
/// resolved by the open), or the tty its `usb` identity has at this moment,
/// since an adapter may come back under another name.
fn port_path(device: &crate::config::DeviceConfig) -> Result<std::path::PathBuf, String> {
    if let Some(path) = &device.port {
        return Ok(path.clone());
    }
    let Some(wanted) = &device.usb else {
        return Err("the device has neither port nor usb".to_owned());
    };
    super::usb::find(Path::new("/sys"), wanted).ok_or_else(|| {
        let serial = wanted
            .serial
            .as_deref()
            .map(|s| format!(" with serial {s}"))
            .unwrap_or_default();
        format!(
            "no USB serial adapter {:04x}:{:04x}{serial} is present",
            wanted.vid, wanted.pid
        )
    })
}

impl Device {
    fn new(ctx: DeviceContext, state: MachineState) -> Device {
        let last_device = state
            .last_device_frame
            .as_ref()
            .map(|(key, seq)| (parse_code_key(key), *seq));
        let link = Link::new(
            ctx.profile.link.clone(),
            state.host_seq,
            last_device,
            ctx.device.link_timeout,
        );
        Device {
            machine: ctx.device.id.clone(),
            codec: FrameCodec::new(&ctx.profile.framing),
            link,
            next_seq: state.next_seq.max(1),
            queue: VecDeque::new(),
            current: None,
            batch: None,
            next_token: 1,
            down_since: Some(Instant::now()),
            started: Instant::now(),
            pending_offline: None,
            persisting: HashSet::new(),
            last_rx: None,
            writing: None,
            pending_ops: Vec::new(),
            pending_purposes: Vec::new(),
            out: BytesMut::new(),
            ctx,
        }
    }

    /// Serves an open port until it fails or the gateway stops.
    async fn serve(&mut self, mut port: SerialStream, shutdown: &CancellationToken) -> Stop {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence = self.codec.needs_silence();
        let mut last_byte = Instant::now();
        loop {
            let silence_due = silence.filter(|_| !buf.is_empty()).map(|d| last_byte + d);
            let result = tokio::select! {
                biased;
                read = port.read_buf(&mut buf) => match read {
                    // A USB adapter that was unplugged reads EOF: reopen, do not spin.
                    Ok(0) => return Stop::PortLost("end of file".into()),
                    Ok(_) => {
                        last_byte = Instant::now();
                        self.on_bytes(&mut buf, &mut port).await
                    }
                    Err(e) => return Stop::PortLost(e.to_string()),
                },
                done = poll_write(&mut self.writing) => self.on_committed(done.0, done.1, &mut port).await,
                Some(cmd) = self.ctx.commands.recv() => {
                    self.enqueue(cmd);
                    self.advance_queue();
                    self.write_unprompted(&mut port).await
                }
                _ = sleep_until_opt(silence_due) => {
                    let frame = self.codec.decode_silence(&mut buf);
                    self.ctx.health.codec(self.codec.stats());
                    match frame {
                        Some(frame) => self.on_frame(frame, &mut port).await,
                        None => Ok(()),
                    }
                }
                _ = ticker.tick() => self.on_tick(&mut port).await,
                _ = shutdown.cancelled() => return Stop::Shutdown,
            };
            if let Err(e) = result {
                return Stop::PortLost(e.to_string());
            }
        }
    }

    /// Between two opens: commands still get their `offline`/`expired`
    /// results and durable writes complete. Returns true on shutdown.
    async fn idle(&mut self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let until = tokio::time::Instant::now() + delay;
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = shutdown.cancelled() => return true,
                done = poll_write(&mut self.writing) => {
                    let (purposes, result) = done;
                    self.after_commit_offline(purposes, result);
                }
                Some(cmd) = self.ctx.commands.recv() => self.enqueue(cmd),
                _ = ticker.tick() => {
                    self.ctx.heartbeat.beat();
                    self.settle_startup(Instant::now());
                    self.check_deadlines(Instant::now());
                }
            }
        }
    }

    async fn on_bytes(
        &mut self,
        buf: &mut BytesMut,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        loop {
            let frame = self.codec.decode(buf)?;
            // Before the frame is acted upon: a report triggered by the link
            // coming up already counts the frame that brought it up.
            self.ctx.health.codec(self.codec.stats());
            let Some(frame) = frame else {
                return Ok(());
            };
            self.on_frame(frame, port).await?;
        }
    }

    async fn on_frame(&mut self, frame: Frame, port: &mut SerialStream) -> std::io::Result<()> {
        let now = Instant::now();
        let code = frame.code.clone();
        let (received, change) = self.link.receive(frame, now);
        if change == Some(Change::Up) {
            info!(machine = %self.machine, "link up");
            self.down_since = None;
            self.set_availability(Availability::Online);
            self.advance_queue();
        }
        match received {
            Received::Poll => {
                self.last_rx = None;
                // The answer goes out before anything else is looked at:
                // the board allows 100 ms (VMC protocol §3).
                let answer = self.link.answer_poll();
                if let Some(answer) = answer {
                    self.write_answer(answer, port).await?;
                    self.ctx.health.poll_answered(now.elapsed());
                }
                self.collect_gave_up();
            }
            Received::Acked(Some(token)) => {
                self.last_rx = None;
                self.on_acked(token);
            }
            Received::Acked(None) => {
                debug!(machine = %self.machine, "ACK with nothing outstanding")
            }
            Received::Data { code, seq, body } => {
                self.last_rx = Some((code.clone(), seq));
                self.on_data(code, seq, &body, port).await?;
            }
            Received::Retransmission => {
                debug!(machine = %self.machine, code = ?code, "retransmitted frame: ACK again, publish nothing");
                if let Some(ack) = self.link.ack_frame() {
                    self.write_frame(&ack, port).await?;
                }
            }
            Received::Invalid(why) => {
                warn!(machine = %self.machine, code = ?code, why, "frame ignored")
            }
        }
        Ok(())
    }

    async fn on_data(
        &mut self,
        code: FrameCode,
        seq: Option<u8>,
        body: &[u8],
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        if self.persisting.contains(&(code.clone(), seq)) {
            // Still being made durable; its ACK follows the commit.
            return Ok(());
        }
        let decoded = messages::decode(&self.ctx.profile, &code, body);
        let mut ops = self.complete_with_answer(&decoded);
        let answered = !ops.is_empty();
        match decoded.kind {
            MessageKind::Telemetry => {
                let item = messages::out_item(&self.ctx.config, &self.machine, &decoded, None);
                if self.ctx.telemetry.try_send(item).is_err() {
                    warn!(machine = %self.machine, name = %decoded.name, "telemetry dropped: MQTT side is not keeping up");
                }
            }
            // A response nobody waits for (e.g. after its command timed out)
            // is published as an event of its name rather than lost.
            MessageKind::Response if answered => {}
            MessageKind::Event | MessageKind::Response => {
                let seq_no = self.next_seq;
                self.next_seq += 1;
                let item =
                    messages::out_item(&self.ctx.config, &self.machine, &decoded, Some(seq_no));
                ops.push(Op::Append {
                    session: self.machine.clone(),
                    item,
                });
            }
        }
        if ops.is_empty() {
            // Telemetry only: the ACK need not wait for the disk. Its
            // de-duplication key is persisted with the next durable write.
            if let Some(ack) = self.link.accept(code, seq) {
                self.write_frame(&ack, port).await?;
            }
            return Ok(());
        }
        self.persisting.insert((code.clone(), seq));
        self.last_rx = Some((code.clone(), seq));
        ops.push(self.state_op(Some((code_key(&code), seq))));
        self.schedule(ops, Purpose::Accept { code, seq });
        Ok(())
    }

    async fn write_answer(
        &mut self,
        answer: PollAnswer,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        match answer {
            PollAnswer::Ack(frame) => self.write_frame(&frame, port).await,
            PollAnswer::Command {
                token,
                frame,
                attempt,
            } => {
                if attempt > 1 {
                    debug!(machine = %self.machine, attempt, "retransmitting command");
                    self.ctx.health.retransmission();
                }
                self.written(token);
                self.write_frame(&frame, port).await?;
                #[cfg(debug_assertions)]
                self.failpoint_abort_after_write();
                Ok(())
            }
        }
    }

    /// Modes where the gateway speaks first write a staged command at once
    /// (and again after `retry_after` while it is not acknowledged).
    pub(super) async fn write_unprompted(
        &mut self,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        if self.link.mode() == LinkMode::DevicePolls {
            return Ok(());
        }
        self.collect_gave_up();
        let Some(answer) = self.link.take_unprompted(Instant::now()) else {
            return Ok(());
        };
        let token = match &answer {
            PollAnswer::Command { token, .. } => Some(*token),
            PollAnswer::Ack(_) => None,
        };
        self.write_answer(answer, port).await?;
        // Without an ACK in the profile, a written command is complete.
        if let (None, Some(token)) = (self.link.ack_frame(), token) {
            self.link.release();
            self.on_acked(token);
        }
        Ok(())
    }

    pub(super) async fn write_frame(
        &mut self,
        frame: &Frame,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        self.out.clear();
        self.codec.encode(frame, &mut self.out)?;
        port.write_all(&self.out).await?;
        port.flush().await?;
        self.ctx.health.frame_out();
        Ok(())
    }

    async fn on_tick(&mut self, port: &mut SerialStream) -> std::io::Result<()> {
        self.ctx.heartbeat.beat();
        #[cfg(debug_assertions)]
        failpoint_stall(&self.machine, self.started).await;
        let now = Instant::now();
        self.settle_startup(now);
        if self.link.tick(now) == Some(Change::Down) {
            warn!(machine = %self.machine, after = ?self.link.down_after(), "link down: no valid frame");
            self.down_since = Some(now);
            self.set_availability(Availability::offline(OfflineReason::LinkLost));
        }
        self.check_deadlines(now);
        self.collect_gave_up();
        self.advance_queue();
        self.write_unprompted(port).await
    }

    pub(super) fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// A command from the router: queued, except `cancel`, which acts now.
    fn enqueue(&mut self, cmd: QueuedCommand) {
        if let super::Job::Cancel(target) = &cmd.job {
            let target = target.clone();
            self.ctx.queued.fetch_sub(1, Ordering::SeqCst);
            return self.cancel(cmd, &target);
        }
        self.queue.push_back(cmd);
    }

    pub(super) fn dequeue(&mut self) -> Option<QueuedCommand> {
        let cmd = self.queue.pop_front()?;
        self.ctx.queued.fetch_sub(1, Ordering::SeqCst);
        Some(cmd)
    }
}

/// Test builds only: `VENDGATE_FAILPOINT_STALL_DEVICE=<machine>` makes that
/// device task hang 2 s after start, as a task stuck in a driver call would,
/// so the systemd watchdog's liveness check can be tested end to end.
#[cfg(debug_assertions)]
async fn failpoint_stall(machine: &str, started: Instant) {
    let target = std::env::var("VENDGATE_FAILPOINT_STALL_DEVICE").ok();
    if target.as_deref() == Some(machine) && started.elapsed() > Duration::from_secs(2) {
        tracing::warn!(machine, "failpoint: device task stalls");
        std::future::pending::<()>().await;
    }
}

impl Device {
    /// Test builds only: `VENDGATE_FAILPOINT_ABORT_AFTER_WRITE=<command>`
    /// aborts the process right after that command's frame is written,
    /// before its ACK can be recorded: a crash with a command in flight.
    #[cfg(debug_assertions)]
    fn failpoint_abort_after_write(&self) {
        let target = std::env::var("VENDGATE_FAILPOINT_ABORT_AFTER_WRITE").ok();
        let name = self.current.as_ref().map(|c| c.cmd.def.name.as_str());
        if target.is_some() && target.as_deref() == name {
            tracing::warn!(machine = %self.machine, command = ?name, "failpoint: abort after write");
            std::process::abort();
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
