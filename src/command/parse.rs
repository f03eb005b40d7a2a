//! The pure part of command handling: from payload bytes to a validated,
//! encoded command, or to the result that refuses it. No store, no clock
//! other than `now` for `expires_at`; fuzzed by `fuzz/fuzz_targets/command_json.rs`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{CommandResult, Status};
use crate::profile::{Command, Profile};

/// A command payload whose envelope is valid: a JSON object with an `id`,
/// not retained.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub object: Map<String, Value>,
    /// MQTT 5 Message Expiry Interval as a deadline; set by the router.
    pub message_expiry: Option<DateTime<Utc>>,
}

/// A command ready for the machine.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub def: Command,
    /// The encoded command body (without sequence number).
    pub body: Vec<u8>,
    /// The arguments without the envelope keys.
    pub args: Map<String, Value>,
    pub expires_at: Option<DateTime<Utc>>,
    pub job: crate::queue::Job,
}

pub(super) fn rejected(id: Option<&str>, error: impl Into<String>) -> CommandResult {
    CommandResult::error(id, Status::Rejected, error)
}

/// Size, JSON, `id`, retain flag — in that order, so the result names the
/// id whenever one could be read.
pub fn envelope(
    payload: &[u8],
    retain: bool,
    max_payload: usize,
) -> Result<Envelope, CommandResult> {
    if payload.len() > max_payload {
        return Err(rejected(
            None,
            format!(
                "the payload is {} bytes; commands are limited to {max_payload} bytes",
                payload.len()
            ),
        ));
    }
    let object = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(rejected(None, "the payload must be a JSON object")),
        Err(e) => {
            return Err(rejected(
                None,
                format!("the payload is not valid JSON: {e}"),
            ))
        }
    };
    let id = match object.get("id") {
        Some(Value::String(id)) if (1..=64).contains(&id.chars().count()) => id.clone(),
        Some(Value::String(_)) => return Err(rejected(None, "id: must be 1 to 64 characters")),
        Some(_) => return Err(rejected(None, "id: must be a string")),
        None => {
            return Err(rejected(
                None,
                "id: missing; every command needs a unique id",
            ))
        }
    };
    if retain {
        return Err(rejected(
            Some(&id),
            "retained commands are not executed; publish commands without the retain flag",
        ));
    }
    Ok(Envelope {
        id,
        object,
        message_expiry: None,
    })
}

/// When the command expires: the earlier of its optional `expires_at` and
/// its MQTT 5 Message Expiry Interval, which are honoured alike; `expired`
/// when that has passed.
pub fn expires_at(
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CommandResult> {
    let id = envelope.id.as_str();
    let expires_at = match envelope.object.get("expires_at") {
        None => None,
        Some(Value::String(text)) => match DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(e) => {
                return Err(rejected(
                    Some(id),
                    format!("expires_at: not an RFC 3339 time: {e}"),
                ))
            }
        },
        Some(_) => return Err(rejected(Some(id), "expires_at: must be an RFC 3339 string")),
    };
    if expires_at.is_some_and(|at| at <= now) {
        return Err(CommandResult::error(
            Some(id),
            Status::Expired,
            "expires_at has passed; the command was not executed",
        ));
    }
    if envelope.message_expiry.is_some_and(|at| at <= now) {
        return Err(CommandResult::error(
            Some(id),
            Status::Expired,
            "the MQTT message expiry interval passed before the gateway took the command up; it was not executed",
        ));
    }
    Ok(match (expires_at, envelope.message_expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// `expires_at`, the command name and its arguments (validated and encoded
/// by the profile).
pub fn body(
    profile: &Profile,
    command: &str,
    envelope: Envelope,
    now: DateTime<Utc>,
) -> Result<Parsed, CommandResult> {
    let expires_at = expires_at(&envelope, now)?;
    let Envelope { id, mut object, .. } = envelope;
    let Some(def) = profile.command(command) else {
        let known: Vec<&str> = profile.commands().iter().map(|c| c.name.as_str()).collect();
        return Err(rejected(
            Some(&id),
            format!(
                "unknown command `{command}`; this machine accepts: {}",
                known.join(", ")
            ),
        ));
    };
    let body = def
        .encode(&object)
        .map_err(|e| rejected(Some(&id), e.to_string()))?;
    object.remove("id");
    object.remove("expires_at");
    Ok(Parsed {
        def: def.clone(),
        body,
        args: object,
        expires_at,
        job: crate::queue::Job::Single,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    fn with_expiry(payload: Value, message_expiry: Option<DateTime<Utc>>) -> Envelope {
        let bytes = payload.to_string().into_bytes();
        let envelope = envelope(&bytes, false, 1024).expect("a valid envelope");
        Envelope {
            message_expiry,
            ..envelope
        }
    }

    #[test]
    fn the_earlier_of_expires_at_and_the_message_expiry_counts() {
        let now = Utc::now();
        let at = now + Duration::seconds(60);
        let text = at.to_rfc3339();
        let soon = now + Duration::seconds(5);
        let e = with_expiry(json!({"id": "a", "expires_at": text}), Some(soon));
        assert_eq!(expires_at(&e, now).unwrap(), Some(soon));
        let later = now + Duration::seconds(600);
        let e = with_expiry(json!({"id": "a", "expires_at": text}), Some(later));
        let got = expires_at(&e, now).unwrap().unwrap();
        assert_eq!(got.timestamp(), at.timestamp());
        let e = with_expiry(json!({"id": "a"}), Some(soon));
        assert_eq!(expires_at(&e, now).unwrap(), Some(soon));
        let e = with_expiry(json!({"id": "a"}), None);
        assert_eq!(expires_at(&e, now).unwrap(), None);
    }

    #[test]
    fn a_passed_message_expiry_is_expired_like_expires_at() {
        let now = Utc::now();
        let e = with_expiry(json!({"id": "a"}), Some(now - Duration::seconds(1)));
        let result = expires_at(&e, now).unwrap_err();
        assert_eq!(result.status, Status::Expired);
        assert!(result
            .error
            .unwrap()
            .contains("MQTT message expiry interval"));
    }
}
