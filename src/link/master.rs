//! `host_polls`: the gateway is the master (DESIGN §5). The link owns the
//! whole exchange of a request: written, answered, retried after
//! `retry_after`, given up after `retries`; and the link state: down after
//! `down_after_polls` failed exchanges in a row (also for a device that
//! never answered), then probed once per `down_probe_interval`, up again
//! on the next valid answer.
//!
//! Which request goes next, and when, is the caller's (the device core and
//! the bus schedule); the link only says what it would send again and when.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Change, Link, PollAnswer, Received, Token};
use crate::codec::{Frame, FrameCode};

/// What a request on the line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The staged command with this token.
    Command(Token),
    /// Entry `n` of the profile's `poll_requests`.
    Poll(usize),
}

/// A frame that arrived while a request waited for its answer. The caller
/// decides whether it is the answer ([`Link::answered`]) or not.
#[derive(Debug, PartialEq)]
pub struct Answered {
    pub what: Requested,
    pub code: FrameCode,
    pub body: Bytes,
}

#[derive(Debug, Default)]
pub(super) struct Master {
    on_wire: Option<OnWire>,
    /// A poll that went unanswered and has attempts left.
    poll_retry: Option<PollRetry>,
    /// Failed exchanges in a row.
    failed: u32,
    /// Set once `down_after_polls` exchanges failed: only probes from then
    /// on, the next one not before this.
    probe_at: Option<Instant>,
}

#[derive(Debug)]
struct OnWire {
    what: Requested,
    answer_by: Instant,
    /// Attempts of a poll so far (a command's are in `Outstanding`).
    sent: u32,
    /// A poll's frame, kept for its retry.
    frame: Option<Frame>,
}

#[derive(Debug)]
struct PollRetry {
    index: usize,
    frame: Frame,
    sent: u32,
    at: Instant,
}

impl Link {
    /// Until when the answer to the request on the line may come.
    pub fn answer_by(&self) -> Option<Instant> {
        self.master.on_wire.as_ref().map(|w| w.answer_by)
    }

    /// True once the device counts as down: it is only probed.
    pub fn probing(&self) -> bool {
        self.master.probe_at.is_some()
    }

    /// The next probe of a down device is not due before this.
    pub fn probe_at(&self) -> Option<Instant> {
        self.master.probe_at
    }

    /// When the staged command is to be written (again): at once the first
    /// time, `retry_after` after an unanswered attempt.
    pub fn command_due(&self, now: Instant) -> Option<Instant> {
        let out = self.outstanding.as_ref()?;
        Some(out.last_sent.map_or(now, |t| t + self.rules.retry_after))
    }

    /// When an unanswered poll is to be sent again.
    pub fn poll_retry_due(&self) -> Option<Instant> {
        self.master.poll_retry.as_ref().map(|r| r.at)
    }

    /// Puts the staged command on the line; its answer may take `wait`.
    pub fn send_command(&mut self, now: Instant, wait: Duration) -> Option<PollAnswer> {
        let answer = self.next_attempt()?;
        if let PollAnswer::Command { token, .. } = &answer {
            self.master.on_wire = Some(OnWire {
                what: Requested::Command(*token),
                answer_by: now + wait,
                sent: 0,
                frame: None,
            });
        }
        Some(answer)
    }

    /// Puts poll `index` on the line (again, if it is the one to retry).
    pub fn send_poll(&mut self, index: usize, frame: Frame, now: Instant) -> Frame {
        let retrying = self.master.poll_retry.as_ref().filter(|r| r.index == index);
        let sent = retrying.map_or(1, |r| r.sent + 1);
        if retrying.is_some() {
            self.master.poll_retry = None;
        }
        self.master.on_wire = Some(OnWire {
            what: Requested::Poll(index),
            answer_by: now + self.rules.answer_within,
            sent,
            frame: Some(frame.clone()),
        });
        frame
    }

    /// The poll to send again, when one is waiting for its retry.
    pub fn poll_to_retry(&self) -> Option<(usize, Frame)> {
        let retry = self.master.poll_retry.as_ref()?;
        Some((retry.index, retry.frame.clone()))
    }

    /// The request on the line was not answered in time. Returns a
    /// link-down transition.
    pub fn no_answer(&mut self, now: Instant) -> Option<Change> {
        let wire = self.master.on_wire.take()?;
        let retries = self.rules.retries;
        let exchange_failed = match wire.what {
            Requested::Command(token) => match self.outstanding.as_mut() {
                Some(out) if out.token == token && out.sent <= retries => {
                    // Sent again `retry_after` from now.
                    out.last_sent = Some(now);
                    false
                }
                Some(out) if out.token == token => {
                    self.outstanding = None;
                    self.gave_up.push(token);
                    true
                }
                _ => true,
            },
            Requested::Poll(index) => match wire.frame {
                Some(frame) if wire.sent <= retries => {
                    self.master.poll_retry = Some(PollRetry {
                        index,
                        frame,
                        sent: wire.sent,
                        at: now + self.rules.retry_after,
                    });
                    false
                }
                _ => true,
            },
        };
        if !exchange_failed {
            return None;
        }
        self.master.failed += 1;
        if self.master.failed < self.rules.down_after_polls {
            return None;
        }
        self.master.probe_at = Some(now + self.probe_interval());
        std::mem::replace(&mut self.up, false).then_some(Change::Down)
    }

    /// The frame that came in is the answer to the request on the line.
    pub fn answered(&mut self, now: Instant) -> Option<Change> {
        let wire = self.master.on_wire.take()?;
        match wire.what {
            Requested::Command(token) => {
                if self.outstanding.as_ref().is_some_and(|o| o.token == token) {
                    self.outstanding = None;
                }
            }
            Requested::Poll(_) => self.master.poll_retry = None,
        }
        self.master.failed = 0;
        self.master.probe_at = None;
        self.last_rx = Some(now);
        (!std::mem::replace(&mut self.up, true)).then_some(Change::Up)
    }

    /// A frame for this device: the answer candidate if a request waits.
    pub(super) fn master_receive(&mut self, frame: Frame) -> Received {
        match &self.master.on_wire {
            Some(wire) => Received::Answer(Answered {
                what: wire.what,
                code: frame.code,
                body: frame.payload,
            }),
            None => Received::Unexpected,
        }
    }

    /// The port went away or came back: nothing is on the line any more.
    pub(super) fn master_reset(&mut self) {
        self.master.on_wire = None;
        self.master.poll_retry = None;
    }

    fn probe_interval(&self) -> Duration {
        self.rules
            .down_probe_interval
            .unwrap_or(self.poll_interval * 5)
    }
}
