//! The core's durable writes: one at a time, so the machine state is
//! committed in the order it changed; what comes meanwhile is merged into
//! the next one. What each commit was for (ACK a frame, hand a command to
//! the link) is acted upon once the port task reports it committed.

use tracing::debug;

use super::messages::code_key;
use super::{Action, Core};
use crate::codec::FrameCode;
use crate::store::{MachineState, Op};

/// What a durable write was for; acted upon once it is committed.
#[derive(Debug)]
pub(super) enum Purpose {
    /// A data frame's publications: ACK it now.
    Accept { code: FrameCode, seq: Option<u8> },
    /// A command recorded as (about to be) written: hand it to the link.
    Stage { token: u64 },
    /// A result (or nothing to do after the commit).
    Done,
}

/// The write being committed and the one being gathered.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// The purposes of the write the port task is committing.
    in_flight: Option<Vec<Purpose>>,
    pending_ops: Vec<Op>,
    pending_purposes: Vec<Purpose>,
}

impl Writes {
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.pending_purposes.is_empty()
    }
}

impl Core {
    /// The machine state to persist; `last_device` overrides the link's.
    pub(super) fn state_op(&self, last_device: Option<(String, Option<u8>)>) -> Op {
        self.state_op_with(last_device, self.link.host_seq())
    }

    /// Like `state_op`, with the gateway's sequence number about to be used.
    pub(super) fn state_op_with(
        &self,
        last_device: Option<(String, Option<u8>)>,
        host_seq: u8,
    ) -> Op {
        let last_device_frame = match last_device {
            Some((key, Some(seq))) => Some((key, seq)),
            _ => self
                .link
                .last_device()
                .map(|(code, seq)| (code_key(code), *seq)),
        };
        Op::SetMachine {
            machine: self.machine.clone(),
            state: MachineState {
                next_seq: self.next_seq,
                host_seq,
                last_device_frame,
            },
        }
    }

    pub(super) fn schedule(&mut self, ops: Vec<Op>, purpose: Purpose) {
        self.writes.pending_ops.extend(ops);
        self.writes.pending_purposes.push(purpose);
        self.start_write();
    }

    fn start_write(&mut self) {
        if self.writes.in_flight.is_some() || self.writes.pending_purposes.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.writes.pending_ops);
        let purposes = std::mem::take(&mut self.writes.pending_purposes);
        self.writes.in_flight = Some(purposes);
        self.actions.push(Action::Persist(ops));
    }

    /// The durable write asked for last completed (`ok`) or failed.
    pub fn committed(&mut self, ok: bool, now: std::time::Instant) {
        self.now = now;
        let purposes = self.writes.in_flight.take().unwrap_or_default();
        for purpose in purposes {
            match purpose {
                Purpose::Accept { code, seq } => self.accepted(code, seq, ok),
                Purpose::Stage { token } => self.staged(token, ok),
                Purpose::Done => {}
            }
        }
        self.start_write();
        if self.port_open {
            self.advance_queue();
            self.write_unprompted();
        }
    }

    /// A data frame's publications are durable (or not: then it is not
    /// ACKed, and the board retransmits it).
    fn accepted(&mut self, code: FrameCode, seq: Option<u8>, ok: bool) {
        self.persisting.remove(&(code.clone(), seq));
        if !ok {
            return;
        }
        let waiting = self.last_rx.as_ref() == Some(&(code.clone(), seq));
        let ack = self.link.accept(code, seq);
        // Only answer a frame the board still waits on; it sends nothing
        // new until then, so anything else means it gave up.
        match ack {
            Some(ack) if waiting && self.port_open => {
                self.write_frame(ack, None, None);
                self.last_rx = None;
            }
            _ => debug!(machine = %self.machine, "frame made durable; no ACK due"),
        }
    }
}
