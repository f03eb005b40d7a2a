//! What the device task tells the MQTT side about the machine's
//! availability: the first status after start, debounced `offline`, and
//! only real changes.

use std::time::Instant;

use super::task::Device;
use crate::link::Change;
use crate::mqtt::{Availability, OfflineReason};

impl Device {
    /// A port that opened but stays silent never produces a link-down
    /// transition: after one link-down period from the start, the machine
    /// is reported `offline` so its status is known.
    pub(super) fn settle_startup(&mut self, now: Instant) {
        self.settle_debounce(now);
        let starting = matches!(
            &*self.ctx.availability.borrow(),
            Availability::Offline {
                reason: OfflineReason::Starting,
                ..
            }
        );
        if starting && now.saturating_duration_since(self.started) >= self.link.down_after() {
            self.set_availability(Availability::offline(OfflineReason::LinkLost));
        }
    }

    pub(super) fn port_lost(&mut self) {
        if self.link.port_lost() == Some(Change::Down) || self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        self.set_availability(Availability::offline(OfflineReason::PortMissing));
    }

    /// Reports a change of availability. Going offline from online waits
    /// `status_payloads.debounce` (a single missed POLL must not flap the
    /// status); coming back within it publishes nothing at all.
    pub(super) fn set_availability(&mut self, availability: Availability) {
        let debounce = self.ctx.config.status_payloads.debounce;
        let was_online = matches!(&*self.ctx.availability.borrow(), Availability::Online);
        match &availability {
            Availability::Offline { .. } if was_online && !debounce.is_zero() => {
                self.pending_offline
                    .get_or_insert_with(|| (availability.clone(), Instant::now() + debounce));
                return;
            }
            _ => self.pending_offline = None,
        }
        self.publish_availability(availability);
    }

    /// Publishes an offline state whose debounce ran out.
    pub(super) fn settle_debounce(&mut self, now: Instant) {
        if let Some((availability, due)) = self.pending_offline.take() {
            if now >= due {
                self.publish_availability(availability);
            } else {
                self.pending_offline = Some((availability, due));
            }
        }
    }

    pub(super) fn publish_availability(&self, availability: Availability) {
        // Only real changes: re-sending the same state would re-publish it.
        self.ctx.availability.send_if_modified(|current| {
            let same = matches!(
                (&*current, &availability),
                (Availability::Online, Availability::Online)
            ) || matches!(
                (&*current, &availability),
                (Availability::Offline { reason: a, .. }, Availability::Offline { reason: b, .. }) if a == b
            );
            if !same {
                *current = availability.clone();
                self.ctx.health.link_changed(&availability);
            }
            !same
        });
    }
}
