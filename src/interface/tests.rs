use std::path::Path;

use serde_json::{json, Map, Value};

use super::*;

const NV3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interfaces/nordvend-nv3.yaml");

fn vars() -> Vars<'static> {
    Vars {
        prefix: "vending",
        machine: "vm-001",
        gateway: "gw-1",
    }
}

fn nv3() -> Interface {
    load(Path::new(NV3), &["vm-001"]).unwrap()
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn nv3_payment_event_has_the_native_payload() {
    let data = fields(json!({"mode": "coin", "amount": 100}));
    let message = Message {
        kind: "event",
        name: "money_collected",
        qos: 1,
        retain: false,
        seq: Some(17),
        ts: "2026-11-22T09:30:05.123Z",
        data: &data,
    };
    let out = nv3().publication(vars(), &message).unwrap();
    assert_eq!(out.topic, "nv/vm-001/up/payment");
    let payload: Value = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(
        payload,
        json!({"msg_id": "17", "method": "coin", "amount_cents": 100,
               "time": "2026-11-22T09:30:05.123Z"})
    );
    assert_eq!((out.qos, out.retain), (1, false));
}

#[test]
fn messages_outside_the_interface_are_not_published() {
    let data = Map::new();
    let message = Message {
        kind: "event",
        name: "code_0x7f",
        qos: 1,
        retain: false,
        seq: Some(1),
        ts: "2026-11-22T09:30:05.123Z",
        data: &data,
    };
    assert_eq!(nv3().publication(vars(), &message), None);
}

#[test]
fn nv3_vend_request_becomes_buy() {
    let parsed = nv3()
        .parse(
            "vm-001",
            "nv/vm-001/down",
            br#"{"req_id":"r-991","op":"vend","args":{"slot":11}}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        parsed,
        json!({"id": "r-991", "command": "buy", "args": {"selection": 11}})
    );
}

#[test]
fn nv3_reply_has_the_upper_case_code() {
    let result = fields(
        json!({"id": "r-1", "status": "timeout", "error": "no answer",
                               "ts": "2026-11-22T09:30:05.123Z"}),
    );
    let out = nv3().result(vars(), "buy", None, result).unwrap();
    assert_eq!(out.topic, "nv/vm-001/down/reply");
    let payload: Value = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(
        payload,
        json!({"req_id": "r-1", "ok": false, "code": "TIMEOUT", "message": "no answer"})
    );
}

#[test]
fn a_syntax_error_names_the_line_of_its_program() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\nstatus:\n  topic: \"x/{machine}\"\n  online: on\n  offline: off\npublish:\n  - match: \"*\"\n    topic: \"x/{machine}/{name}\"\n    payload: '{a: .b'\n",
    )
    .unwrap();
    let errors = load(&path, &[]).unwrap_err();
    let e = &errors.0[0];
    assert_eq!(e.line, 9, "{e}");
    assert!(e.message.contains("publish[0].payload"), "{e}");
    assert!(e.message.contains("jq program does not compile"), "{e}");
}

#[test]
fn filters_match_like_mqtt() {
    assert!(topic_matches("nv/+/down", "nv/vm-1/down"));
    assert!(topic_matches("nv/vm-1/#", "nv/vm-1/down/vend"));
    assert!(!topic_matches("nv/vm-1/down", "nv/vm-1/down/reply"));
}

#[test]
fn replies_under_a_command_filter_are_warned_about() {
    assert_eq!(nv3().own_replies_warning(), None);
    let flat = concat!(env!("CARGO_MANIFEST_DIR"), "/interfaces/vendlink-flat.yaml");
    let warning = load(Path::new(flat), &[]).unwrap().own_replies_warning();
    assert!(warning.is_some_and(|w| w.contains("must return null")));
}

#[test]
fn an_entry_overrides_qos_and_retain_of_the_message() {
    let data =
        fields(json!({"door": 1, "temperature": 4.5, "coin_change": 250, "bill_change": 1000}));
    let message = Message {
        kind: "telemetry",
        name: "machine_status",
        qos: 1,
        retain: false,
        seq: None,
        ts: "2026-11-22T09:30:05.123Z",
        data: &data,
    };
    let out = nv3().publication(vars(), &message).unwrap();
    assert_eq!(out.topic, "nv/vm-001/up/cabinet");
    assert_eq!((out.qos, out.retain), (0, true));
    let payload: Value = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(payload["door_open"], true);
}

#[test]
fn only_final_leaves_out_running_reports() {
    assert!(!nv3().publishes_result(true));
    assert!(nv3().publishes_result(false));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.yaml");
    std::fs::write(
        &path,
        "name: all\nstatus:\n  topic: \"x/{machine}\"\n  online: on\n  offline: off\ncommands:\n  subscribe: [\"x/{machine}/cmd\"]\n  parse: '.payload'\nresults:\n  topic: \"x/{machine}/res\"\n  payload: '.'\n",
    )
    .unwrap();
    assert!(load(&path, &[]).unwrap().publishes_result(true));
}
