//! MQTT 3.1.1 and MQTT 5 behind one small interface, so the driver and the
//! sender are written once. rumqttc has a separate client for each version
//! (`rumqttc` and `rumqttc::v5`); everything version-specific about how
//! vendgate uses them is in this file:
//! - MQTT 5 commands may carry a Response Topic and Correlation Data (their
//!   results are also published there, with the correlation data) and a
//!   Message Expiry Interval (honoured like `expires_at`);
//! - MQTT 5 PUBACKs carry a reason code: only a success means the broker
//!   took the message;
//! - the MQTT 5 command subscription asks for retain-as-published, so every
//!   retained command is seen as retained (and never executed), and for
//!   no-local, so the gateway never receives its own publishes.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::{Filter, PubAckReason, PublishProperties, RetainForwardRule};

use crate::store::{OutItem, ReplyTo};

/// A command publish as the router needs it, whatever the protocol version.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// MQTT 5 Response Topic (and Correlation Data): where the command's
    /// results are published too.
    pub reply: Option<ReplyTo>,
    /// MQTT 5 Message Expiry Interval, as a deadline counted from receipt
    /// (the broker sends the time that is left).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Inbound {
    /// A publish with no MQTT 5 properties (MQTT 3.1.1).
    pub fn plain(topic: impl Into<String>, payload: impl Into<Bytes>, retain: bool) -> Inbound {
        Inbound {
            topic: topic.into(),
            payload: payload.into(),
            retain,
            reply: None,
            expires_at: None,
        }
    }
}

pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

pub(super) enum EventLoop {
    // Boxed: about a kilobyte each, of different sizes.
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error(transparent)]
    V4(rumqttc::ConnectionError),
    #[error(transparent)]
    V5(v5::ConnectionError),
}

/// What the driver acts on; everything else is logged at debug level.
#[derive(Debug)]
pub(super) enum Event {
    ConnAck {
        session_present: bool,
    },
    /// `refused`: the MQTT 5 reason code when it is not a success.
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// The broker refused the command subscription.
    SubscribeRefused(String),
    Publish(Inbound),
    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    Published(u16),
    DisconnectSent,
    Other(String),
}

