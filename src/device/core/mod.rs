//! One device's link and command state, without I/O.
//!
//! The port task (`device::port`) owns a [`Core`] per device on its line
//! and feeds it what happens: frames from the line, commands from the
//! router, completed durable writes, the clock, the port coming and going.
//! The core answers with [`Action`]s for the task to carry out in order:
//! write this frame, make these ops durable, publish this availability or
//! this telemetry. It never awaits, reads a clock of its own (the time
//! comes with each event) or touches the port, the store or MQTT, so every
//! rule below can be tested frame by frame (`tests.rs`), the same way as
//! rumqttc keeps `MqttState` apart from its `EventLoop`.
//!
//! - `frames.rs`: a frame from the line, and what the core writes back;
//! - `writes.rs`: one durable write at a time, acted upon once committed;
//! - `status.rs`: availability (first status, debounce, only real changes);
//! - `messages.rs`: a decoded data frame as it will be published;
//! - `commands.rs`: the command in progress, from the queue to its result;
//! - `polls.rs`: `host_polls`: the device's next request, telemetry on change;
//! - `batch*.rs`: a batch's steps through the same path, resumed after a
//!   restart, with faster polls while it runs.

mod batch;
mod batch_poll;
mod batch_resume;
mod commands;
mod frames;
mod messages;
mod polls;
mod status;
#[cfg(test)]
mod tests;
mod writes;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::codec::{Frame, FrameCode};
use crate::config::{Config, DeviceConfig};
use crate::health::MachineHealth;
use crate::link::Link;
use crate::mqtt::{Availability, OfflineReason};
use crate::profile::Profile;
use crate::queue::{Job, QueuedCommand};
use crate::store::{CommandRecord, MachineState, Op, OutItem};

pub use commands::OFFLINE_WAIT;

/// What the port task does for a core, in the order given.
#[derive(Debug)]
pub enum Action {
    /// Encode and write this frame now.
    Write(Transmit),
    /// Make these ops durable; report the outcome with [`Core::committed`].
    /// At most one is outstanding per core.
    Persist(Vec<Op>),
    /// The machine's availability changed (debounced, real changes only).
    Availability(Availability),
    /// Telemetry to publish without a durable write.
    Telemetry(OutItem),
}

/// A frame to write, with what the port task needs to account for it.
#[derive(Debug)]
pub struct Transmit {
    pub frame: Frame,
    /// When the POLL it answers arrived (for the answer-time histogram).
    pub answers_poll: Option<Instant>,
    /// The command it carries, if any.
    pub command: Option<String>,
}

/// What a core is built from: the device's config and profile, and its
/// health counters (atomics the health report reads).
pub struct CoreContext {
    pub config: Arc<Config>,
    pub device: DeviceConfig,
    pub profile: Arc<Profile>,
    pub health: Arc<MachineHealth>,
}

/// What the last run left in the store for this machine, read by the port
/// task before the core starts.
#[derive(Debug, Default)]
pub struct Restored {
    pub state: MachineState,
    /// Commands recorded and not finished.
    pub open: Vec<CommandRecord>,
    /// The stored steps (JSON) of the open batches, by id, or why they
    /// could not be read.
    pub batches: HashMap<String, Result<Option<String>, String>>,
}

pub struct Core {
    ctx: CoreContext,
    machine: String,
    link: Link,
    /// The `seq` of the next event.
    next_seq: u64,
    /// Accepted commands taken from the router, oldest first.
    queue: VecDeque<QueuedCommand>,
    current: Option<commands::InProgress>,
    /// The batch whose steps are running (`batch.rs`).
    batch: Option<batch::Running>,
    next_token: u64,
    /// Since when the link is down (for the `offline` command results).
    down_since: Option<Instant>,
    started: Instant,
    /// The time of the event being handled.
    now: Instant,
    port_open: bool,
    /// The availability last reported.
    published: Availability,
    /// An offline state waiting out its debounce, and when it is due.
    pending_offline: Option<(Availability, Instant)>,
    /// Data frames whose publications are being made durable: the board
    /// retransmits them while it waits for our ACK; they are not new.
    persisting: HashSet<(FrameCode, Option<u8>)>,
    /// The last frame from the device, to know whether it still waits for
    /// our answer when a durable write completes.
    last_rx: Option<(FrameCode, Option<u8>)>,
    writes: writes::Writes,
    /// `host_polls`: the poll schedule and the last published telemetry.
    polls: polls::Polls,
    actions: Vec<Action>,
}

