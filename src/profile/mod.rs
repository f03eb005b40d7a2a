//! PLACEHOLDER (replaced by the wt-profile merge).
use crate::codec::FrameCode;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
#[derive(Debug, thiserror::Error)]
#[error("profile error")]
pub struct ProfileError;
#[derive(Debug, thiserror::Error)]
#[error("decode error")]
pub struct DecodeError;
#[derive(Debug, thiserror::Error)]
#[error("arg error")]
pub struct ArgError;
#[derive(Clone, Debug)]
pub struct Framing;
#[derive(Clone, Copy, Debug)]
pub enum Parity {
    None,
    Odd,
    Even,
}
#[derive(Clone, Debug)]
pub struct SerialDefaults {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Telemetry,
    Event,
    Response,
}
#[derive(Clone, Debug)]
pub struct Message {
    pub code: FrameCode,
    pub name: String,
    pub kind: MessageKind,
    pub qos: u8,
    pub retain: bool,
}
impl Message {
    pub fn decode(&self, _b: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        todo!()
    }
    pub fn encode(&self, _v: &Map<String, Value>) -> Result<Vec<u8>, ArgError> {
        todo!()
    }
}
#[derive(Clone, Debug)]
pub enum Completion {
    Ack,
    Answer { message: String, timeout: Duration },
}
#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    pub code: FrameCode,
    pub completion: Completion,
    pub idempotent: bool,
}
impl Command {
    pub fn encode(&self, _a: &Map<String, Value>) -> Result<Vec<u8>, ArgError> {
        todo!()
    }
    pub fn decode(&self, _b: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        todo!()
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    DevicePolls,
    HostPolls,
    Unsolicited,
}
#[derive(Clone, Debug)]
pub struct SequenceRule {
    pub min: u8,
    pub max: u8,
    pub dedupe: bool,
}
#[derive(Clone, Debug)]
pub struct PollIntervalCommand {
    pub command: String,
    pub arg: String,
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
}
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub path: PathBuf,
    pub serial: SerialDefaults,
    pub framing: Framing,
    pub link: LinkRules,
}
impl Profile {
    pub fn load(_p: &Path) -> Result<Profile, ProfileError> {
        todo!()
    }
    pub fn resolve(_d: &Path, _n: &str) -> Result<Profile, ProfileError> {
        todo!()
    }
    pub fn message_for(&self, _c: &FrameCode) -> Option<&Message> {
        todo!()
    }
    pub fn message(&self, _n: &str) -> Option<&Message> {
        todo!()
    }
    pub fn command(&self, _n: &str) -> Option<&Command> {
        todo!()
    }
    pub fn messages(&self) -> &[Message] {
        todo!()
    }
    pub fn commands(&self) -> &[Command] {
        todo!()
    }
}
