//! Field types (DESIGN §5): one field's wire bytes <-> one JSON value.

use std::collections::BTreeMap;

use chrono::{Local, NaiveDateTime, TimeZone};
use serde_json::Value;

use super::error::DecodeError;
use crate::codec::{get_uint, hex, ByteOrder};

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
}

fn bcd_to_rfc3339(bytes: &[u8]) -> Option<String> {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let naive = NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S").ok()?;
    Some(Local.from_local_datetime(&naive).earliest()?.to_rfc3339())
}
