//! Errors of the profile layer, and finding the line/column of a YAML node
//! so that semantic errors point at the offending spot like syntax errors do.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A profile that cannot be used. Displays as `path:line:col: sentence`.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{}: cannot read the profile: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A JSON command argument (or simulator value) that cannot be encoded.
/// Displays as `field: sentence`, e.g. `selection: must be between 1 and 999, got 1000`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{field}: unknown argument; {allowed}")]
    Unknown { field: String, allowed: String },
    #[error("{field}: missing; this argument is required")]
    Missing { field: String },
    #[error("{field}: must be {expected}, got {got}")]
    Invalid {
        field: String,
        expected: String,
        got: String,
    },
}

impl ArgError {
    pub fn field(&self) -> &str {
        match self {
            ArgError::Unknown { field, .. }
            | ArgError::Missing { field }
            | ArgError::Invalid { field, .. } => field,
        }
    }

    pub(crate) fn invalid(
        field: &str,
        expected: impl Into<String>,
        got: &serde_json::Value,
    ) -> ArgError {
        ArgError::Invalid {
            field: field.to_string(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}

/// A frame body that does not match the layout of its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{field}: body too short: needs {needed} more byte(s) at offset {offset}")]
    TooShort {
        field: String,
        offset: usize,
        needed: usize,
    },
    #[error("{field}: {reason}")]
    Bad { field: String, reason: String },
}

/// One step of a path into the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// A semantic error at a path in the document, before it is located.
#[derive(Debug)]
pub struct SemError {
    pub path: Vec<Seg>,
    pub message: String,
}

pub type Sem<T> = Result<T, SemError>;

pub fn sem<T>(path: &[Seg], message: impl Into<String>) -> Sem<T> {
    Err(SemError {
        path: path.to_vec(),
        message: message.into(),
    })
}

/// Appends segments to a path: `at(&p, ["fields".into(), 3.into()])`.
pub fn at<const N: usize>(path: &[Seg], more: [Seg; N]) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.extend(more);
    p
}

const MARK: &str = "\u{1}vendgate-locate";

/// Line and column (1-based) of the node at `path`, or of its nearest
/// existing ancestor. Re-reads the document and fails on purpose at the node,
/// so the YAML parser reports where that node is.
pub fn locate(text: &str, path: &[Seg]) -> (usize, usize) {
    for n in (0..=path.len()).rev() {
        let de = serde_yaml::Deserializer::from_str(text);
        if let Err(e) = (Finder { path: &path[..n] }).deserialize(de) {
            if e.to_string().contains(MARK) {
                if let Some(loc) = e.location() {
                    return (loc.line(), loc.column());
                }
            }
        }
    }
    (1, 1)
}

struct Finder<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Finder<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(MARK))
        } else {
            Ok(())
        }
    }
}

macro_rules! scalar {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: de::Error>(self, _: $t) -> Result<(), E> { self.here() }
    )*};
}

impl<'de> Visitor<'de> for Finder<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.here()?;
        let (Seg::Index(want), rest) = (&self.path[0], &self.path[1..]) else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            let found = if i == *want {
                seq.next_element_seed(Finder { path: rest })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if found.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.here()?;
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let name = match &key {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => String::new(),
            };
            match &self.path[0] {
                Seg::Key(k) if *k == name => map.next_value_seed(Finder {
                    path: &self.path[1..],
                })?,
                _ => map.next_value::<IgnoredAny>().map(|_| ())?,
            }
        }
        Ok(())
    }
}

/// Turns a `serde_yaml` error into `path:line:col: message`.
pub fn from_yaml(path: &std::path::Path, e: &serde_yaml::Error) -> ProfileError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ProfileError::At {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_nodes() {
        let text = "a: 1\nlist:\n  - x: 1\n  - x: 2\n    y: [1, 2]\n";
        assert_eq!(locate(text, &["a".into()]).0, 1);
        assert_eq!(locate(text, &["list".into(), 1.into(), "x".into()]).0, 4);
        assert_eq!(
            locate(text, &["list".into(), 1.into(), "y".into(), 1.into()]),
            (5, 12)
        );
        // Missing key: its parent.
        assert_eq!(locate(text, &["list".into(), 0.into(), "z".into()]).0, 3);
    }
}
