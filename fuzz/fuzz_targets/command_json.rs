//! Fuzzes the command JSON path of the VMC profile:
//! `command::parse::envelope(payload, retain, max_payload)` and, when that is
//! `Ok`, `command::parse::body(&profile, name, envelope, now)`.
//!
//! Input layout:
//!   byte 0   bit 7: 0 = the rest is the raw MQTT payload (retain = false);
//!                   1 = the rest drives `arbitrary` to build a JSON object
//!                       from the profile's argument names and value shapes
//!                       (reaches argument validation and encoding);
//!            bits 0-6 (mod commands+1): the command name, from
//!                   `profile.commands()`, or one name the profile does not know.
//!
//! Invariants: nothing panics; `envelope` refuses retained commands; an
//! `Ok(Parsed)` comes from an envelope with a 1..=64-character id, is the
//! command that was asked for, has no envelope keys left in `args`, has not
//! expired, and its `body` decodes with `parsed.def.decode` (round trip).

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, Duration, FixedOffset, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use vendgate::command::parse;
use vendgate::profile::{FieldKind, Profile};

/// The gateway's default `commands.max_payload` (config/ops.rs).
const MAX_PAYLOAD: usize = 64 * 1024;
const UNKNOWN_COMMAND: &str = "no_such_command";

struct Vocabulary {
    profile: Profile,
    /// Every argument name of every command.
    arg_names: Vec<String>,
    /// Every enum value name and flag name of every command argument.
    enum_names: Vec<String>,
}

fn vocabulary() -> &'static Vocabulary {
    static VOCAB: OnceLock<Vocabulary> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let profile = Profile::from_str(
            include_str!("../../device-profiles/vmc-upper-computer.yaml"),
            Path::new("device-profiles/vmc-upper-computer.yaml"),
        )
        .unwrap_or_else(|e| panic!("the VMC profile does not load: {e}"));
        let mut arg_names = Vec::new();
        let mut enum_names = Vec::new();
        for command in profile.commands() {
            for field in &command.layout.fields {
                if let Some(name) = &field.name {
                    if !arg_names.contains(name) {
                        arg_names.push(name.clone());
                    }
                }
                match &field.kind {
                    FieldKind::Enum { values, .. } => enum_names.extend(values.values().cloned()),
                    FieldKind::Flags { bits, .. } => enum_names.extend(bits.values().cloned()),
                    _ => {}
                }
            }
        }
        enum_names.sort();
        enum_names.dedup();
        Vocabulary {
            profile,
            arg_names,
            enum_names,
        }
    })
}

/// A JSON scalar.
#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

