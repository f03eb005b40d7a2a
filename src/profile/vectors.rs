//! Test vectors carried by a profile (`tests:`): frames as on the wire,
//! each with the message fields it decodes to or the command arguments it
//! encodes from. `vendgate check` runs them, so a profile author can put
//! the examples of the protocol document into the profile and learn at
//! once, with the profile's line, where the profile disagrees with them.
//!
//! A vector runs through the same codec and message/command layouts as
//! `run`: the frame is decoded by the framing (sync, length, checksum), the
//! link's sequence byte is set aside, and the body is decoded (a message)
//! or compared with the encoded arguments (a command); a command's frame is
//! also encoded again and must give back the same bytes.

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

use super::error::{at, sem, Seg, Sem};
use super::{Command, Message, Profile};
use crate::codec::{Frame, FrameCodec};

/// One entry of `tests:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorDef {
    /// The whole frame in hex, spaces allowed: `FA FB 21 06 07 02 00 00 00 64 47`.
    frame: String,
    /// A message of the profile: the frame must decode to exactly `fields`.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    fields: Option<Map<String, Value>>,
    /// A command of the profile: `args` must encode to exactly this frame.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Option<Map<String, Value>>,
}

/// A compiled vector, with where it is in the profile file.
#[derive(Clone, Debug)]
pub struct Vector {
    pub line: usize,
    pub column: usize,
    frame: Vec<u8>,
    expect: Expect,
}

#[derive(Clone, Debug)]
enum Expect {
    Message {
        name: String,
        fields: Map<String, Value>,
    },
    Command {
        name: String,
        args: Map<String, Value>,
    },
}

/// Checks what can be checked without running: the hex, and that the
/// vector names one message or one command the profile has.
pub fn compile(defs: &[VectorDef], messages: &[Message], commands: &[Command]) -> Sem<Vec<Vector>> {
    let mut vectors = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        let p: Vec<Seg> = vec!["tests".into(), i.into()];
        let frame = parse_hex(&def.frame).or_else(|why| sem(&at(&p, ["frame".into()]), why))?;
        let expect = match (&def.message, &def.command) {
            (Some(name), None) => {
                if !messages.iter().any(|m| &m.name == name) {
                    return sem(
                        &at(&p, ["message".into()]),
                        format!("no message `{name}` in this profile"),
                    );
                }
                if def.args.is_some() {
                    return sem(
                        &at(&p, ["args".into()]),
                        "`args` go with `command`; a message has `fields`",
                    );
                }
                Expect::Message {
                    name: name.clone(),
                    fields: def.fields.clone().unwrap_or_default(),
                }
            }
            (None, Some(name)) => {
                if !commands.iter().any(|c| &c.name == name) {
                    return sem(
                        &at(&p, ["command".into()]),
                        format!("no command `{name}` in this profile"),
                    );
                }
                if def.fields.is_some() {
                    return sem(
                        &at(&p, ["fields".into()]),
                        "`fields` go with `message`; a command has `args`",
                    );
                }
                Expect::Command {
                    name: name.clone(),
                    args: def.args.clone().unwrap_or_default(),
                }
            }
            _ => return sem(&p, "a test vector names either a `message` or a `command`"),
        };
        vectors.push(Vector {
            line: 0,
            column: 0,
            frame,
            expect,
        });
    }
    Ok(vectors)
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!("`{text}` is not whole bytes in hex"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("`{}` is not a hex byte", &digits[i..i + 2]))
        })
        .collect()
}

