//! Errors of the config file, each tied to a place in it.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
///
/// `line` and `column` are 1-based and point at the offending value (or, for a
/// missing key, at the mapping that lacks it). Both are 0 only when the problem
/// has no place in the text, e.g. the file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file; `Display` prints one per line so
/// `vendgate check` can show them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What is wrong with a value that parsed but does not make sense.
///
/// Messages are written for the person editing the file: they say what is
/// expected. None of them ever carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("`{0}` is not a valid id: use 1 to 64 letters, digits, `_` or `-`")]
    Id(String),
    #[error(
        "device id `{0}` is used more than once; ids name machines in topics and must be unique"
    )]
    DuplicateId(String),
    #[error("at least one device is needed")]
    NoDevices,
    #[error("{0}")]
    Url(String),
    #[error("give either `password` or `password_file`, not both")]
    PasswordTwice,
    #[error("a password needs `mqtt.username` (MQTT sends a password only with a user name)")]
    PasswordWithoutUser,
    #[error("cannot read password file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    #[error("password file {0} is empty")]
    EmptyPasswordFile(PathBuf),
    #[error("give either `port` or `usb`, not both")]
    PortAndUsb,
    #[error("give `port` (a serial device path) or `usb` (the adapter's USB identity)")]
    NoPortOrUsb,
    #[error("must be greater than 0")]
    Zero,
    #[error("must not be empty")]
    Empty,
    #[error("an empty payload would delete the retained status; give a text")]
    EmptyPayload,
    #[error("`{value}` is not a USB id: give a number from 0x0000 to 0xffff")]
    UsbId { value: String },
    #[error("`{value}` is not a duration ({reason}); write e.g. `30s` or `200ms`")]
    Duration { value: String, reason: String },
    #[error("must be at least {0}")]
    TooShort(&'static str),
    #[error("`{value}` is not a size ({reason}); write e.g. `64MiB`, `512KiB`, `1GiB` or a number of bytes")]
    Size { value: String, reason: String },
    #[error("must be at least {0}")]
    TooSmall(&'static str),
    #[error("must be at most {0}")]
    TooLong(&'static str),
    #[error("MQTT version {0} is not supported; use 3 (MQTT 3.1.1) or 5")]
    Version(u64),
    #[error("`tls` is only used with mqtts:// or wss:// URLs")]
    TlsWithoutTlsUrl,
    #[error("mutual TLS needs both `cert_file` and `key_file`")]
    HalfClientCert,
    #[error("unknown placeholder `{{{name}}}` here; allowed: {allowed}")]
    Placeholder { name: String, allowed: String },
    #[error("must contain `{{{0}}}`")]
    MissingPlaceholder(&'static str),
    #[error("`{{` without a closing `}}`")]
    Unclosed,
    #[error("`{0}` is an MQTT wildcard and cannot be part of a topic")]
    Wildcard(char),
    #[error("`{{command}}` must be a whole topic level (between `/`), so the gateway can subscribe with `+`")]
    CommandLevel,
    #[error("results would arrive on the command topic; make the two templates differ")]
    ResultIsCommand,
    #[error("must not start or end with `/`")]
    Slash,
    #[error("device `{0}` would get the same MQTT client id as the gateway itself")]
    ClientIdClash(String),
}

impl Invalid {
    /// `{name}` is not among `allowed` (listed as `{a}, {b}`, or `none`).
    pub(crate) fn placeholder(name: &str, allowed: &[&str]) -> Invalid {
        let allowed = if allowed.is_empty() {
            "none".to_owned()
        } else {
            allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Invalid::Placeholder {
            name: name.to_owned(),
            allowed,
        }
    }
}
