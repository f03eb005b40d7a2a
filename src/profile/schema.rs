//! The profile file as written by a profile author (DESIGN §5). Every struct
//! rejects unknown keys so a typo is an error, not a silently ignored option.
//! `compile.rs` turns this into the runtime [`Profile`](super::Profile).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Top level of a profile file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    /// Defaults to the file name without `.yaml`.
    pub name: Option<String>,
    /// Free text for people; ignored by the gateway.
    pub description: Option<String>,
    /// Serial line defaults; a device's `baud` in the gateway config overrides.
    #[serde(default)]
    pub serial: SerialDef,
    pub framing: FramingDef,
    pub link: LinkDef,
    /// Frames the machine sends, published on MQTT.
    #[serde(default)]
    pub messages: Vec<MessageDef>,
    /// MQTT commands the gateway accepts and writes to the machine.
    #[serde(default)]
    pub commands: Vec<CommandDef>,
    /// What `vendgate simulate` plays on the device side (see `sim::Script`);
    /// the gateway itself ignores it.
    #[serde(default)]
    pub simulator: Option<super::Script>,
    /// Test vectors (`profile/vectors.rs`): frames with the fields they
    /// decode to or the arguments they encode from; `vendgate check` runs them.
    #[serde(default)]
    pub tests: Vec<super::vectors::VectorDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialDef {
    /// Default 9600.
    pub baud: u32,
    /// 5..8, default 8.
    pub data_bits: u8,
    /// `none` (default), `even` or `odd`.
    pub parity: ParityDef,
    /// 1 (default) or 2.
    pub stop_bits: u8,
}

