//! The `topics:` section: topic templates and their expansion.

use serde::Deserialize;

use super::error::Invalid;
use super::locate::{Issues, YamlPath};

/// Topic templates. Placeholders: `{prefix}` (mqtt.topic_prefix),
/// `{machine}` (device id), `{gateway}` (gateway id), `{name}` (telemetry or
/// event name), `{command}` (command name).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicsSection {
    /// Machine availability, retained: `online` / `offline`.
    #[serde(default)]
    status: Option<String>,
    /// Telemetry messages; needs `{machine}` and `{name}`.
    #[serde(default)]
    telemetry: Option<String>,
    /// Events; needs `{machine}` and `{name}`.
    #[serde(default)]
    event: Option<String>,
    /// Commands to a machine; needs `{machine}` and `{command}` as a whole level.
    #[serde(default)]
    command: Option<String>,
    /// Command results; needs `{machine}` and `{command}`.
    #[serde(default)]
    result: Option<String>,
    /// The gateway's own availability, retained.
    #[serde(default)]
    gateway_status: Option<String>,
    /// The gateway's health counters, retained.
    #[serde(default)]
    health: Option<String>,
}

/// Topic templates, checked at load; expand with [`TopicsConfig::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsConfig {
    pub status: String,
    pub telemetry: String,
    pub event: String,
    pub command: String,
    pub result: String,
    pub gateway_status: String,
    pub health: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            status: "{prefix}/{machine}/status".into(),
            telemetry: "{prefix}/{machine}/telemetry/{name}".into(),
            event: "{prefix}/{machine}/event/{name}".into(),
            command: "{prefix}/{machine}/cmd/{command}".into(),
            result: "{prefix}/{machine}/cmd/{command}/result".into(),
            gateway_status: "{prefix}/gateways/{gateway}/status".into(),
            health: "{prefix}/gateways/{gateway}/health".into(),
        }
    }
}

/// Values for the placeholders; unused ones may be empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicVars<'a> {
    pub prefix: &'a str,
    pub machine: &'a str,
    pub gateway: &'a str,
    pub name: &'a str,
    pub command: &'a str,
}

impl TopicsConfig {
    /// Expands the placeholders of `template`. Unknown placeholders cannot
    /// occur in a loaded config; if passed anyway they are left as written.
    pub fn render(template: &str, vars: &TopicVars) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            match &after[..close] {
                "prefix" => out.push_str(vars.prefix),
                "machine" => out.push_str(vars.machine),
                "gateway" => out.push_str(vars.gateway),
                "name" => out.push_str(vars.name),
                "command" => out.push_str(vars.command),
                _ => out.push_str(&rest[open..open + close + 2]),
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The subscription filter for every command of one machine.
    pub fn command_filter(&self, prefix: &str, machine: &str, gateway: &str) -> String {
        let vars = TopicVars {
            prefix,
            machine,
            gateway,
            name: "",
            command: "+",
        };
        Self::render(&self.command, &vars)
    }

    /// The command name a topic addresses, if it is one of this machine's
    /// command topics.
    pub fn command_of(
        &self,
        topic: &str,
        prefix: &str,
        machine: &str,
        gateway: &str,
    ) -> Option<String> {
        let filter = self.command_filter(prefix, machine, gateway);
        let mut filter_levels = filter.split('/');
        let mut topic_levels = topic.split('/');
        let mut command = None;
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (None, None) => return command,
                (Some("+"), Some(level)) if !level.is_empty() => {
                    command = Some(level.to_owned());
                }
                (Some(f), Some(t)) if f == t => {}
                _ => return None,
            }
        }
    }
}

impl TopicsSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> TopicsConfig {
        let d = TopicsConfig::default();
        let before = issues.0.len();
        let per_machine = ["prefix", "machine", "gateway"];
        let named = ["prefix", "machine", "gateway", "name"];
        let commands = ["prefix", "machine", "gateway", "command"];
        let gateway = ["prefix", "gateway"];
        let mut take = |key: &'static str,
                        v: Option<String>,
                        default: String,
                        allowed: &[&str],
                        req: &[&'static str]| {
            let v = v.unwrap_or(default);
            check_template(issues, &at.key(key), &v, allowed, req);
            v
        };
        let t = TopicsConfig {
            status: take("status", self.status, d.status, &per_machine, &["machine"]),
            telemetry: take(
                "telemetry",
                self.telemetry,
                d.telemetry,
                &named,
                &["machine", "name"],
            ),
            event: take("event", self.event, d.event, &named, &["machine", "name"]),
            command: take(
                "command",
                self.command,
                d.command,
                &commands,
                &["machine", "command"],
            ),
            result: take(
                "result",
                self.result,
                d.result,
                &commands,
                &["machine", "command"],
            ),
            gateway_status: take(
                "gateway_status",
                self.gateway_status,
                d.gateway_status,
                &gateway,
                &[],
            ),
            health: take("health", self.health, d.health, &gateway, &[]),
        };
        // The checks below only make sense on templates that are otherwise fine.
        if issues.0.len() != before {
            return t;
        }
        if !command_is_whole_level(&t.command) {
            issues.add(&at.key("command"), Invalid::CommandLevel);
            return t;
        }
        // A gateway subscribed to its own results would take them for commands.
        let sample = TopicVars {
            prefix: "p",
            machine: "m",
            gateway: "g",
            name: "",
            command: "c",
        };
        if t.command_of(&TopicsConfig::render(&t.result, &sample), "p", "m", "g")
            .is_some()
        {
            issues.add(&at.key("result"), Invalid::ResultIsCommand);
        }
        t
    }
}

fn command_is_whole_level(template: &str) -> bool {
    template.split('/').any(|level| level == "{command}")
}

/// Checks a template's placeholders: only `allowed` ones, all of `required`.
pub(crate) fn check_template(
    issues: &mut Issues,
    at: &YamlPath,
    template: &str,
    allowed: &[&str],
    required: &[&'static str],
) {
    if template.is_empty() {
        issues.add(at, Invalid::Empty);
        return;
    }
    let mut found = Vec::new();
    let mut rest = template;
    loop {
        let (literal, tail) = match rest.find('{') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(w) = literal.chars().find(|c| matches!(c, '+' | '#')) {
            issues.add(at, Invalid::Wildcard(w));
            return;
        }
        let Some(tail) = tail else { break };
        let Some(close) = tail.find('}') else {
            issues.add(at, Invalid::Unclosed);
            return;
        };
        let name = &tail[..close];
        if !allowed.contains(&name) {
            issues.add(at, Invalid::placeholder(name, allowed));
            return;
        }
        found.push(name);
        rest = &tail[close + 1..];
    }
    for r in required {
        if !found.contains(r) {
            issues.add(at, Invalid::MissingPlaceholder(r));
        }
    }
}

/// The prefix is pasted into every topic, so it must be a clean topic part.
pub(crate) fn check_prefix(issues: &mut Issues, at: &YamlPath, prefix: &str) {
    if prefix.is_empty() {
        issues.add(at, Invalid::Empty);
    } else if let Some(w) = prefix.chars().find(|c| matches!(c, '+' | '#')) {
        issues.add(at, Invalid::Wildcard(w));
    } else if prefix.starts_with('/') || prefix.ends_with('/') {
        issues.add(at, Invalid::Slash);
    }
}