impl Core {
    /// A reload restarted the machine's MQTT session: what is rendered
    /// from now on follows the new config, on the session's new counters.
    pub fn take_session(&mut self, config: Arc<Config>, health: Arc<MachineHealth>) {
        self.ctx.config = config;
        self.ctx.health = health;
    }

    /// A core for a machine whose last run left `restored`; commands that
    /// run left open are reported or resumed at once.
    pub fn new(ctx: CoreContext, restored: Restored, now: Instant) -> Core {
        let state = &restored.state;
        let last_device = state
            .last_device_frame
            .as_ref()
            .map(|(key, seq)| (messages::parse_code_key(key), *seq));
        let link = Link::new(
            ctx.profile.link.clone(),
            state.host_seq,
            last_device,
            ctx.device.link_timeout,
        );
        let polls = polls::Polls::new(&ctx.profile, now);
        let mut core = Core {
            machine: ctx.device.id.clone(),
            link,
            next_seq: state.next_seq.max(1),
            queue: VecDeque::new(),
            current: None,
            batch: None,
            next_token: 1,
            down_since: Some(now),
            started: now,
            now,
            port_open: false,
            published: Availability::offline(OfflineReason::Starting),
            pending_offline: None,
            persisting: HashSet::new(),
            last_rx: None,
            writes: writes::Writes::default(),
            polls,
            actions: Vec::new(),
            ctx,
        };
        core.recover(restored);
        core
    }

    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The device's address on its line, written into every frame.
    pub fn address(&self) -> Option<u16> {
        self.ctx.device.address
    }

    pub fn profile(&self) -> &Profile {
        &self.ctx.profile
    }

    /// The actions produced since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// True while a durable write is outstanding or waiting to start.
    pub fn writing(&self) -> bool {
        self.writes.busy()
    }

    pub fn port_opened(&mut self, now: Instant) {
        self.now = now;
        self.port_open = true;
        self.link.port_opened(now);
        self.polls.port_opened(now);
    }

    pub fn port_lost(&mut self, now: Instant) {
        self.now = now;
        self.port_open = false;
        self.mark_port_lost();
    }

    /// A command from the router: queued, except `cancel`, which acts now.
    pub fn command(&mut self, mut cmd: QueuedCommand, now: Instant) {
        self.now = now;
        if let Job::Cancel(target) = &cmd.job {
            let target = target.clone();
            cmd.slot.release();
            return self.cancel(cmd, &target);
        }
        self.queue.push_back(cmd);
        if self.port_open {
            self.advance_queue();
            self.write_unprompted();
        }
    }

    /// The clock: deadlines (link-down, answers, expiry, debounce).
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        self.settle_startup();
        if !self.port_open {
            self.check_deadlines();
            return;
        }
        if let Some(crate::link::Change::Down) = self.link.tick(now) {
            tracing::warn!(machine = %self.machine, after = ?self.link.down_after(), "link down: no valid frame");
            self.down_since = Some(now);
            self.set_availability(Availability::offline(OfflineReason::LinkLost));
        }
        self.check_deadlines();
        self.collect_gave_up();
        self.advance_queue();
        self.write_unprompted();
    }

    /// Clean shutdown: a command that was staged but never reached the wire
    /// goes back to `Queued`, so the next start reports it "not sent"
    /// rather than "outcome unknown". The port task then completes the
    /// outstanding writes.
    pub fn shutdown(&mut self) {
        self.port_open = false;
        if let Some(op) = self.unsent_current_record() {
            self.schedule(vec![op], writes::Purpose::Done);
        }
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// The next queued command; its queue slot goes back to the router.
    fn dequeue(&mut self) -> Option<QueuedCommand> {
        let mut cmd = self.queue.pop_front()?;
        cmd.slot.release();
        Some(cmd)
    }
}
