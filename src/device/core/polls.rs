//! `host_polls`: the device's side of the bus schedule (its next request,
//! its answers) and telemetry published on change.
//!
//! Per device, every `poll_requests` entry goes out once per
//! `poll_interval`; a staged command goes before the polls; a device that
//! is down is only probed, once per `down_probe_interval` (DESIGN §5).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::{messages, writes::Purpose, Action, Core};
use crate::codec::{Frame, FrameCode};
use crate::command::{CommandResult, Status};
use crate::link::{Answered, Change, Requested};
use crate::mqtt::{Availability, OfflineReason};
use crate::profile::{Command, Completion, LinkMode, MessageKind, Profile, Publish};
use crate::queue::Job;

/// One poll request, encoded once.
#[derive(Debug)]
struct PollFrame {
    def: Command,
    frame: Frame,
}

#[derive(Debug, Default)]
pub(super) struct Polls {
    requests: Vec<PollFrame>,
    /// When each request is due next.
    due: Vec<Instant>,
    /// Telemetry last published (`publish: on_change`), by message name.
    last: HashMap<String, (Map<String, Value>, Instant)>,
}

impl Polls {
    pub fn new(profile: &Profile, now: Instant) -> Polls {
        if profile.link.mode != LinkMode::HostPolls {
            return Polls::default();
        }
        // Compiling the profile checked that every poll request encodes.
        let requests: Vec<PollFrame> = profile
            .link
            .poll_requests
            .iter()
            .filter_map(|request| {
                let def = profile.command(&request.command)?;
                let body = def.encode(&request.args).ok()?;
                Some(PollFrame {
                    def: def.clone(),
                    frame: Frame {
                        address: None,
                        code: def.code.clone(),
                        payload: Bytes::from(body),
                    },
                })
            })
            .collect();
        let due = vec![now; requests.len()];
        Polls {
            requests,
            due,
            last: HashMap::new(),
        }
    }

    /// The port (re)opened: every poll is due at once.
    pub fn port_opened(&mut self, now: Instant) {
        self.due.iter_mut().for_each(|d| *d = now);
    }

    fn next_due(&self) -> Option<(usize, Instant)> {
        self.due.iter().copied().enumerate().min_by_key(|(_, d)| *d)
    }

    /// Request `index` went out at `now`: due again one interval after it
    /// was due, or after now when it fell behind.
    fn sent(&mut self, index: usize, now: Instant, interval: Duration) {
        if let Some(due) = self.due.get_mut(index) {
            let next = *due + interval;
            *due = if next <= now { now + interval } else { next };
        }
    }

    pub fn has_polls(&self) -> bool {
        !self.requests.is_empty()
    }
}

impl Core {
    /// When this device wants the line next (the bus asks).
    pub fn due(&self, now: Instant) -> Option<Instant> {
        if self.link.mode() != LinkMode::HostPolls || self.link.answer_by().is_some() {
            return None;
        }
        let command = self.link.command_due(now);
        // An exchange is a request and its retries: a poll waiting for its
        // retry goes before the device's other polls.
        let retry = self.link.poll_retry_due();
        let poll = match retry {
            Some(_) => None,
            None => self.polls.next_due().map(|(_, at)| at),
        };
        let due = [command, retry, poll].into_iter().flatten().min()?;
        Some(self.link.probe_at().map_or(due, |probe| probe.max(due)))
    }

    /// Until when the answer to this device's request may come.
    pub fn answer_by(&self) -> Option<Instant> {
        self.link.answer_by()
    }

