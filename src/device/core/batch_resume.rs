//! A batch left open by the last run (see `recover` in `commands.rs`).

use serde_json::Map;
use tracing::{info, warn};

use super::batch::Running;
use super::Core;
use crate::command::batch::{steps_from_json, BATCH};
use crate::command::{CommandResult, Status};
use crate::queue::{gateway_command, BatchJob, Job, QueueSlot, QueuedCommand};
use crate::store::{CommandRecord, Op};

impl Core {
    /// A batch left open by the last run goes back to the head of the
    /// queue at its first step not acknowledged. A step that may have been
    /// on the wire is sent again only if its command is idempotent;
    /// otherwise it counts as failed with its outcome unknown.
    pub(super) fn resume_batch(
        &mut self,
        record: CommandRecord,
        stored: Option<Result<Option<String>, String>>,
    ) -> Vec<Op> {
        let Some(mut progress) = record.progress.clone() else {
            return Vec::new();
        };
        let steps = match stored {
            Some(Ok(Some(json))) => steps_from_json(&self.ctx.profile, &json),
            Some(Ok(None)) | None => Err("its steps are not in the store".to_owned()),
            Some(Err(e)) => Err(e),
        };
        let steps = match steps {
            Ok(steps) => steps,
            Err(why) => {
                warn!(machine = %self.machine, id = %record.id, why, "cannot resume batch");
                let error = format!("the gateway restarted and cannot resume this batch ({why}); steps from {} on were not sent", progress.next);
                let result = CommandResult::error(Some(&record.id), Status::Failed, error);
                let mut ops = self.result_ops(
                    &record.id,
                    BATCH,
                    record.at_ms,
                    record.reply.as_ref(),
                    &result,
                );
                ops.push(Op::RemoveBatch {
                    machine: self.machine.clone(),
                    id: record.id,
                });
                return ops;
            }
        };
        let mut end = None;
        if progress.in_flight {
            let step = steps.get(progress.next);
            let idempotent = step.is_some_and(|s| s.def.idempotent);
            progress.in_flight = false;
            if !idempotent {
                let name = step.map(|s| s.def.name.clone()).unwrap_or_default();
                let index = progress.next;
                let error = "the gateway stopped while this step was on its way to the machine; its outcome is unknown, check the machine before retrying".to_owned();
                progress.failures.push((index, name.clone(), error.clone()));
                progress.next += 1;
                if !progress.continue_on_error {
                    let error =
                        format!("step {index} ({name}): {error}; later steps were not sent");
                    end = Some((Status::Failed, error));
                }
            }
        }
        info!(machine = %self.machine, id = %record.id, next = progress.next, "resuming batch left open by the last run");
        let job = BatchJob {
            steps,
            progress,
            steps_json: String::new(),
        };
        if end.is_some() {
            let run = Running {
                id: record.id,
                accepted: self.now,
                accepted_ms: record.at_ms,
                job,
                cancelled: false,
                last_report: self.now,
                tune: None,
                restore_ms: None,
                ending: None,
                reply: record.reply,
            };
            return self.end_ops(run, end);
        }
        let cmd = QueuedCommand {
            id: record.id,
            def: gateway_command(BATCH),
            body: Vec::new(),
            args: Map::new(),
            expires_at: None,
            accepted: self.now,
            accepted_ms: record.at_ms,
            job: Job::Batch(Box::new(job)),
            reply: record.reply,
            // Made up by the device itself: it takes no place in the
            // router's queue limit.
            slot: QueueSlot::none(),
        };
        self.queue.push_front(cmd);
        Vec::new()
    }
}
