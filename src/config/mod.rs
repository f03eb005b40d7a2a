//! The gateway config file: schema, loading, validation, topic templates.
//!
//! Parsing happens in two steps. serde reads the YAML into the `*Section`
//! structs, which deny unknown keys and carry the user-facing documentation of
//! every option; a parse error stops there, with serde's position. The
//! sections are then checked as a whole and turned into the public types, so
//! that every semantic problem of a file is reported in one go, each at the
//! position of the value it is about (see `locate`).

mod device;
mod error;
mod locate;
mod mqtt;
mod ops;
mod topics;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use device::{DeviceConfig, UsbMatch};
pub use error::{ConfigError, ConfigErrors, Invalid};
pub use mqtt::{MqttConfig, MqttUrl, MqttVersion, Scheme, TlsConfig};
pub use ops::{CommandsConfig, GatewayConfig, HealthConfig, StatusPayloads, StoreConfig};
pub use topics::{TopicVars, TopicsConfig};
pub use value::Secret;

pub(crate) use locate::YamlPath;
use locate::{locate, Issues};

use crate::interface::Interface;

/// The config file as written. See DESIGN.md §3.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// This gateway's identity.
    gateway: ops::GatewaySection,
    /// The MQTT broker and session settings.
    mqtt: mqtt::MqttSection,
    /// Topic templates; every one has a default.
    #[serde(default)]
    topics: topics::TopicsSection,
    /// Where durable state lives.
    store: ops::StoreSection,
    /// Folder of device profiles; default `device-profiles` next to the config.
    #[serde(default)]
    profiles_dir: Option<PathBuf>,
    /// The machines on this gateway; at least one.
    devices: Vec<device::DeviceSection>,
    /// Payloads of the status topics.
    #[serde(default)]
    status_payloads: ops::StatusSection,
    /// The gateway's health report.
    #[serde(default)]
    health: ops::HealthSection,
    /// Limits of command handling.
    #[serde(default)]
    commands: ops::CommandsSection,
    /// An interface file (DESIGN §7): the machines speak a native machine's
    /// MQTT interface instead of the topics and payloads of §4. Relative to
    /// the config file's folder.
    #[serde(default)]
    interface: Option<PathBuf>,
}

/// A loaded and validated config. Paths other than device ports are
/// resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    pub mqtt: MqttConfig,
    pub topics: TopicsConfig,
    pub store: StoreConfig,
    pub profiles_dir: PathBuf,
    pub devices: Vec<DeviceConfig>,
    pub status_payloads: StatusPayloads,
    pub health: HealthConfig,
    pub commands: CommandsConfig,
    /// The loaded interface file, if `interface:` names one.
    pub interface: Option<Arc<Interface>>,
    /// Things that work but should be changed; `check` and `run` log them.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, parses and validates the config file at `path`, including
    /// reading `mqtt.password_file`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Config::from_file_text(&text, path)
    }

    /// [`Config::load`] of text already read from `path` (a reload reads
    /// the file once, to hash and to parse the same bytes).
    pub fn from_file_text(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let (mut config, inline_password) = parse(text, path)?;
        if inline_password && world_readable(path) {
            let at = YamlPath::default().key("mqtt").key("password");
            let (line, column) = locate(text, &at).unwrap_or((0, 0));
            config.warnings.push(format!(
                "{}:{line}:{column}: mqtt.password: this file is readable by every user; \
                 move the password to `password_file` or make the file unreadable to others",
                path.display()
            ));
        }
        Ok(config)
    }

    /// Parses and validates config text as if read from `path`, which is
    /// used in errors and to resolve relative paths. Reads `password_file`.
    #[allow(clippy::should_implement_trait)] // needs the path; FromStr cannot take it
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        parse(text, path).map(|(config, _)| config)
    }
}

#[cfg(unix)]
fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn world_readable(_: &Path) -> bool {
    false
}

