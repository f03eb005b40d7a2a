//! Compiles field lists, messages and commands, checking what serde cannot:
//! sizes, layouts, names, defaults (DESIGN §5).

use std::time::Duration;

use super::error::{at, sem, Seg, Sem};
use super::fields::{Field, FieldKind};
use super::message::{Command, Completion, Layout, Message, MessageKind, Publish};
use super::schema::{
    CodeDef, CommandDef, CompletionDef, FieldDef, KindDef, MessageDef, OrderDef, PublishDef,
    RangeDef, TypeDef,
};
use crate::codec::{ByteOrder, FrameCode};

/// What the framing allows for codes and layouts.
pub struct Ctx {
    pub text: Option<u8>,
    pub code_size: usize,
}

fn order(o: Option<OrderDef>) -> ByteOrder {
    match o {
        Some(OrderDef::Little) => ByteOrder::Little,
        _ => ByteOrder::Big,
    }
}

pub fn code(ctx: &Ctx, c: &CodeDef, path: &[Seg]) -> Sem<FrameCode> {
    match (c, ctx.text) {
        (CodeDef::Num(n), None)
            if ctx.code_size >= 4 || u64::from(*n) < 1u64 << (8 * ctx.code_size) =>
        {
            Ok(FrameCode::Num(*n))
        }
        (CodeDef::Num(n), None) => sem(
            path,
            format!(
                "code {n:#x} does not fit in code_size {} byte(s)",
                ctx.code_size
            ),
        ),
        (CodeDef::Text(t), Some(_)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(FrameCode::Text(t.clone()))
        }
        (CodeDef::Text(t), None) => sem(
            path,
            format!("code {t:?} must be a number like 0x41 with binary framing"),
        ),
        _ => sem(
            path,
            "with ASCII-line framing a code is a printable token such as TEMP",
        ),
    }
}

fn sized(f: &FieldDef, path: &[Seg]) -> Sem<usize> {
    match f.size.unwrap_or(1) {
        s @ (1 | 2 | 4 | 8) => Ok(s),
        s => sem(
            &at(path, ["size".into()]),
            format!("size must be 1, 2, 4 or 8 bytes, not {s}"),
        ),
    }
}

fn kind(f: &FieldDef, ctx: &Ctx, path: &[Seg]) -> Sem<FieldKind> {
    let o = order(f.order);
    let int = |size, signed| FieldKind::Int {
        size,
        signed,
        order: o,
        scale: f.scale.unwrap_or(1.0),
        offset: f.offset.unwrap_or(0.0),
        scaled: f.scale.is_some() || f.offset.is_some(),
    };
    let k = match f.ty {
        TypeDef::U8 => int(1, false),
        TypeDef::U16 => int(2, false),
        TypeDef::U32 => int(4, false),
        TypeDef::U64 => int(8, false),
        TypeDef::I8 => int(1, true),
        TypeDef::I16 => int(2, true),
        TypeDef::I32 => int(4, true),
        TypeDef::I64 => int(8, true),
        TypeDef::Bool => FieldKind::Bool {
            size: sized(f, path)?,
            order: o,
            true_value: f.true_value,
            false_value: f.false_value,
        },
        TypeDef::Enum => match &f.values {
            Some(values) if !values.is_empty() => FieldKind::Enum {
                size: sized(f, path)?,
                order: o,
                values: values.clone(),
            },
            _ => return sem(path, "an enum needs `values`: a map from wire code to name"),
        },
        TypeDef::Flags => match &f.bits {
            Some(bits) => {
                let size = sized(f, path)?;
                if let Some(b) = bits.keys().find(|b| usize::from(**b) >= 8 * size) {
                    return sem(
                        &at(path, ["bits".into()]),
                        format!("bit {b} does not fit in {size} byte(s)"),
                    );
                }
                FieldKind::Flags {
                    size,
                    order: o,
                    bits: bits.clone(),
                }
            }
            None => return sem(path, "flags need `bits`: a map from bit number to name"),
        },
        TypeDef::Ascii => FieldKind::Ascii {
            len: f.length,
            numeric: f.numeric,
        },
        TypeDef::Hex => FieldKind::Hex { len: f.length },
        TypeDef::Bcd => match f.length {
            Some(len @ 1..=9) => FieldKind::Bcd { len },
            _ => return sem(path, "bcd needs `length` between 1 and 9 bytes"),
        },
        TypeDef::BcdDatetime => FieldKind::BcdDateTime,
        TypeDef::Const => match f.value {
            Some(value) => FieldKind::Const {
                size: sized(f, path)?,
                order: o,
                value,
            },
            None => return sem(path, "a const field needs `value`"),
        },
        TypeDef::Text => FieldKind::Text,
        TypeDef::Int => FieldKind::TextInt,
        TypeDef::Float => FieldKind::TextFloat,
    };
    if f.scale == Some(0.0) {
        return sem(&at(path, ["scale".into()]), "scale must not be 0");
    }
    if k.is_text() != ctx.text.is_some() {
        let why = if ctx.text.is_some() {
            "ASCII-line profiles use text, int or float fields"
        } else {
            "text, int and float fields need ASCII-line framing"
        };
        return sem(&at(path, ["type".into()]), why);
    }
    Ok(k)
}

