//! The task that owns rumqttc's `EventLoop`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Incoming, Outgoing};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backoff, DriverEvent, Publish};

pub(super) async fn run(
    name: String,
    mut eventloop: EventLoop,
    reconnects: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<DriverEvent>,
    commands: Option<mpsc::Sender<Publish>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut connected = false;
    let mut ever_connected = false;
    let mut last_error = String::new();
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            // Only while disconnected: a connected session is ended by the
            // sender's DISCONNECT so that the final status is delivered first.
            _ = shutdown.cancelled(), if !connected => return,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                info!(session = %name, session_present = ack.session_present, "MQTT connected");
                if std::mem::replace(&mut ever_connected, true) {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected = true;
                last_error.clear();
                backoff.reset();
                if events.send(DriverEvent::Connected).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                let _ = events.send(DriverEvent::PubAck(ack.pkid));
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if let Some(commands) = &commands {
                    // Back-pressure: a flood of commands slows reading from
                    // the broker, never the serial side.
                    if commands.send(publish).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let _ = events.send(DriverEvent::Published(pkid));
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!(session = %name, "MQTT disconnect sent");
                return;
            }
            Ok(other) => debug!(session = %name, event = ?other, "MQTT"),
            Err(error) => {
                if shutdown.is_cancelled() {
                    return;
                }
                let message = describe(&error);
                // One line per distinct failure, not one per retry: a broker
                // that stays down must not flood the journal.
                if message != last_error {
                    warn!(session = %name, error = %message, "MQTT connection failed; retrying with backoff");
                    last_error = message;
                }
                if connected {
                    connected = false;
                    let (tx, rx) = oneshot::channel();
                    if events.send(DriverEvent::Disconnected(tx)).is_err() {
                        return;
                    }
                    let _ = rx.await;
                }
                // The outbox will publish again whatever was not acknowledged;
                // rumqttc's copies would only be duplicates with unknown ids.
                eventloop.clean();
                eventloop.pending.clear();
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check the credentials and client id"
            )
        }
        ConnectionError::Io(e) => format!("network error: {e}"),
        other => other.to_string(),
    }
}