/// Returns the config and whether it holds a password inline.
fn parse(text: &str, path: &Path) -> Result<(Config, bool), ConfigErrors> {
    if text.trim().is_empty() {
        // serde would say "missing field `gateway`", which hides the real cause.
        return Err(ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: "the config file is empty".into(),
        }]));
    }
    let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| parse_error(e, path))?;
    let inline_password = file.mqtt.has_inline_password();
    let dir = path.parent().unwrap_or(Path::new("")).to_owned();
    let root = YamlPath::default();
    let mut issues = Issues::default();

    let gateway = file.gateway.validate(&mut issues, &root.key("gateway"));
    let mqtt = file.mqtt.validate(&mut issues, &root.key("mqtt"), &dir);
    let topics = file.topics.validate(&mut issues, &root.key("topics"));
    let store = file.store.validate(&mut issues, &root.key("store"), &dir);
    let profiles_dir = dir.join(file.profiles_dir.unwrap_or("device-profiles".into()));
    let devices_at = root.key("devices");
    if file.devices.is_empty() {
        issues.add(&devices_at, Invalid::NoDevices);
    }
    let devices: Vec<DeviceConfig> = file
        .devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.validate(&mut issues, &devices_at.index(i)))
        .collect();
    check_devices(&mut issues, &devices_at, &devices, &mqtt, &gateway);
    let status_payloads = file
        .status_payloads
        .validate(&mut issues, &root.key("status_payloads"));
    let health = file.health.validate(&mut issues, &root.key("health"));
    let commands = file.commands.validate(&mut issues, &root.key("commands"));

    if !issues.0.is_empty() {
        return Err(located(issues, text, path));
    }
    let interface = match file.interface {
        Some(file) => {
            let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
            Some(Arc::new(crate::interface::load(&dir.join(file), &ids)?))
        }
        None => None,
    };
    let mut config = Config {
        path: path.to_owned(),
        gateway,
        mqtt,
        topics,
        store,
        profiles_dir,
        devices,
        status_payloads,
        health,
        commands,
        interface,
        warnings: Vec::new(),
    };
    if config.mqtt.version == MqttVersion::V3 {
        let warning = config
            .interface
            .as_ref()
            .and_then(|i| i.own_replies_warning());
        config.warnings.extend(warning);
    }
    Ok((config, inline_password))
}

/// The path of key `key` of device `index`, for errors found later.
pub(crate) fn device_path(index: usize, key: &'static str) -> YamlPath {
    YamlPath::default().key("devices").index(index).key(key)
}

pub(crate) use locate::locate as locate_key;

/// Checks across devices: ids and client ids must not collide.
fn check_devices(
    issues: &mut Issues,
    at: &YamlPath,
    devices: &[DeviceConfig],
    mqtt: &MqttConfig,
    gateway: &GatewayConfig,
) {
    let mut ids = HashMap::new();
    // Shared ports are checked with the profiles (`device::port::plan`):
    // devices on one device file are a bus, which only some profiles allow.
    for (i, d) in devices.iter().enumerate() {
        if ids.insert(d.id.as_str(), i).is_some() {
            issues.add(&at.index(i).key("id"), Invalid::DuplicateId(d.id.clone()));
        }
        // The broker drops one of two sessions with the same client id.
        let vars = TopicVars {
            prefix: &mqtt.topic_prefix,
            machine: &d.id,
            gateway: &gateway.id,
            ..TopicVars::default()
        };
        // Without `{machine}` the template is already reported as wrong.
        if mqtt.client_id.contains("{machine}")
            && TopicsConfig::render(&mqtt.client_id, &vars) == gateway.id
        {
            issues.add(&at.index(i).key("id"), Invalid::ClientIdClash(d.id.clone()));
        }
    }
}

fn located(issues: Issues, text: &str, path: &Path) -> ConfigErrors {
    let mut errors: Vec<ConfigError> = issues
        .0
        .into_iter()
        .map(|(at, problem)| {
            let (line, column) = locate(text, &at).unwrap_or((0, 0));
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                message: format!("{at}: {problem}"),
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    ConfigErrors(errors)
}

pub(crate) fn parse_error(e: serde_yaml::Error, path: &Path) -> ConfigErrors {
    let mut message = e.to_string();
    let (line, column) = match e.location() {
        Some(l) => {
            // The position goes in front, as in every other error.
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
            }
            (l.line(), l.column())
        }
        None => (0, 0),
    };
    ConfigErrors(vec![ConfigError {
        path: path.to_owned(),
        line,
        column,
        message,
    }])
}
