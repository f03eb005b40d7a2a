//! The `devices:` list: one entry per machine on a serial line.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::Invalid;
use super::locate::{Issues, YamlPath};
use super::value::{check_id, duration};

/// One vending machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceSection {
    /// Machine id used in topics and as the MQTT client id: 1 to 64 letters,
    /// digits, `_` or `-`.
    id: String,
    /// A profile name in `profiles_dir`, or a path to a profile `.yaml` file.
    profile: String,
    /// Serial device path. Prefer `/dev/serial/by-id/...`: the link is
    /// resolved at each reopen, so it survives re-enumeration.
    #[serde(default)]
    port: Option<PathBuf>,
    /// Instead of `port`: find the adapter by its USB identity.
    #[serde(default)]
    usb: Option<UsbSection>,
    /// Baud rate; the profile's default otherwise.
    #[serde(default)]
    baud: Option<u32>,
    /// Overrides the profile's time after which a silent link counts as down.
    #[serde(default)]
    link_timeout: Option<String>,
    /// The device's address on its line (e.g. a Modbus slave id), written
    /// into every frame sent to it and used to route its answers. Required
    /// when the profile's framing has an address field, within the
    /// profile's `link.address_range`. Devices whose ports are the same
    /// device file share the line as a bus and need different addresses.
    #[serde(default)]
    address: Option<u16>,
}

/// USB identity of a serial adapter, as `lsusb` shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsbSection {
    /// Vendor id: write `0x0403` or `"0403"` (hex), not `0403`, which YAML
    /// reads as the decimal number 403.
    vid: UsbId,
    /// Product id, written like `vid`.
    pid: UsbId,
    /// The adapter's serial number, to tell identical adapters apart.
    #[serde(default)]
    serial: Option<String>,
}

/// A USB id as written: a number, or a hex text.
#[derive(Debug)]
struct UsbId(String, Option<u16>);

// A visitor rather than `#[serde(untagged)]` so a wrong type is reported at
// the value itself, not at the enclosing mapping.
impl<'de> Deserialize<'de> for UsbId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UsbId, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UsbId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a USB id such as 0x0403 or \"0403\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<UsbId, E> {
                Ok(UsbId(n.to_string(), u16::try_from(n).ok()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<UsbId, E> {
                Ok(UsbId(n.to_string(), u16::try_from(n).ok()))
            }
            fn visit_str<E: de::Error>(self, t: &str) -> Result<UsbId, E> {
                let hex = t.trim_start_matches("0x").trim_start_matches("0X");
                Ok(UsbId(t.to_owned(), u16::from_str_radix(hex, 16).ok()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub id: String,
    /// Name or path as written; the runtime resolves it against `profiles_dir`.
    pub profile: String,
    /// Not resolved against the config folder: device paths are absolute in practice
    /// and a relative one is most likely meant relative to the working directory.
    pub port: Option<PathBuf>,
    pub usb: Option<UsbMatch>,
    pub baud: Option<u32>,
    pub link_timeout: Option<Duration>,
    pub address: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbMatch {
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
}

impl DeviceSection {
    pub(crate) fn validate(self, issues: &mut Issues, at: &YamlPath) -> DeviceConfig {
        check_id(issues, &at.key("id"), &self.id);
        if self.profile.trim().is_empty() {
            issues.add(&at.key("profile"), Invalid::Empty);
        }
        match (&self.port, &self.usb) {
            (Some(_), Some(_)) => issues.add(&at.key("usb"), Invalid::PortAndUsb),
            (None, None) => issues.add(at, Invalid::NoPortOrUsb),
            _ => {}
        }
        if self.baud == Some(0) {
            issues.add(&at.key("baud"), Invalid::Zero);
        }
        let link_timeout = self.link_timeout.as_deref().map(|t| {
            let d = duration(issues, &at.key("link_timeout"), Some(t), Duration::ZERO);
            if d.is_zero() && humantime::parse_duration(t.trim()).is_ok() {
                issues.add(&at.key("link_timeout"), Invalid::Zero);
            }
            d
        });
        let usb = self.usb.map(|u| {
            let mut id = |key: &'static str, v: UsbId| {
                v.1.unwrap_or_else(|| {
                    issues.add(&at.key("usb").key(key), Invalid::UsbId { value: v.0 });
                    0
                })
            };
            UsbMatch {
                vid: id("vid", u.vid),
                pid: id("pid", u.pid),
                serial: u.serial,
            }
        });
        DeviceConfig {
            id: self.id,
            profile: self.profile,
            port: self.port,
            usb,
            baud: self.baud,
            link_timeout,
            address: self.address,
        }
    }
}