fn qos4(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> v5::mqttbytes::QoS {
    match qos {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    /// Never waits. An MQTT 3.1.1 session publishes a reply without its
    /// correlation data (only an outbox written under MQTT 5 has any).
    pub fn try_publish(&self, item: OutItem) -> Result<(), String> {
        let OutItem {
            topic,
            payload,
            qos,
            retain,
            correlation,
            ..
        } = item;
        match self {
            Client::V4(client) => client
                .try_publish(topic, qos4(qos), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(client) => match correlation {
                Some(data) => {
                    let properties = PublishProperties {
                        correlation_data: Some(Bytes::from(data)),
                        ..PublishProperties::default()
                    };
                    client.try_publish_with_properties(
                        topic,
                        qos5(qos),
                        retain,
                        payload,
                        properties,
                    )
                }
                None => client.try_publish(topic, qos5(qos), retain, payload),
            }
            .map_err(|e| e.to_string()),
        }
    }

    /// QoS 1 on the command filter.
    pub fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(client) => client
                .try_subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(client) => {
                let filter = Filter {
                    path: filter.to_owned(),
                    qos: v5::mqttbytes::QoS::AtLeastOnce,
                    nolocal: true,
                    preserve_retain: true,
                    // Retained commands are still delivered on subscribe, so
                    // that those with an id get their `rejected` result.
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                };
                client
                    .try_subscribe_many([filter])
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(client) => client.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(client) => client.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        match self {
            EventLoop::V4(eventloop) => eventloop
                .poll()
                .await
                .map(event4)
                .map_err(ConnectionError::V4),
            EventLoop::V5(eventloop) => eventloop
                .poll()
                .await
                .map(event5)
                .map_err(ConnectionError::V5),
        }
    }

    /// The events rumqttc had read and not yet handed out when the
    /// connection broke.
    pub fn take_buffered(&mut self) -> Vec<Event> {
        match self {
            EventLoop::V4(eventloop) => eventloop.state.events.drain(..).map(event4).collect(),
            EventLoop::V5(eventloop) => eventloop.state.events.drain(..).map(event5).collect(),
        }
    }

    /// Connects to another broker from the next attempt on (failover). The
    /// versions always match: every broker of a session gets one config.
    pub(super) fn set_options(&mut self, options: super::options::Options) {
        use super::options::Options;
        match (self, options) {
            (EventLoop::V4(eventloop), Options::V4(options)) => eventloop.mqtt_options = *options,
            (EventLoop::V5(eventloop), Options::V5(options)) => eventloop.options = *options,
            _ => {}
        }
    }

    /// Forgets everything rumqttc still holds: the outbox publishes again
    /// whatever was not acknowledged, and rumqttc's copies would only be
    /// duplicates with unknown packet ids.
    pub fn discard_pending(&mut self) {
        match self {
            EventLoop::V4(eventloop) => {
                eventloop.clean();
                eventloop.pending.clear();
            }
            EventLoop::V5(eventloop) => {
                eventloop.clean();
                eventloop.pending.clear();
            }
        }
    }
}

fn event4(event: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Incoming, Outgoing, SubscribeReasonCode};
    match event {
        E::Incoming(Incoming::ConnAck(ack)) => Event::ConnAck {
            session_present: ack.session_present,
        },
        E::Incoming(Incoming::PubAck(ack)) => Event::PubAck {
            pkid: ack.pkid,
            refused: None,
        },
        E::Incoming(Incoming::SubAck(ack))
            if ack.return_codes.contains(&SubscribeReasonCode::Failure) =>
        {
            Event::SubscribeRefused("failure".into())
        }
        E::Incoming(Incoming::Publish(publish)) => Event::Publish(Inbound::plain(
            publish.topic,
            publish.payload,
            publish.retain,
        )),
        E::Outgoing(Outgoing::Publish(pkid)) => Event::Published(pkid),
        E::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        other => Event::Other(format!("{other:?}")),
    }
}

fn event5(event: v5::Event) -> Event {
    use rumqttc::Outgoing;
    use v5::mqttbytes::v5::SubscribeReasonCode;
    use v5::{Event as E, Incoming};
    match event {
        E::Incoming(Incoming::ConnAck(ack)) => Event::ConnAck {
            session_present: ack.session_present,
        },
        E::Incoming(Incoming::PubAck(ack)) => Event::PubAck {
            pkid: ack.pkid,
            refused: match ack.reason {
                // "No matching subscribers" is still a message the broker
                // accepted (and would have delivered).
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                reason => {
                    let detail = ack
                        .properties
                        .and_then(|p| p.reason_string)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default();
                    Some(format!("{reason:?}{detail}"))
                }
            },
        },
        E::Incoming(Incoming::SubAck(ack)) => {
            let refused: Vec<String> = ack
                .return_codes
                .iter()
                .filter(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                .map(|code| format!("{code:?}"))
                .collect();
            if refused.is_empty() {
                Event::Other(format!("{ack:?}"))
            } else {
                Event::SubscribeRefused(refused.join(", "))
            }
        }
        E::Incoming(Incoming::Publish(publish)) => Event::Publish(inbound5(publish)),
        E::Outgoing(Outgoing::Publish(pkid)) => Event::Published(pkid),
        E::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        other => Event::Other(format!("{other:?}")),
    }
}

fn inbound5(publish: v5::mqttbytes::v5::Publish) -> Inbound {
    let properties = publish.properties.unwrap_or_default();
    let reply = properties.response_topic.map(|topic| ReplyTo {
        topic,
        correlation: properties.correlation_data.map(|data| data.to_vec()),
        request: None,
    });
    let expires_at = properties
        .message_expiry_interval
        .map(|secs| Utc::now() + chrono::Duration::seconds(i64::from(secs)));
    Inbound {
        // Brokers only send UTF-8 topic names; anything else matches no
        // command topic and is ignored by the router.
        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
        payload: publish.payload,
        retain: publish.retain,
        reply,
        expires_at,
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties, Publish};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Event as E, Incoming};

    use super::*;

    fn puback(reason: PubAckReason, why: Option<&str>) -> Event {
        event5(E::Incoming(Incoming::PubAck(PubAck {
            pkid: 7,
            reason,
            properties: why.map(|s| PubAckProperties {
                reason_string: Some(s.into()),
                user_properties: Vec::new(),
            }),
        })))
    }

    #[test]
    fn only_a_success_reason_code_acknowledges_a_publish() {
        for reason in [PubAckReason::Success, PubAckReason::NoMatchingSubscribers] {
            assert!(matches!(
                puback(reason, None),
                Event::PubAck {
                    pkid: 7,
                    refused: None
                }
            ));
        }
        let Event::PubAck {
            refused: Some(why), ..
        } = puback(PubAckReason::NotAuthorized, Some("acl"))
        else {
            panic!("a refusal must be reported");
        };
        assert_eq!(why, "NotAuthorized: acl");
        assert!(matches!(
            puback(PubAckReason::QuotaExceeded, None),
            Event::PubAck {
                refused: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_v5_command_keeps_its_reply_address_and_expiry() {
        let properties = PublishProperties {
            response_topic: Some("replies/biz-7".into()),
            correlation_data: Some(Bytes::from_static(b"\x00corr")),
            message_expiry_interval: Some(30),
            ..PublishProperties::default()
        };
        let mut publish = Publish::new(
            "vending/vm-001/cmd/vend",
            QoS::AtLeastOnce,
            "{}",
            Some(properties),
        );
        publish.retain = true;
        let before = Utc::now();
        let Event::Publish(inbound) = event5(E::Incoming(Incoming::Publish(publish))) else {
            panic!("a publish");
        };
        assert_eq!(inbound.topic, "vending/vm-001/cmd/vend");
        assert!(inbound.retain);
        assert_eq!(
            inbound.reply,
            Some(ReplyTo {
                topic: "replies/biz-7".into(),
                correlation: Some(b"\x00corr".to_vec()),
                request: None,
            })
        );
        let left = inbound.expires_at.expect("an expiry") - before;
        assert!((29..=31).contains(&left.num_seconds()), "{left}");
        // Without properties: nothing to reply to, no expiry.
        let plain = Publish::new("t", QoS::AtLeastOnce, "{}", None);
        let Event::Publish(inbound) = event5(E::Incoming(Incoming::Publish(plain))) else {
            panic!("a publish");
        };
        assert_eq!((inbound.reply, inbound.expires_at), (None, None));
    }
}
