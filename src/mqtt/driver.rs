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

/// One readable sentence per failure. The text must not change between
/// retries of the same failure (the caller logs each distinct text once).
fn describe(error: &ConnectionError) -> String {
    if let Some(tls) = find_rustls_error(error) {
        return describe_tls(tls);
    }
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check the credentials and client id"
            )
        }
        ConnectionError::Io(e) => format!("network error: {e}"),
        ConnectionError::Websocket(e) => {
            format!("websocket: {e}; check the host, port and path of mqtt.url")
        }
        ConnectionError::ResponseValidation(e) => {
            format!("websocket: the server does not speak MQTT over websockets ({e})")
        }
        other => other.to_string(),
    }
}

/// The rustls error behind a connection error, if there is one: rumqttc and
/// tungstenite wrap it in `io::Error`s, whose `source()` skips the wrapped
/// error, so those are unwrapped with `get_ref()`.
fn find_rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => e.source(),
        };
    }
    None
}

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    let hint = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer | Cert::BadSignature => {
                "the broker's certificate is not trusted (check mqtt.tls.ca_file)"
            }
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                "the broker's certificate is not valid for the host name in mqtt.url"
            }
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. } => {
                "the broker's certificate is expired or not yet valid (check the board's clock)"
            }
            _ => "the broker's certificate was rejected",
        },
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied,
        ) => {
            "the broker rejected the gateway's client certificate or wants one \
             (check mqtt.tls.cert_file and key_file)"
        }
        rustls::Error::AlertReceived(_) => "the broker ended the handshake",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the broker did not answer with TLS (is the port of mqtt.url a TLS listener?)"
        }
        _ => "the handshake failed",
    };
    format!("TLS: {hint}: {error}")
}

#[cfg(test)]
mod tests {
    use std::io;

    use rumqttc::{ConnectionError, StateError, TlsError};
    use rustls::{AlertDescription, CertificateError};

    use super::describe;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn tls_failures_are_one_readable_sentence_however_wrapped() {
        // The handshake (rumqttc's TLS error around an io::Error).
        let untrusted = ConnectionError::Tls(TlsError::Io(wrapped(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        )));
        assert!(describe(&untrusted).starts_with(
            "TLS: the broker's certificate is not trusted (check mqtt.tls.ca_file): "
        ));
        let wrong_name = ConnectionError::Tls(TlsError::Io(wrapped(
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        )));
        assert!(describe(&wrong_name)
            .starts_with("TLS: the broker's certificate is not valid for the host name"));
        // After the handshake: reading the CONNACK meets the broker's alert.
        let no_client_cert = ConnectionError::MqttState(StateError::Io(wrapped(
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        )));
        assert!(describe(&no_client_cert)
            .starts_with("TLS: the broker rejected the gateway's client certificate"));
        let expired = ConnectionError::Io(wrapped(rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        )));
        assert!(describe(&expired).contains("check the board's clock"));
        // Not TLS: unchanged.
        let refused = ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(describe(&refused).starts_with("network error: "));
    }
}
