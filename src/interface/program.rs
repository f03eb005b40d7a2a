//! One jq program of an interface file, compiled once with the `jaq`
//! crates (jaq-core, jaq-std, jaq-json) and run per message.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

type Data = data::JustLut<Val>;

/// A compiled program. `Send + Sync`: one copy serves every machine.
pub struct Program {
    filter: jaq_core::Filter<Data>,
    source: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({:?})", self.source)
    }
}

/// Why a program does not compile: a message and the byte offset in the
/// program's text it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
}

impl Program {
    pub fn compile(code: &str) -> Result<Program, CompileError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(&arena, File { code, path: () })
            .map_err(|errors| load_error(code, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let first = errors.into_iter().flat_map(|(_, e)| e).next();
                match first {
                    Some((name, undefined)) => CompileError {
                        offset: load::span(code, name).start,
                        message: format!("`{name}` is not defined ({undefined:?})"),
                    },
                    None => CompileError {
                        offset: 0,
                        message: "the program does not compile".into(),
                    },
                }
            })?;
        Ok(Program {
            filter,
            source: code.to_owned(),
        })
    }

    /// Runs the program on `input`; exactly one output is a success (DESIGN
    /// §7), none, several or a jq error is an `Err` with a readable reason.
    pub fn run(&self, input: Value) -> Result<Value, String> {
        let input = Val::deserialize(input).map_err(|e| format!("input: {e}"))?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        // An error does not end jaq's output stream; two items are enough
        // to tell "one" from "several".
        let mut outputs = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let first = match outputs.next() {
            None => return Err("the program gave no output".into()),
            Some(Err(e)) => return Err(format!("the program failed: {e}")),
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err("the program gave more than one output".into());
        }
        to_json(&first)
    }
}

/// jaq's values print as JSON; strings are read back as JSON strings.
fn to_json(value: &Val) -> Result<Value, String> {
    let text = value.to_string();
    serde_json::from_str(&text).map_err(|e| format!("the output `{text}` is not JSON: {e}"))
}

fn load_error(code: &str, errors: load::Errors<&str, ()>) -> CompileError {
    let mut found = None;
    for (_, error) in errors {
        found = match error {
            load::Error::Io(v) => v
                .into_iter()
                .next()
                .map(|(at, m)| (load::span(code, at).start, m)),
            load::Error::Lex(v) => v.into_iter().next().map(|(expect, at)| {
                let offset = load::span(code, at).start;
                (offset, format!("expected {}", expect.as_str()))
            }),
            load::Error::Parse(v) => v.into_iter().next().map(|(expect, at)| {
                let offset = load::span(code, at).start;
                (offset, format!("expected {}", expect.as_str()))
            }),
        };
        if found.is_some() {
            break;
        }
    }
    let (offset, message) = found.unwrap_or((0, "the program does not parse".into()));
    CompileError { offset, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_the_design_example() {
        let p = Program::compile(
            "{msg_id: (.seq|tostring), method: .data.mode, amount_cents: .data.amount, time: .ts}",
        )
        .unwrap();
        let out = p
            .run(json!({"seq": 17, "ts": "2026-11-22T09:30:05.123Z",
                        "data": {"mode": "coin", "amount": 100}}))
            .unwrap();
        assert_eq!(
            out,
            json!({"msg_id": "17", "method": "coin", "amount_cents": 100,
                   "time": "2026-11-22T09:30:05.123Z"})
        );
    }

    #[test]
    fn date_functions_and_strings_work() {
        let p = Program::compile("[(.ts_ms / 1000 | todate), (.s | ascii_upcase)]").unwrap();
        let out = p
            .run(json!({"ts_ms": 1795339805000u64, "s": "ok"}))
            .unwrap();
        assert_eq!(out, json!(["2026-11-22T09:30:05Z", "OK"]));
    }

    #[test]
    fn syntax_errors_point_into_the_program() {
        let e = Program::compile(".a +* 2").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Program::compile(".x | nosuchfn").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("nosuchfn"), "{}", e.message);
    }

    #[test]
    fn none_several_and_failing_outputs_are_errors() {
        let p = Program::compile("empty").unwrap();
        assert!(p.run(json!(1)).unwrap_err().contains("no output"));
        let p = Program::compile("1, 2").unwrap();
        assert!(p.run(json!(1)).unwrap_err().contains("more than one"));
        let p = Program::compile(".a | tonumber").unwrap();
        assert!(p.run(json!({"a": "x"})).unwrap_err().contains("failed"));
    }
}
