//! The port task: one per serial line, doing the I/O for every device on
//! it. It opens (and reopens) the port, reads frames and routes them to the
//! devices' cores, runs the bus schedule of a `host_polls` line, and carries
//! out what the cores ask for: writes, durable commits, availability and
//! telemetry. Everything that decides lives in `core` and `bus`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_serial::SerialStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::bus::Bus;
use super::{open_port, port_path, Station};
use crate::capture::Dir;
use crate::codec::{Frame, FrameCodec};
use crate::device::core::{Action, Transmit};
use crate::device::SessionEnds;
use crate::mqtt::Backoff;
use crate::store::StoreError;

/// How often deadlines (link-down, answers, expiry) are checked.
const TICK: Duration = Duration::from_millis(20);
/// The read buffer; the codec bounds what it keeps.
const READ_CHUNK: usize = 4096;

type Commit = Pin<Box<dyn Future<Output = (usize, Result<Vec<u64>, StoreError>)> + Send>>;

/// Why the task stopped serving an open port.
enum Stop {
    Shutdown,
    PortLost(String),
}

/// One serial line and the devices on it.
pub struct PortTask {
    stations: Vec<Station>,
    codec: FrameCodec,
    /// `host_polls` lines: whose turn it is, the line's silence.
    bus: Option<Bus>,
    commits: FuturesUnordered<Commit>,
    out: BytesMut,
    /// Told once the port has been opened or has failed its first open.
    first_open: Option<oneshot::Sender<()>>,
    /// New MQTT sessions for the stations, after a reload.
    sessions: mpsc::UnboundedReceiver<Vec<SessionEnds>>,
}

impl PortTask {
    pub fn new(
        stations: Vec<Station>,
        first_open: oneshot::Sender<()>,
        sessions: mpsc::UnboundedReceiver<Vec<SessionEnds>>,
    ) -> PortTask {
        let profile = stations[0].core.profile();
        let codec = FrameCodec::new(&profile.framing);
        let bus = (profile.link.mode == crate::profile::LinkMode::HostPolls)
            .then(|| Bus::new(line_silence(&codec, &stations[0]), char_time(&stations[0])));
        PortTask {
            stations,
            codec,
            bus,
            commits: FuturesUnordered::new(),
            out: BytesMut::new(),
            first_open: Some(first_open),
            sessions,
        }
    }

    fn take_sessions(&mut self, sessions: Vec<SessionEnds>) {
        for (station, ends) in self.stations.iter_mut().zip(sessions) {
            station.take_session(ends);
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut last_error = String::new();
        loop {
            let opened = self.open();
            if let Some(tell) = self.first_open.take() {
                let _ = tell.send(());
            }
            match opened {
                Ok(port) => {
                    info!(port = %self.name(), "serial port open");
                    last_error.clear();
                    backoff.reset();
                    self.each(|core, now| core.port_opened(now)).await;
                    let stop = self.serve(port, &shutdown).await;
                    self.each(|core, now| core.port_lost(now)).await;
                    match stop {
                        Stop::Shutdown => return self.drain().await,
                        Stop::PortLost(why) => {
                            warn!(port = %self.name(), reason = %why, "serial port lost; reopening")
                        }
                    }
                }
                Err(error) => {
                    if error != last_error {
                        warn!(port = %self.name(), %error, "cannot open the serial port; retrying with backoff");
                        last_error = error;
                    }
                    self.each(|core, now| core.port_missing(now)).await;
                }
            }
            if self.idle(backoff.next_delay(), &shutdown).await {
                return self.drain().await;
            }
        }
    }

    fn name(&self) -> String {
        let ids: Vec<&str> = self.stations.iter().map(|s| s.core.machine()).collect();
        ids.join(",")
    }

    fn open(&self) -> Result<SerialStream, String> {
        let first = &self.stations[0];
        let profile = first.core.profile();
        let baud = first.ctx.device.baud.unwrap_or(profile.serial.baud);
        let path = port_path(&first.ctx.device)?;
        open_port(&path, baud, &profile.serial).map_err(|e| e.to_string())
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
            let bus_due = self.bus_wake(Instant::now());
            let result = tokio::select! {
                biased;
                read = port.read_buf(&mut buf) => match read {
                    // A USB adapter that was unplugged reads EOF: reopen, do not spin.
                    Ok(0) => return Stop::PortLost("end of file".into()),
                    Ok(n) => {
                        self.capture(Dir::Rx, &buf[buf.len().saturating_sub(n)..]);
                        last_byte = Instant::now();
                        if let Some(bus) = self.bus.as_mut() {
                            bus.line_active(last_byte);
                        }
                        self.on_bytes(&mut buf, &mut port).await
                    }
                    Err(e) => return Stop::PortLost(e.to_string()),
                },
                Some((index, result)) = self.commits.next() => {
                    self.on_commit(index, result, Some(&mut port)).await
                }
                (index, cmd) = next_command(&mut self.stations) => {
                    let station = &mut self.stations[index];
                    station.core.command(cmd, Instant::now());
                    self.perform(index, Some(&mut port)).await
                }
                _ = sleep_until_opt(silence_due) => {
                    let frame = self.codec.decode_silence(&mut buf);
                    self.report_codec();
                    match frame {
                        Some(frame) => self.on_frame(frame, &mut port).await,
                        None => Ok(()),
                    }
                }
                _ = sleep_until_opt(bus_due) => self.run_bus(&mut port).await,
                _ = ticker.tick() => self.on_tick(Some(&mut port)).await,
                Some(sessions) = self.sessions.recv() => {
                    self.take_sessions(sessions);
                    Ok(())
                }
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
                Some((index, result)) = self.commits.next() => {
                    let _ = self.on_commit(index, result, None).await;
                }
                (index, cmd) = next_command(&mut self.stations) => {
                    self.stations[index].core.command(cmd, Instant::now());
                    let _ = self.perform(index, None).await;
                }
                _ = ticker.tick() => {
                    let _ = self.on_tick(None).await;
                }
                Some(sessions) = self.sessions.recv() => self.take_sessions(sessions),
            }
        }
    }

