//! The link rules of a profile as a state machine without I/O.
//!
//! The device core feeds it every decoded frame and a clock; it answers with
//! what to write back and what the frame meant. `master.rs` holds the rules
//! of `host_polls`, where the gateway asks and the device answers. Keeping it free of I/O makes
//! the protocol rules (VMC protocol §3: polls, ACKs, retransmission, PackNO
//! de-duplication, link-down) testable frame by frame, and keeps the POLL
//! answer path free of any await.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Frame, FrameCode};
use crate::profile::{LinkMode, LinkRules, SequenceRule};

mod master;
pub use master::{Answered, Requested};

/// An opaque number the device task gives each command so it can match the
/// link's later verdicts (written, acknowledged, abandoned) to it.
pub type Token = u64;

/// What a received frame meant.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// The device polled: call [`Link::answer_poll`] now.
    Poll,
    /// The device acknowledged our outstanding frame (the command's token),
    /// or a stray ACK with nothing outstanding (`None`).
    Acked(Option<Token>),
    /// A new data frame. Persist what it carries, then call [`Link::accept`]
    /// for the ACK to write: the ACK tells the device it may forget it.
    Data {
        code: FrameCode,
        seq: Option<u8>,
        body: Bytes,
    },
    /// The device sent again a frame we already accepted (its ACK was lost):
    /// write [`Link::ack_frame`] again and publish nothing.
    Retransmission,
    /// `host_polls`: a frame while a request waits for its answer.
    Answer(Answered),
    /// `host_polls`: a frame while no request waits (counted, dropped).
    Unexpected,
    /// A frame the rules cannot use (e.g. a data frame without its sequence
    /// byte); the caller logs it.
    Invalid(&'static str),
}

/// The answer to a POLL.
#[derive(Debug, PartialEq)]
pub enum PollAnswer {
    /// Nothing to send: ACK.
    Ack(Frame),
    /// A command frame (first attempt or a retransmission).
    Command {
        token: Token,
        frame: Frame,
        attempt: u32,
    },
}

/// A command that has been given a sequence number and waits to be written.
#[derive(Debug, Clone)]
struct Outstanding {
    token: Token,
    frame: Frame,
    sent: u32,
    last_sent: Option<Instant>,
}

/// Link up/down transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up,
    Down,
}

pub struct Link {
    rules: LinkRules,
    host_seq: u8,
    last_device: Option<(FrameCode, u8)>,
    outstanding: Option<Outstanding>,
    gave_up: Vec<Token>,
    poll_interval: Duration,
    timeout_override: Option<Duration>,
    last_rx: Option<Instant>,
    up: bool,
    master: master::Master,
}

