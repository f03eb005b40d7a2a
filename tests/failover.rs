//! `mqtt.url` as a list (DESIGN §3) against two real Mosquittos: the first
//! dies, every session moves to the second, nothing is lost, statuses are
//! right there; the sessions do not move back while the second works.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use vendgate::sim::Script;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn seqs(messages: &[Msg]) -> BTreeSet<u64> {
    messages
        .iter()
        .filter(|m| m.topic == "vending/vm-001/event/money_collected")
        .filter_map(|m| m.json()["seq"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_first_broker_dies_every_session_moves_to_the_second_and_loses_nothing() {
    let mut first = Broker::start();
    let second = Broker::start();
    if !first.is_mosquitto() {
        eprintln!("SKIPPED: failover needs two Mosquitto instances; install mosquitto");
        return;
    }
    let mut on_first = Client::connect(first.port, "vending/#").await;
    let mut on_second = Client::connect(second.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_yaml(
        first.port,
        &dir.path().join("store"),
        &[("vm-001", &board.path)],
    )
    .replace(
        &format!("  url: mqtt://127.0.0.1:{}\n", first.port),
        &format!(
            "  url:\n    - mqtt://127.0.0.1:{}\n    - mqtt://127.0.0.1:{}\n",
            first.port, second.port
        ),
    );
    let gateway = Gateway::start(dir.path(), &config);
    on_first.expect_status("vm-001", "online", SECS(10)).await;
    for amount in 1..=5 {
        board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    let fifth = on_first
        .expect(SECS(5), "seq 5 on the first broker", |m| {
            m.topic.ends_with("/money_collected") && m.json()["seq"] == 5
        })
        .await;
    assert_eq!(second.connects("vm-001"), 0, "the first URL is tried first");
    let mut before = on_first.drain(Duration::from_millis(200)).await;
    before.push(fifth);

    first.stop();
    // Money keeps coming while no broker is reachable, then on the second.
    for amount in 6..=15 {
        board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    on_second
        .expect(SECS(20), "the machine online on the second broker", |m| {
            m.topic == "vending/vm-001/status" && m.payload == "online"
        })
        .await;
    on_second
        .expect(SECS(10), "the gateway online on the second broker", |m| {
            m.topic == "vending/gateways/gw-test/status" && m.payload == "online"
        })
        .await;
    let fifteenth = on_second
        .expect(SECS(10), "seq 15 on the second broker", |m| {
            m.topic.ends_with("/money_collected") && m.json()["seq"] == 15
        })
        .await;
    let mut after = on_second.drain(Duration::from_millis(500)).await;
    after.push(fifteenth);
    let all: BTreeSet<u64> = seqs(&before).union(&seqs(&after)).copied().collect();
    assert_eq!(
        all,
        (1..=15).collect::<BTreeSet<u64>>(),
        "no event lost, no gap"
    );

    // A new subscriber on the second broker sees the right retained statuses.
    let mut late = Client::connect(second.port, "vending/+/status").await;
    let status = late
        .expect(SECS(5), "retained machine status", |m| {
            m.topic == "vending/vm-001/status"
        })
        .await;
    assert!(status.retain && status.payload == "online", "{status:?}");

    // The first broker comes back: the sessions stay where they work.
    first.restart();
    tokio::time::sleep(SECS(4)).await;
    assert_eq!(
        first.connects("vm-001"),
        0,
        "no move back while the second works"
    );
    assert_eq!(second.connects("vm-001"), 1);
    let log = gateway.log_text();
    assert!(
        log.contains("moving to the next broker of mqtt.url"),
        "{log}"
    );
}
