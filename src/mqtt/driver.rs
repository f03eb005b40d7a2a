//! The task that owns rumqttc's `EventLoop`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::client::{ConnectionError, Event, EventLoop, Inbound};
use super::options::Brokers;
use super::{Backoff, DriverEvent, SessionCounters};

/// How long a connection must have lasted for the next reconnect to start
/// again from the shortest delay.
const STABLE: Duration = Duration::from_secs(10);

/// Failover (DESIGN §3): a session moves on to the next broker after this
/// many failed attempts in a row to restore its connection ...
const FAILOVER_ATTEMPTS: u32 = 3;
/// ... or after this long without one.
const FAILOVER_AFTER: Duration = Duration::from_secs(10);

pub(super) async fn run(
    name: String,
    mut eventloop: EventLoop,
    mut brokers: Brokers,
    counters: Arc<SessionCounters>,
    events: mpsc::UnboundedSender<DriverEvent>,
    commands: Option<mpsc::Sender<Inbound>>,
    shutdown: CancellationToken,
) {
    let mut driver = Driver {
        name,
        counters,
        events,
        commands,
        connected_at: None,
        ever_connected: false,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut last_error = String::new();
    let mut failing = Failing::default();
    loop {
        let connected = driver.connected_at.is_some();
        let event = tokio::select! {
            event = eventloop.poll() => event,
            // Only while disconnected: a connected session is ended by the
            // sender's DISCONNECT so that the final status is delivered first.
            _ = shutdown.cancelled(), if !connected => return,
        };
        let error = match event {
            Ok(event) => {
                if let Event::ConnAck { .. } = event {
                    last_error.clear();
                    failing = Failing::default();
                    if brokers.several() {
                        info!(session = %driver.name, broker = %brokers.url(), "connected to this broker of mqtt.url");
                    }
                }
                if !driver.on_event(event).await {
                    return;
                }
                continue;
            }
            Err(error) => error,
        };
        if shutdown.is_cancelled() {
            return;
        }
        // rumqttc reads packets in bursts: those read before the connection
        // broke are still queued, and would otherwise come out after the
        // next CONNACK, too late to count for this connection.
        for event in eventloop.take_buffered() {
            if !driver.on_event(event).await {
                return;
            }
        }
        // Only a connection that lasted starts the backoff over: a broker
        // that accepts and then drops the session at once (a client id
        // taken over by another gateway, Mosquitto refusing a publish) must
        // not be hammered every 200 ms.
        let lost = driver.connected_at.is_some();
        if let Some(at) = driver.connected_at.take() {
            if at.elapsed() >= STABLE {
                backoff.reset();
            }
            let (tx, rx) = oneshot::channel();
            if driver.events.send(DriverEvent::Disconnected(tx)).is_err() {
                return;
            }
            let _ = rx.await;
        }
        let message = describe(&error);
        // One line per distinct failure, not one per retry: a broker that
        // stays down must not flood the journal.
        if message != last_error {
            warn!(session = %driver.name, error = %message, "MQTT connection failed; retrying with backoff");
            last_error = message;
        }
        eventloop.discard_pending();
        if lost {
            // The connection broke: from now on, attempts to restore it.
            failing = Failing::since(Instant::now());
        } else if brokers.several() && failing.failed() {
            let from = brokers.url().to_owned();
            eventloop.set_options(brokers.next());
            warn!(session = %driver.name, %from, to = %brokers.url(), "moving to the next broker of mqtt.url");
            failing = Failing::default();
            last_error.clear();
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Failed attempts to (re)connect to the broker in use since it last worked.
#[derive(Default)]
struct Failing {
    attempts: u32,
    since: Option<Instant>,
}

impl Failing {
    fn since(at: Instant) -> Failing {
        Failing {
            attempts: 0,
            since: Some(at),
        }
    }

    /// Counts one more failed attempt; true when it is time to move on.
    fn failed(&mut self) -> bool {
        self.attempts += 1;
        let since = *self.since.get_or_insert_with(Instant::now);
        self.attempts >= FAILOVER_ATTEMPTS || since.elapsed() >= FAILOVER_AFTER
    }
}

struct Driver {
    name: String,
    counters: Arc<SessionCounters>,
    events: mpsc::UnboundedSender<DriverEvent>,
    commands: Option<mpsc::Sender<Inbound>>,
    /// Set while connected.
    connected_at: Option<Instant>,
    ever_connected: bool,
}

impl Driver {
    /// False when the session is over (DISCONNECT sent, or the sender or
    /// router gone).
    async fn on_event(&mut self, event: Event) -> bool {
        let name = &self.name;
        match event {
            Event::ConnAck { session_present } => {
                info!(session = %name, session_present, "MQTT connected");
                if std::mem::replace(&mut self.ever_connected, true) {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                self.connected_at = Some(Instant::now());
                return self.events.send(DriverEvent::Connected).is_ok();
            }
            Event::PubAck { pkid, refused } => {
                let _ = self.events.send(DriverEvent::PubAck { pkid, refused });
            }
            Event::SubscribeRefused(reason) => {
                error!(session = %name, reason, "the broker refused the command subscription; this machine receives no commands (check the broker's ACL)");
            }
            Event::Publish(publish) => {
                if let Some(commands) = &self.commands {
                    // Back-pressure: a flood of commands slows reading from
                    // the broker, never the serial side.
                    return commands.send(publish).await.is_ok();
                }
            }
            Event::Published(pkid) => {
                let _ = self.events.send(DriverEvent::Published(pkid));
            }
            Event::DisconnectSent => {
                debug!(session = %name, "MQTT disconnect sent");
                return false;
            }
            Event::Other(event) => debug!(session = %name, event, "MQTT"),
        }
        true
    }
}

/// One readable sentence per failure. The text must not change between
/// retries of the same failure (the caller logs each distinct text once).
fn describe(error: &ConnectionError) -> String {
    use rumqttc::v5::{ConnectionError as E5, StateError as S5};
    use rumqttc::ConnectionError as E4;
    use ConnectionError::{V4, V5};
    if let Some(tls) = find_rustls_error(error) {
        return describe_tls(tls);
    }
    let refused = |code: String| {
        let hint = if code.contains("ProtocolVersion") {
            "the broker does not speak the MQTT version of mqtt.version"
        } else {
            "check the credentials and client id"
        };
        format!("the broker refused the connection ({code}); {hint}")
    };
    match error {
        V4(E4::ConnectionRefused(code)) => refused(format!("{code:?}")),
        V5(E5::ConnectionRefused(code)) => refused(format!("{code:?}")),
        V5(E5::Io(e)) if closed_by_peer(e) => format!("network error: {e}; {V5_HINT}"),
        V4(E4::Io(e)) | V5(E5::Io(e)) => format!("network error: {e}"),
        V4(E4::Websocket(e)) | V5(E5::Websocket(e)) => {
            format!("websocket: {e}; check the host, port and path of mqtt.url")
        }
        V4(E4::ResponseValidation(e)) | V5(E5::ResponseValidation(e)) => {
            format!("websocket: the server does not speak MQTT over websockets ({e})")
        }
        V5(E5::MqttState(S5::ServerDisconnect {
            reason_code,
            reason_string,
        })) => format!(
            "the broker ended the session ({reason_code:?}{})",
            reason_string
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
        // Brokers that speak only MQTT 3.1.1 (RabbitMQ 3.10, aedes, amqtt)
        // answer an MQTT 5 CONNECT by closing the connection or not at all.
        V5(e @ (E5::MqttState(S5::ConnectionAborted) | E5::Timeout(_) | E5::NotConnAck(_))) => {
            format!("{e}; {V5_HINT}")
        }
        other => other.to_string(),
    }
}

/// Said when an MQTT 5 session fails the way a 3.1.1-only broker fails it.
const V5_HINT: &str =
    "if this repeats at every connect, the broker may speak only MQTT 3.1.1: try mqtt.version: 3";

fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

/// The rustls error behind a connection error, if there is one: rumqttc and
/// tungstenite wrap it in `io::Error`s, whose `source()` skips the wrapped
/// error, so those are unwrapped with `get_ref()`.
fn find_rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = match error {
        ConnectionError::V4(e) => Some(e),
        ConnectionError::V5(e) => Some(e),
    };
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

    use rumqttc::{StateError, TlsError};
    use rustls::{AlertDescription, CertificateError};

    use super::{describe, ConnectionError};
    use rumqttc::ConnectionError as E4;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn tls_failures_are_one_readable_sentence_however_wrapped() {
        // The handshake (rumqttc's TLS error around an io::Error).
        let untrusted = ConnectionError::V4(E4::Tls(TlsError::Io(wrapped(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ))));
        assert!(describe(&untrusted).starts_with(
            "TLS: the broker's certificate is not trusted (check mqtt.tls.ca_file): "
        ));
        let wrong_name = ConnectionError::V4(E4::Tls(TlsError::Io(wrapped(
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        ))));
        assert!(describe(&wrong_name)
            .starts_with("TLS: the broker's certificate is not valid for the host name"));
        // After the handshake: reading the CONNACK meets the broker's alert.
        let no_client_cert = ConnectionError::V4(E4::MqttState(StateError::Io(wrapped(
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        ))));
        assert!(describe(&no_client_cert)
            .starts_with("TLS: the broker rejected the gateway's client certificate"));
        let expired = ConnectionError::V5(rumqttc::v5::ConnectionError::Io(wrapped(
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        )));
        assert!(describe(&expired).contains("check the board's clock"));
        // Not TLS: unchanged.
        let refused =
            ConnectionError::V4(E4::Io(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(describe(&refused).starts_with("network error: "));
    }

    #[test]
    fn refusals_and_server_disconnects_say_what_to_check() {
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
        use rumqttc::v5::{ConnectionError as E5, StateError as S5};
        let v3_broker = ConnectionError::V5(E5::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion,
        ));
        assert!(
            describe(&v3_broker).contains("does not speak the MQTT version of mqtt.version"),
            "{}",
            describe(&v3_broker)
        );
        // A 3.1.1-only broker closing an MQTT 5 session: a hint, not only
        // "Connection closed by peer abruptly" or "Timeout".
        for closed in [
            ConnectionError::V5(E5::MqttState(S5::ConnectionAborted)),
            ConnectionError::V5(E5::Io(io::Error::from(io::ErrorKind::UnexpectedEof))),
        ] {
            assert!(
                describe(&closed).contains("try mqtt.version: 3"),
                "{}",
                describe(&closed)
            );
        }
        // Under 3.1.1 the same failure carries no such hint.
        let v4_closed = ConnectionError::V4(E4::Io(io::Error::from(io::ErrorKind::UnexpectedEof)));
        assert!(!describe(&v4_closed).contains("mqtt.version"));
        let bad_login = ConnectionError::V4(E4::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword,
        ));
        assert!(describe(&bad_login).contains("check the credentials"));
        let taken_over = ConnectionError::V5(E5::MqttState(S5::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            reason_string: Some("client id in use".into()),
        }));
        assert_eq!(
            describe(&taken_over),
            "the broker ended the session (SessionTakenOver: client id in use)"
        );
    }
}
