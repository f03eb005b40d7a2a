//! What an interface file's jq program costs per message, against the
//! native payload of §4, in one run: the NV-3 payment program and reply
//! program against `serde_json` rendering of the same event and result.
//! Prints µs per message; the gateway's whole cost per event (versus.rs) is
//! several hundred µs on the bench machine, so this is the share to compare.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};
use vendgate::interface::{load, Message, Vars};

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("interfaces/nordvend-nv3.yaml");
    let nv3 = load(&path, &["vm-001"]).expect("the shipped interface loads");
    let vars = Vars {
        prefix: "vending",
        machine: "vm-001",
        gateway: "gw-1",
    };
    let data: Map<String, Value> = json!({"mode": "coin", "amount": 100})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ts = "2026-11-22T09:30:05.123Z";
    let n = 100_000;
    let native = per_call(n, || {
        let mut payload = data.clone();
        payload.insert("ts".into(), Value::from(ts));
        payload.insert("seq".into(), Value::from(17));
        black_box(Value::Object(payload).to_string());
    });
    let message = Message {
        kind: "event",
        name: "money_collected",
        qos: 1,
        retain: false,
        seq: Some(17),
        ts,
        data: &data,
    };
    let interface = per_call(n, || {
        black_box(nv3.publication(vars, &message));
    });
    let result: Map<String, Value> = json!({"id": "r-1", "status": "timeout",
        "error": "no answer", "ts": ts})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let reply = per_call(n, || {
        black_box(nv3.result(vars, "buy", None, result.clone()));
    });
    println!("| message | native payload (µs) | NV-3 interface (µs) |");
    println!("|---|---|---|");
    println!("| payment event (`money_collected`) | {native:.2} | {interface:.2} |");
    println!("| command reply | — | {reply:.2} |");
}
