//! Command result payloads (DESIGN §4 "Commands").

use serde_json::{Map, Value};

use crate::config::{Config, TopicVars, TopicsConfig};
use crate::store::{ItemClass, Op, OutItem, ReplyTo};

/// The `status` of a command result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Rejected,
    Failed,
    Timeout,
    Expired,
    Duplicate,
    Offline,
    Busy,
    /// A batch's progress report (not final).
    Running,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Expired => "expired",
            Status::Duplicate => "duplicate",
            Status::Offline => "offline",
            Status::Busy => "busy",
            Status::Running => "running",
            Status::Cancelled => "cancelled",
        }
    }
}

/// A result being built; `to_json` renders the payload published on
/// `.../cmd/{command}/result`.
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub id: Option<String>,
    pub status: Status,
    pub error: Option<String>,
    pub response: Option<Map<String, Value>>,
    /// Further keys: a duplicate's `original`; a batch's `done`, `total`,
    /// `last`, `failed_step(s)`.
    /// Boxed: results travel in `Err`s and should stay small.
    extra: Option<Box<Map<String, Value>>>,
}

impl CommandResult {
    pub fn new(id: Option<&str>, status: Status) -> CommandResult {
        CommandResult {
            id: id.map(str::to_owned),
            status,
            error: None,
            response: None,
            extra: None,
        }
    }

    pub fn ok(id: &str) -> CommandResult {
        CommandResult::new(Some(id), Status::Ok)
    }

    /// Every result that is not `ok` carries an `error` a person can act on.
    pub fn error(id: Option<&str>, status: Status, error: impl Into<String>) -> CommandResult {
        CommandResult {
            error: Some(error.into()),
            ..CommandResult::new(id, status)
        }
    }

    /// Sets a further key of the payload (a batch's `done`, `total`, ...).
    pub fn set(&mut self, key: &str, value: Value) {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
    }

    pub fn with_response(mut self, response: Map<String, Value>) -> CommandResult {
        self.response = Some(response);
        self
    }

    /// The outbox appends that publish this result (QoS 1, not retained)
    /// on `machine`'s result topic for `command` and, for an MQTT 5 command
    /// with a Response Topic, there too with its Correlation Data; also
    /// returns the JSON.
    pub fn publication(
        &self,
        config: &Config,
        machine: &str,
        command: &str,
        reply: Option<&ReplyTo>,
    ) -> (Vec<Op>, String) {
        let json = self.to_json();
        let item = |topic: String, payload: Vec<u8>, correlation: Option<Vec<u8>>| Op::Append {
            session: machine.to_owned(),
            item: OutItem {
                topic,
                payload,
                qos: 1,
                retain: false,
                class: ItemClass::Result,
                correlation,
            },
        };
        let (topic, payload) = match &config.interface {
            Some(interface) => {
                if !interface.publishes_result(self.status == Status::Running) {
                    return (Vec::new(), json);
                }
                let vars = crate::interface::Vars {
                    prefix: &config.mqtt.topic_prefix,
                    machine,
                    gateway: &config.gateway.id,
                };
                let object = serde_json::from_str(&json).unwrap_or_default();
                let request = reply.and_then(|r| r.request.as_ref());
                // A failed program is logged and counted; nothing to send.
                let Some(rendered) = interface.result(vars, command, request, object) else {
                    return (Vec::new(), json);
                };
                (rendered.topic, rendered.payload)
            }
            None => {
                let topic = TopicsConfig::render(
                    &config.topics.result,
                    &TopicVars {
                        prefix: &config.mqtt.topic_prefix,
                        machine,
                        gateway: &config.gateway.id,
                        name: "",
                        command,
                    },
                );
                (topic, json.clone().into_bytes())
            }
        };
        let mut ops = vec![item(topic, payload.clone(), None)];
        if let Some(reply) = reply.filter(|r| !r.topic.is_empty()) {
            ops.push(item(
                reply.topic.clone(),
                payload,
                reply.correlation.clone(),
            ));
        }
        (ops, json)
    }

    pub fn to_json(&self) -> String {
        let mut object = Map::new();
        object.insert(
            "id".into(),
            self.id.clone().map(Value::String).unwrap_or(Value::Null),
        );
        object.insert("status".into(), Value::from(self.status.as_str()));
        object.insert("ts".into(), Value::from(crate::queue::timestamp_now()));
        if let Some(error) = &self.error {
            object.insert("error".into(), Value::from(error.clone()));
        }
        if let Some(response) = &self.response {
            object.insert("response".into(), Value::Object(response.clone()));
        }
        for (key, value) in self.extra.iter().flat_map(|extra| extra.iter()) {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_result_has_id_status_ts() {
        let v: Value = serde_json::from_str(&CommandResult::ok("ord-1").to_json()).unwrap();
        assert_eq!(v["id"], "ord-1");
        assert_eq!(v["status"], "ok");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("error").is_none());
    }

    #[test]
    fn unparseable_command_gets_null_id() {
        let r = CommandResult::error(None, Status::Rejected, "payload is not JSON");
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["status"], "rejected");
        assert_eq!(v["error"], "payload is not JSON");
    }
}