    /// The device's turn on the bus: its staged command, else the poll to
    /// retry, else its next due poll. False if nothing was due.
    pub fn transmit(&mut self, now: Instant) -> bool {
        self.now = now;
        if !self.port_open || self.link.answer_by().is_some() {
            return false;
        }
        if self.link.probe_at().is_some_and(|probe| now < probe) {
            return false;
        }
        if self.link.command_due(now).is_some_and(|at| at <= now) {
            let wait = self.answer_wait();
            if let Some(answer) = self.link.send_command(now, wait) {
                self.write_answer(answer, None);
                return true;
            }
            self.collect_gave_up();
        }
        let poll = match self.link.poll_to_retry() {
            Some((index, frame)) if self.link.poll_retry_due().is_some_and(|at| at <= now) => {
                Some((index, frame))
            }
            Some(_) => None,
            None => self
                .polls
                .next_due()
                .filter(|(_, at)| *at <= now)
                .and_then(|(index, _)| {
                    let frame = self.polls.requests.get(index)?.frame.clone();
                    Some((index, frame))
                }),
        };
        let Some((index, frame)) = poll else {
            return false;
        };
        let interval = self.link.poll_interval();
        self.polls.sent(index, now, interval);
        let frame = self.link.send_poll(index, frame, now);
        self.write_frame(frame, None, None);
        true
    }

    /// How long the answer to the staged command may take: its completion
    /// timeout when it names one, else the link's `answer_within`.
    fn answer_wait(&self) -> Duration {
        match self.current.as_ref().map(|c| &c.cmd.def.completion) {
            Some(Completion::Answer { timeout, .. }) => *timeout,
            _ => self.ctx.profile.link.answer_within,
        }
    }

    /// The request on the line went unanswered.
    pub fn no_answer(&mut self, now: Instant) {
        self.now = now;
        let change = self.link.no_answer(now);
        if change == Some(Change::Down) {
            warn!(machine = %self.machine, "link down: requests unanswered");
            self.down_since = Some(now);
        }
        if self.link.probing() {
            self.set_availability(Availability::offline(OfflineReason::LinkLost));
        }
        self.collect_gave_up();
        self.advance_queue();
    }

    /// A frame while this device's request waited for its answer.
    pub(super) fn on_answer(&mut self, answer: Answered) {
        let def = match answer.what {
            Requested::Command(token) => self
                .current
                .as_ref()
                .filter(|c| c.token == token)
                .map(|c| c.cmd.def.clone()),
            Requested::Poll(index) => self.polls.requests.get(index).map(|p| p.def.clone()),
        };
        let Some(def) = def else {
            self.ctx.health.unexpected_frame();
            return;
        };
        let Some(verdict) = self.judge_answer(&def, &answer.code, &answer.body) else {
            debug!(machine = %self.machine, code = ?answer.code, "frame is not the answer to the request on the line: dropped");
            self.ctx.health.unexpected_frame();
            return;
        };
        if self.link.answered(self.now) == Some(Change::Up) {
            info!(machine = %self.machine, "link up");
            self.down_since = None;
            self.set_availability(Availability::Online);
        }
        match answer.what {
            Requested::Command(_) => self.command_answered(&def, verdict),
            Requested::Poll(_) => self.poll_answered(&def, verdict),
        }
        self.advance_queue();
    }

    /// What an answer to a request for `def` says, if it is one: the
    /// request's answer message, its error message, or (for a command that
    /// completes on acknowledgement) a frame with the command's own code.
    fn judge_answer(&self, def: &Command, code: &FrameCode, body: &[u8]) -> Option<Verdict> {
        let profile = &self.ctx.profile;
        let named = |name: &str| profile.message(name).filter(|m| &m.code == code);
        if let Some(message) = def.error.as_deref().and_then(named) {
            let decoded = messages::decode_as(message, body);
            return Some(Verdict::Refused(decoded));
        }
        match &def.completion {
            Completion::Answer { message, .. } => {
                let message = named(message)?;
                Some(Verdict::Answer(messages::decode_as(message, body)))
            }
            Completion::Ack if code == &def.code => {
                Some(Verdict::Answer(messages::decode(profile, code, body)))
            }
            Completion::Ack => None,
        }
    }

