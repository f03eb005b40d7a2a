//! Smaller sections: gateway identity, store, status payloads, health, commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::Invalid;
use super::locate::{Issues, YamlPath};
use super::value::{check_id, duration, size, RawSize};
use crate::store::DEFAULT_MAX_OUTBOX_BYTES;

/// This gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySection {
    /// Gateway id used in its topics and as its MQTT client id: 1 to 64
    /// letters, digits, `_` or `-`.
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub id: String,
}

impl GatewaySection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> GatewayConfig {
        check_id(issues, &at.key("id"), &self.id);
        GatewayConfig { id: self.id }
    }
}

/// Durable state: outbox, command ids, sequence numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSection {
    /// Folder of the state database; relative to the config file's folder.
    path: PathBuf,
    /// Size cap of the outbox, where messages wait while the broker is
    /// unreachable: `64MiB` (the default), `512KiB`, `1GiB` or a number of
    /// bytes; at least `64KiB`. Past it the oldest telemetry is dropped first,
    /// then command results, events last; every drop is counted and logged.
    #[serde(default)]
    max_outbox: Option<RawSize>,
}

/// Smallest `store.max_outbox`: below it a burst of events could push out
/// everything else before the broker had a chance to take it.
const MIN_MAX_OUTBOX: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Size cap of the outbox in bytes (`StoreOptions::max_bytes`).
    pub max_outbox: u64,
}

impl StoreSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath, dir: &Path) -> StoreConfig {
        if self.path.as_os_str().is_empty() {
            issues.add(&at.key("path"), Invalid::Empty);
        }
        let max_at = at.key("max_outbox");
        let max_outbox = size(
            issues,
            &max_at,
            self.max_outbox.as_ref(),
            DEFAULT_MAX_OUTBOX_BYTES,
        );
        if max_outbox < MIN_MAX_OUTBOX {
            issues.add(&max_at, Invalid::TooSmall("64KiB"));
        }
        StoreConfig {
            path: dir.join(self.path),
            max_outbox,
        }
    }
}

/// Payloads of the machine and gateway status topics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusSection {
    /// Published while the link is up.
    #[serde(default)]
    online: Option<String>,
    /// Published when the link is lost, on shutdown, and as the will; may
    /// use `{reason}` and `{since}` (RFC 3339 time the link was lost).
    #[serde(default)]
    offline: Option<String>,
    /// How long a lost link must stay lost before `offline` is published.
    #[serde(default)]
    debounce: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPayloads {
    pub online: String,
    pub offline: String,
    pub debounce: Duration,
}

impl StatusPayloads {
    /// The offline payload with its placeholders filled in.
    pub fn render_offline(&self, reason: &str, since: &str) -> String {
        self.offline
            .replace("{reason}", reason)
            .replace("{since}", since)
    }
}

impl StatusSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> StatusPayloads {
        let online = self.online.unwrap_or_else(|| "online".into());
        let offline = self.offline.unwrap_or_else(|| "offline".into());
        check_payload(issues, &at.key("online"), &online, &[]);
        check_payload(issues, &at.key("offline"), &offline, &["reason", "since"]);
        StatusPayloads {
            online,
            offline,
            debounce: duration(
                issues,
                &at.key("debounce"),
                self.debounce.as_deref(),
                Duration::ZERO,
            ),
        }
    }
}

/// Payloads may be JSON, so only `{word}` counts as a placeholder; `{"a":1}`
/// does not.
fn check_payload(issues: &mut Issues, at: &YamlPath, payload: &str, allowed: &[&str]) {
    if payload.is_empty() {
        issues.add(at, Invalid::EmptyPayload);
        return;
    }
    let mut rest = payload;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let word_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if word_len > 0 && after[word_len..].starts_with('}') {
            let name = &after[..word_len];
            if !allowed.contains(&name) {
                issues.add(at, Invalid::placeholder(name, allowed));
                return;
            }
        }
        rest = after;
    }
}

/// The gateway's health report.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthSection {
    /// How often the retained health report is published (at least 1s).
    #[serde(default)]
    interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
}

impl HealthSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> HealthConfig {
        let interval = duration(
            issues,
            &at.key("interval"),
            self.interval.as_deref(),
            Duration::from_secs(30),
        );
        if self.interval.is_some() && interval < Duration::from_secs(1) {
            issues.add(&at.key("interval"), Invalid::TooShort("1s"));
        }
        HealthConfig { interval }
    }
}

/// Limits of command handling.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandsSection {
    /// Commands that may wait per machine; more get a `busy` result.
    #[serde(default)]
    queue_limit: Option<usize>,
    /// How many recent command ids per machine are remembered for duplicates.
    #[serde(default)]
    id_window: Option<usize>,
    /// How long a command id is remembered for duplicates.
    #[serde(default)]
    id_ttl: Option<String>,
    /// Largest command payload in bytes; larger ones are rejected unread.
    #[serde(default)]
    max_payload: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsConfig {
    pub queue_limit: usize,
    pub id_window: usize,
    pub id_ttl: Duration,
    pub max_payload: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            queue_limit: 100,
            id_window: 10_000,
            id_ttl: Duration::from_secs(7 * 24 * 3600),
            max_payload: 64 * 1024,
        }
    }
}

impl CommandsSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> CommandsConfig {
        let d = CommandsConfig::default();
        let mut count = |key: &'static str, v: Option<usize>, default: usize| {
            if v == Some(0) {
                issues.add(&at.key(key), Invalid::Zero);
            }
            v.unwrap_or(default)
        };
        let queue_limit = count("queue_limit", self.queue_limit, d.queue_limit);
        let id_window = count("id_window", self.id_window, d.id_window);
        let max_payload = count("max_payload", self.max_payload, d.max_payload);
        let id_ttl = duration(issues, &at.key("id_ttl"), self.id_ttl.as_deref(), d.id_ttl);
        if self.id_ttl.is_some() && id_ttl.is_zero() {
            issues.add(&at.key("id_ttl"), Invalid::Zero);
        }
        CommandsConfig {
            queue_limit,
            id_window,
            id_ttl,
            max_payload,
        }
    }
}
