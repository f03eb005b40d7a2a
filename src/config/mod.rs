//! PLACEHOLDER (replaced by the wt-config merge).
use std::path::{Path, PathBuf};
use std::time::Duration;
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x")
    }
}
impl std::error::Error for ConfigErrors {}
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}
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
    pub warnings: Vec<String>,
}
impl Config {
    pub fn load(_p: &Path) -> Result<Config, ConfigErrors> {
        todo!()
    }
    pub fn from_str(_t: &str, _p: &Path) -> Result<Config, ConfigErrors> {
        todo!()
    }
}
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub id: String,
}
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub url: MqttUrl,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    pub topic_prefix: String,
    pub client_id: String,
    pub version: MqttVersion,
    pub tls: Option<TlsConfig>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V3,
    V5,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}
#[derive(Debug, Clone)]
pub struct MqttUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
}
#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "***")
    }
}
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    pub status: String,
    pub telemetry: String,
    pub event: String,
    pub command: String,
    pub result: String,
    pub gateway_status: String,
    pub health: String,
}
pub struct TopicVars<'a> {
    pub prefix: &'a str,
    pub machine: &'a str,
    pub gateway: &'a str,
    pub name: &'a str,
    pub command: &'a str,
}
impl TopicsConfig {
    pub fn render(_t: &str, _v: &TopicVars) -> String {
        todo!()
    }
    pub fn command_filter(&self, _p: &str, _m: &str, _g: &str) -> String {
        todo!()
    }
    pub fn command_of(&self, _t: &str, _p: &str, _m: &str, _g: &str) -> Option<String> {
        todo!()
    }
}
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
}
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub profile: String,
    pub port: Option<PathBuf>,
    pub usb: Option<UsbMatch>,
    pub baud: Option<u32>,
    pub link_timeout: Option<Duration>,
}
#[derive(Debug, Clone)]
pub struct UsbMatch {
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
}
#[derive(Debug, Clone)]
pub struct StatusPayloads {
    pub online: String,
    pub offline: String,
    pub debounce: Duration,
}
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub interval: Duration,
}
#[derive(Debug, Clone)]
pub struct CommandsConfig {
    pub queue_limit: usize,
    pub id_window: usize,
    pub id_ttl: Duration,
    pub max_payload: usize,
}
