//! Messages from the machine and commands to it: a field layout plus the
//! MQTT metadata (DESIGN §4, §5).

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{ArgError, DecodeError};
use super::fields::Field;
use crate::codec::FrameCode;

/// Envelope keys of an MQTT command payload, not arguments (DESIGN §4 Commands).
pub const ENVELOPE_KEYS: [&str; 2] = ["id", "expires_at"];

/// Fields in wire order; binary, or comma-separated tokens with ASCII-line framing.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub fields: Vec<Field>,
    /// Token separator with ASCII-line framing.
    pub separator: Option<u8>,
}

impl Layout {
    /// Extra trailing bytes or tokens are ignored (logged at debug): newer
    /// firmware may append fields an older profile does not know.
    pub fn decode(&self, body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        let mut map = Map::new();
        if let Some(sep) = self.separator {
            let text = String::from_utf8_lossy(body);
            let tokens: Vec<&str> = if text.is_empty() {
                Vec::new()
            } else {
                text.split(char::from(sep)).collect()
            };
            for (i, field) in self.fields.iter().enumerate() {
                match tokens.get(i) {
                    Some(tok) if !(tok.is_empty() && field.optional) => {
                        map.insert(field.label().to_string(), field.decode_token(tok)?);
                    }
                    _ if field.optional => break,
                    _ => {
                        return Err(DecodeError::Bad {
                            field: field.label().into(),
                            reason: "missing token".into(),
                        })
                    }
                }
            }
            if tokens.len() > self.fields.len() {
                tracing::debug!(
                    extra = tokens.len() - self.fields.len(),
                    "ignored trailing tokens"
                );
            }
            return Ok(map);
        }
        let mut pos = 0;
        for field in &self.fields {
            if pos >= body.len() && field.optional {
                break;
            }
            if let Some(v) = field.decode(body, &mut pos)? {
                map.insert(field.label().to_string(), v);
            }
        }
        if pos < body.len() {
            tracing::debug!(extra = body.len() - pos, "ignored trailing bytes");
        }
        Ok(map)
    }

    /// Validates `values` against the fields and encodes them; with
    /// `envelope`, the command envelope keys are skipped.
    pub fn encode(&self, values: &Map<String, Value>, envelope: bool) -> Result<Vec<u8>, ArgError> {
        let names: Vec<&str> = self
            .fields
            .iter()
            .filter_map(|f| f.name.as_deref())
            .collect();
        for key in values.keys() {
            if (envelope && ENVELOPE_KEYS.contains(&key.as_str())) || names.contains(&key.as_str())
            {
                continue;
            }
            let allowed = match names.as_slice() {
                [] => "this takes no arguments".to_string(),
                n => format!("the arguments are {}", n.join(", ")),
            };
            return Err(ArgError::Unknown {
                field: key.clone(),
                allowed,
            });
        }
        let mut out = Vec::new();
        let mut tokens = Vec::new();
        let mut omitted: Option<&str> = None;
        for field in &self.fields {
            let value = match &field.name {
                None => None,
                Some(n) => match values.get(n).or(field.default.as_ref()) {
                    Some(v) => Some(v),
                    None if field.optional => {
                        omitted.get_or_insert(n);
                        continue;
                    }
                    None => return Err(ArgError::Missing { field: n.clone() }),
                },
            };
            if let (Some(prev), Some(v)) = (omitted, value) {
                return Err(ArgError::invalid(
                    field.label(),
                    format!("left out because {prev} is left out"),
                    v,
                ));
            }
            match (self.separator, value) {
                (Some(_), Some(v)) => tokens.push(field.encode_token(v)?),
                (_, v) => field.encode(v.unwrap_or(&Value::Null), &mut out)?,
            }
        }
        if let Some(sep) = self.separator {
            out = tokens.join(&char::from(sep).to_string()).into_bytes();
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Telemetry,
    Event,
    /// Published only as the `response` of the command it answers.
    Response,
}

/// A frame the machine sends.
#[derive(Clone, Debug)]
pub struct Message {
    pub code: FrameCode,
    pub name: String,
    pub kind: MessageKind,
    pub qos: u8,
    pub retain: bool,
    pub layout: Layout,
    pub publish: Publish,
}

/// When a telemetry message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Every time it arrives.
    Always,
    /// When its fields changed, or `heartbeat` after the last publication.
    OnChange { heartbeat: Duration },
}

impl Message {
    /// `body`: the frame payload after the link's sequence byte.
    pub fn decode(&self, body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        self.layout.decode(body)
    }

    /// For the simulator: JSON values -> body bytes.
    pub fn encode(&self, values: &Map<String, Value>) -> Result<Vec<u8>, ArgError> {
        self.layout.encode(values, false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Ack,
    Answer { message: String, timeout: Duration },
}

/// An MQTT command the gateway writes to the machine.
#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    pub code: FrameCode,
    pub completion: Completion,
    /// The message that, as the answer, ends the command `failed`.
    pub error: Option<String>,
    pub idempotent: bool,
    pub layout: Layout,
}

impl Command {
    /// Validates the JSON arguments (ignoring the envelope keys `id` and
    /// `expires_at`) and encodes the body (without sequence byte).
    pub fn encode(&self, args: &Map<String, Value>) -> Result<Vec<u8>, ArgError> {
        self.layout.encode(args, true)
    }

    /// For the simulator: body bytes -> JSON arguments.
    pub fn decode(&self, body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        self.layout.decode(body)
    }
}