    /// Clean shutdown: every core puts back what never reached the wire,
    /// and every durable write completes.
    async fn drain(mut self) {
        self.each(|core, _| core.shutdown()).await;
        while let Some((index, result)) = self.commits.next().await {
            let _ = self.on_commit(index, result, None).await;
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
            self.report_codec();
            let Some(frame) = frame else {
                return Ok(());
            };
            self.on_frame(frame, port).await?;
        }
    }

    async fn on_frame(&mut self, frame: Frame, port: &mut SerialStream) -> std::io::Result<()> {
        let now = Instant::now();
        let index = match self.bus.as_mut() {
            Some(bus) => bus.route(&mut self.stations, &frame),
            None => Some(0),
        };
        let Some(index) = index else {
            return Ok(());
        };
        // Counted per device as routed: on a bus every device sees the line.
        self.stations[index].ctx.health.frame_in();
        self.stations[index].core.frame(frame, now);
        self.perform(index, Some(port)).await?;
        self.run_bus(port).await
    }

    async fn on_commit(
        &mut self,
        index: usize,
        result: Result<Vec<u64>, StoreError>,
        port: Option<&mut SerialStream>,
    ) -> std::io::Result<()> {
        let station = &mut self.stations[index];
        let ok = match &result {
            Ok(_) => {
                station.ctx.outbox_ready.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(machine = %station.core.machine(), error = %e, "durable write failed");
                false
            }
        };
        station.core.committed(ok, Instant::now());
        self.perform(index, port).await
    }

    async fn on_tick(&mut self, mut port: Option<&mut SerialStream>) -> std::io::Result<()> {
        for index in 0..self.stations.len() {
            let station = &mut self.stations[index];
            station.ctx.heartbeat.beat();
            #[cfg(debug_assertions)]
            super::failpoints::stall(station.core.machine(), station.started).await;
            station.core.tick(Instant::now());
            self.perform(index, port.as_deref_mut()).await?;
        }
        match port {
            Some(port) => self.run_bus(port).await,
            None => Ok(()),
        }
    }

    /// The next time the bus needs attention (a transmission or an answer
    /// deadline), if this is a `host_polls` line.
    fn bus_wake(&self, now: Instant) -> Option<Instant> {
        self.bus
            .as_ref()
            .and_then(|bus| bus.wake(&self.stations, now))
    }

    /// Lets the bus start the next exchange (or give up on one) now.
    async fn run_bus(&mut self, port: &mut SerialStream) -> std::io::Result<()> {
        let Some(bus) = self.bus.as_mut() else {
            return Ok(());
        };
        let touched = bus.step(&mut self.stations, Instant::now());
        for index in touched {
            self.perform(index, Some(port)).await?;
        }
        Ok(())
    }