impl Link {
    /// `host_seq` is the sequence number last used by the gateway and
    /// `last_device` the last accepted device frame, both restored from the
    /// store so a restart neither reuses a PackNO nor republishes a frame
    /// (VMC protocol §3, decisions).
    pub fn new(
        rules: LinkRules,
        host_seq: u8,
        last_device: Option<(FrameCode, u8)>,
        timeout_override: Option<Duration>,
    ) -> Link {
        let poll_interval = rules.poll_interval;
        Link {
            rules,
            host_seq,
            last_device,
            outstanding: None,
            gave_up: Vec::new(),
            poll_interval,
            timeout_override,
            last_rx: None,
            up: false,
            master: master::Master::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn mode(&self) -> LinkMode {
        self.rules.mode
    }

    pub fn host_seq(&self) -> u8 {
        self.host_seq
    }

    pub fn last_device(&self) -> Option<&(FrameCode, u8)> {
        self.last_device.as_ref()
    }

    /// True while a command frame waits for its ACK: the device task must not
    /// stage another one (one outstanding frame per direction, §3).
    pub fn busy(&self) -> bool {
        self.outstanding.is_some()
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Follows a successful `set_poll_interval`: link-down time is 3 × the
    /// *current* interval (§3 decision).
    pub fn set_poll_interval(&mut self, interval: Duration) {
        self.poll_interval = interval;
    }

    /// How long without a valid frame before the link counts as down.
    pub fn down_after(&self) -> Duration {
        self.timeout_override
            .unwrap_or(self.poll_interval * self.rules.down_after_polls.max(1))
    }

    /// The sequence number the next [`Link::stage`] will use, so the caller
    /// can persist it before the frame exists.
    pub fn peek_next_seq(&self) -> Option<u8> {
        self.rules
            .sequence
            .as_ref()
            .map(|rule| next_seq(rule, self.host_seq))
    }

    /// Gives the next command a sequence number and holds it until the next
    /// POLL. Returns the sequence number used, which the caller persists
    /// before the frame can reach the wire.
    pub fn stage(&mut self, token: Token, code: FrameCode, body: &[u8]) -> Option<u8> {
        let seq = self.rules.sequence.as_ref().map(|rule| {
            self.host_seq = next_seq(rule, self.host_seq);
            self.host_seq
        });
        let mut payload = BytesMut::with_capacity(body.len() + 1);
        if let Some(seq) = seq {
            payload.put_u8(seq);
        }
        payload.extend_from_slice(body);
        self.outstanding = Some(Outstanding {
            token,
            frame: Frame {
                address: None,
                code,
                payload: payload.freeze(),
            },
            sent: 0,
            last_sent: None,
        });
        seq
    }

    /// For modes where the gateway speaks first (`unsolicited`, `host_polls`):
    /// the staged frame to write now: at once the first time, then every
    /// `retry_after` while attempts are left.
    pub fn take_unprompted(&mut self, now: Instant) -> Option<PollAnswer> {
        let out = self.outstanding.as_ref()?;
        if let Some(last) = out.last_sent {
            if now.saturating_duration_since(last) < self.rules.retry_after {
                return None;
            }
        }
        let answer = self.next_attempt();
        if let Some(out) = self.outstanding.as_mut() {
            out.last_sent = Some(now);
        }
        answer
    }

    /// Forgets the outstanding frame without an ACK (profiles without one).
    pub fn release(&mut self) {
        self.outstanding = None;
    }

    /// Tokens of commands abandoned after the last retry since the last call.
    pub fn take_gave_up(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.gave_up)
    }

    pub fn receive(&mut self, frame: Frame, now: Instant) -> (Received, Option<Change>) {
        // As master, only an answer the caller accepts counts as a sign
        // of life (`answered`).
        if self.rules.mode == LinkMode::HostPolls {
            return (self.master_receive(frame), None);
        }
        self.last_rx = Some(now);
        let change = (!self.up).then(|| {
            self.up = true;
            Change::Up
        });
        (self.classify(frame), change)
    }

    fn classify(&mut self, frame: Frame) -> Received {
        if self.rules.poll.as_ref() == Some(&frame.code) {
            return Received::Poll;
        }
        if self.rules.ack.as_ref() == Some(&frame.code) {
            // An ACK carries no PackNO and refers to our outstanding frame (§3).
            return match self.outstanding.take() {
                Some(out) if out.sent > 0 => Received::Acked(Some(out.token)),
                other => {
                    self.outstanding = other;
                    Received::Acked(None)
                }
            };
        }
        let Some(rule) = self.rules.sequence else {
            return Received::Data {
                code: frame.code,
                seq: None,
                body: frame.payload,
            };
        };
        let Some(&seq) = frame.payload.first() else {
            return Received::Invalid("data frame without its sequence number");
        };
        if rule.dedupe && self.last_device.as_ref() == Some(&(frame.code.clone(), seq)) {
            return Received::Retransmission;
        }
        Received::Data {
            code: frame.code,
            seq: Some(seq),
            body: frame.payload.slice(1..),
        }
    }

    /// Records a data frame as accepted (after the caller persisted it) and
    /// returns the ACK to write.
    pub fn accept(&mut self, code: FrameCode, seq: Option<u8>) -> Option<Frame> {
        if let Some(seq) = seq {
            self.last_device = Some((code, seq));
        }
        self.ack_frame()
    }

    pub fn ack_frame(&self) -> Option<Frame> {
        self.rules.ack.clone().map(|code| Frame {
            address: None,
            code,
            payload: Bytes::new(),
        })
    }

    /// The answer to a POLL: the outstanding command again (a retransmission
    /// keeps its PackNO) while it has attempts left, else an ACK.
    pub fn answer_poll(&mut self) -> Option<PollAnswer> {
        if let Some(answer) = self.next_attempt() {
            return Some(answer);
        }
        self.ack_frame().map(PollAnswer::Ack)
    }

    fn next_attempt(&mut self) -> Option<PollAnswer> {
        let out = self.outstanding.as_mut()?;
        // One first attempt plus `retries` retransmissions (§3: "up to 5 times").
        if out.sent > self.rules.retries {
            let token = out.token;
            self.outstanding = None;
            self.gave_up.push(token);
            return None;
        }
        out.sent += 1;
        Some(PollAnswer::Command {
            token: out.token,
            frame: out.frame.clone(),
            attempt: out.sent,
        })
    }

    /// Checks the link-down deadline.
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        // As master, failed exchanges decide (`no_answer`), not the clock.
        if self.rules.mode == LinkMode::HostPolls {
            return None;
        }
        let last = self.last_rx?;
        if self.up && now.saturating_duration_since(last) >= self.down_after() {
            self.up = false;
            return Some(Change::Down);
        }
        None
    }

    /// The port went away: the link is down at once, and whatever was
    /// outstanding stays staged for the next attempt.
    pub fn port_lost(&mut self) -> Option<Change> {
        self.last_rx = None;
        self.master_reset();
        std::mem::replace(&mut self.up, false).then_some(Change::Down)
    }

    /// The port (re)opened: nothing of ours is on the line.
    pub fn port_opened(&mut self, _now: Instant) {
        self.master_reset();
    }

    /// Drops the staged command (e.g. it expired before its first write).
    pub fn unstage(&mut self) -> Option<Token> {
        match &self.outstanding {
            Some(out) if out.sent == 0 => self.outstanding.take().map(|o| o.token),
            _ => None,
        }
    }
}

fn next_seq(rule: &SequenceRule, current: u8) -> u8 {
    if current < rule.min || current >= rule.max {
        rule.min
    } else {
        current + 1
    }
}

#[cfg(test)]
mod tests;
