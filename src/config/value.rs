//! Small value types and checks shared by the sections.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::Invalid;
use super::locate::{Issues, YamlPath};

/// A password or similar. Its `Debug` and `Display` print `***` so it cannot
/// end up in logs or error output by accident; use [`Secret::expose`] where
/// the real value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

// Hand-written so that a password that YAML reads as a number (`password: 1234`)
// is accepted; serde's usual "invalid type: integer `1234`" would print it.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a password text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size as written: `64MiB`, `512KiB`, `1GiB`, or a plain number of bytes
/// (which YAML reads as an integer). Kept as text so that a bad value becomes a
/// located [`Invalid::Size`] from [`size`] rather than a serde type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSize(String);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawSize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `64MiB` or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawSize, E> {
                Ok(RawSize(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a [`RawSize`] into bytes; `None` gives `default`. Units count in 1024s
/// and are written as in `KiB`; `KB`/`MB` are refused rather than guessed at.
pub(crate) fn size(issues: &mut Issues, at: &YamlPath, raw: Option<&RawSize>, default: u64) -> u64 {
    let Some(RawSize(text)) = raw else {
        return default;
    };
    match parse_size(text.trim()) {
        Ok(n) => n,
        Err(reason) => {
            issues.add(
                at,
                Invalid::Size {
                    value: text.clone(),
                    reason,
                },
            );
            default
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err("it does not start with a number".into());
    }
    if unit.starts_with(['.', ',']) {
        return Err("use a whole number, e.g. `1536MiB` for 1.5GiB".into());
    }
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}`; use B, KiB, MiB or GiB")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| "too large".into())
}

/// Parses a humantime duration such as `30s`; `None` gives `default`.
pub(crate) fn duration(
    issues: &mut Issues,
    at: &YamlPath,
    raw: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = raw else { return default };
    match humantime::parse_duration(text.trim()) {
        Ok(d) => d,
        Err(e) => {
            issues.add(
                at,
                Invalid::Duration {
                    value: text.to_owned(),
                    reason: e.to_string(),
                },
            );
            default
        }
    }
}

/// Ids appear in topics and client ids, so they are kept to characters that
/// are safe in both.
pub(crate) fn check_id(issues: &mut Issues, at: &YamlPath, id: &str) {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        issues.add(at, Invalid::Id(id.to_owned()));
    }
}
