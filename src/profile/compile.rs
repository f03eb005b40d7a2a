//! Compiles the framing and link sections (DESIGN §5) and checks the
//! cross-references between sections.

use super::compile_fields::{code, duration, Ctx};
use super::error::{at, sem, Seg, Sem};
use super::message::{Command, Message};
use super::schema::{FramingDef, LinkDef, LinkModeDef, OrderDef, PartDef};
use super::{LinkMode, LinkRules, PollIntervalCommand, PollRequest, SequenceRule};
use crate::codec::{
    AsciiLineFraming, BinaryFraming, ByteOrder, Checksum, ChecksumField, Framing, FramingKind,
    LengthField, Part, Stuffing,
};

const DEFAULT_MAX_FRAME: usize = 512;

fn part(p: PartDef) -> Part {
    match p {
        PartDef::Sync => Part::Sync,
        PartDef::Address => Part::Address,
        PartDef::Code => Part::Code,
        PartDef::Length => Part::Length,
        PartDef::Payload => Part::Payload,
        PartDef::Checksum => Part::Checksum,
    }
}

fn order(o: OrderDef) -> ByteOrder {
    if o == OrderDef::Little {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    }
}

fn checksum(name: &str, path: &[Seg]) -> Sem<Checksum> {
    Checksum::from_name(name).map_or_else(
        || sem(path, format!("unknown checksum {name:?}: use xor, sum8, lrc or a crc catalogue name such as CRC_16_MODBUS")),
        Ok,
    )
}

fn one_char(s: &Option<String>, default: u8, path: &[Seg]) -> Sem<u8> {
    match s.as_deref() {
        None => Ok(default),
        Some(c) if c.len() == 1 => Ok(c.as_bytes()[0]),
        Some(c) => sem(
            path,
            format!("must be exactly one ASCII character, not {c:?}"),
        ),
    }
}