    /// Carries out what core `index` asked for, in order.
    async fn perform(
        &mut self,
        index: usize,
        mut port: Option<&mut SerialStream>,
    ) -> std::io::Result<()> {
        let actions = self.stations[index].core.take_actions();
        for action in actions {
            match action {
                Action::Write(transmit) => {
                    if let Some(port) = port.as_deref_mut() {
                        self.write(index, transmit, port).await?;
                    }
                }
                Action::Persist(ops) => {
                    let store = self.stations[index].ctx.store.clone();
                    self.commits
                        .push(Box::pin(async move { (index, store.write(ops).await) }));
                }
                Action::Availability(availability) => {
                    let ctx = &self.stations[index].ctx;
                    ctx.health.link_changed(&availability);
                    ctx.availability.send_replace(availability);
                }
                Action::Telemetry(item) => {
                    let ctx = &self.stations[index].ctx;
                    if ctx.telemetry.try_send(item).is_err() {
                        warn!(machine = %ctx.device.id, "telemetry dropped: MQTT side is not keeping up");
                    }
                }
            }
        }
        Ok(())
    }

    async fn write(
        &mut self,
        index: usize,
        transmit: Transmit,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        self.out.clear();
        self.codec.encode(&transmit.frame, &mut self.out)?;
        // Not flushed: the stream has no buffer of its own, so the bytes are
        // with the kernel once written, and `flush` is `tcdrain`, which
        // blocks the thread until they are on the wire (8 ms for a Modbus
        // request at 9600 baud, every task of the gateway waiting). The bus
        // schedule adds the time on the wire itself (`Bus::wrote`), and answer
        // deadlines are set by the core when it decides to transmit.
        port.write_all(&self.out).await?;
        self.capture(Dir::Tx, &self.out);
        let health = &self.stations[index].ctx.health;
        health.frame_out();
        if let Some(poll) = transmit.answers_poll {
            health.poll_answered(poll.elapsed());
        }
        if let Some(bus) = self.bus.as_mut() {
            bus.wrote(Instant::now(), self.out.len());
        }
        #[cfg(debug_assertions)]
        super::failpoints::abort_after_write(transmit.command.as_deref());
        Ok(())
    }

    /// Hands a chunk to every capture of the line (`run --capture`); a
    /// chunk the writer cannot take is counted, never waited for.
    fn capture(&self, dir: Dir, bytes: &[u8]) {
        for station in &self.stations {
            if let Some(capture) = &station.ctx.capture {
                if !capture.record(dir, bytes) {
                    station.ctx.health.capture_dropped();
                }
            }
        }
    }

    fn report_codec(&self) {
        let stats = self.codec.stats();
        for station in &self.stations {
            station.ctx.health.codec(stats);
        }
    }

    /// Runs `f` on every core at one instant and carries out its actions
    /// (the port is closed or about to be served: no writes).
    async fn each(&mut self, mut f: impl FnMut(&mut crate::device::core::Core, Instant)) {
        let now = Instant::now();
        for index in 0..self.stations.len() {
            f(&mut self.stations[index].core, now);
            let _ = self.perform(index, None).await;
        }
    }
}

/// The next command for any device on the line, with the device's index.
async fn next_command(stations: &mut [Station]) -> (usize, crate::queue::QueuedCommand) {
    std::future::poll_fn(|cx| {
        for (index, station) in stations.iter_mut().enumerate() {
            if let Poll::Ready(Some(cmd)) = station.ctx.commands.poll_recv(cx) {
                return Poll::Ready((index, cmd));
            }
        }
        Poll::Pending
    })
    .await
}

/// The silence the line keeps before each transmission: the profile's
/// inter-frame silence, or 3.5 characters (Modbus over serial line §2.5.1.1).
fn line_silence(codec: &FrameCodec, station: &Station) -> Duration {
    codec
        .needs_silence()
        .unwrap_or_else(|| char_time(station).mul_f64(3.5))
}

/// How long one character takes on the line: start, data, parity and stop bits.
fn char_time(station: &Station) -> Duration {
    let profile = station.core.profile();
    let serial = &profile.serial;
    let baud = station.ctx.device.baud.unwrap_or(serial.baud).max(1);
    let parity = u32::from(serial.parity != crate::profile::Parity::None);
    let bits = 1 + u32::from(serial.data_bits) + parity + u32::from(serial.stop_bits);
    Duration::from_secs_f64(f64::from(bits) / f64::from(baud))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