impl Default for SerialDef {
    fn default() -> Self {
        SerialDef {
            baud: 9600,
            data_bits: 8,
            parity: ParityDef::None,
            stop_bits: 1,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParityDef {
    None,
    Even,
    Odd,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderDef {
    #[default]
    Big,
    Little,
}

/// Names of the frame parts, in wire order.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartDef {
    Sync,
    Address,
    Code,
    Length,
    Payload,
    Checksum,
}

/// Binary frame: `sync [address] code [length] payload [checksum] [end]`
/// (length may come before code). Or `ascii_line:` for text protocols.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramingDef {
    /// Bytes that start every frame, e.g. `[0xFA, 0xFB]`. Needed unless `silence` or `ascii_line`.
    #[serde(default)]
    pub sync: Vec<u8>,
    /// `true`: one address byte follows the sync bytes (or starts the
    /// frame without sync); `{size: 2}` for a two-byte address (big-endian).
    #[serde(default)]
    pub address: AddressDef,
    /// Size of the frame code in bytes: 1 (default) or 2 (big-endian).
    pub code_size: Option<usize>,
    pub length: Option<LengthDef>,
    pub checksum: Option<ChecksumDef>,
    pub stuffing: Option<StuffingDef>,
    /// A byte that ends every frame (ETX), e.g. `0x03`.
    pub end: Option<u8>,
    /// Frames end after this much silence (humantime, e.g. `4ms`); no length field needed.
    pub silence: Option<String>,
    /// Text-line framing instead of binary; the binary keys must then be absent.
    pub ascii_line: Option<AsciiLineDef>,
    /// Largest frame on the wire in bytes (bounds the receive buffer). Default 512.
    pub max_frame: Option<usize>,
}

/// `framing.address`: `true`/`false`, or `{size: 1}` / `{size: 2}`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum AddressDef {
    Flag(bool),
    Sized(AddressSizeDef),
}

impl Default for AddressDef {
    fn default() -> Self {
        AddressDef::Flag(false)
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddressSizeDef {
    /// 1 or 2 bytes.
    pub size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthDef {
    /// Bytes of the length field: 1 (default), 2 or 4.
    pub size: Option<usize>,
    #[serde(default)]
    pub order: OrderDef,
    /// `after_code` (default) or `before_code`.
    pub position: Option<LengthPosition>,
    /// Parts the length value counts; default `[payload]`. Must include `payload`.
    pub covers: Option<Vec<PartDef>>,
    /// Added to the counted size to give the wire value (may be negative).
    #[serde(default)]
    pub adjust: i64,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LengthPosition {
    BeforeCode,
    AfterCode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumDef {
    /// `xor`, `sum8`, `lrc`, or a `crc` catalogue name such as `CRC_16_MODBUS`.
    pub algorithm: String,
    /// Byte order of a multi-byte checksum on the wire (Modbus: `little`).
    #[serde(default)]
    pub order: OrderDef,
    /// First covered part; default the first part of the frame.
    pub from: Option<PartDef>,
    /// Last covered part; default `payload`.
    pub to: Option<PartDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuffingDef {
    /// Escape byte, e.g. DLE `0x10`.
    pub escape: u8,
    /// Bytes sent escaped between sync and end; must include `escape` itself.
    pub escaped: Vec<u8>,
    /// XOR applied to an escaped byte (default 0: the byte is sent as is after the escape).
    #[serde(default)]
    pub xor: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsciiLineDef {
    /// One start character, e.g. `"$"`; omit when lines have none.
    pub start: Option<String>,
    /// Field separator, default `","`.
    pub separator: Option<String>,
    /// Checksum over the text between start and marker, written as upper-case hex.
    pub checksum: Option<String>,
    /// Character before the checksum digits, default `"*"`.
    pub checksum_marker: Option<String>,
    /// Line end, default `"\r\n"`.
    pub terminator: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinkModeDef {
    /// The machine polls; the gateway answers each poll with an ack or one command.
    DevicePolls,
    /// The gateway polls the machine every `poll_interval` (`poll_requests`).
    HostPolls,
    /// Either side sends when it likes.
    Unsolicited,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDef {
    pub mode: LinkModeDef,
    /// Code of the poll frame (device_polls).
    pub poll: Option<CodeDef>,
    /// Code of the acknowledgement frame.
    pub ack: Option<CodeDef>,
    /// How soon an answer to a poll must be on the line (humantime), default `100ms`.
    pub answer_within: Option<String>,
    /// Default `200ms`.
    pub poll_interval: Option<String>,
    /// The link is down after this many poll intervals without a valid frame; default 3.
    pub down_after_polls: Option<u32>,
    /// Retransmissions of an unacknowledged frame; default 3.
    pub retries: Option<u32>,
    /// Default `100ms`.
    pub retry_after: Option<String>,
    /// One sequence byte as the first payload byte of data frames.
    pub sequence: Option<SequenceDef>,
    /// A command that changes the poll interval; the runtime follows it.
    pub poll_interval_command: Option<PollIntervalCommandDef>,
    /// host_polls: commands (with arguments) sent every `poll_interval`.
    #[serde(default)]
    pub poll_requests: Vec<PollRequestDef>,
    /// host_polls: a device that is down is probed this often (humantime);
    /// default 5 × `poll_interval`.
    pub down_probe_interval: Option<String>,
    /// With `framing.address`: the addresses a device may have, e.g.
    /// `[1, 247]` for Modbus (0 is broadcast). Default: every address the
    /// field can hold.
    pub address_range: Option<[u16; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceDef {
    pub min: u8,
    pub max: u8,
    /// A frame repeating the previous (code, sequence) is a retransmission: ack, don't publish.
    #[serde(default)]
    pub dedupe: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollIntervalCommandDef {
    pub command: String,
    /// The argument holding the new interval in milliseconds.
    pub arg: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequestDef {
    pub command: String,
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// A frame code: a number (`0x41`) for binary framings, a token (`TEMP`) for ASCII lines.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum CodeDef {
    Num(u32),
    Text(String),
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KindDef {
    Telemetry,
    Event,
    Response,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageDef {
    pub code: CodeDef,
    /// MQTT name: topic segment of telemetry/events, `answer` target of commands.
    pub name: String,
    /// `telemetry`, `event` or `response` (published only as a command's result).
    pub kind: KindDef,
    /// Default 0 for telemetry, 1 for events.
    pub qos: Option<u8>,
    /// Default false.
    pub retain: Option<bool>,
    /// Payload layout after the link's sequence byte, in wire order.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    pub description: Option<String>,
    /// Telemetry: `always` (default) or `on_change`: published only when
    /// its fields differ from the last published value, or `heartbeat` is
    /// due. A device polled every second then costs no MQTT message a second.
    pub publish: Option<PublishDef>,
    /// With `publish: on_change`: publish the unchanged value this often
    /// anyway (humantime), default `5m`.
    pub heartbeat: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PublishDef {
    Always,
    OnChange,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDef {
    /// MQTT command name (`.../cmd/{name}`).
    pub name: String,
    pub code: CodeDef,
    /// JSON arguments; their list order is the wire layout.
    #[serde(default)]
    pub args: Vec<FieldDef>,
    /// `ack` (default) or `{answer: <message name>, timeout: 2s}`.
    pub completion: Option<CompletionDef>,
    /// Safe to send again after a gateway restart or retry (no money, no vend).
    #[serde(default)]
    pub idempotent: bool,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CompletionDef {
    Word(String),
    Answer(AnswerDef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerDef {
    pub answer: String,
    /// Default `2s` (VMC §4.2 decision). In `host_polls` the answer to the
    /// command's request may take this long (polls wait `answer_within`).
    pub timeout: Option<String>,
    /// A message (e.g. a Modbus exception, `code: 0x83`) that, arriving as
    /// the answer, ends the command `failed` with its decoded fields as
    /// `response`. It is not published as an event.
    pub error: Option<String>,
}

/// Field types; see `FieldDef`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TypeDef {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    Bool,
    Enum,
    Flags,
    Ascii,
    Bcd,
    BcdDatetime,
    Hex,
    Const,
    Text,
    Int,
    Float,
}

/// One field of a message or one argument of a command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// JSON key; not used by `const` fields.
    pub name: Option<String>,
    /// Integers `u8`..`i64`; `bool`; `enum` (`values`); `flags` (`bits`); `ascii`
    /// (`length` or rest of frame); `bcd` digits (`length`); `bcd_datetime`
    /// (7 bytes YYYYMMDDhhmmss); `hex` bytes (`length` or rest); `const` (`value`);
    /// ASCII-line tokens `text`, `int`, `float`.
    #[serde(rename = "type")]
    pub ty: TypeDef,
    /// Byte order of multi-byte values; default `big`.
    pub order: Option<OrderDef>,
    /// Bytes of a `bool`, `enum`, `flags` or `const` value; default 1.
    pub size: Option<usize>,
    /// Bytes of `ascii`, `hex` or `bcd`; omit for rest-of-frame `ascii`/`hex`.
    pub length: Option<usize>,
    /// May be missing at the end of the frame; omitted from JSON then.
    #[serde(default)]
    pub optional: bool,
    /// JSON value = wire * scale + offset.
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    /// Command argument bounds on the JSON value.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Allowed values as single numbers or `[min, max]` pairs.
    pub ranges: Option<Vec<RangeDef>>,
    /// Used when a command omits the argument.
    pub default: Option<serde_json::Value>,
    /// `enum`: wire code -> name.
    pub values: Option<BTreeMap<u64, String>>,
    /// `flags`: bit number (0 = least significant) -> name.
    pub bits: Option<BTreeMap<u8, String>>,
    /// `bool`: wire codes; decoding without them is nonzero = true.
    pub true_value: Option<u64>,
    pub false_value: Option<u64>,
    /// `ascii`: publish a number when the trimmed text parses as one.
    #[serde(default)]
    pub numeric: bool,
    /// `const`: the fixed wire value.
    pub value: Option<u64>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(untagged)]
pub enum RangeDef {
    One(f64),
    Span([f64; 2]),
}
