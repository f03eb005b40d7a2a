//! The VMC profile against protocols/vmc-upper-computer.md: every §2 test
//! vector, the §4 names, and argument validation.

use bytes::{Bytes, BytesMut};
use chrono::{Local, NaiveDate, TimeZone};
use serde_json::{json, Map, Value};
use tokio_util::codec::{Decoder, Encoder};

use super::tests::vmc;
use crate::codec::{hex, Frame, FrameCode, FrameCodec};

fn bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Decodes one wire frame into (code, PackNO, body).
fn parse(wire: &str) -> (FrameCode, u8, Vec<u8>) {
    let mut codec = FrameCodec::new(&vmc().framing);
    let mut buf = BytesMut::from(&bytes(wire)[..]);
    let f = codec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    let seq = f.payload.first().copied().unwrap_or(0);
    (f.code, seq, f.payload.get(1..).unwrap_or(&[]).to_vec())
}

fn decode(wire: &str) -> Value {
    let (code, _, body) = parse(wire);
    let p = vmc();
    Value::Object(p.message_for(&code).unwrap().decode(&body).unwrap())
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Encodes a command into a full wire frame with PackNO `seq`.
fn command_frame(name: &str, seq: u8, a: Value) -> Vec<u8> {
    let p = vmc();
    let cmd = p.command(name).unwrap();
    let mut payload = vec![seq];
    payload.extend(cmd.encode(&args(a)).unwrap());
    let frame = Frame {
        address: None,
        code: cmd.code.clone(),
        payload: Bytes::from(payload),
    };
    let mut out = BytesMut::new();
    FrameCodec::new(&p.framing)
        .encode(&frame, &mut out)
        .unwrap();
    out.to_vec()
}

fn arg_error(name: &str, a: Value) -> String {
    vmc()
        .command(name)
        .unwrap()
        .encode(&args(a))
        .unwrap_err()
        .to_string()
}

#[test]
fn poll_and_ack_vectors() {
    let p = vmc();
    assert_eq!(parse("FA FB 41 00 40").0, *p.link.poll.as_ref().unwrap());
    assert_eq!(parse("FA FB 42 00 43").0, *p.link.ack.as_ref().unwrap());
    assert_eq!(p.link.answer_within.as_millis(), 100);
    assert_eq!(p.link.down_after_polls, 3);
    assert_eq!(p.link.retries, 5);
    let seq = p.link.sequence.unwrap();
    assert_eq!((seq.min, seq.max, seq.dedupe), (1, 255, true));
    assert_eq!(
        p.link.poll_interval_command.as_ref().unwrap().arg,
        "interval_ms"
    );
}

#[test]
fn money_collected_vector() {
    assert_eq!(parse("FA FB 21 06 07 02 00 00 00 64 47").1, 7);
    assert_eq!(
        decode("FA FB 21 06 07 02 00 00 00 64 47"),
        json!({"mode": "coin", "amount": 100})
    );
    let m = vmc();
    let m = m.message("money_collected").unwrap();
    assert_eq!(m.qos, 1);
    let with_card = m.decode(&bytes("03 00 00 00 64 31 32 33")).unwrap();
    assert_eq!(
        Value::Object(with_card),
        json!({"mode": "ic_card", "amount": 100, "card": "123"})
    );
}

#[test]
fn dispense_vector_and_unknown_code() {
    assert_eq!(
        decode("FA FB 04 04 08 02 00 0B 00"),
        json!({"status": "success", "selection": 11})
    );
    let p = vmc();
    let m = p.message("dispense").unwrap();
    let v = m.decode(&bytes("05 00 0B 01")).unwrap();
    assert_eq!(
        Value::Object(v),
        json!({"status": "code_0x05", "selection": 11, "microwave": 1})
    );
}

#[test]
fn selection_info_vector() {
    let v = decode("FA FB 11 0C 09 00 0B 00 00 00 96 05 0A 04 D2 00 51");
    let want = json!({"selection": 11, "price": 150, "inventory": 5, "capacity": 10, "product_id": 1234, "paused": false});
    assert_eq!(v, want);
    let p = vmc();
    let paused = p
        .message("selection")
        .unwrap()
        .decode(&bytes("00 0B 00 00 00 96 05 0A 04 D2 01"))
        .unwrap();
    assert_eq!(paused["paused"], json!(true));
}

#[test]
fn drive_vector() {
    assert_eq!(
        command_frame("drive", 3, json!({"selection": 11})),
        bytes("FA FB 06 05 03 01 00 00 0B 0B")
    );
    let (_, _, body) = parse("FA FB 06 05 03 01 00 00 0B 0B");
    let decoded = vmc().command("drive").unwrap().decode(&body).unwrap();
    assert_eq!(
        Value::Object(decoded),
        json!({"selection": 11, "drop_sensor": true, "elevator": false})
    );
}

#[test]
fn set_price_vector() {
    let got = command_frame(
        "set_price",
        4,
        json!({"id": "x", "expires_at": "2026-01-01T00:00:00Z", "selection": 11, "price": 150}),
    );
    assert_eq!(got, bytes("FA FB 12 07 04 00 0B 00 00 00 96 8D"));
}

#[test]
fn set_time_vector_uses_local_wall_clock() {
    let naive = NaiveDate::from_ymd_opt(2026, 11, 22)
        .unwrap()
        .and_hms_opt(9, 30, 5)
        .unwrap();
    let local = Local.from_local_datetime(&naive).earliest().unwrap();
    // The same instant written in UTC must give the local digits too.
    let utc = local.with_timezone(&chrono::Utc).to_rfc3339();
    let got = command_frame("set_time", 5, json!({"time": utc}));
    assert_eq!(got, bytes("FA FB 70 0A 05 09 01 20 26 11 22 09 30 05 7F"));
    let p = vmc();
    assert_eq!(
        p.command("set_time").unwrap().completion,
        super::Completion::Answer {
            message: "menu".into(),
            timeout: std::time::Duration::from_secs(2)
        }
    );
    let menu = p
        .message("menu")
        .unwrap()
        .decode(&bytes("09 01 20 26"))
        .unwrap();
    assert_eq!(
        Value::Object(menu),
        json!({"type": 9, "op": 1, "data": "2026"})
    );
}

#[test]
fn machine_status_fields() {
    let p = vmc();
    let m = p.message("machine_status").unwrap();
    assert!(m.retain);
    assert_eq!(m.qos, 0);
    let mut body = bytes("01 00 01 01 00 00 00 03 E8 00 00 00 0A");
    body.extend(b"0000123456");
    body.extend(b"  21.5\0\0");
    body.extend(b"n/a     ");
    let v = m.decode(&body).unwrap();
    assert_eq!(v["machine_id"], json!("0000123456"));
    assert_eq!(v["temperature"], json!(21.5));
    assert_eq!(v["humidity"], json!("n/a"));
    assert_eq!(v["bill_change"], json!(1000));
    assert!(m.decode(&body[..20]).is_err());
}

#[test]
fn responses_and_card_balance() {
    let p = vmc();
    for name in [
        "check_selection",
        "status",
        "give_change",
        "card_balance",
        "menu",
    ] {
        assert_eq!(
            p.message(name).unwrap().kind,
            super::MessageKind::Response,
            "{name}"
        );
    }
    let ok = p
        .message("card_balance")
        .unwrap()
        .decode(&bytes("02 00 00 00 10"))
        .unwrap();
    assert_eq!(Value::Object(ok), json!({"ok": false, "balance": 16}));
    let cmd = p.command("card_balance").unwrap();
    assert_eq!(cmd.encode(&args(json!({}))).unwrap(), [1]);
    assert_eq!(cmd.encode(&args(json!({"cancel": true}))).unwrap(), [2]);
    assert_eq!(
        p.command("set_poll_interval")
            .unwrap()
            .encode(&args(json!({"interval_ms": 200})))
            .unwrap(),
        [2]
    );
    assert_eq!(
        p.command("give_change")
            .unwrap()
            .encode(&args(json!({"id": "a"})))
            .unwrap(),
        Vec::<u8>::new()
    );
    for never in [
        "buy",
        "drive",
        "money_received",
        "card_deduct",
        "give_change",
    ] {
        assert!(!p.command(never).unwrap().idempotent, "{never}");
    }
}

#[test]
fn too_short_and_trailing_bytes() {
    let p = vmc();
    let m = p.message("credit").unwrap();
    assert!(m.decode(&[]).is_err());
    assert!(m.decode(&[0, 0, 1]).is_err());
    assert_eq!(m.decode(&[0, 0, 1, 0, 9]).unwrap()["amount"], json!(256));
}

#[test]
fn argument_errors_name_the_field() {
    assert_eq!(
        arg_error("buy", json!({"selection": 1000})),
        "selection: must be between 1 and 999, got 1000"
    );
    assert_eq!(
        arg_error("set_price", json!({"selection": 1010, "price": 1})),
        "selection: must be 0, between 1 and 999, or between 1000 and 1009, got 1010"
    );
    assert!(
        arg_error("buy", json!({"selection": 11, "qty": 1})).starts_with("qty: unknown argument")
    );
    assert_eq!(
        arg_error("buy", json!({})),
        "selection: missing; this argument is required"
    );
    assert_eq!(
        arg_error("buy", json!({"selection": "11"})),
        "selection: must be a number, got \"11\""
    );
    assert_eq!(
        arg_error("buy", json!({"selection": 1.5})),
        "selection: must be an integer, got 1.5"
    );
    assert!(
        arg_error("money_received", json!({"mode": "cash", "amount": 1}))
            .starts_with("mode: must be one of bill, coin")
    );
    assert!(
        arg_error("menu", json!({"type": 1, "op": 1, "data": "xyz"}))
            .starts_with("data: must be a hex string")
    );
    assert!(arg_error("set_time", json!({"time": "yesterday"}))
        .starts_with("time: must be an RFC 3339"));
    assert_eq!(
        arg_error("set_poll_interval", json!({"interval_ms": 150})),
        "interval_ms: must be a multiple of 100, got 150"
    );
    assert!(arg_error("set_poll_interval", json!({"interval_ms": 2100}))
        .starts_with("interval_ms: must be between 100 and 2000"));
    assert!(
        arg_error("set_inventory", json!({"selection": 1, "inventory": 256}))
            .starts_with("inventory: must be between 0 and 255")
    );
    assert!(arg_error("drive", json!({"selection": 1, "elevator": 1}))
        .starts_with("elevator: must be true or false"));
    assert!(arg_error("status", json!({"x": 1})).contains("takes no arguments"));
}

#[test]
fn simulator_side_encodes_messages_and_rejects_far_dates() {
    let p = vmc();
    let m = p.message("money_collected").unwrap();
    assert_eq!(
        m.encode(&args(json!({"mode": "coin", "amount": 100})))
            .unwrap(),
        bytes("02 00 00 00 64")
    );
    let d = p.message("dispense").unwrap();
    assert_eq!(
        d.encode(&args(json!({"status": "code_0x05", "selection": 11})))
            .unwrap(),
        bytes("05 00 0B")
    );
    assert!(
        arg_error("set_time", json!({"time": "9999-12-31T23:59:59-12:00"})).starts_with("time:")
            || chrono::Local::now().offset().local_minus_utc() < 12 * 3600
    );
}
