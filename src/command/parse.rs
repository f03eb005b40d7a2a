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
    pub job: crate::device::Job,
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
    Ok(Envelope { id, object })
}

/// The optional `expires_at`; `expired` when it has passed.
pub fn expires_at(
    id: &str,
    object: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CommandResult> {
    let expires_at = match object.get("expires_at") {
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
    Ok(expires_at)
}

/// `expires_at`, the command name and its arguments (validated and encoded
/// by the profile).
pub fn body(
    profile: &Profile,
    command: &str,
    envelope: Envelope,
    now: DateTime<Utc>,
) -> Result<Parsed, CommandResult> {
    let Envelope { id, mut object } = envelope;
    let expires_at = expires_at(&id, &object, now)?;
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
        job: crate::device::Job::Single,
    })
}
