//! The device task's durable writes: one at a time, so the machine state is
//! committed in the order it changed, and what each commit was for (ACK a
//! frame, hand a command to the link) acted upon once it is on disk.

use std::future::Future;
use std::pin::Pin;

use tokio_serial::SerialStream;
use tracing::error;

use super::messages::code_key;
use super::task::Device;
use crate::codec::FrameCode;
use crate::store::{MachineState, Op, StoreError};

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

pub(super) type WriteFuture =
    Pin<Box<dyn Future<Output = (Vec<Purpose>, Result<Vec<u64>, StoreError>)> + Send>>;

impl Device {
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
        self.pending_ops.extend(ops);
        self.pending_purposes.push(purpose);
        self.start_write();
    }

    pub(super) fn start_write(&mut self) {
        if self.writing.is_some() || self.pending_purposes.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.pending_ops);
        let purposes = std::mem::take(&mut self.pending_purposes);
        let store = self.ctx.store.clone();
        self.writing = Some(Box::pin(async move {
            let result = store.write(ops).await;
            (purposes, result)
        }));
    }

    pub(super) async fn on_committed(
        &mut self,
        purposes: Vec<Purpose>,
        result: Result<Vec<u64>, StoreError>,
        port: &mut SerialStream,
    ) -> std::io::Result<()> {
        self.writing = None;
        let ok = match &result {
            Ok(_) => {
                self.ctx.outbox_ready.notify_one();
                true
            }
            Err(e) => {
                error!(machine = %self.machine, error = %e, "durable write failed");
                false
            }
        };
        for purpose in purposes {
            match purpose {
                Purpose::Accept { code, seq } => {
                    self.persisting.remove(&(code.clone(), seq));
                    if !ok {
                        // Not ACKed: the board retransmits and we try again.
                        continue;
                    }
                    let waiting = self.last_rx.as_ref() == Some(&(code.clone(), seq));
                    let ack = self.link.accept(code, seq);
                    // Only answer a frame the board still waits on; it sends
                    // nothing new until then, so anything else means it gave up.
                    if let (true, Some(ack)) = (waiting, ack) {
                        self.write_frame(&ack, port).await?;
                        self.last_rx = None;
                    }
                }
                Purpose::Stage { token } => self.staged(token, ok),
                Purpose::Done => {}
            }
        }
        self.start_write();
        self.advance_queue();
        self.write_unprompted(port).await
    }

    /// A commit that completed while the port is closed.
    pub(super) fn after_commit_offline(
        &mut self,
        purposes: Vec<Purpose>,
        result: Result<Vec<u64>, StoreError>,
    ) {
        self.writing = None;
        let ok = result.is_ok();
        if ok {
            self.ctx.outbox_ready.notify_one();
        }
        for purpose in purposes {
            match purpose {
                Purpose::Accept { code, seq } => {
                    self.persisting.remove(&(code.clone(), seq));
                    if ok {
                        self.link.accept(code, seq);
                    }
                }
                Purpose::Stage { token } => self.staged(token, ok),
                Purpose::Done => {}
            }
        }
        self.start_write();
    }

    /// Clean shutdown: pending durable writes complete, and a command that
    /// was staged but never reached the wire goes back to `Queued`, so the
    /// next start reports it "not sent" rather than "outcome unknown".
    pub(super) async fn drain_writes(mut self) {
        if let Some(op) = self.unsent_current_record() {
            self.schedule(vec![op], Purpose::Done);
        }
        while self.writing.is_some() {
            let (purposes, result) = poll_write(&mut self.writing).await;
            self.after_commit_offline(purposes, result);
        }
    }
}

pub(super) async fn poll_write(
    writing: &mut Option<WriteFuture>,
) -> (Vec<Purpose>, Result<Vec<u64>, StoreError>) {
    match writing {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}
