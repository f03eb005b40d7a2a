//! Encoding one field from JSON (command arguments, simulator messages):
//! every rejection is an [`ArgError`] naming the field and what it must be.

use chrono::{DateTime, Datelike, Local, NaiveDateTime};
use serde_json::Value;

use super::error::ArgError;
use super::fields::{Field, FieldKind};
use crate::codec::{hex, put_uint};

impl Field {
    /// Writes the JSON value `v` (already defaulted) for this field.
    pub fn encode(&self, v: &Value, out: &mut Vec<u8>) -> Result<(), ArgError> {
        let name = self.label();
        let err = |expected: String| ArgError::invalid(name, expected, v);
        match &self.kind {
            FieldKind::Int {
                size,
                signed,
                order,
                scale,
                offset,
                scaled,
            } => {
                let f = v.as_f64().ok_or_else(|| err("a number".into()))?;
                self.check_ranges(f, v)?;
                let wire = if *scaled { (f - offset) / scale } else { f };
                if (wire - wire.round()).abs() > 1e-9 {
                    return Err(err(if *scaled {
                        format!("a multiple of {scale}")
                    } else {
                        "an integer".into()
                    }));
                }
                let wire = int_of(v)
                    .filter(|_| !*scaled)
                    .unwrap_or(wire.round() as i128);
                let (lo, hi) = int_bounds(*size, *signed);
                if wire < lo || wire > hi {
                    let (lo, hi) = (lo as f64 * scale + offset, hi as f64 * scale + offset);
                    return Err(err(format!("between {lo} and {hi}")));
                }
                put_uint(out, wire as u64, *size, *order);
            }
            FieldKind::Bool {
                size,
                order,
                true_value,
                false_value,
            } => {
                let b = v.as_bool().ok_or_else(|| err("true or false".into()))?;
                let code = if b {
                    true_value.unwrap_or(1)
                } else {
                    false_value.unwrap_or(0)
                };
                put_uint(out, code, *size, *order);
            }
            FieldKind::Enum {
                size,
                order,
                values,
            } => {
                let s = v.as_str().unwrap_or_default();
                let code = values.iter().find(|(_, n)| *n == s).map(|(c, _)| *c);
                let code = code.or_else(|| {
                    s.strip_prefix("code_0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                });
                let names: Vec<&str> = values.values().map(String::as_str).collect();
                let code = code.ok_or_else(|| err(format!("one of {}", names.join(", "))))?;
                put_uint(out, code, *size, *order);
            }
            FieldKind::Flags { size, order, bits } => {
                let names: Vec<&str> = bits.values().map(String::as_str).collect();
                let expected = || err(format!("a list of flag names ({})", names.join(", ")));
                let mut word = 0u64;
                for item in v.as_array().ok_or_else(expected)? {
                    let s = item.as_str().ok_or_else(expected)?;
                    let bit = bits.iter().find(|(_, n)| *n == s).map(|(b, _)| *b);
                    let bit = bit.or_else(|| s.strip_prefix("bit_").and_then(|b| b.parse().ok()));
                    match bit {
                        Some(b) if usize::from(b) < 8 * size => word |= 1 << b,
                        _ => return Err(expected()),
                    }
                }
                put_uint(out, word, *size, *order);
            }
            FieldKind::Ascii { len, numeric } => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if *numeric => n.to_string(),
                    _ => return Err(err("a string".into())),
                };
                if !text.is_ascii() {
                    return Err(err("ASCII text".into()));
                }
                let mut bytes = text.into_bytes();
                if let Some(len) = len {
                    if bytes.len() > *len {
                        return Err(err(format!("at most {len} characters")));
                    }
                    bytes.resize(*len, b' ');
                }
                out.extend_from_slice(&bytes);
            }
            FieldKind::Bcd { len } => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| err("a non-negative integer".into()))?;
                self.check_ranges(n as f64, v)?;
                out.extend(
                    u64_to_bcd(n, *len)
                        .ok_or_else(|| err(format!("at most {} digits", 2 * len)))?,
                );
            }
            FieldKind::BcdDateTime => {
                let s = v
                    .as_str()
                    .ok_or_else(|| err("an RFC 3339 date-time string".into()))?;
                let t = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| err("an RFC 3339 date-time".into()))?;
                let local = t.with_timezone(&Local).naive_local();
                if !(0..=9999).contains(&local.year()) {
                    return Err(err("a date-time between the years 0 and 9999".into()));
                }
                out.extend(local_bcd(&local));
            }
            FieldKind::Hex { len } => {
                let bytes = v
                    .as_str()
                    .and_then(hex::decode)
                    .ok_or_else(|| err("a hex string".into()))?;
                if len.is_some_and(|l| l != bytes.len()) {
                    return Err(err(format!("{} hex bytes", len.unwrap_or(0))));
                }
                out.extend(bytes);
            }
            FieldKind::Const { size, order, value } => put_uint(out, *value, *size, *order),
            FieldKind::Text | FieldKind::TextInt | FieldKind::TextFloat => {
                out.extend(self.encode_token(v)?.into_bytes());
            }
        }
        Ok(())
    }

    /// One ASCII-line token for `v`.
    pub fn encode_token(&self, v: &Value) -> Result<String, ArgError> {
        let err = |expected: &str| ArgError::invalid(self.label(), expected, v);
        match self.kind {
            FieldKind::TextInt => {
                let i = int_of(v).ok_or_else(|| err("an integer"))?;
                self.check_ranges(i as f64, v)?;
                Ok(i.to_string())
            }
            FieldKind::TextFloat => {
                let f = v.as_f64().ok_or_else(|| err("a number"))?;
                self.check_ranges(f, v)?;
                Ok(f.to_string())
            }
            _ => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| err("a string")),
        }
    }

    fn check_ranges(&self, f: f64, v: &Value) -> Result<(), ArgError> {
        if self.ranges.is_empty() || self.ranges.iter().any(|(lo, hi)| f >= *lo && f <= *hi) {
            return Ok(());
        }
        let parts: Vec<String> = self.ranges.iter().map(|r| describe_range(*r)).collect();
        let expected = match parts.split_last() {
            Some((last, init)) if !init.is_empty() => format!("{}, or {last}", init.join(", ")),
            _ => parts.join(""),
        };
        Err(ArgError::invalid(self.label(), expected, v))
    }
}

fn describe_range((lo, hi): (f64, f64)) -> String {
    match (lo.is_finite(), hi.is_finite()) {
        _ if lo == hi => format!("{lo}"),
        (true, true) => format!("between {lo} and {hi}"),
        (true, false) => format!("at least {lo}"),
        (false, true) => format!("at most {hi}"),
        (false, false) => "a number".into(),
    }
}

/// Exact integer value of a JSON number (5.0 counts, 5.5 does not).
fn int_of(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i128)
        })
}

fn int_bounds(size: usize, signed: bool) -> (i128, i128) {
    let bits = 8 * size as u32;
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// Device clocks run on local wall-clock time (VMC §4.2 `set_time`).
fn local_bcd(t: &NaiveDateTime) -> Vec<u8> {
    let digits = t.format("%Y%m%d%H%M%S").to_string();
    digits
        .as_bytes()
        .chunks(2)
        .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
        .collect()
}

fn u64_to_bcd(mut v: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    for b in out.iter_mut().rev() {
        *b = ((((v / 10) % 10) << 4) | (v % 10)) as u8;
        v /= 100;
    }
    (v == 0).then_some(out)
}
