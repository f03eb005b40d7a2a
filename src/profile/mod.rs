//! Device profiles (DESIGN §5; ARCHITECTURE.md, `profile`): the YAML schema,
//! loading with `path:line:col` errors, field types, message decoding and
//! command validation/encoding. Link rules are data here; `link` runs them.

mod compile;
mod compile_fields;
mod encode;
mod error;
mod fields;
mod message;
pub mod schema;
mod script;
#[cfg(test)]
mod tests;
mod vectors;
#[cfg(test)]
mod vmc_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::codec::{FrameCode, Framing};
pub use error::{ArgError, DecodeError, ProfileError};
pub use fields::{Field, FieldKind};
pub use message::{Command, Completion, Layout, Message, MessageKind, Publish, ENVELOPE_KEYS};
pub use script::{Periodic, Script, Send};

use error::{at, sem, Seg, Sem};

/// Names a profile may not give its commands: the gateway handles
/// `cmd/batch` and `cmd/cancel` itself.
pub const GATEWAY_COMMANDS: [&str; 2] = [BATCH, CANCEL];
pub const BATCH: &str = "batch";
pub const CANCEL: &str = "cancel";

/// A compiled, validated device profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub path: PathBuf,
    pub serial: SerialDefaults,
    pub framing: Framing,
    pub link: LinkRules,
    messages: Vec<Message>,
    commands: Vec<Command>,
    /// The device side for `vendgate simulate`, the demo and tests.
    pub simulator: Script,
    /// The profile's own test vectors, run by `vendgate check`.
    tests: Vec<vectors::Vector>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialDefaults {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Clone, Debug)]
pub struct LinkRules {
    pub mode: LinkMode,
    pub poll: Option<FrameCode>,
    pub ack: Option<FrameCode>,
    pub answer_within: Duration,
    pub poll_interval: Duration,
    pub down_after_polls: u32,
    pub retries: u32,
    pub retry_after: Duration,
    pub sequence: Option<SequenceRule>,
    pub poll_interval_command: Option<PollIntervalCommand>,
    /// host_polls: commands the host sends every `poll_interval`, in order.
    pub poll_requests: Vec<PollRequest>,
    /// host_polls: how often a device that is down is probed (default
    /// 5 × `poll_interval`).
    pub down_probe_interval: Option<Duration>,
    /// The addresses a device on this protocol's line may have.
    pub address_range: (u16, u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    DevicePolls,
    HostPolls,
    Unsolicited,
}

/// One byte, the first byte of the payload of data frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceRule {
    pub min: u8,
    pub max: u8,
    pub dedupe: bool,
}

