//! The `mqtt:` section: broker address, credentials, TLS, session settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::Invalid;
use super::locate::{Issues, YamlPath};
use super::value::{duration, Secret};

/// How the gateway reaches the MQTT broker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttSection {
    /// Broker URL: `mqtt://host:1883`, `mqtts://host:8883`, `ws://host:80/path`
    /// or `wss://host:443/path`. The port defaults to the scheme's usual one.
    /// A list is failover: each session connects to the first URL that
    /// accepts it and moves on to the next one (round robin) after 3 failed
    /// attempts in a row or 10 s without a connection.
    url: Urls,
    /// User name sent to the broker, if it wants one.
    #[serde(default)]
    username: Option<String>,
    /// Password in the config itself. Prefer `password_file`: a config file is
    /// often world-readable, a password file need not be.
    #[serde(default)]
    password: Option<Secret>,
    /// File holding the password (a trailing newline is ignored). Relative
    /// paths are taken from the config file's folder.
    #[serde(default)]
    password_file: Option<PathBuf>,
    /// How often the broker expects to hear from each session (at least 1s).
    #[serde(default)]
    keep_alive: Option<String>,
    /// First level(s) of every topic; `{prefix}` in topic templates.
    #[serde(default)]
    topic_prefix: Option<String>,
    /// Client id template of each machine's session. Must contain `{machine}`
    /// so that every machine has its own session and will message.
    #[serde(default)]
    client_id: Option<String>,
    /// Protocol version: 3 (MQTT 3.1.1) or 5.
    #[serde(default)]
    version: Option<u64>,
    /// TLS settings, for mqtts:// and wss:// only.
    #[serde(default)]
    tls: Option<TlsSection>,
}

/// One broker URL or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a broker URL or a list of broker URLs")]
pub(crate) enum Urls {
    One(String),
    Many(Vec<String>),
}

/// TLS files; without `ca_file` the system's trusted roots are used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `key_file`).
    #[serde(default)]
    cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// At least one; more for failover, in the order to try them.
    pub urls: Vec<MqttUrl>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    pub topic_prefix: String,
    /// Template; render with [`super::TopicsConfig::render`].
    pub client_id: String,
    pub version: MqttVersion,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1
    #[default]
    V3,
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// A parsed broker URL. `path` is empty for mqtt/mqtts and starts with `/`
/// for websockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme.as_str(),
            host,
            self.port,
            self.path
        )
    }
}

impl MqttUrl {
    /// Parses a broker URL. Errors never repeat the URL, since a URL may
    /// carry credentials.
    pub fn parse(text: &str) -> Result<MqttUrl, String> {
        let Some((scheme, rest)) = text.trim().split_once("://") else {
            return Err("not a URL; write e.g. mqtts://broker.example.com:8883".into());
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" => Scheme::Mqtt,
            "mqtts" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported; use mqtt://, mqtts://, ws:// or wss://"
                ))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported; use `username` and `password_file`"
                    .into(),
            );
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err("`[` of an IPv6 address is not closed".into());
            };
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err("unexpected text after the IPv6 address".into()),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("`{p}` is not a port number (1 to 65535)")),
            },
        };
        let path = match (scheme.is_websocket(), path) {
            (true, "") => "/".to_owned(),
            (true, p) => p.to_owned(),
            (false, "" | "/") => String::new(),
            (false, _) => {
                return Err("a path is only used with ws:// and wss:// URLs".into());
            }
        };
        Ok(MqttUrl {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }
}