pub fn framing(f: &FramingDef, path: &[Seg]) -> Sem<(Framing, Ctx)> {
    let max_frame = f.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
    if !(4..=65536).contains(&max_frame) {
        return sem(
            &at(path, ["max_frame".into()]),
            "max_frame must be between 4 and 65536 bytes",
        );
    }
    if let Some(a) = &f.ascii_line {
        let binary_keys = [
            ("sync", !f.sync.is_empty()),
            (
                "address",
                f.address != super::schema::AddressDef::Flag(false),
            ),
            ("code_size", f.code_size.is_some()),
            ("length", f.length.is_some()),
            ("checksum", f.checksum.is_some()),
            ("stuffing", f.stuffing.is_some()),
            ("end", f.end.is_some()),
            ("silence", f.silence.is_some()),
        ];
        if let Some((key, _)) = binary_keys.iter().find(|(_, set)| *set) {
            return sem(
                &at(path, [(*key).into()]),
                format!("`{key}` does not apply to ascii_line framing"),
            );
        }
        let ap = at(path, ["ascii_line".into()]);
        let start = match &a.start {
            None => None,
            s => Some(one_char(s, b'$', &at(&ap, ["start".into()]))?),
        };
        let terminator = a
            .terminator
            .clone()
            .unwrap_or_else(|| "\r\n".into())
            .into_bytes();
        if terminator.is_empty() {
            return sem(
                &at(&ap, ["terminator".into()]),
                "terminator must not be empty",
            );
        }
        let ascii = AsciiLineFraming {
            start,
            separator: one_char(&a.separator, b',', &at(&ap, ["separator".into()]))?,
            checksum: match &a.checksum {
                Some(c) => Some(checksum(c, &at(&ap, ["checksum".into()]))?),
                None => None,
            },
            checksum_marker: one_char(
                &a.checksum_marker,
                b'*',
                &at(&ap, ["checksum_marker".into()]),
            )?,
            terminator,
        };
        let ctx = Ctx {
            text: Some(ascii.separator),
            code_size: 0,
        };
        return Ok((
            Framing {
                max_frame,
                kind: FramingKind::AsciiLine(ascii),
            },
            ctx,
        ));
    }
    let code_size = f.code_size.unwrap_or(1);
    if !(1..=2).contains(&code_size) {
        return sem(&at(path, ["code_size".into()]), "code_size must be 1 or 2");
    }
    let mut b = BinaryFraming {
        sync: f.sync.clone(),
        address: match f.address {
            super::schema::AddressDef::Flag(on) => usize::from(on),
            super::schema::AddressDef::Sized(s) if (1..=2).contains(&s.size) => s.size,
            super::schema::AddressDef::Sized(_) => {
                return sem(
                    &at(path, ["address".into()]),
                    "address size must be 1 or 2 bytes",
                )
            }
        },
        code_size,
        length: None,
        checksum: None,
        stuffing: None,
        end: f.end,
        silence: match &f.silence {
            Some(s) => Some(duration(s, &at(path, ["silence".into()]))?),
            None => None,
        },
    };
    if let Some(l) = &f.length {
        let lp = at(path, ["length".into()]);
        let size = l.size.unwrap_or(1);
        if ![1, 2, 4].contains(&size) {
            return sem(&at(&lp, ["size".into()]), "length size must be 1, 2 or 4");
        }
        let covers: Vec<Part> = l.covers.as_ref().map_or(vec![Part::Payload], |c| {
            c.iter().map(|p| part(*p)).collect()
        });
        if !covers.contains(&Part::Payload) {
            return sem(&at(&lp, ["covers".into()]), "covers must include payload");
        }
        let before_code = l.position == Some(super::schema::LengthPosition::BeforeCode);
        b.length = Some(LengthField {
            size,
            order: order(l.order),
            before_code,
            covers,
            adjust: l.adjust,
        });
    }
    let mut wire: Vec<Part> = vec![Part::Sync];
    wire.extend(b.header_parts());
    wire.push(Part::Payload);
    wire.retain(|p| *p == Part::Payload || b.part_size(*p) > 0);
    if let Some(c) = &f.checksum {
        let cp = at(path, ["checksum".into()]);
        let from = c.from.map_or(wire[0], part);
        let to = c.to.map_or(Part::Payload, part);
        let (Some(i), Some(j)) = (
            wire.iter().position(|p| *p == from),
            wire.iter().position(|p| *p == to),
        ) else {
            return sem(&cp, "checksum from/to must name parts this frame has (sync, address, code, length, payload)");
        };
        if i > j {
            return sem(
                &at(&cp, ["from".into()]),
                "checksum `from` must come before `to` on the wire",
            );
        }
        let algorithm = checksum(&c.algorithm, &at(&cp, ["algorithm".into()]))?;
        b.checksum = Some(ChecksumField {
            algorithm,
            order: order(c.order),
            from,
            to,
        });
    }
    if let Some(s) = &f.stuffing {
        let sp = at(path, ["stuffing".into()]);
        if !s.escaped.contains(&s.escape) {
            return sem(
                &at(&sp, ["escaped".into()]),
                "escaped must include the escape byte itself",
            );
        }
        if b.end.is_none() && b.length.is_none() {
            return sem(
                &sp,
                "byte stuffing needs an `end` byte or a `length` field to find the frame end",
            );
        }
        b.stuffing = Some(Stuffing {
            escape: s.escape,
            escaped: s.escaped.clone(),
            xor: s.xor,
        });
    }
    if b.silence.is_none() {
        if b.sync.is_empty() {
            return sem(
                path,
                "binary framing needs `sync` bytes unless frames are delimited by `silence`",
            );
        }
        if b.length.is_none() && b.end.is_none() {
            return sem(path, "binary framing needs a `length` field, an `end` byte or `silence` to find where a frame ends");
        }
    }
    let ctx = Ctx {
        text: None,
        code_size,
    };
    Ok((
        Framing {
            max_frame,
            kind: FramingKind::Binary(b),
        },
        ctx,
    ))
}

