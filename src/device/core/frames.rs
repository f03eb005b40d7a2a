//! A frame from the line, and what the core writes back.

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{messages, writes::Purpose, Action, Core, Transmit};
use crate::codec::{Frame, FrameCode};
use crate::link::{Change, PollAnswer, Received};
use crate::mqtt::Availability;
use crate::profile::{LinkMode, MessageKind};
use crate::store::Op;

impl Core {
    /// A valid frame for this device arrived at `now`.
    pub fn frame(&mut self, frame: Frame, now: std::time::Instant) {
        self.now = now;
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
                if let Some(answer) = self.link.answer_poll() {
                    self.write_answer(answer, Some(now));
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
                self.on_data(code, seq, &body);
            }
            Received::Answer(answer) => self.on_answer(answer),
            Received::Retransmission => {
                debug!(machine = %self.machine, code = ?code, "retransmitted frame: ACK again, publish nothing");
                if let Some(ack) = self.link.ack_frame() {
                    self.write_frame(ack, None, None);
                }
            }
            Received::Unexpected => {
                debug!(machine = %self.machine, code = ?code, "frame while no request waits for it: dropped");
                self.ctx.health.unexpected_frame();
            }
            Received::Invalid(why) => {
                warn!(machine = %self.machine, code = ?code, why, "frame ignored")
            }
        }
        self.write_unprompted();
    }

    /// A data frame the machine sent on its own: published (events made
    /// durable first), then ACKed.
    fn on_data(&mut self, code: FrameCode, seq: Option<u8>, body: &Bytes) {
        if self.persisting.contains(&(code.clone(), seq)) {
            // Still being made durable; its ACK follows the commit.
            return;
        }
        let decoded = messages::decode(&self.ctx.profile, &code, body);
        let mut ops = self.complete_with_answer(&decoded);
        let answered = !ops.is_empty();
        match decoded.kind {
            MessageKind::Telemetry => self.publish_telemetry(&decoded),
            // A response nobody waits for (e.g. after its command timed out)
            // is published as an event of its name rather than lost.
            MessageKind::Response if answered => {}
            MessageKind::Event | MessageKind::Response => ops.extend(self.event_op(&decoded)),
        }
        if ops.is_empty() {
            // Telemetry only: the ACK need not wait for the disk. Its
            // de-duplication key is persisted with the next durable write.
            if let Some(ack) = self.link.accept(code, seq) {
                self.write_frame(ack, None, None);
            }
            return;
        }
        self.persisting.insert((code.clone(), seq));
        self.last_rx = Some((code.clone(), seq));
        ops.push(self.state_op(Some((messages::code_key(&code), seq))));
        self.schedule(ops, Purpose::Accept { code, seq });
    }

    /// The next `seq`, and the outbox append of an event with it; none
    /// when an interface file leaves the event out (the `seq` stays used).
    pub(super) fn event_op(&mut self, decoded: &messages::Decoded) -> Option<Op> {
        let seq_no = self.next_seq;
        self.next_seq += 1;
        let item = messages::out_item(&self.ctx.config, &self.machine, decoded, Some(seq_no))?;
        Some(Op::Append {
            session: self.machine.clone(),
            item,
        })
    }

    pub(super) fn write_answer(&mut self, answer: PollAnswer, poll: Option<std::time::Instant>) {
        match answer {
            PollAnswer::Ack(frame) => self.write_frame(frame, poll, None),
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
                let name = self.current.as_ref().map(|c| c.cmd.def.name.clone());
                self.write_frame(frame, poll, name);
            }
        }
    }

    /// `unsolicited` mode: a staged command is written at once (and again
    /// after `retry_after` while it is not acknowledged). `device_polls`
    /// waits for the POLL; `host_polls` for its turn on the bus.
    pub(super) fn write_unprompted(&mut self) {
        if self.link.mode() != LinkMode::Unsolicited || !self.port_open {
            return;
        }
        self.collect_gave_up();
        let Some(answer) = self.link.take_unprompted(self.now) else {
            return;
        };
        let token = match &answer {
            PollAnswer::Command { token, .. } => Some(*token),
            PollAnswer::Ack(_) => None,
        };
        self.write_answer(answer, None);
        // Without an ACK in the profile, a written command is complete.
        if let (None, Some(token)) = (self.link.ack_frame(), token) {
            self.link.release();
            self.on_acked(token);
        }
    }

    /// Queues a frame for the port task, addressed to this device.
    pub(super) fn write_frame(
        &mut self,
        mut frame: Frame,
        answers_poll: Option<std::time::Instant>,
        command: Option<String>,
    ) {
        if !self.port_open {
            return;
        }
        frame.address = self.ctx.device.address;
        self.actions.push(Action::Write(Transmit {
            frame,
            answers_poll,
            command,
        }));
    }
}