/// The broker URLs, and whether all of them are valid (a placeholder
/// stands in for a bad one so that the other checks still run).
fn parse_urls(issues: &mut Issues, at: &YamlPath, urls: Urls) -> (Vec<MqttUrl>, bool) {
    let (texts, listed) = match urls {
        Urls::One(url) => (vec![url], false),
        Urls::Many(urls) => (urls, true),
    };
    if texts.is_empty() {
        issues.add(
            at,
            Invalid::Url("the list is empty; give at least one broker URL".into()),
        );
    }
    let mut all_ok = !texts.is_empty();
    let mut parsed = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let here = if listed { at.index(i) } else { at.clone() };
        match MqttUrl::parse(text) {
            Ok(url) => parsed.push(url),
            Err(reason) => {
                all_ok = false;
                issues.add(&here, Invalid::Url(reason));
            }
        }
    }
    if parsed.is_empty() {
        parsed.push(MqttUrl {
            scheme: Scheme::Mqtt,
            host: String::new(),
            port: 1883,
            path: String::new(),
        });
    }
    (parsed, all_ok)
}

impl MqttSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath, dir: &Path) -> MqttConfig {
        let (urls, url_ok) = parse_urls(issues, &at.key("url"), self.url);
        let password_key = if self.password.is_some() {
            "password"
        } else {
            "password_file"
        };
        let password = match (self.password, self.password_file) {
            (Some(_), Some(_)) => {
                issues.add(&at.key("password_file"), Invalid::PasswordTwice);
                None
            }
            (Some(p), None) => Some(p),
            (None, Some(file)) => read_password(issues, &at.key("password_file"), &dir.join(file)),
            (None, None) => None,
        };
        if password.is_some() && self.username.is_none() {
            issues.add(&at.key(password_key), Invalid::PasswordWithoutUser);
        }

        let keep_alive = duration(
            issues,
            &at.key("keep_alive"),
            self.keep_alive.as_deref(),
            Duration::from_secs(30),
        );
        if keep_alive < Duration::from_secs(1) {
            issues.add(&at.key("keep_alive"), Invalid::TooShort("1s"));
        } else if keep_alive > Duration::from_secs(u16::MAX.into()) {
            // The protocol carries keep alive as 16-bit seconds.
            issues.add(&at.key("keep_alive"), Invalid::TooLong("65535s"));
        }

        let topic_prefix = self.topic_prefix.unwrap_or_else(|| "vending".into());
        super::topics::check_prefix(issues, &at.key("topic_prefix"), &topic_prefix);

        let client_id = self.client_id.unwrap_or_else(|| "{machine}".into());
        super::topics::check_template(
            issues,
            &at.key("client_id"),
            &client_id,
            &["prefix", "machine", "gateway"],
            &["machine"],
        );

        let version = match self.version {
            None | Some(3) => MqttVersion::V3,
            Some(5) => MqttVersion::V5,
            Some(v) => {
                issues.add(&at.key("version"), Invalid::Version(v));
                MqttVersion::V3
            }
        };

        let tls = self.tls.map(|t| {
            if url_ok && !urls.iter().any(|u| u.scheme.is_tls()) {
                issues.add(&at.key("tls"), Invalid::TlsWithoutTlsUrl);
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                let which = if t.cert_file.is_some() {
                    "cert_file"
                } else {
                    "key_file"
                };
                issues.add(&at.key("tls").key(which), Invalid::HalfClientCert);
            }
            TlsConfig {
                ca_file: t.ca_file.map(|p| dir.join(p)),
                cert_file: t.cert_file.map(|p| dir.join(p)),
                key_file: t.key_file.map(|p| dir.join(p)),
            }
        });

        MqttConfig {
            urls,
            username: self.username,
            password,
            keep_alive,
            topic_prefix,
            client_id,
            version,
            tls,
        }
    }

    pub(crate) fn has_inline_password(&self) -> bool {
        self.password.is_some()
    }
}

fn read_password(issues: &mut Issues, at: &YamlPath, file: &Path) -> Option<Secret> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            // Only line endings are trimmed: spaces may be part of a password.
            let pw = text.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                issues.add(at, Invalid::EmptyPasswordFile(file.to_owned()));
                None
            } else {
                Some(Secret::new(pw))
            }
        }
        Err(e) => {
            issues.add(
                at,
                Invalid::PasswordFile {
                    path: file.to_owned(),
                    reason: e.to_string(),
                },
            );
            None
        }
    }
}
