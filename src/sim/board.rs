//! A simulated device: plays the device side of a profile's link rules.
//!
//! For `device_polls` profiles (the VMC board) it is the master: it polls,
//! expects an answer within `answer_within`, ACKs commands, sends its data
//! frames instead of a POLL and retransmits them until ACKed. Tests drive
//! it through [`Control`] and watch it through [`BoardEvent`]s.
//!
//! For `host_polls` profiles (a Modbus slave) it answers each request with
//! the profile's `simulator.on_command` reaction, addressed as the request
//! was; with [`Board::answering`] only requests to its own addresses.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};
use tracing::{debug, warn};

use crate::codec::{Frame, FrameCode, FrameCodec};
use crate::profile::{LinkMode, Profile, Script};

/// What a test (or the demo) can make the board do.
#[derive(Debug)]
pub enum Control {
    /// Send a message of the profile with these values.
    Send {
        message: String,
        values: Map<String, Value>,
    },
    /// Write raw bytes now (line noise, corrupted frames).
    Raw(Vec<u8>),
    /// Stop or resume polling (a board that hangs).
    Polling(bool),
    /// Stop the board.
    Stop,
}

/// What the board saw, for tests, the demo and the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub enum BoardEvent {
    /// A command frame arrived and was ACKed. `repeat` is a retransmission
    /// (same code and sequence number as the previous one).
    Command {
        name: String,
        args: Map<String, Value>,
        seq: Option<u8>,
        repeat: bool,
    },
    /// The answer to a POLL started this long after the POLL was written.
    PollAnswered { latency: Duration, command: bool },
    /// No answer to a POLL within `answer_within`.
    PollUnanswered,
    /// One of our data frames was ACKed.
    DataAcked { message: String, seq: Option<u8> },
    /// One of our data frames was abandoned after the last retry.
    DataAbandoned { message: String },
    /// A frame that the profile does not expect from the host.
    Unexpected(Frame),
}

pub struct Board<P> {
    profile: Arc<Profile>,
    script: Script,
    port: P,
    codec: FrameCodec,
    buf: BytesMut,
    control: mpsc::Receiver<Control>,
    events: Option<mpsc::UnboundedSender<BoardEvent>>,
    poll_interval: Duration,
    polling: bool,
    seq: u8,
    outbox: VecDeque<(String, Frame)>,
    last_command: Option<(FrameCode, Bytes)>,
    next_periodic: Vec<Instant>,
    /// The addresses it answers; `None`: all.
    addresses: Option<Vec<u16>>,
    /// The address of the request being answered (its reply carries it).
    reply_address: Option<u16>,
}

/// Handle to a running board.
pub struct BoardHandle {
    pub control: mpsc::Sender<Control>,
    pub events: mpsc::UnboundedReceiver<BoardEvent>,
}