    fn command_answered(&mut self, def: &Command, verdict: Verdict) {
        let Some(done) = self.current.take() else {
            return;
        };
        let result = match verdict {
            Verdict::Answer(decoded) if decoded.name == "malformed_frame" => {
                let error = format!(
                    "the machine answered `{}`, but the answer could not be decoded: {}",
                    def.name,
                    decoded
                        .fields
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                );
                CommandResult::error(None, Status::Failed, error).with_response(decoded.fields)
            }
            Verdict::Answer(decoded) => {
                // An answer the profile also declares as telemetry or an
                // event is published there as usual (DESIGN §4).
                self.publish_answer(&decoded);
                CommandResult::new(None, Status::Ok).with_response(decoded.fields)
            }
            Verdict::Refused(decoded) => {
                let error = format!(
                    "the machine refused the command: it answered with `{}` {}",
                    decoded.name,
                    Value::Object(decoded.fields.clone())
                );
                CommandResult::error(None, Status::Failed, error).with_response(decoded.fields)
            }
        };
        if matches!(done.cmd.job, Job::Tune) {
            return;
        }
        self.finish(done.cmd, result);
    }

    /// Publishes an answer as its message's kind says: telemetry (on
    /// change), an event (durable, with `seq`), a response not at all.
    fn publish_answer(&mut self, decoded: &messages::Decoded) {
        match decoded.kind {
            MessageKind::Telemetry => self.publish_telemetry(decoded),
            MessageKind::Event => {
                let mut ops: Vec<_> = self.event_op(decoded).into_iter().collect();
                ops.push(self.state_op(None));
                self.schedule(ops, Purpose::Done);
            }
            MessageKind::Response => {}
        }
    }

    fn poll_answered(&mut self, def: &Command, verdict: Verdict) {
        match verdict {
            // A poll's answer of kind `response` has nobody waiting: it is
            // published as an event of its name rather than lost.
            Verdict::Answer(decoded) if decoded.kind == MessageKind::Response => {
                let mut ops: Vec<_> = self.event_op(&decoded).into_iter().collect();
                ops.push(self.state_op(None));
                self.schedule(ops, Purpose::Done);
            }
            Verdict::Answer(decoded) => self.publish_answer(&decoded),
            Verdict::Refused(decoded) => {
                warn!(machine = %self.machine, request = %def.name, answer = %decoded.name, fields = %serde_json::Value::Object(decoded.fields), "the device refused a poll request");
                self.ctx.health.error_answer();
            }
        }
    }

    /// Publishes telemetry, unless it is `on_change` and neither changed
    /// nor due for its heartbeat.
    pub(super) fn publish_telemetry(&mut self, decoded: &messages::Decoded) {
        let publish = self
            .ctx
            .profile
            .message(&decoded.name)
            .map_or(Publish::Always, |m| m.publish);
        if let Publish::OnChange { heartbeat } = publish {
            let unchanged = self
                .polls
                .last
                .get(&decoded.name)
                .is_some_and(|(fields, at)| {
                    *fields == decoded.fields && self.now.saturating_duration_since(*at) < heartbeat
                });
            if unchanged {
                return;
            }
            self.polls
                .last
                .insert(decoded.name.clone(), (decoded.fields.clone(), self.now));
        }
        if let Some(item) = messages::out_item(&self.ctx.config, &self.machine, decoded, None) {
            self.actions.push(Action::Telemetry(item));
        }
    }

    /// Whether the link can take a command now: `device_polls` only while
    /// the device polls; `host_polls` only while the device answers (a
    /// down device gets probes, not commands), unless it has no polls.
    pub(super) fn link_can_send(&self) -> bool {
        match self.link.mode() {
            LinkMode::DevicePolls => self.link.is_up(),
            LinkMode::HostPolls => self.link.is_up() || !self.polls.has_polls(),
            LinkMode::Unsolicited => true,
        }
    }
}

/// What an answer came to.
enum Verdict {
    Answer(messages::Decoded),
    /// The request's `completion.error` message.
    Refused(messages::Decoded),
}
