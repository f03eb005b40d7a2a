//! The task that owns rumqttc's `AsyncClient`: outbox draining with PUBACK
//! tracking, status and telemetry publishing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::client::Client;
use super::{
    render_status, Availability, Backoff, DriverEvent, OfflineReason, SessionCounters, SessionSpec,
    WINDOW,
};
use crate::store::{ItemClass, OutItem, Store};

pub(super) struct Sender {
    pub spec: SessionSpec,
    pub client: Client,
    pub store: Store,
    pub outbox_ready: Arc<Notify>,
    pub availability: watch::Receiver<Availability>,
    pub telemetry: mpsc::Receiver<OutItem>,
    pub events: mpsc::UnboundedReceiver<DriverEvent>,
    pub heartbeat: crate::systemd::Heartbeat,
    pub shutdown: CancellationToken,
    pub counters: Arc<SessionCounters>,
}

/// What a publish handed to rumqttc was, so its PUBACK can be attributed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tag {
    Outbox(u64),
    Status,
    FinalStatus,
    Other,
}

#[derive(Default)]
struct Tracking {
    connected: bool,
    /// Publishes handed to rumqttc whose packet id is not known yet, in order.
    unassigned: VecDeque<Tag>,
    /// Packet id -> publish waiting for its PUBACK.
    inflight: HashMap<u16, Tag>,
    /// Last outbox id handed over in this connection.
    cursor: Option<u64>,
    /// Outbox items handed over and not yet acknowledged.
    outstanding: usize,
    /// Outbox ids acknowledged by the broker, to remove in one transaction.
    acked: Vec<u64>,
    final_acked: bool,
    availability_open: bool,
    /// Set at shutdown: overrides what the device task last said.
    final_status: Option<Availability>,
    /// While disconnected: the latest telemetry per topic.
    latest: HashMap<String, OutItem>,
    /// Outbox items the broker refused (MQTT 5 PUBACK reason code) since the
    /// last retry. They stay in the outbox, and are held back until the
    /// retry, also across reconnects: Mosquitto 2.0 drops an MQTT 5 client
    /// right after refusing its QoS 1 publish, so sending them again at
    /// every connect would make the session flap.
    held: BTreeSet<u64>,
    /// The last refusal reason logged, so a broker that keeps refusing
    /// logs once per reason, not once per item.
    last_refusal: String,
}

impl Tracking {
    fn reset(&mut self, connected: bool) {
        self.connected = connected;
        self.unassigned.clear();
        self.inflight.clear();
        self.cursor = None;
        self.outstanding = 0;
    }
}

/// When to publish refused items again: the refusal may be passing (quota)
/// or fixed by an operator (ACL) without any reconnect.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The timer of the next retry of refused items.
struct Retry {
    backoff: Backoff,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            timer: Box::pin(tokio::time::sleep(Duration::MAX)),
            armed: false,
        }
    }

    fn arm(&mut self, delay: Duration) {
        self.armed = true;
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + delay);
    }

    /// After a round of acknowledgements: items refused and no retry
    /// planned yet arm one, each later than the last; once a retry went
    /// through, the next refusal starts from the shortest delay again.
    fn update(&mut self, t: &Tracking) {
        if !t.held.is_empty() && !self.armed {
            let delay = self.backoff.next_delay();
            self.arm(delay);
        } else if t.held.is_empty() && t.outstanding == 0 {
            self.backoff.reset();
        }
    }
}

