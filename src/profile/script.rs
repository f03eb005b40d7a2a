//! The simulator's script: the optional `simulator:` section of a profile
//! (played by `sim`; the gateway itself ignores it).
//!
//! ```yaml
//! simulator:
//!   periodic:
//!     - every: 5s
//!       send: selection
//!       values: {selection: 11, price: 150, inventory: 5, capacity: 10, product_id: 1234, paused: false}
//!   on_command:
//!     buy:
//!       - send: dispense
//!         values: {status: dispensing, selection: $selection}
//! ```
//! A string value `$name` takes the command argument `name`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Messages the device sends on its own, each at its own interval.
    #[serde(default)]
    pub periodic: Vec<Periodic>,
    /// Messages the device sends after it acknowledged a command, by command name.
    #[serde(default)]
    pub on_command: BTreeMap<String, Vec<Send>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Periodic {
    #[serde(with = "humantime_serde_compat")]
    pub every: Duration,
    /// A message name of the profile.
    pub send: String,
    /// Its field values (JSON names; enums by name).
    #[serde(default)]
    pub values: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// A message name of the profile.
    pub send: String,
    /// Its field values (JSON names; enums by name).
    #[serde(default)]
    pub values: Map<String, Value>,
}

impl Send {
    /// The values with `$arg` references replaced by the command's arguments.
    pub fn render(&self, args: &Map<String, Value>) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(key, value)| {
                let value = match value.as_str().and_then(|s| s.strip_prefix('$')) {
                    Some(arg) => args.get(arg).cloned().unwrap_or(Value::Null),
                    None => value.clone(),
                };
                (key.clone(), value)
            })
            .collect()
    }
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_command_arguments() {
        let script: Script = serde_yaml::from_str(
            "on_command:\n  buy:\n    - send: dispense\n      values: {status: success, selection: $selection}\n",
        )
        .unwrap();
        let mut args = Map::new();
        args.insert("selection".into(), Value::from(11));
        let values = script.on_command["buy"][0].render(&args);
        assert_eq!(values["selection"], 11);
        assert_eq!(values["status"], "success");
    }
}
