//! The I/O side of the devices: one task per serial line.
//!
//! - `open.rs` opens the port with the profile's settings (`usb.rs` finds
//!   an adapter by USB identity);
//! - `task.rs` is the loop: reopen with backoff, read frames, route them
//!   to the devices' cores, carry out what they ask;
//! - `bus.rs` schedules a `host_polls` line: one exchange at a time, the
//!   line's silence, devices in turn, answers routed by address.

mod bus;
#[cfg(debug_assertions)]
mod failpoints;
mod open;
mod plan;
mod task;
pub mod usb;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use bus::{Bus, BusStation};
pub use open::{open_port, PortError};
pub use plan::{plan_lines, Lines};
pub use task::PortTask;

use super::core::Core;
use super::DeviceContext;

/// A device on a line: its core and the channels its port task serves.
pub struct Station {
    pub core: Core,
    pub ctx: DeviceContext,
    pub started: Instant,
}

impl Station {
    /// Moves the device over to a new MQTT session: the session learns the
    /// link state the old one was showing, and the outbox is drained anew.
    pub fn take_session(&mut self, ends: super::SessionEnds) {
        let current = self.ctx.availability.borrow().clone();
        ends.health.link_changed(&current);
        ends.availability.send_replace(current);
        self.core
            .take_session(ends.config.clone(), ends.health.clone());
        self.ctx.config = ends.config;
        self.ctx.availability = ends.availability;
        self.ctx.outbox_ready = ends.outbox_ready;
        self.ctx.telemetry = ends.telemetry;
        self.ctx.health = ends.health;
        self.ctx.outbox_ready.notify_one();
    }
}

/// Where the device's port is now: its `port` path (a by-id link is
/// resolved by the open), or the tty its `usb` identity has at this moment,
/// since an adapter may come back under another name.
pub fn port_path(device: &crate::config::DeviceConfig) -> Result<PathBuf, String> {
    if let Some(path) = &device.port {
        return Ok(path.clone());
    }
    let Some(wanted) = &device.usb else {
        return Err("the device has neither port nor usb".to_owned());
    };
    usb::find(Path::new("/sys"), wanted).ok_or_else(|| {
        let serial = wanted
            .serial
            .as_deref()
            .map(|s| format!(" with serial {s}"))
            .unwrap_or_default();
        format!(
            "no USB serial adapter {:04x}:{:04x}{serial} is present",
            wanted.vid, wanted.pid
        )
    })
}

/// The device file a device's port is at now: links resolved, a USB
/// identity looked up. Two devices whose files are the same share a line.
/// A path that does not exist (yet) stands for itself.
pub fn device_file(device: &crate::config::DeviceConfig) -> Result<PathBuf, String> {
    let path = port_path(device)?;
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

impl BusStation for Station {
    fn address(&self) -> Option<u16> {
        self.core.address()
    }

    fn due(&self, now: Instant) -> Option<Instant> {
        self.core.due(now)
    }

    fn answer_by(&self) -> Option<Instant> {
        self.core.answer_by()
    }

    fn transmit(&mut self, now: Instant) -> bool {
        self.core.transmit(now)
    }

    fn no_answer(&mut self, now: Instant) {
        self.core.no_answer(now)
    }

    fn unexpected(&mut self) {
        self.ctx.health.unexpected_frame()
    }
}