pub fn layout(defs: &[FieldDef], ctx: &Ctx, path: &[Seg]) -> Sem<Layout> {
    let mut fields: Vec<Field> = Vec::new();
    let mut after: Option<String> = None;
    for (i, f) in defs.iter().enumerate() {
        let p = at(path, [i.into()]);
        let kind = kind(f, ctx, &p)?;
        if let Some(prev) = &after {
            return sem(&p, format!("no field may follow {prev}"));
        }
        let name = match (&f.name, &kind) {
            (_, FieldKind::Const { .. }) => None,
            (Some(n), _) if n.is_empty() || n == "ts" || n == "seq" => {
                return sem(
                    &at(&p, ["name".into()]),
                    format!("{n:?} is reserved; choose another field name"),
                );
            }
            (Some(n), _) if fields.iter().any(|x| x.name.as_ref() == Some(n)) => {
                return sem(
                    &at(&p, ["name".into()]),
                    format!("field name {n} is used twice"),
                );
            }
            (Some(n), _) => Some(n.clone()),
            (None, _) => return sem(&p, "this field needs a `name` (its JSON key)"),
        };
        if !f.optional && fields.iter().any(|x| x.optional) {
            return sem(
                &p,
                "a required field cannot follow an optional one; mark it `optional: true`",
            );
        }
        if kind.wire_size().is_none() && !kind.is_text() {
            after = Some(format!(
                "the rest-of-frame field {}",
                name.as_deref().unwrap_or("?")
            ));
        }
        let mut ranges: Vec<(f64, f64)> = f
            .ranges
            .iter()
            .flatten()
            .map(|r| match r {
                RangeDef::One(v) => (*v, *v),
                RangeDef::Span([a, b]) => (*a, *b),
            })
            .collect();
        if f.min.is_some() || f.max.is_some() {
            ranges.push((
                f.min.unwrap_or(f64::NEG_INFINITY),
                f.max.unwrap_or(f64::INFINITY),
            ));
        }
        let field = Field {
            name,
            kind,
            optional: f.optional,
            default: f.default.clone(),
            ranges,
        };
        if let Some(d) = &field.default {
            if let Err(e) = field.encode(d, &mut Vec::new()) {
                return sem(
                    &at(&p, ["default".into()]),
                    format!("default is not a valid value: {e}"),
                );
            }
        }
        fields.push(field);
    }
    Ok(Layout {
        fields,
        separator: ctx.text,
    })
}

pub fn message(m: &MessageDef, ctx: &Ctx, path: &[Seg]) -> Sem<Message> {
    let qos = m
        .qos
        .unwrap_or(if m.kind == KindDef::Event { 1 } else { 0 });
    if qos > 2 {
        return sem(&at(path, ["qos".into()]), "qos must be 0, 1 or 2");
    }
    Ok(Message {
        code: code(ctx, &m.code, &at(path, ["code".into()]))?,
        name: m.name.clone(),
        kind: match m.kind {
            KindDef::Telemetry => MessageKind::Telemetry,
            KindDef::Event => MessageKind::Event,
            KindDef::Response => MessageKind::Response,
        },
        qos,
        retain: m.retain.unwrap_or(false),
        layout: layout(&m.fields, ctx, &at(path, ["fields".into()]))?,
        publish: publish(m, path)?,
    })
}

fn publish(m: &MessageDef, path: &[Seg]) -> Sem<Publish> {
    let heartbeat = match &m.heartbeat {
        Some(t) => Some(duration(t, &at(path, ["heartbeat".into()]))?),
        None => None,
    };
    match m.publish {
        Some(PublishDef::OnChange) if m.kind != KindDef::Telemetry => sem(
            &at(path, ["publish".into()]),
            "publish: on_change is for telemetry; events are always published",
        ),
        Some(PublishDef::OnChange) => Ok(Publish::OnChange {
            heartbeat: heartbeat.unwrap_or(Duration::from_secs(300)),
        }),
        _ if heartbeat.is_some() => sem(
            &at(path, ["heartbeat".into()]),
            "heartbeat applies to publish: on_change only",
        ),
        _ => Ok(Publish::Always),
    }
}

pub fn duration(text: &str, path: &[Seg]) -> Sem<Duration> {
    humantime::parse_duration(text).or_else(|e| {
        sem(
            path,
            format!("{text:?} is not a duration like 200ms or 2s ({e})"),
        )
    })
}

pub fn command(c: &CommandDef, ctx: &Ctx, messages: &[Message], path: &[Seg]) -> Sem<Command> {
    let cpath = at(path, ["completion".into()]);
    let mut error = None;
    let completion = match &c.completion {
        None => Completion::Ack,
        Some(CompletionDef::Word(w)) if w == "ack" => Completion::Ack,
        Some(CompletionDef::Word(w)) => {
            return sem(
                &cpath,
                format!("completion is `ack` or `{{answer: <message>}}`, not {w:?}"),
            )
        }
        Some(CompletionDef::Answer(a)) => {
            if !messages.iter().any(|m| m.name == a.answer) {
                return sem(
                    &at(&cpath, ["answer".into()]),
                    format!(
                        "answer names message {:?}, which this profile does not define",
                        a.answer
                    ),
                );
            }
            if let Some(name) = &a.error {
                if !messages.iter().any(|m| &m.name == name) {
                    return sem(
                        &at(&cpath, ["error".into()]),
                        format!("error names message {name:?}, which this profile does not define"),
                    );
                }
                error = Some(name.clone());
            }
            let timeout = match &a.timeout {
                Some(t) => duration(t, &at(&cpath, ["timeout".into()]))?,
                None => Duration::from_secs(2),
            };
            Completion::Answer {
                message: a.answer.clone(),
                timeout,
            }
        }
    };
    Ok(Command {
        name: c.name.clone(),
        code: code(ctx, &c.code, &at(path, ["code".into()]))?,
        completion,
        error,
        idempotent: c.idempotent,
        layout: layout(&c.args, ctx, &at(path, ["args".into()]))?,
    })
}
