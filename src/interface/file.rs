//! The interface file as written, and its loading: every problem is a
//! [`ConfigError`] with the interface file's line and column.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{Commands, Interface, Program, PublishEntry, Results, StatusTemplates};
use crate::config::{locate_key, parse_error, ConfigError, ConfigErrors, YamlPath};

/// An interface file (DESIGN §7).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceFile {
    /// For logs and health.
    name: String,
    /// The machine's availability, and its will.
    status: StatusSection,
    /// Messages from the machine; the first matching entry wins, messages
    /// no entry matches are not published.
    #[serde(default)]
    publish: Vec<PublishSection>,
    /// Commands from the business side; without it the machines take none.
    #[serde(default)]
    commands: Option<CommandsSection>,
    /// Command results; needed with `commands`.
    #[serde(default)]
    results: Option<ResultsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusSection {
    topic: String,
    /// Literal payloads; `offline` may use `{reason}` and `{since}`.
    online: String,
    offline: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSection {
    /// Message names, or `"*"` for every message.
    #[serde(rename = "match")]
    matches: Names,
    topic: String,
    /// jq program: the payload.
    payload: String,
    /// Default: the message's own.
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Names {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsSection {
    /// Topic filters, per machine.
    subscribe: Vec<String>,
    /// jq program: `{id, command, args, expires_at?}` or `null`.
    parse: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsSection {
    topic: String,
    /// jq program: the reply payload.
    payload: String,
    /// Leave out `running` reports of batches.
    #[serde(default)]
    only_final: bool,
}

const BASE: &[&str] = &["prefix", "machine", "gateway"];

/// Reads, parses and compiles an interface file; `machines` are the ids
/// its error counters are kept for.
pub fn load(path: &Path, machines: &[&str]) -> Result<Interface, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the interface file: {e}"),
        }])
    })?;
    let file: InterfaceFile = serde_yaml::from_str(&text).map_err(|e| parse_error(e, path))?;
    let mut errors = Vec::new();
    let mut at = |at: &YamlPath, message: String| {
        let (line, column) = locate_key(&text, at).unwrap_or((0, 0));
        errors.push(ConfigError {
            path: path.to_owned(),
            line,
            column,
            message: format!("{at}: {message}"),
        });
    };
    let root = YamlPath::default();
    let status_at = root.key("status");
    check_template(&mut at, &status_at.key("topic"), &file.status.topic, BASE);
    let mut publish = Vec::new();
    for (i, entry) in file.publish.into_iter().enumerate() {
        let here = root.key("publish").index(i);
        check_template(
            &mut at,
            &here.key("topic"),
            &entry.topic,
            &[BASE, &["kind", "name"]].concat(),
        );
        if entry.qos.is_some_and(|q| q > 2) {
            at(&here.key("qos"), "must be 0, 1 or 2".into());
        }
        let names = match entry.matches {
            Names::One(n) if n == "*" => None,
            Names::One(n) => Some(vec![n]),
            Names::Many(v) if v.iter().any(|n| n == "*") => None,
            Names::Many(v) => Some(v),
        };
        if let Some(payload) = compile(&mut at, &here.key("payload"), &entry.payload) {
            publish.push(PublishEntry {
                names,
                topic: entry.topic,
                payload,
                qos: entry.qos,
                retain: entry.retain,
            });
        }
    }
    let commands = file.commands.and_then(|c| {
        let here = root.key("commands");
        for (i, filter) in c.subscribe.iter().enumerate() {
            check_template(&mut at, &here.key("subscribe").index(i), filter, BASE);
        }
        let parse = compile(&mut at, &here.key("parse"), &c.parse)?;
        Some(Commands {
            subscribe: c.subscribe,
            parse,
        })
    });
    let results = match file.results {
        Some(r) => {
            let here = root.key("results");
            check_template(
                &mut at,
                &here.key("topic"),
                &r.topic,
                &[BASE, &["command", "id", "topic"]].concat(),
            );
            compile(&mut at, &here.key("payload"), &r.payload).map(|payload| Results {
                topic: r.topic,
                payload,
                only_final: r.only_final,
            })
        }
        None => {
            if commands.is_some() {
                at(
                    &root.key("commands"),
                    "`commands` needs `results`: every command gets a reply".into(),
                );
            }
            None
        }
    };
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(Interface {
        path: path.to_owned(),
        name: file.name,
        status: StatusTemplates {
            topic: file.status.topic,
            online: file.status.online,
            offline: file.status.offline,
        },
        publish,
        commands,
        results,
        errors: machines
            .iter()
            .map(|m| (m.to_string(), Arc::default()))
            .collect::<HashMap<_, _>>(),
    })
}

/// Compiles a program; an error names the program's key and the place in
/// the program (`character N` counts from 1).
fn compile(at: &mut impl FnMut(&YamlPath, String), here: &YamlPath, code: &str) -> Option<Program> {
    match Program::compile(code) {
        Ok(program) => Some(program),
        Err(e) => {
            let near: String = code[e.offset.min(code.len())..].chars().take(20).collect();
            at(
                here,
                format!(
                    "jq program does not compile: {} at character {} (near `{near}`)",
                    e.message,
                    code[..e.offset.min(code.len())].chars().count() + 1
                ),
            );
            None
        }
    }
}

/// A template may use only `allowed` placeholders.
fn check_template(
    at: &mut impl FnMut(&YamlPath, String),
    here: &YamlPath,
    template: &str,
    allowed: &[&str],
) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            at(here, "`{` without a closing `}`".into());
            return;
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            at(
                here,
                format!(
                    "unknown placeholder `{{{name}}}` here; allowed: {}",
                    list.join(", ")
                ),
            );
        }
        rest = &after[close + 1..];
    }
}
