//! What the core tells the MQTT side about the machine's availability: the
//! first status after start, debounced `offline`, and only real changes.

use super::{Action, Core};
use crate::link::Change;
use crate::mqtt::{Availability, OfflineReason};

impl Core {
    /// A port that opened but stays silent never produces a link-down
    /// transition: after one link-down period from the start, the machine
    /// is reported `offline` so its status is known.
    pub(super) fn settle_startup(&mut self) {
        self.settle_debounce();
        let starting = matches!(
            &self.published,
            Availability::Offline {
                reason: OfflineReason::Starting,
                ..
            }
        );
        let since = self.now.saturating_duration_since(self.started);
        if starting && since >= self.link.down_after() {
            self.set_availability(Availability::offline(OfflineReason::LinkLost));
        }
    }

    /// The port failed to open.
    pub fn port_missing(&mut self, now: std::time::Instant) {
        self.now = now;
        self.port_open = false;
        self.set_availability(Availability::offline(OfflineReason::PortMissing));
    }

    pub(super) fn mark_port_lost(&mut self) {
        if self.link.port_lost() == Some(Change::Down) || self.down_since.is_none() {
            self.down_since = Some(self.now);
        }
        self.set_availability(Availability::offline(OfflineReason::PortMissing));
    }

    /// Reports a change of availability. Going offline from online waits
    /// `status_payloads.debounce` (a single missed POLL must not flap the
    /// status); coming back within it publishes nothing at all.
    pub(super) fn set_availability(&mut self, availability: Availability) {
        let debounce = self.ctx.config.status_payloads.debounce;
        let was_online = matches!(&self.published, Availability::Online);
        match &availability {
            Availability::Offline { .. } if was_online && !debounce.is_zero() => {
                let due = self.now + debounce;
                self.pending_offline
                    .get_or_insert_with(|| (availability.clone(), due));
                return;
            }
            _ => self.pending_offline = None,
        }
        self.publish_availability(availability);
    }

    /// Publishes an offline state whose debounce ran out.
    fn settle_debounce(&mut self) {
        if let Some((availability, due)) = self.pending_offline.take() {
            if self.now >= due {
                self.publish_availability(availability);
            } else {
                self.pending_offline = Some((availability, due));
            }
        }
    }

    fn publish_availability(&mut self, availability: Availability) {
        // Only real changes: re-sending the same state would re-publish it.
        let same = match (&self.published, &availability) {
            (Availability::Online, Availability::Online) => true,
            (Availability::Offline { reason: a, .. }, Availability::Offline { reason: b, .. }) => {
                a == b
            }
            _ => false,
        };
        if !same {
            self.published = availability.clone();
            self.actions.push(Action::Availability(availability));
        }
    }
}
