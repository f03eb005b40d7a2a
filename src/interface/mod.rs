//! The business interface (DESIGN §7): an interface file replaces the
//! machines' topics and payloads of §4 with those of a native machine's own
//! MQTT interface, each payload computed by a jq program.
//!
//! Loaded and compiled once with the config; the device core renders its
//! messages through [`Interface::publication`], the command router turns
//! publishes into commands with [`Interface::parse`], and results go out
//! through [`Interface::result`]. A program that fails for one message is
//! logged and counted per machine (`interface_errors`) and never stops the
//! others.

mod file;
mod program;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

pub use file::load;
pub use program::{CompileError, Program};

/// A loaded interface file.
#[derive(Debug)]
pub struct Interface {
    pub path: PathBuf,
    pub name: String,
    status: StatusTemplates,
    publish: Vec<PublishEntry>,
    commands: Option<Commands>,
    results: Option<Results>,
    /// `interface_errors` per machine id; fixed at load, so no lock.
    errors: HashMap<String, Arc<AtomicU64>>,
}

#[derive(Debug)]
struct StatusTemplates {
    topic: String,
    online: String,
    offline: String,
}

#[derive(Debug)]
struct PublishEntry {
    /// `None`: every message (`"*"`).
    names: Option<Vec<String>>,
    topic: String,
    payload: Program,
    qos: Option<u8>,
    retain: Option<bool>,
}

#[derive(Debug)]
struct Commands {
    subscribe: Vec<String>,
    parse: Program,
}

#[derive(Debug)]
struct Results {
    topic: String,
    payload: Program,
    only_final: bool,
}

/// The placeholders of one machine's topics.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub prefix: &'a str,
    pub machine: &'a str,
    pub gateway: &'a str,
}

/// A message rendered through the interface, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// A message of the machine, as `publish` programs see it.
pub struct Message<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub qos: u8,
    pub retain: bool,
    pub seq: Option<u64>,
    pub ts: &'a str,
    pub data: &'a Map<String, Value>,
}

/// A command as it arrived, for `results` (`request`, `{topic}`).
pub use crate::store::CommandRequest as Request;

impl Interface {
    /// The counter of failed programs for `machine` (0 for an unknown one).
    pub fn error_counter(&self, machine: &str) -> Arc<AtomicU64> {
        self.errors.get(machine).cloned().unwrap_or_default()
    }