/// JSON equality with numbers compared by value: the decoder writes a
/// scaled 40 as `4`, an author writes `4.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Profile {
    /// Runs every vector; each failure as `line:column: why`.
    pub fn run_tests(&self) -> Vec<(usize, usize, String)> {
        self.tests
            .iter()
            .filter_map(|v| self.run_vector(v).err().map(|why| (v.line, v.column, why)))
            .collect()
    }

    fn run_vector(&self, v: &Vector) -> Result<(), String> {
        let frame = self.decode_frame(&v.frame)?;
        let (name, code) = match &v.expect {
            Expect::Message { name, .. } => (name, self.message(name).map(|m| &m.code)),
            Expect::Command { name, .. } => (name, self.command(name).map(|c| &c.code)),
        };
        // `compile` checked the name; a code that differs says more than
        // the layout's complaint about the body would.
        if code != Some(&frame.code) {
            return Err(format!(
                "the frame's code is {:?}, `{name}` has {code:?}",
                frame.code
            ));
        }
        let body = self.body(&frame)?;
        match &v.expect {
            Expect::Message { name, fields } => {
                let message = self.message(name).ok_or("the message is gone")?;
                let got = message
                    .decode(body)
                    .map_err(|e| format!("the frame does not decode as `{name}`: {e}"))?;
                if !same(&Value::Object(got.clone()), &Value::Object(fields.clone())) {
                    return Err(format!(
                        "`{name}` decodes to {}, the vector says {}",
                        Value::Object(got),
                        Value::Object(fields.clone())
                    ));
                }
                Ok(())
            }
            Expect::Command { name, args } => {
                let command = self.command(name).ok_or("the command is gone")?;
                let encoded = command
                    .encode(args)
                    .map_err(|e| format!("`{name}` refuses the args: {e}"))?;
                if encoded != body {
                    return Err(format!(
                        "`{name}` encodes its args to {}, the frame carries {}",
                        hex(&encoded),
                        hex(body)
                    ));
                }
                self.encode_again(&frame, &v.frame)
            }
        }
    }

    /// The one frame of `bytes`, by the profile's framing.
    fn decode_frame(&self, bytes: &[u8]) -> Result<Frame, String> {
        let mut codec = FrameCodec::new(&self.framing);
        let mut buf = BytesMut::from(bytes);
        let frame = match codec.decode(&mut buf) {
            Ok(Some(frame)) => Some(frame),
            Ok(None) if codec.needs_silence().is_some() => codec.decode_silence(&mut buf),
            Ok(None) => None,
            Err(e) => return Err(format!("the frame does not decode: {e}")),
        };
        let stats = codec.stats();
        match frame {
            Some(frame) if buf.is_empty() && stats.skipped_bytes == 0 => Ok(frame),
            Some(_) => Err(format!("bytes left over after the frame: {}", hex(&buf))),
            None => Err(format!(
                "not a valid frame of this framing (checksum errors: {}, bytes skipped: {})",
                stats.checksum_errors, stats.skipped_bytes
            )),
        }
    }

    /// The body without the link's sequence byte (data frames of a link
    /// that numbers them).
    fn body<'a>(&self, frame: &'a Frame) -> Result<&'a [u8], String> {
        match self.link.sequence {
            Some(_) => frame
                .payload
                .get(1..)
                .ok_or_else(|| "a data frame without its sequence byte".to_owned()),
            None => Ok(&frame.payload),
        }
    }

    /// The frame encoded again must be the vector's bytes (length and
    /// checksum as the gateway writes them).
    fn encode_again(&self, frame: &Frame, bytes: &[u8]) -> Result<(), String> {
        let mut codec = FrameCodec::new(&self.framing);
        let mut out = BytesMut::new();
        codec
            .encode(frame, &mut out)
            .map_err(|e| format!("the frame cannot be encoded: {e}"))?;
        if out.as_ref() == bytes {
            Ok(())
        } else {
            Err(format!("the gateway would write {}", hex(&out)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::profile::{Profile, ProfileError};

    fn shipped(name: &str) -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
        Profile::resolve(&dir, name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_shipped_profiles_pass_their_vectors() {
        for name in ["vmc-upper-computer", "coolmax-cc200"] {
            let profile = shipped(name);
            assert!(
                profile.tests.len() >= 4,
                "{name} carries its protocol's vectors"
            );
            assert_eq!(profile.run_tests(), Vec::new(), "{name}");
        }
    }

    fn with_vectors(tests: &str) -> Result<Profile, ProfileError> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles/vmc-upper-computer.yaml");
        let text = std::fs::read_to_string(&path).expect("profile");
        let cut = text.find("\ntests:\n").expect("tests section");
        Profile::from_str(&format!("{}\ntests:\n{tests}", &text[..cut]), &path)
    }

    #[test]
    fn each_kind_of_disagreement_is_reported_at_its_vector() {
        let profile = with_vectors(
            "  - frame: FA FB 21 06 07 02 00 00 00 64 47\n    message: money_collected\n    fields: {mode: coin, amount: 100}\n\
             \x20 - frame: FA FB 21 06 07 02 00 00 00 64 48\n    message: money_collected\n    fields: {mode: coin, amount: 100}\n\
             \x20 - frame: FA FB 12 07 04 00 0B 00 00 00 96 8D\n    command: set_price\n    args: {selection: 11, price: 151}\n\
             \x20 - frame: FA FB 21 06 07 02 00 00 00 64 47\n    message: credit\n    fields: {amount: 100}\n",
        )
        .expect("valid vectors");
        let failures = profile.run_tests();
        let lines: Vec<usize> = failures.iter().map(|f| f.0).collect();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{failures:?}");
        assert!(failures[0].2.contains("not a valid frame"), "{failures:?}");
        assert!(failures[1].2.contains("set_price"), "{failures:?}");
        assert!(failures[2].2.contains("code"), "{failures:?}");
    }

    #[test]
    fn a_malformed_vector_is_a_profile_error_at_its_key() {
        for (tests, needle) in [
            ("  - frame: FA FB 2\n    message: credit\n", "whole bytes"),
            ("  - frame: FA ZZ\n    message: credit\n", "not a hex byte"),
            ("  - frame: FA FB\n    message: nope\n", "no message `nope`"),
            ("  - frame: FA FB\n    command: nope\n", "no command `nope`"),
            ("  - frame: FA FB\n", "either a `message` or a `command`"),
            (
                "  - frame: FA FB\n    message: credit\n    args: {}\n",
                "`args` go with `command`",
            ),
        ] {
            let e = with_vectors(tests).expect_err(needle).to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains(":0:0:"), "located: {e}");
        }
    }
}