impl Sender {
    pub(super) async fn run(mut self) {
        let mut t = Tracking {
            availability_open: true,
            ..Tracking::default()
        };
        let mut alive = tokio::time::interval(Duration::from_millis(200));
        let mut retry = Retry::new();
        loop {
            tokio::select! {
                biased;
                _ = alive.tick() => self.heartbeat.beat(),
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    self.on_event(&mut t, event);
                    // Handle whatever else is already waiting, so PUBACKs are
                    // removed from the store in one transaction.
                    while let Ok(event) = self.events.try_recv() {
                        self.on_event(&mut t, event);
                    }
                    self.flush_acks(&mut t).await;
                    self.fill(&mut t);
                    retry.update(&t);
                }
                _ = retry.timer.as_mut(), if retry.armed => {
                    retry.armed = false;
                    if !self.retry_refused(&mut t) {
                        // Still waiting for other acknowledgements, or for
                        // the broker: soon.
                        retry.arm(RETRY_MIN);
                    }
                }
                _ = self.shutdown.cancelled() => {
                    self.finish(&mut t).await;
                    return;
                }
                changed = self.availability.changed(), if t.availability_open => {
                    if changed.is_err() {
                        // The device task is gone; keep serving the outbox
                        // until shutdown.
                        t.availability_open = false;
                    } else if t.connected {
                        self.publish_status(&mut t, Tag::Status);
                    }
                }
                Some(item) = self.telemetry.recv() => {
                    if t.connected {
                        self.publish(&mut t, item, Tag::Other);
                    } else {
                        t.latest.insert(item.topic.clone(), item);
                    }
                }
                _ = self.outbox_ready.notified(), if t.connected => self.fill(&mut t),
            }
        }
    }

    fn on_event(&mut self, t: &mut Tracking, event: DriverEvent) {
        match event {
            DriverEvent::Connected => {
                t.reset(true);
                for filter in self.spec.subscribe.iter().flatten() {
                    if let Err(e) = self.client.try_subscribe(filter) {
                        error!(session = %self.spec.name, error = %e, "cannot subscribe to commands");
                    }
                }
                // After every reconnect the current state is published again
                // (DESIGN §4), then the telemetry kept while away.
                self.publish_status(t, Tag::Status);
                for (_, item) in std::mem::take(&mut t.latest) {
                    self.publish(t, item, Tag::Other);
                }
            }
            DriverEvent::Disconnected(confirm) => {
                t.reset(false);
                let _ = confirm.send(());
            }
            DriverEvent::Published(pkid) => match t.unassigned.pop_front() {
                Some(Tag::Outbox(id)) if pkid == 0 => {
                    t.outstanding = t.outstanding.saturating_sub(1);
                    t.acked.push(id);
                }
                Some(tag) if pkid != 0 => {
                    t.inflight.insert(pkid, tag);
                }
                Some(_) => {}
                None => warn!(session = %self.spec.name, pkid, "publish not handed over by us"),
            },
            DriverEvent::PubAck {
                pkid,
                refused: Some(reason),
            } => {
                let tag = t.inflight.remove(&pkid);
                if let Some(Tag::Outbox(id)) = tag {
                    t.outstanding = t.outstanding.saturating_sub(1);
                    t.held.insert(id);
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    if reason != t.last_refusal {
                        warn!(session = %self.spec.name, id, reason, "the broker refused a publish; it stays in the outbox and is published again later");
                        t.last_refusal = reason;
                    }
                } else {
                    warn!(session = %self.spec.name, ?tag, reason, "the broker refused a publish");
                }
            }
            DriverEvent::PubAck {
                pkid,
                refused: None,
            } => match t.inflight.remove(&pkid) {
                Some(Tag::Outbox(id)) => {
                    t.outstanding = t.outstanding.saturating_sub(1);
                    t.acked.push(id);
                }
                Some(Tag::FinalStatus) => t.final_acked = true,
                Some(_) => {}
                None => debug!(session = %self.spec.name, pkid, "PUBACK for an unknown packet id"),
            },
        }
    }

    async fn flush_acks(&mut self, t: &mut Tracking) {
        if t.acked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut t.acked);
        // A lost removal only means a duplicate after restart, which
        // consumers drop by `seq`; it is logged, not fatal.
        if let Err(e) = self.store.ack(&self.spec.name, ids).await {
            error!(session = %self.spec.name, error = %e, "cannot remove acknowledged items from the outbox");
        }
    }

    /// Hands the next outbox items to rumqttc, keeping at most `WINDOW`
    /// unacknowledged.
    fn fill(&mut self, t: &mut Tracking) {
        while t.connected && t.outstanding < WINDOW {
            let items = match self
                .store
                .outbox(&self.spec.name, t.cursor, WINDOW - t.outstanding)
            {
                Ok(items) => items,
                Err(e) => {
                    error!(session = %self.spec.name, error = %e, "cannot read the outbox");
                    return;
                }
            };
            if items.is_empty() {
                return;
            }
            for (id, item) in items {
                if t.held.contains(&id) {
                    t.cursor = Some(id);
                    continue;
                }
                if !self.publish(t, item, Tag::Outbox(id)) {
                    return;
                }
                t.cursor = Some(id);
                t.outstanding += 1;
            }
        }
    }

    /// Publishes the refused items again: once nothing else is awaiting
    /// its PUBACK, every outbox item before the cursor is a refused one, so
    /// starting over from the outbox's head re-sends exactly those (and then
    /// goes on in order). False while that moment has not come.
    fn retry_refused(&mut self, t: &mut Tracking) -> bool {
        if !t.connected || t.outstanding > 0 || !t.acked.is_empty() {
            return false;
        }
        debug!(session = %self.spec.name, refused = t.held.len(), "publishing refused items again");
        t.held.clear();
        t.cursor = None;
        self.fill(t);
        true
    }

    /// Never waits: rumqttc's channel is larger than our window, and a full
    /// channel only means "later" (the outbox keeps the item).
    fn publish(&mut self, t: &mut Tracking, item: OutItem, tag: Tag) -> bool {
        match self.client.try_publish(item) {
            Ok(()) => {
                t.unassigned.push_back(tag);
                true
            }
            Err(e) => {
                debug!(session = %self.spec.name, error = %e, "publish deferred");
                false
            }
        }
    }

    fn publish_status(&mut self, t: &mut Tracking, tag: Tag) {
        let availability = match &t.final_status {
            Some(status) => status.clone(),
            None => self.availability.borrow().clone(),
        };
        if matches!(
            availability,
            Availability::Offline {
                reason: OfflineReason::Starting,
                ..
            }
        ) {
            // Not known yet: the retained status (the will, or the last
            // shutdown's `offline`) stands until the device task knows.
            return;
        }
        let payload = render_status(&self.spec.online, &self.spec.offline, &availability);
        let item = OutItem {
            topic: self.spec.status_topic.clone(),
            payload: payload.into_bytes(),
            qos: 1,
            retain: true,
            class: ItemClass::Telemetry,
            correlation: None,
        };
        self.publish(t, item, tag);
    }

    /// Clean shutdown: `offline` on the status topic, confirmed by the broker
    /// when it is reachable, then DISCONNECT (so the will is not sent).
    async fn finish(&mut self, t: &mut Tracking) {
        if !t.connected {
            return;
        }
        t.final_status = Some(Availability::offline(OfflineReason::Shutdown));
        self.publish_status(t, Tag::FinalStatus);
        let deadline = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(deadline);
        while !t.final_acked && t.connected {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(t, event),
                    None => break,
                },
                _ = &mut deadline => {
                    warn!(session = %self.spec.name, "no PUBACK for the final status before shutdown");
                    break;
                }
            }
        }
        self.flush_acks(t).await;
        let _ = self.client.try_disconnect();
        // Let the driver write the DISCONNECT.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(event) = self.events.recv().await {
                if let DriverEvent::Disconnected(confirm) = event {
                    let _ = confirm.send(());
                }
            }
        })
        .await;
    }
}