/// A JSON value shaped like what the profile's field types take.
#[derive(Arbitrary, Debug)]
enum Gen {
    Leaf(Leaf),
    /// A small integer, the common valid case (selection, inventory, ...).
    Small(u16),
    /// A multiple of 100 (interval_ms).
    Hundreds(u8),
    /// An integer written as a float (5.0) or a fraction (5.5).
    IntAsFloat(i32, bool),
    /// One of the profile's enum / flag names, or `code_0x..`.
    EnumName(u8),
    CodeHex(u64),
    /// An RFC 3339 time: seconds from now, offset in minutes.
    Time(i64, i16),
    /// A hex string, optionally with a stray last digit or upper case.
    Hex(Vec<u8>, bool, bool),
    Array(Vec<Leaf>),
    Object(Vec<(String, Leaf)>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    /// An argument name of some command of the profile.
    Arg(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Id {
    Missing,
    Counter(u16),
    Text(String),
    Other(Gen),
}

#[derive(Arbitrary, Debug)]
struct Structured {
    /// 0xFF = published with the retain flag.
    retain: u8,
    id: Id,
    expires_at: Option<Gen>,
    args: Vec<(Key, Gen)>,
}

fn leaf(l: &Leaf) -> Value {
    match l {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => Value::Bool(*b),
        Leaf::Int(i) => Value::from(*i),
        Leaf::UInt(u) => Value::from(*u),
        Leaf::Float(f) => Value::from(*f), // non-finite -> null
        Leaf::Str(s) => Value::String(s.clone()),
    }
}

fn value(g: &Gen, v: &Vocabulary, now: DateTime<Utc>) -> Value {
    match g {
        Gen::Leaf(l) => leaf(l),
        Gen::Small(n) => Value::from(*n),
        Gen::Hundreds(n) => Value::from(u32::from(*n) * 100),
        Gen::IntAsFloat(i, frac) => Value::from(f64::from(*i) + if *frac { 0.5 } else { 0.0 }),
        Gen::EnumName(i) => match v.enum_names.get(usize::from(*i)) {
            Some(name) => Value::String(name.clone()),
            None => Value::String(format!("code_0x{i:02x}")),
        },
        Gen::CodeHex(n) => Value::String(format!("code_0x{n:x}")),
        Gen::Time(secs, offset_min) => {
            let offset = FixedOffset::east_opt(i32::from(*offset_min) * 60)
                .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap());
            match Duration::try_seconds(*secs).and_then(|d| now.checked_add_signed(d)) {
                Some(t) => Value::String(t.with_timezone(&offset).to_rfc3339()),
                None => Value::String(format!("{secs}")),
            }
        }
        Gen::Hex(bytes, stray, upper) => {
            let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if *stray {
                s.push('f');
            }
            if *upper {
                s = s.to_uppercase();
            }
            Value::String(s)
        }
        Gen::Array(items) => Value::Array(items.iter().map(leaf).collect()),
        Gen::Object(items) => Value::Object(
            items
                .iter()
                .map(|(k, l)| (k.clone(), leaf(l)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

fn build(s: &Structured, v: &Vocabulary, now: DateTime<Utc>) -> Vec<u8> {
    let mut object = Map::new();
    match &s.id {
        Id::Missing => {}
        Id::Counter(n) => {
            object.insert("id".into(), Value::String(format!("cmd-{n}")));
        }
        Id::Text(t) => {
            object.insert("id".into(), Value::String(t.clone()));
        }
        Id::Other(g) => {
            object.insert("id".into(), value(g, v, now));
        }
    }
    if let Some(g) = &s.expires_at {
        object.insert("expires_at".into(), value(g, v, now));
    }
    for (key, g) in &s.args {
        let key = match key {
            Key::Arg(i) => match v.arg_names.get(usize::from(*i) % v.arg_names.len().max(1)) {
                Some(name) => name.clone(),
                None => continue,
            },
            Key::Other(k) => k.clone(),
        };
        object.insert(key, value(g, v, now));
    }
    serde_json::to_vec(&Value::Object(object)).expect("a JSON object serialises")
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let v = vocabulary();
    let commands = v.profile.commands();
    let pick = usize::from(ctl & 0x7f) % (commands.len() + 1);
    let name = commands
        .get(pick)
        .map_or(UNKNOWN_COMMAND, |c| c.name.as_str());
    let now = Utc::now();

    let (payload, retain) = if ctl & 0x80 == 0 {
        (rest.to_vec(), false)
    } else {
        let u = Unstructured::new(rest);
        let Ok(s) = Structured::arbitrary_take_rest(u) else {
            return;
        };
        (build(&s, v, now), s.retain == 0xFF)
    };

    let envelope = match parse::envelope(&payload, retain, MAX_PAYLOAD) {
        Ok(envelope) => envelope,
        Err(_) => return,
    };
    assert!(!retain, "a retained command passed the envelope check");
    let id = envelope.id.clone();
    assert!(
        (1..=64).contains(&id.chars().count()),
        "envelope accepted id {id:?}"
    );

    let parsed = match parse::body(&v.profile, name, envelope, now) {
        Ok(parsed) => parsed,
        Err(_) => return,
    };
    assert_ne!(name, UNKNOWN_COMMAND, "an unknown command was accepted");
    assert_eq!(parsed.def.name, name, "parsed a different command");
    for key in ["id", "expires_at"] {
        assert!(
            !parsed.args.contains_key(key),
            "envelope key {key} left in args"
        );
    }
    if let Some(at) = parsed.expires_at {
        assert!(at > now, "accepted a command that expired at {at}");
    }
    if let Err(e) = parsed.def.decode(&parsed.body) {
        panic!(
            "command {name} (id {id:?}): body {:02X?} encoded from {:?} does not decode: {e}",
            parsed.body, parsed.args
        );
    }
});