impl<P: AsyncRead + AsyncWrite + Unpin + Send + 'static> Board<P> {
    /// A board on `port`; returns it with its handle. `run` it in a task.
    pub fn new(profile: Arc<Profile>, script: Script, port: P) -> (Board<P>, BoardHandle) {
        let (control_tx, control_rx) = mpsc::channel(1024);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let board = Board {
            codec: FrameCodec::new(&profile.framing),
            poll_interval: profile.link.poll_interval,
            next_periodic: script.periodic.iter().map(|p| now + p.every).collect(),
            script,
            profile,
            port,
            buf: BytesMut::with_capacity(1024),
            control: control_rx,
            events: Some(events_tx),
            polling: true,
            seq: 0,
            outbox: VecDeque::new(),
            last_command: None,
            addresses: None,
            reply_address: None,
        };
        (
            board,
            BoardHandle {
                control: control_tx,
                events: events_rx,
            },
        )
    }

    /// Answers only requests to `addresses` (`None`: every request), as
    /// the devices of a simulated bus.
    pub fn answering(mut self, addresses: Option<Vec<u16>>) -> Self {
        self.addresses = addresses;
        self
    }

    pub async fn run(mut self) -> std::io::Result<()> {
        let mut next_poll = Instant::now();
        loop {
            while let Ok(control) = self.control.try_recv() {
                if !self.apply(control).await? {
                    return Ok(());
                }
            }
            self.queue_periodic();
            if !self.polling {
                tokio::select! {
                    control = self.control.recv() => match control {
                        Some(control) => if !self.apply(control).await? { return Ok(()) },
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            if let Some((name, frame)) = self.outbox.pop_front() {
                self.send_data(name, frame).await?;
                continue;
            }
            if self.profile.link.mode != LinkMode::DevicePolls {
                self.listen(Duration::from_millis(50)).await?;
                continue;
            }
            let now = Instant::now();
            if now < next_poll {
                tokio::select! {
                    control = self.control.recv() => match control {
                        Some(control) => if !self.apply(control).await? { return Ok(()) },
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep_until(next_poll.into()) => {}
                }
                continue;
            }
            next_poll = now + self.poll_interval;
            self.poll().await?;
        }
    }

    /// Returns false on `Stop`.
    async fn apply(&mut self, control: Control) -> std::io::Result<bool> {
        match control {
            Control::Send { message, values } => self.queue_message(&message, &values),
            Control::Raw(bytes) => {
                self.port.write_all(&bytes).await?;
                self.port.flush().await?;
            }
            Control::Polling(on) => self.polling = on,
            Control::Stop => return Ok(false),
        }
        Ok(true)
    }

    fn emit(&self, event: BoardEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn queue_periodic(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.next_periodic.len())
            .filter(|&i| self.next_periodic[i] <= now)
            .collect();
        for i in due {
            self.next_periodic[i] = now + self.script.periodic[i].every;
            let periodic = self.script.periodic[i].clone();
            self.queue_message(&periodic.send, &periodic.values);
        }
    }

    fn queue_message(&mut self, name: &str, values: &Map<String, Value>) {
        let Some(message) = self.profile.message(name) else {
            warn!(message = name, "simulator: no such message in the profile");
            return;
        };
        match message.encode(values) {
            Ok(body) => {
                let frame = Frame {
                    address: self.reply_address,
                    code: message.code.clone(),
                    payload: Bytes::from(body),
                };
                self.outbox.push_back((name.to_owned(), frame));
            }
            Err(e) => warn!(message = name, error = %e, "simulator: cannot encode"),
        }
    }

    async fn write(&mut self, frame: &Frame) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out)?;
        self.port.write_all(&out).await?;
        self.port.flush().await
    }

    /// Reads until a frame arrives or `timeout` passes; the instant of the
    /// first byte read is returned with the frame.
    async fn read_frame(&mut self, timeout: Duration) -> std::io::Result<Option<(Frame, Instant)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first_byte = None;
        let silence = self.codec.needs_silence();
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(Some((frame, first_byte.unwrap_or_else(Instant::now))));
            }
            // Silence framing: a frame ends when the line stays quiet.
            let until = match silence.filter(|_| !self.buf.is_empty()) {
                Some(gap) => tokio::time::Instant::now() + gap,
                None => deadline,
            };
            let read = tokio::time::timeout_at(until, self.port.read_buf(&mut self.buf)).await;
            match read {
                Err(_) if until != deadline => {
                    if let Some(frame) = self.codec.decode_silence(&mut self.buf) {
                        return Ok(Some((frame, first_byte.unwrap_or_else(Instant::now))));
                    }
                }
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {
                    first_byte.get_or_insert_with(Instant::now);
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Every exchange starts at the board (VMC spec §3), so whatever is
    /// still unread when it starts one answers an exchange that is over:
    /// typically the second ACK of a data frame the board retransmitted
    /// while the first ACK was on its way. Reading it as the answer to the
    /// new POLL would leave the board one answer behind from then on.
    async fn drop_stale_input(&mut self) -> std::io::Result<()> {
        loop {
            match tokio::time::timeout(Duration::ZERO, self.port.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        if !self.buf.is_empty() {
            debug!(
                bytes = self.buf.len(),
                "simulator: dropped input left from an earlier exchange"
            );
            self.buf.clear();
        }
        Ok(())
    }

    async fn poll(&mut self) -> std::io::Result<()> {
        let Some(poll) = self.profile.link.poll.clone() else {
            return Ok(());
        };
        self.drop_stale_input().await?;
        self.write(&Frame {
            address: None,
            code: poll,
            payload: Bytes::new(),
        })
        .await?;
        let sent = Instant::now();
        match self.read_frame(self.profile.link.answer_within).await? {
            None => self.emit(BoardEvent::PollUnanswered),
            Some((frame, first)) => {
                let command = !self.is_ack(&frame);
                self.emit(BoardEvent::PollAnswered {
                    latency: first.saturating_duration_since(sent),
                    command,
                });
                if command {
                    self.on_command(frame).await?;
                }
            }
        }
        Ok(())
    }

    fn is_ack(&self, frame: &Frame) -> bool {
        self.profile.link.ack.as_ref() == Some(&frame.code)
    }

    async fn ack(&mut self) -> std::io::Result<()> {
        if let Some(ack) = self.profile.link.ack.clone() {
            self.write(&Frame {
                address: None,
                code: ack,
                payload: Bytes::new(),
            })
            .await?;
        }
        Ok(())
    }

    /// Waits for the host to speak on its own (modes other than device_polls).
    async fn listen(&mut self, timeout: Duration) -> std::io::Result<()> {
        if let Some((frame, _)) = self.read_frame(timeout).await? {
            if !self.is_ack(&frame) {
                self.on_command(frame).await?;
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, frame: Frame) -> std::io::Result<()> {
        let for_us = match (&self.addresses, frame.address) {
            (Some(ours), Some(address)) => ours.contains(&address),
            _ => true,
        };
        if !for_us {
            // Another device's request on the bus: not ours to answer.
            return Ok(());
        }
        self.reply_address = frame.address;
        let has_seq = self.profile.link.sequence.is_some();
        let (seq, body) = match (has_seq, frame.payload.first()) {
            (true, Some(&seq)) => (Some(seq), frame.payload.slice(1..)),
            (true, None) => {
                self.emit(BoardEvent::Unexpected(frame));
                return Ok(());
            }
            (false, _) => (None, frame.payload.clone()),
        };
        let key = (frame.code.clone(), frame.payload.clone());
        // Without sequence numbers a repeat cannot be told from a new
        // request (a poll is the same frame every time): each is answered.
        let repeat = has_seq && self.last_command.as_ref() == Some(&key);
        // Two commands share a code (set_time and menu on 0x70): the first
        // whose layout decodes wins.
        let decoded = self
            .profile
            .commands()
            .iter()
            .filter(|c| c.code == frame.code)
            .find_map(|c| c.decode(&body).ok().map(|args| (c.name.clone(), args)));
        let Some((name, args)) = decoded else {
            self.emit(BoardEvent::Unexpected(frame));
            return Ok(());
        };
        self.ack().await?;
        debug!(command = %name, ?seq, repeat, "simulator: command");
        self.emit(BoardEvent::Command {
            name: name.clone(),
            args: args.clone(),
            seq,
            repeat,
        });
        if repeat {
            return Ok(());
        }
        self.last_command = Some(key);
        if let Some(rule) = &self.profile.link.poll_interval_command {
            if rule.command == name {
                if let Some(ms) = args.get(&rule.arg).and_then(Value::as_u64) {
                    self.poll_interval = Duration::from_millis(ms);
                }
            }
        }
        let reactions = self
            .script
            .on_command
            .get(&name)
            .cloned()
            .unwrap_or_default();
        for reaction in reactions {
            let values = reaction.render(&args);
            self.queue_message(&reaction.send, &values);
        }
        Ok(())
    }

    /// Sends a data frame with the next sequence number and retransmits it
    /// (same number) until ACKed or the retries are used up.
    async fn send_data(&mut self, name: String, frame: Frame) -> std::io::Result<()> {
        let seq = self.profile.link.sequence.as_ref().map(|rule| {
            self.seq = if self.seq < rule.min || self.seq >= rule.max {
                rule.min
            } else {
                self.seq + 1
            };
            self.seq
        });
        let mut payload = BytesMut::with_capacity(frame.payload.len() + 1);
        if let Some(seq) = seq {
            payload.put_u8(seq);
        }
        payload.extend_from_slice(&frame.payload);
        let frame = Frame {
            payload: payload.freeze(),
            ..frame
        };
        let wait = self.profile.link.retry_after;
        if self.profile.link.mode == LinkMode::DevicePolls {
            self.drop_stale_input().await?;
        }
        for _attempt in 0..=self.profile.link.retries {
            self.write(&frame).await?;
            if self.profile.link.ack.is_none() {
                self.emit(BoardEvent::DataAcked { message: name, seq });
                return Ok(());
            }
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.read_frame(left).await? {
                    None => break,
                    Some((reply, _)) if self.is_ack(&reply) => {
                        self.emit(BoardEvent::DataAcked { message: name, seq });
                        return Ok(());
                    }
                    Some((other, _)) => self.emit(BoardEvent::Unexpected(other)),
                }
            }
        }
        self.emit(BoardEvent::DataAbandoned { message: name });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::io::DuplexStream;

    use super::*;

    struct Host {
        port: DuplexStream,
        codec: FrameCodec,
        buf: BytesMut,
        profile: Arc<Profile>,
    }

    impl Host {
        async fn read(&mut self) -> Frame {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                    return frame;
                }
                let n =
                    tokio::time::timeout(Duration::from_secs(5), self.port.read_buf(&mut self.buf))
                        .await
                        .expect("the board speaks within 5 s")
                        .unwrap();
                assert!(n > 0, "the board hung up");
            }
        }

        async fn write(&mut self, code: Option<FrameCode>, payload: &[u8]) {
            let frame = Frame {
                address: None,
                code: code.expect("the VMC profile has this code"),
                payload: Bytes::copy_from_slice(payload),
            };
            let mut out = BytesMut::new();
            self.codec.encode(&frame, &mut out).unwrap();
            self.port.write_all(&out).await.unwrap();
        }

        async fn ack(&mut self) {
            self.write(self.profile.link.ack.clone(), &[]).await;
        }
    }

    /// The second ACK of a data frame the board retransmitted must not be
    /// taken for the answer to its next POLL: then every answer would be
    /// read one POLL late and a command in it taken for something else.
    #[tokio::test]
    async fn a_late_second_ack_does_not_put_the_board_one_answer_behind() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
        let profile = Arc::new(Profile::resolve(&dir, "vmc-upper-computer").unwrap());
        let (board_end, host_end) = tokio::io::duplex(4096);
        let (board, mut handle) = Board::new(profile.clone(), Script::default(), board_end);
        let task = tokio::spawn(board.run());
        let mut host = Host {
            port: host_end,
            codec: FrameCodec::new(&profile.framing),
            buf: BytesMut::new(),
            profile: profile.clone(),
        };
        let poll = profile.link.poll.clone();
        assert_eq!(Some(host.read().await.code), poll);
        host.ack().await;
        // A data frame, ACKed twice (the original and its retransmission).
        handle
            .control
            .send(Control::Send {
                message: "credit".into(),
                values: json!({"amount": 0}).as_object().cloned().unwrap(),
            })
            .await
            .unwrap();
        let data = loop {
            let frame = host.read().await;
            if Some(&frame.code) != poll.as_ref() {
                break frame;
            }
            host.ack().await;
        };
        host.ack().await;
        host.ack().await;
        // The next POLL is answered with a command: the board must take it.
        loop {
            let frame = host.read().await;
            if Some(&frame.code) == poll.as_ref() {
                break;
            }
            assert_eq!(frame, data, "only the data frame may be repeated");
        }
        let set_price = profile.command("set_price").unwrap();
        let body = set_price
            .encode(json!({"selection": 11, "price": 150}).as_object().unwrap())
            .unwrap();
        let mut payload = vec![42u8];
        payload.extend_from_slice(&body);
        host.write(Some(set_price.code.clone()), &payload).await;
        assert_eq!(
            Some(host.read().await.code),
            profile.link.ack,
            "the command is ACKed"
        );
        let mut events = Vec::new();
        while let Ok(event) = handle.events.try_recv() {
            events.push(event);
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, BoardEvent::Command { name, .. } if name == "set_price")),
            "{events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, BoardEvent::Unexpected(_))),
            "{events:?}"
        );
        task.abort();
    }
}
