//! The gateway's own commands: `batch` (many profile commands, validated
//! together, run one after the other) and `cancel` (stops a batch).
//! Pure like `parse.rs`: from an envelope to a validated batch or a result.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::parse::{expires_at, rejected, Envelope};
use super::CommandResult;
use crate::profile::Profile;

pub use crate::profile::{BATCH, CANCEL, GATEWAY_COMMANDS};
/// At most this many steps in one batch.
pub const MAX_STEPS: usize = 2000;

pub use crate::queue::Step;

#[derive(Debug, Clone)]
pub struct Batch {
    pub steps: Vec<Step>,
    pub continue_on_error: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// The steps as accepted, stored once so a restart can resume.
    pub steps_json: String,
}

/// `steps`, `on_error` and `expires_at`: one invalid step rejects all.
pub fn parse_batch(
    profile: &Profile,
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Result<Batch, CommandResult> {
    let id = envelope.id.as_str();
    let object = &envelope.object;
    let expires_at = expires_at(envelope, now)?;
    let continue_on_error = match object.get("on_error") {
        None => false,
        Some(Value::String(s)) if s == "stop" => false,
        Some(Value::String(s)) if s == "continue" => true,
        Some(_) => {
            return Err(rejected(
                Some(id),
                "on_error: must be \"stop\" or \"continue\"",
            ))
        }
    };
    let Some(Value::Array(raw)) = object.get("steps") else {
        return Err(rejected(
            Some(id),
            "steps: must be an array of step objects",
        ));
    };
    if raw.is_empty() || raw.len() > MAX_STEPS {
        return Err(rejected(
            Some(id),
            format!(
                "steps: has {} steps; a batch has 1 to {MAX_STEPS}",
                raw.len()
            ),
        ));
    }
    let steps = steps(profile, raw).map_err(|e| rejected(Some(id), e))?;
    Ok(Batch {
        steps,
        continue_on_error,
        expires_at,
        steps_json: Value::Array(raw.clone()).to_string(),
    })
}

/// Validates and encodes the steps (also when a stored batch resumes).
pub fn steps(profile: &Profile, raw: &[Value]) -> Result<Vec<Step>, String> {
    raw.iter()
        .enumerate()
        .map(|(index, value)| step(profile, value).map_err(|e| format!("steps[{index}]{e}")))
        .collect()
}

/// The stored steps JSON back to steps.
pub fn steps_from_json(profile: &Profile, json: &str) -> Result<Vec<Step>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(raw)) => steps(profile, &raw),
        Ok(_) => Err("the stored steps are not an array".into()),
        Err(e) => Err(format!("the stored steps are not JSON: {e}")),
    }
}

/// Errors start after `steps[i]` so they read `steps[3] (set_price): ...`.
fn step(profile: &Profile, value: &Value) -> Result<Step, String> {
    let Value::Object(object) = value else {
        return Err(": must be an object with `cmd`".into());
    };
    let name = match object.get("cmd") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(".cmd: must be a string".into()),
        None => return Err(".cmd: missing".into()),
    };
    if GATEWAY_COMMANDS.contains(&name) {
        return Err(format!(" ({name}): a batch cannot contain `{name}`"));
    }
    let Some(def) = profile.command(name) else {
        return Err(format!(
            " ({name}): unknown command; this machine accepts: {}",
            profile
                .commands()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let mut args = object.clone();
    args.remove("cmd");
    let body = def.encode(&args).map_err(|e| format!(" ({name}): {e}"))?;
    args.remove("id");
    args.remove("expires_at");
    Ok(Step {
        def: def.clone(),
        body,
        args,
    })
}

/// The target of `cancel`.
pub fn parse_cancel(envelope: &Envelope) -> Result<String, CommandResult> {
    match envelope.object.get("target") {
        Some(Value::String(target)) if !target.is_empty() => Ok(target.clone()),
        _ => Err(rejected(
            Some(&envelope.id),
            "target: missing; give the id of the batch to cancel",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile() -> Profile {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
        Profile::resolve(&dir, "vmc-upper-computer").unwrap()
    }

    fn envelope(v: Value) -> Envelope {
        let Value::Object(object) = v else { panic!() };
        Envelope {
            id: "b".into(),
            object,
            message_expiry: None,
        }
    }

    #[test]
    fn a_valid_batch_is_encoded() {
        let e = envelope(json!({"id": "b", "steps": [
            {"cmd": "set_price", "selection": 11, "price": 150},
            {"cmd": "buy", "selection": 12}], "on_error": "continue"}));
        let batch = parse_batch(&profile(), &e, Utc::now()).unwrap();
        assert_eq!(batch.steps.len(), 2);
        assert!(batch.continue_on_error);
        assert_eq!(batch.steps[1].def.name, "buy");
        let again = steps_from_json(&profile(), &batch.steps_json).unwrap();
        assert_eq!(again[0].body, batch.steps[0].body);
    }

    #[test]
    fn one_invalid_step_rejects_the_batch_naming_it() {
        let e = envelope(json!({"id": "b", "steps": [
            {"cmd": "set_price", "selection": 11, "price": 150},
            {"cmd": "set_price", "selection": 11, "price": "x"}]}));
        let error = parse_batch(&profile(), &e, Utc::now())
            .unwrap_err()
            .error
            .unwrap();
        assert!(error.starts_with("steps[1] (set_price): "), "{error}");
        assert!(error.contains("price"), "{error}");
    }

    #[test]
    fn gateway_commands_and_unknown_ones_are_not_steps() {
        for cmd in ["batch", "cancel", "nope"] {
            let e = envelope(json!({"id": "b", "steps": [{"cmd": cmd}]}));
            let error = parse_batch(&profile(), &e, Utc::now())
                .unwrap_err()
                .error
                .unwrap();
            assert!(error.contains(cmd), "{error}");
        }
    }

    #[test]
    fn empty_and_oversized_batches_are_rejected() {
        let many: Vec<Value> = (0..=MAX_STEPS).map(|_| json!({"cmd": "status"})).collect();
        for steps in [json!([]), Value::Array(many), json!("x")] {
            let e = envelope(json!({"id": "b", "steps": steps}));
            assert!(parse_batch(&profile(), &e, Utc::now()).is_err());
        }
    }
}