/// The argument's value is in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollIntervalCommand {
    pub command: String,
    pub arg: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PollRequest {
    pub command: String,
    pub args: Map<String, Value>,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::from_str(&text, path)
    }

    /// `name` -> `dir/name.yaml`; anything with a `/` or a `.yaml`/`.yml` suffix is a path.
    pub fn resolve(dir: &Path, name_or_path: &str) -> Result<Profile, ProfileError> {
        Profile::load(&Profile::path_of(dir, name_or_path))
    }

    /// The file a device's `profile:` names (see [`Profile::resolve`]).
    pub fn path_of(dir: &Path, name_or_path: &str) -> PathBuf {
        let is_path = name_or_path.contains('/')
            || name_or_path.ends_with(".yaml")
            || name_or_path.ends_with(".yml");
        if is_path {
            dir.join(name_or_path)
        } else {
            dir.join(format!("{name_or_path}.yaml"))
        }
    }

    #[allow(clippy::should_implement_trait)] // the contract's name; FromStr has no path
    pub fn from_str(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let def: schema::ProfileDef =
            serde_yaml::from_str(text).map_err(|e| error::from_yaml(path, &e))?;
        let mut profile = compile_profile(&def, path).map_err(|e| {
            let (line, column) = error::locate(text, &e.path);
            ProfileError::At {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message,
            }
        })?;
        for (i, vector) in profile.tests.iter_mut().enumerate() {
            (vector.line, vector.column) = error::locate(text, &["tests".into(), i.into()]);
        }
        Ok(profile)
    }

    pub fn message_for(&self, code: &FrameCode) -> Option<&Message> {
        self.messages.iter().find(|m| &m.code == code)
    }

    pub fn message(&self, name: &str) -> Option<&Message> {
        self.messages.iter().find(|m| m.name == name)
    }

    pub fn command(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn commands(&self) -> &[Command] {
        &self.commands
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn compile_profile(def: &schema::ProfileDef, path: &Path) -> Sem<Profile> {
    let s = &def.serial;
    let sp: Vec<Seg> = vec!["serial".into()];
    if !(5..=8).contains(&s.data_bits) {
        return sem(
            &at(&sp, ["data_bits".into()]),
            "data_bits must be 5, 6, 7 or 8",
        );
    }
    if !(1..=2).contains(&s.stop_bits) {
        return sem(&at(&sp, ["stop_bits".into()]), "stop_bits must be 1 or 2");
    }
    let parity = match s.parity {
        schema::ParityDef::None => Parity::None,
        schema::ParityDef::Even => Parity::Even,
        schema::ParityDef::Odd => Parity::Odd,
    };
    let (framing, ctx) = compile::framing(&def.framing, &["framing".into()])?;
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in def.messages.iter().enumerate() {
        let p: Vec<Seg> = vec!["messages".into(), i.into()];
        let msg = compile_fields::message(m, &ctx, &p)?;
        if !valid_name(&msg.name) {
            return sem(
                &at(&p, ["name".into()]),
                "a message name is 1-64 characters of A-Z, a-z, 0-9, _ and -",
            );
        }
        // As master, an answer is decoded with the message its request
        // names, so two messages may share a code (two register blocks
        // read with one function code); elsewhere the code decides.
        let shared_codes = def.link.mode == schema::LinkModeDef::HostPolls;
        let same_code = messages.iter().find(|o| o.code == msg.code);
        if let Some(other) = same_code.filter(|_| !shared_codes) {
            return sem(
                &at(&p, ["code".into()]),
                format!(
                    "code {} is already used by message {}",
                    msg.code, other.name
                ),
            );
        }
        if messages.iter().any(|o| o.name == msg.name) {
            return sem(
                &at(&p, ["name".into()]),
                format!("message name {} is used twice", msg.name),
            );
        }
        messages.push(msg);
    }
    let mut commands: Vec<Command> = Vec::new();
    for (i, c) in def.commands.iter().enumerate() {
        let p: Vec<Seg> = vec!["commands".into(), i.into()];
        let cmd = compile_fields::command(c, &ctx, &messages, &p)?;
        if !valid_name(&cmd.name) {
            return sem(
                &at(&p, ["name".into()]),
                "a command name is 1-64 characters of A-Z, a-z, 0-9, _ and -",
            );
        }
        if GATEWAY_COMMANDS.contains(&cmd.name.as_str()) {
            return sem(
                &at(&p, ["name".into()]),
                format!(
                    "command name {} is reserved: the gateway handles cmd/{} itself",
                    cmd.name, cmd.name
                ),
            );
        }
        if commands.iter().any(|o| o.name == cmd.name) {
            return sem(
                &at(&p, ["name".into()]),
                format!("command name {} is used twice", cmd.name),
            );
        }
        commands.push(cmd);
    }
    let link = compile::link(&def.link, &ctx, &commands, &messages, &["link".into()])?;
    let simulator = def.simulator.clone().unwrap_or_default();
    for (i, periodic) in simulator.periodic.iter().enumerate() {
        if !messages.iter().any(|m| m.name == periodic.send) {
            let p: Vec<Seg> = vec![
                "simulator".into(),
                "periodic".into(),
                i.into(),
                "send".into(),
            ];
            return sem(
                &p,
                format!("no message named {} in this profile", periodic.send),
            );
        }
    }
    for (command, sends) in &simulator.on_command {
        if !commands.iter().any(|c| &c.name == command) {
            let p: Vec<Seg> = vec![
                "simulator".into(),
                "on_command".into(),
                command.as_str().into(),
            ];
            return sem(&p, format!("no command named {command} in this profile"));
        }
        for (i, send) in sends.iter().enumerate() {
            if !messages.iter().any(|m| m.name == send.send) {
                let p: Vec<Seg> = vec![
                    "simulator".into(),
                    "on_command".into(),
                    command.as_str().into(),
                    i.into(),
                    "send".into(),
                ];
                return sem(
                    &p,
                    format!("no message named {} in this profile", send.send),
                );
            }
        }
    }
    let name = def.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let tests = vectors::compile(&def.tests, &messages, &commands)?;
    Ok(Profile {
        name,
        path: path.to_path_buf(),
        serial: SerialDefaults {
            baud: s.baud,
            data_bits: s.data_bits,
            parity,
            stop_bits: s.stop_bits,
        },
        framing,
        link,
        messages,
        commands,
        tests,
        simulator,
    })
}
