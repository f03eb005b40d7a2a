//! From a data frame the machine sent to what gets published.

use serde_json::{Map, Value};

use crate::codec::FrameCode;
use crate::config::{Config, TopicVars, TopicsConfig};
use crate::profile::{Message, MessageKind, Profile};
use crate::queue::timestamp_now;
use crate::store::{ItemClass, OutItem};

/// A data frame as the business side will see it.
#[derive(Debug, Clone)]
pub(super) struct Decoded {
    /// The profile's message name, or a made-up name for frames the profile
    /// cannot decode.
    pub name: String,
    pub kind: MessageKind,
    pub qos: u8,
    pub retain: bool,
    pub fields: Map<String, Value>,
}

/// Decodes a data frame. Never fails: a frame that passed its checksum was
/// sent by the machine, so it is published even when the profile cannot
/// read it (an operator can act on it; dropping it could lose money).
/// - a code the profile does not know becomes event `code_0xNN` with the
///   body as hex;
/// - a body the profile cannot decode becomes event `malformed_frame` with
///   the message name, the error and the body as hex.
pub(super) fn decode(profile: &Profile, code: &FrameCode, body: &[u8]) -> Decoded {
    let Some(message) = profile.message_for(code) else {
        let mut fields = Map::new();
        fields.insert("data".into(), Value::from(hex(body)));
        return event(code_name(code), fields);
    };
    decode_as(message, body)
}

/// Decodes a frame with the message its request names (`host_polls`:
/// several messages may share a code). Never fails, like [`decode`].
pub(super) fn decode_as(message: &Message, body: &[u8]) -> Decoded {
    match message.decode(body) {
        Ok(fields) => Decoded {
            name: message.name.clone(),
            kind: message.kind,
            qos: message.qos,
            retain: message.retain,
            fields,
        },
        Err(error) => {
            let mut fields = Map::new();
            fields.insert("message".into(), Value::from(message.name.clone()));
            fields.insert("error".into(), Value::from(error.to_string()));
            fields.insert("data".into(), Value::from(hex(body)));
            event("malformed_frame".into(), fields)
        }
    }
}

fn event(name: String, fields: Map<String, Value>) -> Decoded {
    Decoded {
        name,
        kind: MessageKind::Event,
        qos: 1,
        retain: false,
        fields,
    }
}

/// The topic and payload of a decoded message. `seq` is given to events.
/// With an interface file its `publish` entries decide (DESIGN §7): `None`
/// when none matches or its program failed (logged and counted there).
pub(super) fn out_item(
    config: &Config,
    machine: &str,
    decoded: &Decoded,
    seq: Option<u64>,
) -> Option<OutItem> {
    let class = match decoded.kind {
        MessageKind::Telemetry => ItemClass::Telemetry,
        MessageKind::Event | MessageKind::Response => ItemClass::Event,
    };
    let ts = timestamp_now();
    if let Some(interface) = &config.interface {
        let vars = crate::interface::Vars {
            prefix: &config.mqtt.topic_prefix,
            machine,
            gateway: &config.gateway.id,
        };
        let message = crate::interface::Message {
            kind: match decoded.kind {
                MessageKind::Telemetry => "telemetry",
                MessageKind::Event | MessageKind::Response => "event",
            },
            name: &decoded.name,
            qos: decoded.qos,
            retain: decoded.retain,
            seq,
            ts: &ts,
            data: &decoded.fields,
        };
        let rendered = interface.publication(vars, &message)?;
        return Some(OutItem {
            topic: rendered.topic,
            payload: rendered.payload,
            qos: rendered.qos,
            retain: rendered.retain,
            class,
            correlation: None,
        });
    }
    let mut payload = decoded.fields.clone();
    payload.insert("ts".into(), Value::from(ts));
    if let Some(seq) = seq {
        payload.insert("seq".into(), Value::from(seq));
    }
    let template = match decoded.kind {
        MessageKind::Telemetry => &config.topics.telemetry,
        MessageKind::Event | MessageKind::Response => &config.topics.event,
    };
    let topic = TopicsConfig::render(
        template,
        &TopicVars {
            prefix: &config.mqtt.topic_prefix,
            machine,
            gateway: &config.gateway.id,
            name: &decoded.name,
            command: "",
        },
    );
    Some(OutItem {
        topic,
        payload: Value::Object(payload).to_string().into_bytes(),
        qos: decoded.qos,
        retain: decoded.retain,
        class,
        correlation: None,
    })
}

pub(super) fn code_name(code: &FrameCode) -> String {
    match code {
        FrameCode::Num(n) => format!("code_0x{n:02x}"),
        FrameCode::Text(t) => format!("code_{t}"),
    }
}

/// The key under which the last accepted frame is persisted.
pub(super) fn code_key(code: &FrameCode) -> String {
    match code {
        FrameCode::Num(n) => n.to_string(),
        FrameCode::Text(t) => format!("t:{t}"),
    }
}

pub(super) fn parse_code_key(key: &str) -> FrameCode {
    match key.strip_prefix("t:") {
        Some(text) => FrameCode::Text(text.to_owned()),
        None => key
            .parse()
            .map(FrameCode::Num)
            .unwrap_or_else(|_| FrameCode::Text(key.to_owned())),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_keys_round_trip() {
        for code in [FrameCode::Num(0x21), FrameCode::Text("TEMP".into())] {
            assert_eq!(parse_code_key(&code_key(&code)), code);
        }
    }

    #[test]
    fn unknown_code_name_is_lower_case_hex() {
        assert_eq!(code_name(&FrameCode::Num(0xAB)), "code_0xab");
        assert_eq!(hex(&[0xFA, 0x01]), "fa01");
    }
}