pub fn link(
    l: &LinkDef,
    ctx: &Ctx,
    commands: &[Command],
    messages: &[Message],
    path: &[Seg],
) -> Sem<LinkRules> {
    let opt_code = |c: &Option<super::schema::CodeDef>, key: &str| -> Sem<_> {
        match c {
            Some(c) => Ok(Some(code(ctx, c, &at(path, [key.into()]))?)),
            None => Ok(None),
        }
    };
    let dur = |d: &Option<String>, key: &str, default: u64| match d {
        Some(d) => duration(d, &at(path, [key.into()])),
        None => Ok(std::time::Duration::from_millis(default)),
    };
    let mode = match l.mode {
        LinkModeDef::DevicePolls => LinkMode::DevicePolls,
        LinkModeDef::HostPolls => LinkMode::HostPolls,
        LinkModeDef::Unsolicited => LinkMode::Unsolicited,
    };
    let poll = opt_code(&l.poll, "poll")?;
    if mode == LinkMode::DevicePolls && poll.is_none() {
        return sem(path, "device_polls needs the `poll` frame code");
    }
    let ack = opt_code(&l.ack, "ack")?;
    for (key, c) in [("poll", &poll), ("ack", &ack)] {
        if let Some(m) = messages.iter().find(|m| Some(&m.code) == c.as_ref()) {
            return sem(
                &at(path, [key.into()]),
                format!("code {} is also message {}", m.code, m.name),
            );
        }
    }
    let sequence = match &l.sequence {
        Some(s) if s.min > s.max => {
            return sem(
                &at(path, ["sequence".into()]),
                "sequence min must not exceed max",
            )
        }
        Some(s) => Some(SequenceRule {
            min: s.min,
            max: s.max,
            dedupe: s.dedupe,
        }),
        None => None,
    };
    let poll_interval_command = match &l.poll_interval_command {
        Some(p) => {
            let pp = at(path, ["poll_interval_command".into()]);
            let Some(cmd) = commands.iter().find(|c| c.name == p.command) else {
                return sem(
                    &at(&pp, ["command".into()]),
                    format!("no command named {:?}", p.command),
                );
            };
            if !cmd
                .layout
                .fields
                .iter()
                .any(|f| f.name.as_deref() == Some(p.arg.as_str()))
            {
                return sem(
                    &at(&pp, ["arg".into()]),
                    format!("command {} has no argument {:?}", cmd.name, p.arg),
                );
            }
            Some(PollIntervalCommand {
                command: p.command.clone(),
                arg: p.arg.clone(),
            })
        }
        None => None,
    };
    if !l.poll_requests.is_empty() && mode != LinkMode::HostPolls {
        return sem(
            &at(path, ["poll_requests".into()]),
            "poll_requests only apply to mode host_polls",
        );
    }
    let mut poll_requests = Vec::new();
    for (i, r) in l.poll_requests.iter().enumerate() {
        let rp = at(path, ["poll_requests".into(), i.into()]);
        let Some(cmd) = commands.iter().find(|c| c.name == r.command) else {
            return sem(
                &at(&rp, ["command".into()]),
                format!("no command named {:?}", r.command),
            );
        };
        if let Err(e) = cmd.encode(&r.args) {
            return sem(
                &at(&rp, ["args".into()]),
                format!("invalid arguments for {}: {e}", cmd.name),
            );
        }
        poll_requests.push(PollRequest {
            command: r.command.clone(),
            args: r.args.clone(),
        });
    }
    let down_after_polls = l.down_after_polls.unwrap_or(3);
    if down_after_polls == 0 {
        return sem(
            &at(path, ["down_after_polls".into()]),
            "down_after_polls must be at least 1",
        );
    }
    Ok(LinkRules {
        mode,
        poll,
        ack,
        answer_within: dur(&l.answer_within, "answer_within", 100)?,
        poll_interval: dur(&l.poll_interval, "poll_interval", 200)?,
        down_after_polls,
        retries: l.retries.unwrap_or(3),
        retry_after: dur(&l.retry_after, "retry_after", 100)?,
        sequence,
        poll_interval_command,
        poll_requests,
        down_probe_interval: match &l.down_probe_interval {
            Some(_) if mode != LinkMode::HostPolls => {
                return sem(
                    &at(path, ["down_probe_interval".into()]),
                    "down_probe_interval only applies to mode host_polls",
                )
            }
            Some(_) => Some(dur(&l.down_probe_interval, "down_probe_interval", 0)?),
            None => None,
        },
        address_range: match l.address_range {
            Some([lo, hi]) if lo > hi => {
                return sem(
                    &at(path, ["address_range".into()]),
                    "address_range is [lowest, highest]",
                )
            }
            Some([lo, hi]) => (lo, hi),
            None => (0, u16::MAX),
        },
    })
}
