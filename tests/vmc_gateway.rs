//! The gateway end to end: the real binary, a real broker (Mosquitto under
//! CI), and the simulated VMC board on a real pseudo-terminal.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vendgate::sim::{BoardEvent, Script};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The board answers every request command, as a real one would.
fn answering_script() -> Script {
    serde_yaml::from_str(
        r#"
on_command:
  check_selection:
    - send: check_selection
      values: {status: normal, selection: $selection}
  give_change:
    - send: give_change
      values: {bill: 0, coin: 50}
  machine_status:
    - send: machine_status
      values: {bill_acceptor: 1, coin_acceptor: 1, card_reader: 0, cooler: 1, door: 0, bill_change: 1000, coin_change: 250, machine_id: "VM000001", temperature: "4.5", humidity: "n/a"}
  status:
    - send: status
      values: {status: normal}
  card_balance:
    - send: card_balance
      values: {ok: true, balance: 1200}
  set_time:
    - send: menu
      values: {type: 9, op: 1, data: "00"}
  menu:
    - send: menu
      values: {type: 1, op: 2, data: "0a0b"}
  buy:
    - send: dispense
      values: {status: success, selection: $selection}
"#,
    )
    .expect("script")
}

fn command_count(events: &[BoardEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, BoardEvent::Command { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_telemetry_are_published_with_ts_and_seq() {
    let mut r = rig(Script::default()).await;
    r.client
        .expect(SECS(5), "gateway online", |m| {
            m.topic == "vending/gateways/gw-test/status" && m.payload == "online"
        })
        .await;
    r.board
        .send("money_collected", json!({"mode": "coin", "amount": 100}))
        .await;
    r.board
        .send(
            "money_collected",
            json!({"mode": "alipay", "amount": 250, "card": "CARD42"}),
        )
        .await;
    r.board
        .send("selection", json!({"selection": 11, "price": 150, "inventory": 5, "capacity": 10, "product_id": 1234, "paused": true}))
        .await;
    let first = r
        .client
        .expect(SECS(5), "money event", |m| {
            m.topic == "vending/vm-001/event/money_collected"
        })
        .await
        .json();
    assert_eq!(first["mode"], "coin");
    assert_eq!(first["amount"], 100);
    assert!(
        first.get("card").is_none(),
        "absent card is omitted: {first}"
    );
    let ts = first["ts"].as_str().expect("ts");
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z') && ts.len() == 24,
        "{ts}"
    );
    let second = r
        .client
        .expect(SECS(5), "second money event", |m| {
            m.topic == "vending/vm-001/event/money_collected"
        })
        .await
        .json();
    assert_eq!(second["card"], "CARD42");
    assert!(
        second["seq"].as_u64() > first["seq"].as_u64(),
        "seq increases: {first} {second}"
    );
    let selection = r
        .client
        .expect(SECS(5), "selection telemetry", |m| {
            m.topic == "vending/vm-001/telemetry/selection"
        })
        .await;
    let v = selection.json();
    assert_eq!(
        (
            v["selection"].clone(),
            v["paused"].clone(),
            v["product_id"].clone()
        ),
        (json!(11), json!(true), json!(1234))
    );
    assert!(v.get("seq").is_none(), "telemetry has no seq");
    assert!(!selection.retain);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_enum_codes_are_published_not_dropped() {
    let mut r = rig(Script::default()).await;
    // Dispense status 0x55 is not in the enum (protocol §4.1).
    r.board.raw(vmc_frame(0x04, 9, &[0x55, 0x00, 0x0B])).await;
    let v = r
        .client
        .expect(SECS(5), "dispense event", |m| {
            m.topic == "vending/vm-001/event/dispense"
        })
        .await
        .json();
    assert_eq!(v["status"], "code_0x55");
    assert_eq!(v["selection"], 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retransmitted_frame_is_published_once() {
    let mut r = rig(Script::default()).await;
    let money = vmc_frame(0x21, 7, &[2, 0, 0, 0, 100]);
    r.board.raw(money.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.board.raw(money).await; // same CMD and PackNO: a retransmission
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.board.raw(vmc_frame(0x21, 8, &[2, 0, 0, 0, 100])).await;
    let messages = r.client.drain(SECS(3)).await;
    let events: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == "vending/vm-001/event/money_collected")
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_reaches_the_board_and_completes() {
    let mut r = rig(answering_script()).await;
    let cases: Vec<(&str, Value, &str, Value)> = vec![
        (
            "check_selection",
            json!({"selection": 11}),
            "check_selection",
            json!({"selection": 11}),
        ),
        (
            "buy",
            json!({"selection": 12}),
            "buy",
            json!({"selection": 12}),
        ),
        (
            "drive",
            json!({"selection": 11}),
            "drive",
            json!({"selection": 11, "drop_sensor": true, "elevator": false}),
        ),
        (
            "set_price",
            json!({"selection": 1003, "price": 150}),
            "set_price",
            json!({"selection": 1003, "price": 150}),
        ),
        (
            "set_inventory",
            json!({"selection": 11, "inventory": 5}),
            "set_inventory",
            json!({"selection": 11, "inventory": 5}),
        ),
        (
            "set_capacity",
            json!({"selection": 11, "capacity": 10}),
            "set_capacity",
            json!({"selection": 11, "capacity": 10}),
        ),
        (
            "set_product",
            json!({"selection": 11, "product_id": 1234}),
            "set_product",
            json!({"selection": 11, "product_id": 1234}),
        ),
        (
            "set_poll_interval",
            json!({"interval_ms": 200}),
            "set_poll_interval",
            json!({"interval_ms": 200}),
        ),
        ("give_change", json!({}), "give_change", json!({})),
        (
            "money_received",
            json!({"mode": "wechat", "amount": 500}),
            "money_received",
            json!({"mode": "wechat", "amount": 500}),
        ),
        (
            "set_acceptance",
            json!({"kind": "coins", "mask": 65535}),
            "set_acceptance",
            json!({"kind": "coins", "mask": 65535}),
        ),
        ("machine_status", json!({}), "machine_status", json!({})),
        ("status", json!({}), "status", json!({})),
        (
            "card_balance",
            json!({"cancel": true}),
            "card_balance",
            json!({"cancel": true}),
        ),
        (
            "card_deduct",
            json!({"amount": 300}),
            "card_deduct",
            json!({"amount": 300}),
        ),
        (
            "set_time",
            json!({"time": "2026-11-22T09:30:05Z"}),
            "set_time",
            json!({}),
        ),
        (
            "menu",
            json!({"type": 1, "op": 2, "data": "0102"}),
            "menu",
            json!({"type": 1, "op": 2, "data": "0102"}),
        ),
    ];
    for (i, (command, args, board_name, board_args)) in cases.into_iter().enumerate() {
        let id = format!("c-{i}");
        let mut payload = args.as_object().cloned().unwrap_or_default();
        payload.insert("id".into(), Value::from(id.clone()));
        r.client
            .publish(
                &format!("vending/vm-001/cmd/{command}"),
                Value::Object(payload).to_string(),
                false,
            )
            .await;
        let seen = r
            .board
            .expect(SECS(5), &format!("{board_name} frame"), |e| matches!(e, BoardEvent::Command { name, repeat: false, .. } if name == board_name))
            .await;
        if let BoardEvent::Command { args, .. } = seen {
            for (key, value) in board_args.as_object().into_iter().flatten() {
                assert_eq!(args.get(key), Some(value), "{command}: {key} in {args:?}");
            }
        }
        let result = r
            .client
            .expect_result("vm-001", command, &id, SECS(5))
            .await;
        assert_eq!(result["status"], "ok", "{command}: {result}");
        match command {
            "check_selection" => assert_eq!(
                result["response"],
                json!({"status": "normal", "selection": 11})
            ),
            "give_change" => assert_eq!(result["response"], json!({"bill": 0, "coin": 50})),
            "status" => assert_eq!(result["response"]["status"], "normal"),
            "card_balance" => assert_eq!(result["response"], json!({"ok": true, "balance": 1200})),
            "machine_status" => {
                assert_eq!(result["response"]["machine_id"], "VM000001");
                assert_eq!(result["response"]["temperature"], 4.5);
                assert_eq!(result["response"]["humidity"], "n/a");
            }
            "set_time" | "menu" => assert!(result["response"].is_object(), "{result}"),
            _ => assert!(result.get("response").is_none(), "{command}: {result}"),
        }
    }
    // The machine_status answer is also telemetry, and retained (protocol §4.1):
    // a client subscribing later gets it at once.
    r.client
        .expect(SECS(5), "machine_status telemetry", |m| {
            m.topic == "vending/vm-001/telemetry/machine_status"
        })
        .await;
    let mut late = Client::connect(r.broker.port, "vending/vm-001/telemetry/machine_status").await;
    let retained = late
        .expect(SECS(5), "retained machine_status", |m| m.retain)
        .await;
    assert_eq!(retained.json()["machine_id"], "VM000001");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commands_are_rejected_and_nothing_is_written() {
    let mut r = rig(Script::default()).await;
    let cases: Vec<(&str, Vec<u8>, Value, &str)> = vec![
        ("buy", b"not json".to_vec(), Value::Null, "JSON"),
        ("buy", br#"{"selection": 11}"#.to_vec(), Value::Null, "id"),
        ("buy", br#"[1,2]"#.to_vec(), Value::Null, "object"),
        (
            "explode",
            br#"{"id":"r-1"}"#.to_vec(),
            json!("r-1"),
            "unknown command",
        ),
        (
            "buy",
            br#"{"id":"r-2","selection":1000}"#.to_vec(),
            json!("r-2"),
            "selection",
        ),
        (
            "buy",
            br#"{"id":"r-3","selection":"11"}"#.to_vec(),
            json!("r-3"),
            "selection",
        ),
        (
            "buy",
            br#"{"id":"r-4"}"#.to_vec(),
            json!("r-4"),
            "selection",
        ),
        (
            "buy",
            br#"{"id":"r-5","selection":11,"colour":"red"}"#.to_vec(),
            json!("r-5"),
            "colour",
        ),
        (
            "set_poll_interval",
            br#"{"id":"r-6","interval_ms":150}"#.to_vec(),
            json!("r-6"),
            "interval_ms",
        ),
        (
            "set_price",
            br#"{"id":"r-7","selection":1010,"price":1}"#.to_vec(),
            json!("r-7"),
            "selection",
        ),
        (
            "buy",
            br#"{"id":"r-8","selection":11,"expires_at":"yesterday"}"#.to_vec(),
            json!("r-8"),
            "expires_at",
        ),
        (
            "set_acceptance",
            br#"{"id":"r-9","kind":"cards","mask":1}"#.to_vec(),
            json!("r-9"),
            "kind",
        ),
        ("buy", vec![b' '; 1024 * 1024], Value::Null, "bytes"),
    ];
    for (command, payload, id, needle) in &cases {
        r.client
            .publish(
                &format!("vending/vm-001/cmd/{command}"),
                payload.clone(),
                false,
            )
            .await;
        let topic = format!("vending/vm-001/cmd/{command}/result");
        let result = r
            .client
            .expect(SECS(5), &format!("rejection of {id}"), |m| {
                m.topic == topic && m.json()["id"] == *id && m.json()["status"] == "rejected"
            })
            .await
            .json();
        let error = result["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{command} {id}: error {error:?} should mention {needle}"
        );
    }
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(
        command_count(&events),
        0,
        "no byte for an invalid command: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_id_is_answered_duplicate_and_not_sent_again() {
    let mut r = rig(Script::default()).await;
    let payload = r#"{"id":"ord-7781","selection":11}"#;
    r.client
        .publish("vending/vm-001/cmd/buy", payload, false)
        .await;
    let first = r
        .client
        .expect_result("vm-001", "buy", "ord-7781", SECS(5))
        .await;
    assert_eq!(first["status"], "ok");
    r.client
        .publish("vending/vm-001/cmd/buy", payload, false)
        .await;
    let second = r
        .client
        .expect_result("vm-001", "buy", "ord-7781", SECS(5))
        .await;
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["original"], first, "the original result is repeated");
    assert!(second["error"].is_string());
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(command_count(&events), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_commands_are_never_executed() {
    let broker = Broker::start();
    let mut client = Client::connect(broker.port, "vending/#").await;
    // Retained before the gateway starts: replayed at its subscription.
    client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"old-1","selection":11}"#,
            true,
        )
        .await;
    client
        .expect(SECS(5), "the retained command at the broker", |m| {
            m.topic == "vending/vm-001/cmd/buy"
        })
        .await;
    let mut board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_yaml(
        broker.port,
        &dir.path().join("store"),
        &[("vm-001", &board.path)],
    );
    let mut gateway = Gateway::start(dir.path(), &config);
    let result = client
        .expect_result("vm-001", "buy", "old-1", SECS(10))
        .await;
    assert_eq!(result["status"], "rejected");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("retained"),
        "{result}"
    );
    client.expect_status("vm-001", "online", SECS(10)).await;
    // Under MQTT 3.1.1 a live publish reaches subscribers without its
    // retain flag; what stays retained is replayed at every (re)subscription,
    // and is refused each time.
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
    gateway.spawn();
    let result = client
        .expect_result("vm-001", "buy", "old-1", SECS(10))
        .await;
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(command_count(&board.drain(SECS(1)).await), 0);
    // Clear the retained messages.
    client.publish("vending/vm-001/cmd/buy", "", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_command_payload_clears_a_retained_command_and_gets_no_result() {
    let mut r = rig(Script::default()).await;
    r.client.drain(Duration::from_millis(200)).await;
    // The usual way to clear a retained message, and a plain empty publish.
    r.client.publish("vending/vm-001/cmd/buy", "", true).await;
    r.client.publish("vending/vm-001/cmd/buy", "", false).await;
    let seen = r.client.drain(SECS(2)).await;
    let results: Vec<_> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/result"))
        .map(|m| m.payload.clone())
        .collect();
    assert!(
        results.is_empty(),
        "no result for an empty payload: {results:?}"
    );
    assert_eq!(command_count(&r.board.drain(SECS(1)).await), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_commands_are_not_executed() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"e-1","selection":11,"expires_at":"2020-01-01T00:00:00Z"}"#,
            false,
        )
        .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "e-1", SECS(5))
        .await;
    assert_eq!(result["status"], "expired");
    // The id was never accepted, so a corrected retry runs.
    r.client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"e-1","selection":11}"#,
            false,
        )
        .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "e-1", SECS(5))
        .await;
    assert_eq!(result["status"], "ok");
    assert_eq!(command_count(&r.board.drain(SECS(1)).await), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_request_times_out() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(
            "vending/vm-001/cmd/check_selection",
            r#"{"id":"t-1","selection":11}"#,
            false,
        )
        .await;
    let result = r
        .client
        .expect_result("vm-001", "check_selection", "t-1", SECS(6))
        .await;
    assert_eq!(result["status"], "timeout", "{result}");
    assert!(result["error"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_board_that_stops_polling_goes_offline_then_online() {
    let mut r = rig(Script::default()).await;
    r.board.polling(false).await;
    r.client.expect_status("vm-001", "offline", SECS(3)).await;
    // A command while the link is down waits, then reports `offline`.
    r.client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"o-1","selection":11}"#,
            false,
        )
        .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "o-1", SECS(15))
        .await;
    assert_eq!(result["status"], "offline", "{result}");
    r.board.polling(true).await;
    r.client.expect_status("vm-001", "online", SECS(3)).await;
    assert_eq!(
        command_count(&r.board.drain(SECS(1)).await),
        0,
        "the offline command was not sent later"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_marks_the_machine_and_gateway_offline_by_will() {
    let mut r = rig(Script::default()).await;
    r.client
        .expect(SECS(5), "gateway online", |m| {
            m.topic == "vending/gateways/gw-test/status" && m.payload == "online"
        })
        .await;
    r.gateway.kill9();
    r.client.expect_status("vm-001", "offline", SECS(15)).await;
    r.client
        .expect(SECS(15), "gateway offline", |m| {
            m.topic == "vending/gateways/gw-test/status" && m.payload == "offline"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_publishes_offline_and_exits_0() {
    let mut r = rig(Script::default()).await;
    let status = r.gateway.terminate().expect("exit status");
    assert_eq!(status.code(), Some(0), "{}", r.gateway.log_text());
    r.client.expect_status("vm-001", "offline", SECS(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_that_disappears_is_reopened() {
    let LinkedRig {
        broker: _broker,
        mut client,
        board,
        gateway,
        link,
        dir: _dir,
    } = linked_rig().await;
    board.stop(); // the adapter is unplugged: both ends of the pty close
    client.expect_status("vm-001", "offline", SECS(5)).await;
    let board = TestBoard::start(Script::default());
    relink(&link, &board.path); // ...and comes back under another name
    client.expect_status("vm-001", "online", SECS(15)).await;
    let log = gateway.log_text();
    assert!(
        log.contains("serial port lost") || log.contains("cannot open"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_left_queued_at_a_crash_is_reported_failed_not_sent() {
    let mut r = rig(Script::default()).await;
    r.board.polling(false).await;
    r.client.expect_status("vm-001", "offline", SECS(3)).await;
    r.client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"q-1","selection":11}"#,
            false,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.gateway.kill9();
    r.board.polling(true).await;
    r.gateway.spawn();
    let result = r
        .client
        .expect_result("vm-001", "buy", "q-1", SECS(10))
        .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not sent"),
        "{result}"
    );
    r.client.expect_status("vm-001", "online", SECS(10)).await;
    assert_eq!(command_count(&r.board.drain(SECS(1)).await), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn seq_keeps_increasing_across_a_restart() {
    let mut r = rig(Script::default()).await;
    r.board.send("full_load_pressed", json!({})).await;
    let first = r
        .client
        .expect(SECS(5), "event", |m| {
            m.topic == "vending/vm-001/event/full_load_pressed"
        })
        .await
        .json();
    assert_eq!(r.gateway.terminate().and_then(|s| s.code()), Some(0));
    r.gateway.spawn();
    r.client.expect_status("vm-001", "online", SECS(10)).await;
    r.board.send("full_load_pressed", json!({})).await;
    let second = r
        .client
        .expect(SECS(5), "event", |m| {
            m.topic == "vending/vm-001/event/full_load_pressed"
        })
        .await
        .json();
    assert!(
        second["seq"].as_u64() > first["seq"].as_u64(),
        "{first} {second}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_are_answered_in_time_during_a_command_flood() {
    let mut r = rig(Script::default()).await;
    for i in 0..2000 {
        let payload = if i % 20 == 0 {
            format!(r#"{{"id":"f-{i}","selection":11}}"#)
        } else {
            format!(r#"{{"id":"f-{i}","selection":0}}"#)
        };
        r.client
            .publish("vending/vm-001/cmd/set_inventory", payload, false)
            .await;
    }
    let events = r.board.drain(SECS(8)).await;
    let unanswered = events
        .iter()
        .filter(|e| matches!(e, BoardEvent::PollUnanswered))
        .count();
    assert_eq!(
        unanswered, 0,
        "every POLL answered within the protocol's 100 ms"
    );
    let messages = r.client.drain(SECS(2)).await;
    let results = messages
        .iter()
        .filter(|m| m.topic == "vending/vm-001/cmd/set_inventory/result")
        .count();
    assert_eq!(results, 2000, "every command gets a result");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_busy() {
    let mut r = rig(Script::default()).await;
    r.board.polling(false).await;
    r.client.expect_status("vm-001", "offline", SECS(3)).await;
    for i in 0..101 {
        r.client
            .publish(
                "vending/vm-001/cmd/set_price",
                format!(r#"{{"id":"b-{i}","selection":11,"price":{i}}}"#),
                false,
            )
            .await;
    }
    let result = r
        .client
        .expect_result("vm-001", "set_price", "b-100", SECS(10))
        .await;
    assert_eq!(result["status"], "busy", "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_staged_but_unsent_at_shutdown_is_reported_not_sent() {
    let mut r = rig(Script::default()).await;
    // The board stops polling: the link stays up for 600 ms, long enough for
    // the command to be staged, but no POLL will carry it.
    r.board.polling(false).await;
    r.client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"u-1","selection":11}"#,
            false,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(r.gateway.terminate().and_then(|s| s.code()), Some(0));
    r.board.polling(true).await;
    r.gateway.spawn();
    let result = r
        .client
        .expect_result("vm-001", "buy", "u-1", SECS(10))
        .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not sent"),
        "{result}"
    );
    assert_eq!(command_count(&r.board.drain(SECS(1)).await), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_debounce_and_reason_templates() {
    // A 3 s debounce against a 1 s silence: 2 s of margin for a loaded
    // machine (a test binary runs its tests in parallel on 2 cores).
    let extra = "status_payloads:\n  offline: \"offline:{reason}\"\n  debounce: 3s\n";
    let mut r = rig_with(Script::default(), extra).await;
    // A short silence (link down after 600 ms, back at 1 s) publishes nothing.
    r.board.polling(false).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    r.board.polling(true).await;
    let quiet = r.client.drain(SECS(3)).await;
    assert!(
        quiet.iter().all(|m| m.topic != "vending/vm-001/status"),
        "no flapping: {quiet:?}"
    );
    // A long one publishes `offline` with its reason, after the debounce.
    r.board.polling(false).await;
    let start = std::time::Instant::now();
    r.client
        .expect_status("vm-001", "offline:link_lost", SECS(8))
        .await;
    assert!(
        start.elapsed() >= Duration::from_millis(3400),
        "{:?}",
        start.elapsed()
    );
    r.board.polling(true).await;
    r.client.expect_status("vm-001", "online", SECS(3)).await;
    // The will carries its own reason.
    r.gateway.kill9();
    r.client
        .expect_status("vm-001", "offline:gateway_lost", SECS(15))
        .await;
}
