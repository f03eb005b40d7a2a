//! Test builds only: faults the end-to-end tests inject by environment.

use std::time::{Duration, Instant};

/// `VENDGATE_FAILPOINT_STALL_DEVICE=<machine>` makes the port task of that
/// device hang 2 s after start, as a task stuck in a driver call would, so
/// the systemd watchdog's liveness check can be tested end to end.
pub async fn stall(machine: &str, started: Instant) {
    let target = std::env::var("VENDGATE_FAILPOINT_STALL_DEVICE").ok();
    if target.as_deref() == Some(machine) && started.elapsed() > Duration::from_secs(2) {
        tracing::warn!(machine, "failpoint: device task stalls");
        std::future::pending::<()>().await;
    }
}

/// `VENDGATE_FAILPOINT_ABORT_AFTER_WRITE=<command>` aborts the process
/// right after that command's frame is written, before its ACK can be
/// recorded: a crash with a command in flight.
pub fn abort_after_write(command: Option<&str>) {
    let target = std::env::var("VENDGATE_FAILPOINT_ABORT_AFTER_WRITE").ok();
    if target.is_some() && target.as_deref() == command {
        tracing::warn!(command = ?command, "failpoint: abort after write");
        std::process::abort();
    }
}
