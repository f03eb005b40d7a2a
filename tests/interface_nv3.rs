//! A business client written against the Nordvend NV-3 page alone
//! (../shared/protocols/nordvend-nv3-mqtt.md), not against vendgate's
//! topics, drives a legacy VMC machine through vendgate with
//! `interfaces/nordvend-nv3.yaml`: real binary, real broker, pty board.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vendgate::sim::{BoardEvent, Script};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn answering_script() -> Script {
    serde_yaml::from_str(
        r#"
on_command:
  check_selection:
    - send: check_selection
      values: {status: normal, selection: $selection}
  buy:
    - send: dispense
      values: {status: success, selection: $selection}
"#,
    )
    .expect("script")
}

fn nv3_extra() -> String {
    format!(
        "interface: {}\n",
        repo().join("interfaces/nordvend-nv3.yaml").display()
    )
}

async fn reply(nv: &mut Client, req_id: &str) -> Value {
    let req_id = req_id.to_owned();
    nv.expect(SECS(10), &format!("reply to {req_id}"), |m| {
        m.topic == "nv/vm-001/down/reply" && m.json()["req_id"] == req_id.as_str()
    })
    .await
    .json()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nv3_client_drives_a_legacy_vmc_machine() {
    let mut r = rig_with(answering_script(), &nv3_extra()).await;
    let mut nv = Client::connect(r.broker.port, "nv/#").await;
    let mut all = Client::connect(r.broker.port, "vending/vm-001/#").await;
    nv.expect(SECS(10), "online state", |m| {
        m.topic == "nv/vm-001/state" && m.json() == json!({"online": true})
    })
    .await;

    // Up: payment and vend events, slot telemetry, with NV-3 payloads.
    r.board
        .send("money_collected", json!({"mode": "coin", "amount": 100}))
        .await;
    let pay = nv
        .expect(SECS(5), "payment", |m| m.topic == "nv/vm-001/up/payment")
        .await
        .json();
    assert_eq!(pay["method"], "coin");
    assert_eq!(pay["amount_cents"], 100);
    assert!(
        pay["msg_id"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{pay}"
    );
    assert!(
        pay["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{pay}"
    );
    r.board
        .send("selection", json!({"selection": 11, "price": 150, "inventory": 5, "capacity": 10, "product_id": 1, "paused": false}))
        .await;
    let slot = nv
        .expect(SECS(5), "slot", |m| m.topic == "nv/vm-001/up/slot")
        .await
        .json();
    assert_eq!(
        (
            slot["slot"].clone(),
            slot["price_cents"].clone(),
            slot["stock"].clone(),
            slot["enabled"].clone()
        ),
        (json!(11), json!(150), json!(5), json!(true))
    );

    // Down: vend with its reply, and the vend event.
    nv.publish(
        "nv/vm-001/down",
        r#"{"req_id":"r-1","op":"vend","args":{"slot":11}}"#,
        false,
    )
    .await;
    r.board
        .expect(
            SECS(5),
            "buy frame",
            |e| matches!(e, BoardEvent::Command { name, .. } if name == "buy"),
        )
        .await;
    assert_eq!(
        reply(&mut nv, "r-1").await,
        json!({"req_id": "r-1", "ok": true})
    );
    let vend = nv
        .expect(SECS(5), "vend event", |m| m.topic == "nv/vm-001/up/vend")
        .await
        .json();
    assert_eq!(
        (vend["slot"].clone(), vend["result"].clone()),
        (json!(11), json!("success"))
    );

    // query_slot answers with data; set_price is acknowledged.
    nv.publish(
        "nv/vm-001/down",
        r#"{"req_id":"r-2","op":"query_slot","args":{"slot":11}}"#,
        false,
    )
    .await;
    assert_eq!(
        reply(&mut nv, "r-2").await,
        json!({"req_id": "r-2", "ok": true, "data": {"slot": 11, "status": "normal"}})
    );
    nv.publish(
        "nv/vm-001/down",
        r#"{"req_id":"r-3","op":"set_price","args":{"slot":11,"price_cents":175}}"#,
        false,
    )
    .await;
    r.board
        .expect(SECS(5), "set_price frame", |e| matches!(e, BoardEvent::Command { name, args, .. } if name == "set_price" && args.get("price") == Some(&json!(175))))
        .await;
    assert_eq!(reply(&mut nv, "r-3").await["ok"], true);

    // A repeated req_id is not executed again; an unknown op is refused.
    nv.publish(
        "nv/vm-001/down",
        r#"{"req_id":"r-1","op":"vend","args":{"slot":11}}"#,
        false,
    )
    .await;
    let again = reply(&mut nv, "r-1").await;
    assert_eq!(
        (again["ok"].clone(), again["code"].clone()),
        (json!(false), json!("DUPLICATE")),
        "{again}"
    );
    nv.publish(
        "nv/vm-001/down",
        r#"{"req_id":"r-4","op":"selfdestruct"}"#,
        false,
    )
    .await;
    let unknown = reply(&mut nv, "r-4").await;
    assert_eq!(unknown["code"], "REJECTED", "{unknown}");
    assert!(
        unknown["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{unknown}"
    );

    // Not JSON: the program reads `.payload.req_id` of null, which is null,
    // so the reply says REJECTED with no req_id.
    nv.publish("nv/vm-001/down", "vend 11 please", false).await;
    nv.expect(SECS(5), "reply to the non-JSON request", |m| {
        m.topic == "nv/vm-001/down/reply"
            && m.json()["code"] == "REJECTED"
            && m.json()["req_id"].is_null()
    })
    .await;
    let buys = r
        .board
        .drain(Duration::from_millis(500))
        .await
        .iter()
        .filter(|e| matches!(e, BoardEvent::Command { name, .. } if name == "buy"))
        .count();
    assert_eq!(buys, 0, "the duplicate was not sent");

    // Nothing on vendgate's own machine topics while the interface is set.
    let native = all.drain(Duration::from_millis(300)).await;
    assert!(
        native.is_empty(),
        "{:?}",
        native.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );

    // The will after SIGKILL is the interface's offline.
    r.gateway.kill9();
    nv.expect(SECS(20), "the will", |m| {
        m.topic == "nv/vm-001/state"
            && m.json() == json!({"online": false, "reason": "gateway_lost"})
    })
    .await;
}

/// A program that fails for one message type: that message is counted and
/// not published, every other one still is.
#[tokio::test(flavor = "multi_thread")]
async fn a_program_failing_for_one_message_does_not_stop_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo().join("interfaces/nordvend-nv3.yaml")).expect("nv3");
    let good = "payload: '{msg_id: (.seq|tostring), method: .data.mode, amount_cents: .data.amount, time: .ts}'";
    assert!(text.contains(good));
    let broken = text.replacen(good, "payload: 'error(\"no payments today\")'", 1);
    let path = dir.path().join("broken-payment.yaml");
    write_file(&path, &broken);
    let extra = format!("interface: {}\nhealth:\n  interval: 1s\n", path.display());
    let mut r = rig_with(Script::default(), &extra).await;
    let mut nv = Client::connect(r.broker.port, "nv/#").await;
    nv.expect(SECS(10), "online state", |m| m.topic == "nv/vm-001/state")
        .await;
    r.board
        .send("money_collected", json!({"mode": "coin", "amount": 100}))
        .await;
    r.board
        .send("dispense", json!({"status": "success", "selection": 11}))
        .await;
    let vend = nv
        .expect(SECS(5), "vend event", |m| m.topic == "nv/vm-001/up/vend")
        .await
        .json();
    assert_eq!(vend["slot"], 11);
    let health = r
        .client
        .expect(SECS(10), "health counting the failure", |m| {
            m.topic == "vending/gateways/gw-test/health"
                && m.json()["machines"]["vm-001"]["interface_errors"] == 1
        })
        .await
        .json();
    assert_eq!(health["machines"]["vm-001"]["outbox_depth"], 0, "{health}");
    let seen = nv.drain(Duration::from_millis(300)).await;
    assert!(
        !seen.iter().any(|m| m.topic == "nv/vm-001/up/payment"),
        "the failed payment is not published"
    );
}

/// The second shipped example: command name in the topic, replies on
/// `<request topic>_reply`, numeric codes, epoch-millisecond times.
#[tokio::test(flavor = "multi_thread")]
async fn the_vendlink_flat_interface_works_end_to_end() {
    let extra = format!(
        "interface: {}\n",
        repo().join("interfaces/vendlink-flat.yaml").display()
    );
    let mut r = rig_with(answering_script(), &extra).await;
    let mut vl = Client::connect(r.broker.port, "vl/#").await;
    vl.expect(SECS(10), "ONLINE", |m| {
        m.topic == "vl/vm-001/availability" && m.payload == "ONLINE"
    })
    .await;
    r.board
        .send("money_collected", json!({"mode": "bill", "amount": 500}))
        .await;
    let money = vl
        .expect(SECS(5), "money event", |m| {
            m.topic == "vl/vm-001/event/money_collected"
        })
        .await
        .json();
    assert_eq!(
        (money["mode"].clone(), money["amount"].clone()),
        (json!("bill"), json!(500))
    );
    assert!(
        money["t"].as_i64().is_some_and(|t| t > 1_700_000_000_000),
        "{money}"
    );
    assert!(money["n"].as_u64().is_some(), "{money}");

    vl.publish(
        "vl/vm-001/cmd/check_selection",
        r#"{"ref":"a-1","selection":11}"#,
        false,
    )
    .await;
    let ok = vl
        .expect(SECS(10), "reply a-1", |m| {
            m.topic == "vl/vm-001/cmd/check_selection_reply" && m.json()["ref"] == "a-1"
        })
        .await
        .json();
    assert_eq!(ok["code"], 0, "{ok}");
    assert_eq!(ok["response"]["status"], "normal", "{ok}");
    assert!(ok["t"].as_i64().is_some(), "{ok}");

    vl.publish("vl/vm-001/cmd/self_destruct", r#"{"ref":"a-2"}"#, false)
        .await;
    let refused = vl
        .expect(SECS(10), "reply a-2", |m| {
            m.topic == "vl/vm-001/cmd/self_destruct_reply" && m.json()["ref"] == "a-2"
        })
        .await
        .json();
    assert_eq!(refused["code"], 1, "{refused}");
    // Our own replies were not taken for commands: exactly one reply each.
    let seen = vl.drain(Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|m| m.topic.ends_with("_reply_reply")),
        "{:?}",
        seen.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    r.gateway.kill9();
    vl.expect(SECS(20), "the will", |m| {
        m.topic == "vl/vm-001/availability" && m.payload == "OFFLINE gateway_lost"
    })
    .await;
}
