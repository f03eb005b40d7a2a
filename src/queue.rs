//! What flows from the command router to a device: an accepted command, and
//! the place it holds in its machine's queue.
//!
//! This module sits below `command` and `device` so that neither imports
//! the other: the router builds [`QueuedCommand`]s, the device core runs
//! them, and both only know this file.
//!
//! The queue depth has one owner, a semaphore per machine ([`QueueSlots`]):
//! the router takes a slot for each command it accepts (no slot left means
//! `busy`), the slot travels inside the command, and the device gives it
//! back by dropping it when it takes the command up. Nobody counts by hand.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::FrameCode;
use crate::profile::{Command, Completion};
use crate::store::{BatchProgress, ReplyTo};

/// A command that passed validation and was accepted for a machine.
#[derive(Debug, Clone)]
pub struct QueuedCommand {
    pub id: String,
    pub def: Command,
    /// The encoded command body (without sequence number).
    pub body: Vec<u8>,
    /// The validated arguments, for commands the link follows
    /// (`set_poll_interval`).
    pub args: Map<String, Value>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub accepted: Instant,
    pub accepted_ms: i64,
    /// What the device does with it.
    pub job: Job,
    /// MQTT 5: where its results go too.
    pub reply: Option<ReplyTo>,
    /// Its place in the machine's queue, given back when the device takes
    /// the command up.
    pub slot: QueueSlot,
}

/// A profile command, or one of the gateway's own (`batch`, `cancel`).
#[derive(Debug, Clone, Default)]
pub enum Job {
    #[default]
    Single,
    /// A batch; `def` is [`gateway_command`]`("batch")`.
    Batch(Box<BatchJob>),
    /// Cancels the batch with this id (handled as soon as it arrives).
    Cancel(String),
    /// Step `index` of the running batch, sent like a single command.
    Step(usize),
    /// The poll interval change around a running batch (not a step).
    Tune,
}

/// A batch's steps and where it stands.
#[derive(Debug, Clone)]
pub struct BatchJob {
    pub steps: Vec<Step>,
    pub progress: BatchProgress,
    /// Stored once at acceptance (see `Op::PutBatch`).
    pub steps_json: String,
}

/// One validated, encoded step of a batch.
#[derive(Debug, Clone)]
pub struct Step {
    pub def: Command,
    pub body: Vec<u8>,
    pub args: Map<String, Value>,
}

/// The definition under which a gateway command's results are published.
pub fn gateway_command(name: &str) -> Command {
    Command {
        name: name.to_owned(),
        code: FrameCode::Num(0),
        completion: Completion::Ack,
        error: None,
        idempotent: false,
        layout: Default::default(),
    }
}

/// RFC 3339 UTC with milliseconds, as DESIGN §4 asks for `ts`.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The queue of one machine: at most `limit` accepted commands that the
/// device has not taken up yet.
#[derive(Debug, Clone)]
pub struct QueueSlots {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

impl QueueSlots {
    pub fn new(limit: usize) -> QueueSlots {
        QueueSlots {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place in the queue, or `None` when it is full.
    pub fn take(&self) -> Option<QueueSlot> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(QueueSlot(Some(permit)))
    }

    /// Commands accepted and not yet taken up by the device.
    pub fn depth(&self) -> usize {
        self.limit
            .saturating_sub(self.semaphore.available_permits())
    }
}

/// A held place in a machine's queue; dropping it gives it back. Commands
/// the device makes up itself (batch steps, a resumed batch, `cancel`)
/// hold none. A copy of a command does not hold its place twice.
#[derive(Debug, Default)]
pub struct QueueSlot(Option<OwnedSemaphorePermit>);

impl QueueSlot {
    /// No place held.
    pub fn none() -> QueueSlot {
        QueueSlot(None)
    }

    /// Gives the place back now.
    pub fn release(&mut self) {
        self.0 = None;
    }
}

impl Clone for QueueSlot {
    fn clone(&self) -> QueueSlot {
        QueueSlot(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_dropped_or_released() {
        let slots = QueueSlots::new(2);
        let a = slots.take().expect("first");
        let mut b = slots.take().expect("second");
        assert!(slots.take().is_none(), "the queue is full");
        assert_eq!(slots.depth(), 2);
        b.release();
        assert_eq!(slots.depth(), 1);
        let copy = a.clone();
        drop(a);
        assert_eq!(slots.depth(), 0, "a copy holds no place");
        drop(copy);
    }
}
