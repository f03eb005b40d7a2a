//! Field types (DESIGN §5): one field's wire bytes <-> one JSON value.

use std::collections::BTreeMap;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
use serde_json::Value;

use super::error::{ArgError, DecodeError};
use crate::codec::{get_uint, hex, put_uint, ByteOrder};

/// One compiled field of a message or command argument list.
#[derive(Clone, Debug)]
pub struct Field {
    /// JSON key; `None` for constants.
    pub name: Option<String>,
    pub kind: FieldKind,
    /// May be missing at the end of the body.
    pub optional: bool,
    /// Used when a command omits the argument.
    pub default: Option<Value>,
    /// Allowed JSON values for commands (inclusive); empty means any.
    pub ranges: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub enum FieldKind {
    /// JSON = wire * scale + offset when `scaled`.
    Int {
        size: usize,
        signed: bool,
        order: ByteOrder,
        scale: f64,
        offset: f64,
        scaled: bool,
    },
    Bool {
        size: usize,
        order: ByteOrder,
        true_value: Option<u64>,
        false_value: Option<u64>,
    },
    Enum {
        size: usize,
        order: ByteOrder,
        values: BTreeMap<u64, String>,
    },
    Flags {
        size: usize,
        order: ByteOrder,
        bits: BTreeMap<u8, String>,
    },
    Ascii {
        len: Option<usize>,
        numeric: bool,
    },
    Bcd {
        len: usize,
    },
    BcdDateTime,
    Hex {
        len: Option<usize>,
    },
    Const {
        size: usize,
        order: ByteOrder,
        value: u64,
    },
    /// ASCII-line tokens.
    Text,
    TextInt,
    TextFloat,
}

impl FieldKind {
    /// Wire size in bytes; `None` for rest-of-frame and text tokens.
    pub fn wire_size(&self) -> Option<usize> {
        match self {
            FieldKind::Int { size, .. }
            | FieldKind::Bool { size, .. }
            | FieldKind::Enum { size, .. }
            | FieldKind::Flags { size, .. }
            | FieldKind::Const { size, .. } => Some(*size),
            FieldKind::Bcd { len } => Some(*len),
            FieldKind::BcdDateTime => Some(7),
            FieldKind::Ascii { len, .. } | FieldKind::Hex { len } => *len,
            FieldKind::Text | FieldKind::TextInt | FieldKind::TextFloat => None,
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(
            self,
            FieldKind::Text | FieldKind::TextInt | FieldKind::TextFloat
        )
    }
}

/// `code_0xNN`: how unknown enum codes are published (DESIGN §5: never dropped).
pub fn unknown_code(code: u64, size: usize) -> String {
    format!("code_0x{code:0width$x}", width = 2 * size)
}

/// Rounds away binary noise of decimal scales (3 * 0.1 = 0.30000000000000004).
fn number(v: f64) -> Value {
    let v = if v.abs() < 1e9 {
        (v * 1e6).round() / 1e6
    } else {
        v
    };
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn parse_numeric(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

fn digits_to_u64(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, b| {
        let (hi, lo) = (u64::from(b >> 4), u64::from(b & 0x0F));
        (hi < 10 && lo < 10).then(|| acc.saturating_mul(100).saturating_add(hi * 10 + lo))
    })
}

fn u64_to_bcd(mut v: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    for b in out.iter_mut().rev() {
        *b = ((((v / 10) % 10) << 4) | (v % 10)) as u8;
        v /= 100;
    }
    (v == 0).then_some(out)
}

impl Field {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("constant")
    }

    /// Reads this field at `*pos`; `None` for constants (no JSON key).
    pub fn decode(&self, body: &[u8], pos: &mut usize) -> Result<Option<Value>, DecodeError> {
        let rest = body.get(*pos..).unwrap_or(&[]);
        let size = self.kind.wire_size().unwrap_or(rest.len());
        let Some(bytes) = rest.get(..size) else {
            let needed = size - rest.len();
            return Err(DecodeError::TooShort {
                field: self.label().into(),
                offset: *pos,
                needed,
            });
        };
        let bad = |reason: String| DecodeError::Bad {
            field: self.label().into(),
            reason,
        };
        let value = match &self.kind {
            FieldKind::Int {
                signed,
                order,
                scale,
                offset,
                scaled,
                size,
            } => {
                let raw = get_uint(bytes, *order);
                let shift = 64 - 8 * *size as u32;
                let int: i128 = if *signed {
                    i128::from(((raw << shift) as i64) >> shift)
                } else {
                    i128::from(raw)
                };
                if *scaled {
                    number(int as f64 * scale + offset)
                } else if *signed {
                    Value::from(int as i64)
                } else {
                    Value::from(raw)
                }
            }
            FieldKind::Bool {
                order,
                true_value,
                false_value,
                ..
            } => {
                let code = get_uint(bytes, *order);
                Value::Bool(match (true_value, false_value) {
                    (Some(t), _) => code == *t,
                    (None, Some(f)) => code != *f,
                    (None, None) => code != 0,
                })
            }
            FieldKind::Enum {
                size,
                order,
                values,
            } => {
                let code = get_uint(bytes, *order);
                Value::from(
                    values
                        .get(&code)
                        .cloned()
                        .unwrap_or_else(|| unknown_code(code, *size)),
                )
            }
            FieldKind::Flags { order, bits, .. } => {
                let word = get_uint(bytes, *order);
                let names = (0..64u8).filter(|b| word & (1u64 << b) != 0);
                let names =
                    names.map(|b| bits.get(&b).cloned().unwrap_or_else(|| format!("bit_{b}")));
                Value::from(names.collect::<Vec<_>>())
            }
            FieldKind::Ascii { numeric, .. } => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim_matches(|c| c == ' ' || c == '\0');
                match numeric.then(|| parse_numeric(text)).flatten() {
                    Some(n) => n,
                    None => Value::from(text),
                }
            }
            FieldKind::Bcd { .. } => Value::from(
                digits_to_u64(bytes)
                    .ok_or_else(|| bad(format!("{} is not BCD", hex::encode(bytes))))?,
            ),
            FieldKind::BcdDateTime => Value::from(bcd_to_rfc3339(bytes).ok_or_else(|| {
                bad(format!(
                    "{} is not a BCD date-time YYYYMMDDhhmmss",
                    hex::encode(bytes)
                ))
            })?),
            FieldKind::Hex { .. } => Value::from(hex::encode(bytes)),
            FieldKind::Const { order, value, .. } => {
                let got = get_uint(bytes, *order);
                if got != *value {
                    return Err(bad(format!(
                        "expected constant {value:#04x}, got {got:#04x}"
                    )));
                }
                *pos += size;
                return Ok(None);
            }
            FieldKind::Text | FieldKind::TextInt | FieldKind::TextFloat => {
                return Err(bad("text fields need ASCII-line framing".into()));
            }
        };
        *pos += size;
        Ok(Some(value))
    }

    /// Parses one ASCII-line token.
    pub fn decode_token(&self, token: &str) -> Result<Value, DecodeError> {
        let bad = |what: &str| DecodeError::Bad {
            field: self.label().into(),
            reason: format!("{token:?} is not {what}"),
        };
        match self.kind {
            FieldKind::TextInt => token
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad("an integer")),
            FieldKind::TextFloat => token
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number")),
            _ => Ok(Value::from(token)),
        }
    }

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
                out.extend(local_bcd(&t.with_timezone(&Local).naive_local()));
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

fn bcd_to_rfc3339(bytes: &[u8]) -> Option<String> {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let naive = NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S").ok()?;
    Some(Local.from_local_datetime(&naive).earliest()?.to_rfc3339())
}
