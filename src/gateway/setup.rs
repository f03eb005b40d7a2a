//! What `run` derives from the config file before it opens a port or
//! connects: read the same way at start and at every reload (DESIGN §2), so
//! a reload refuses exactly what a start would refuse.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::device::port::{plan_lines, Lines};
use crate::mqtt::{Connection, OptionsError};
use crate::profile::{Profile, ProfileError};

/// A validated config with everything it refers to loaded.
pub struct Setup {
    pub config: Arc<Config>,
    /// By the name the devices give.
    pub profiles: HashMap<String, Arc<Profile>>,
    /// Which devices share a serial line.
    pub lines: Lines,
    /// The TLS files, read once for all sessions.
    pub connection: Connection,
    /// The bytes behind it all, to tell what a reload changed.
    pub sources: Sources,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(ConfigErrors),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Devices share a line in a way that cannot work.
    #[error(transparent)]
    Lines(ConfigErrors),
    #[error(transparent)]
    Mqtt(#[from] OptionsError),
}

/// The inputs of a setup as bytes and YAML values: two setups whose
/// sources are equal in a part behave the same in that part.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    /// SHA-256 of the config file, hex, as `sha256sum` prints it.
    pub config_sha256: String,
    /// The config file's top-level sections as written.
    sections: serde_yaml::Mapping,
    /// The interface file's bytes, if there is one.
    interface: Option<Vec<u8>>,
    /// The password (from `password_file` too) and the TLS files' bytes.
    credentials: Vec<Option<Vec<u8>>>,
    /// Each profile file's bytes, by the name the devices give.
    pub(super) profiles: HashMap<String, Vec<u8>>,
}

impl Setup {
    /// Reads the config file at `path` and everything it names.
    pub fn read(path: &Path) -> Result<Setup, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SetupError::Config(ConfigErrors(vec![ConfigError {
                path: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the config file: {e}"),
            }]))
        })?;
        let config = Config::from_file_text(&text, path).map_err(SetupError::Config)?;
        Setup::new(config, &text)
    }

    /// A setup of a config parsed from `text` (the demo's, or a file's).
    pub fn new(config: Config, text: &str) -> Result<Setup, SetupError> {
        let mut profiles = HashMap::new();
        let mut profile_bytes = HashMap::new();
        for device in &config.devices {
            if profiles.contains_key(&device.profile) {
                continue;
            }
            let path = Profile::path_of(&config.profiles_dir, &device.profile);
            let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Io {
                path: path.clone(),
                source,
            })?;
            profiles.insert(
                device.profile.clone(),
                Arc::new(Profile::from_str(&text, &path)?),
            );
            profile_bytes.insert(device.profile.clone(), text.into_bytes());
        }
        let lines = plan_lines(&config, &profiles).map_err(SetupError::Lines)?;
        let connection = Connection::from_config(&config)?;
        let sources = Sources::of(&config, text, profile_bytes);
        Ok(Setup {
            config: Arc::new(config),
            profiles,
            lines,
            connection,
            sources,
        })
    }
}

impl Sources {
    fn of(config: &Config, text: &str, profiles: HashMap<String, Vec<u8>>) -> Sources {
        // The text parsed as a config already; a mapping is all it can be.
        let sections = serde_yaml::from_str(text).unwrap_or_default();
        let folder = config.path.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| std::fs::read(folder.join(p)).ok();
        let interface = match config_value(&sections, "interface") {
            Some(serde_yaml::Value::String(p)) => read(Path::new(p)),
            _ => None,
        };
        let mut credentials = vec![config
            .mqtt
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes().to_vec())];
        if let Some(tls) = &config.mqtt.tls {
            for file in [&tls.ca_file, &tls.cert_file, &tls.key_file] {
                credentials.push(file.as_deref().and_then(read));
            }
        }
        Sources {
            config_sha256: sha256_hex(text.as_bytes()),
            sections,
            interface,
            credentials,
            profiles,
        }
    }

    fn section(&self, key: &str) -> Option<&serde_yaml::Value> {
        config_value(&self.sections, key)
    }

    /// Whether anything the machines' MQTT sessions (and what the device
    /// tasks render for them) depend on differs: `mqtt`, `topics`,
    /// `status_payloads`, `commands`, `gateway` (topics may use
    /// `{gateway}`), the interface file, credentials.
    pub fn machine_sessions_differ(&self, other: &Sources) -> bool {
        let keys = [
            "mqtt",
            "topics",
            "status_payloads",
            "commands",
            "gateway",
            "interface",
        ];
        keys.iter().any(|k| self.section(k) != other.section(k))
            || self.interface != other.interface
            || self.credentials != other.credentials
    }

    /// Whether the gateway's own session (and its health report) differs:
    /// `gateway`, `mqtt`, `health`, and the topics and payloads it uses.
    pub fn gateway_session_differs(&self, other: &Sources) -> bool {
        let keys = ["gateway", "mqtt", "health", "topics", "status_payloads"];
        keys.iter().any(|k| self.section(k) != other.section(k))
            || self.credentials != other.credentials
    }

    /// Whether `store` differs: it is opened once per process.
    pub fn store_differs(&self, other: &Sources) -> bool {
        self.section("store") != other.section("store")
    }
}

fn config_value<'a>(sections: &'a serde_yaml::Mapping, key: &str) -> Option<&'a serde_yaml::Value> {
    sections.get(serde_yaml::Value::String(key.to_owned()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn the_config_hash_is_what_sha256sum_prints() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