    fn count_error(&self, machine: &str, what: &str, error: &str) {
        tracing::warn!(interface = %self.name, machine, what, error, "interface program failed; nothing published for this message");
        if let Some(counter) = self.errors.get(machine) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status_topic(&self, vars: Vars) -> String {
        render(&self.status.topic, vars, &[])
    }

    /// The `online` and `offline` payload templates.
    pub fn status_templates(&self) -> (&str, &str) {
        (&self.status.online, &self.status.offline)
    }

    /// Renders a machine message with the first entry that matches it;
    /// `None` when no entry does or its program failed (logged, counted).
    pub fn publication(&self, vars: Vars, message: &Message) -> Option<Rendered> {
        let entry = self.publish.iter().find(|e| {
            e.names
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == message.name))
        })?;
        let mut input = json!({
            "machine": vars.machine,
            "gateway": vars.gateway,
            "kind": message.kind,
            "name": message.name,
            "ts": message.ts,
            "ts_ms": ts_ms(message.ts),
            "data": message.data,
        });
        if let Some(seq) = message.seq {
            input["seq"] = Value::from(seq);
        }
        let payload = match entry.payload.run(input) {
            Ok(value) => payload_bytes(value),
            Err(e) => {
                self.count_error(vars.machine, message.name, &e);
                return None;
            }
        };
        let topic = render(
            &entry.topic,
            vars,
            &[("kind", message.kind), ("name", message.name)],
        );
        Some(Rendered {
            topic,
            payload,
            qos: entry.qos.unwrap_or(message.qos),
            retain: entry.retain.unwrap_or(message.retain),
        })
    }

    /// The topic filters to subscribe for `machine`'s commands.
    pub fn subscriptions(&self, vars: Vars) -> Vec<String> {
        self.commands
            .iter()
            .flat_map(|c| c.subscribe.iter())
            .map(|filter| render(filter, vars, &[]))
            .collect()
    }

    /// Whether `topic` is one of `machine`'s command topics.
    pub fn is_command_topic(&self, vars: Vars, topic: &str) -> bool {
        self.subscriptions(vars)
            .iter()
            .any(|filter| topic_matches(filter, topic))
    }

    /// Runs `commands.parse`: `Ok(None)` when the message is not a command,
    /// `Ok(Some(object))` with `id`, `command`, `args` and maybe
    /// `expires_at`, `Err` with the program's message (a `rejected` result).
    pub fn parse(
        &self,
        machine: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Value>, String> {
        let Some(commands) = &self.commands else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(payload);
        let input = json!({
            "machine": machine,
            "topic": topic,
            "levels": topic.split('/').collect::<Vec<_>>(),
            "payload": serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null),
            "text": text,
        });
        match commands.parse.run(input)? {
            Value::Null => Ok(None),
            Value::Object(o) => Ok(Some(Value::Object(o))),
            other => Err(format!(
                "commands.parse gave {other}; it must give an object {{id, command, args}} or null"
            )),
        }
    }

    /// Under MQTT 3.1.1 (no no-local) the gateway gets its own replies back
    /// when `results.topic` falls under a `commands.subscribe` filter; its
    /// `parse` program must then return `null` for them (DESIGN §7). Tried
    /// with a sample machine and command: a warning for `check` and `run`.
    pub fn own_replies_warning(&self) -> Option<String> {
        let commands = self.commands.as_ref()?;
        let results = self.results.as_ref()?;
        let vars = Vars {
            prefix: "p",
            machine: "m",
            gateway: "g",
        };
        let filters = self.subscriptions(vars);
        // A command topic each filter admits, `+`/`#` taken as one level.
        let request = filters.first()?.replace(['+', '#'], "c");
        let reply = render(
            &results.topic,
            vars,
            &[("command", "c"), ("id", "i"), ("topic", &request)],
        );
        filters.iter().any(|f| topic_matches(f, &reply)).then(|| {
            format!(
                "{}: results.topic `{}` can match commands.subscribe `{}`: under MQTT 3.1.1 \
                     the gateway receives its own replies, so commands.parse must return null \
                     for them (MQTT 5 avoids this with no-local)",
                self.path.display(),
                results.topic,
                commands.subscribe.join("`, `")
            )
        })
    }

    /// Whether results are published at all (`results:` is set) and a
    /// batch's `running` reports among them.
    pub fn publishes_result(&self, running: bool) -> bool {
        self.results
            .as_ref()
            .is_some_and(|r| !(running && r.only_final))
    }

    /// Renders a result: `result` is the result object of §4.
    pub fn result(
        &self,
        vars: Vars,
        command: &str,
        request: Option<&Request>,
        mut result: Map<String, Value>,
    ) -> Option<Rendered> {
        let results = self.results.as_ref()?;
        let id = result
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ts = result
            .get("ts")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        result.insert("ts_ms".into(), ts_ms(&ts));
        result.insert("machine".into(), Value::from(vars.machine));
        result.insert("command".into(), Value::from(command));
        result.insert(
            "request".into(),
            request.map_or(Value::Null, Request::to_json),
        );
        let payload = match results.payload.run(Value::Object(result)) {
            Ok(value) => payload_bytes(value),
            Err(e) => {
                self.count_error(vars.machine, "result", &e);
                return None;
            }
        };
        let topic = render(
            &results.topic,
            vars,
            &[
                ("command", command),
                ("id", &id),
                ("topic", request.map_or("", |r| r.topic.as_str())),
            ],
        );
        Some(Rendered {
            topic,
            payload,
            qos: 1,
            retain: false,
        })
    }
}

/// An object or array is sent as JSON, a string as is (DESIGN §7).
fn payload_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

fn ts_ms(ts: &str) -> Value {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| Value::from(t.timestamp_millis()))
        .unwrap_or(Value::Null)
}

/// Expands `{prefix}`, `{machine}`, `{gateway}` and the `extra` ones; the
/// file's templates were checked at load, so nothing else occurs.
fn render(template: &str, vars: Vars, extra: &[(&str, &str)]) -> String {
    let mut out = template
        .replace("{prefix}", vars.prefix)
        .replace("{machine}", vars.machine)
        .replace("{gateway}", vars.gateway);
    for (key, value) in extra {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests;
