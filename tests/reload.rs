//! `systemctl reload` (SIGHUP, DESIGN §2) against the real binary, a real
//! Mosquitto and pty boards: what did not change runs on untouched, what
//! changed restarts, a broken config changes nothing.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vendgate::sim::Script;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn config(
    broker: &Broker,
    dir: &std::path::Path,
    devices: &[(&str, &str)],
    b_extra: &str,
) -> String {
    let mut text = config_yaml(broker.port, &dir.join("store"), devices);
    if !b_extra.is_empty() {
        text = text.replace(
            "  - id: vm-b\n    profile: vmc-upper-computer\n",
            &format!("  - id: vm-b\n    profile: vmc-upper-computer\n{b_extra}"),
        );
    }
    text
}

/// Every event `seq` of `machine` seen so far.
fn seqs(messages: &[Msg], machine: &str) -> Vec<u64> {
    let prefix = format!("vending/{machine}/event/");
    messages
        .iter()
        .filter(|m| m.topic.starts_with(&prefix))
        .filter_map(|m| m.json()["seq"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_restarts_only_what_changed_and_a_broken_config_changes_nothing() {
    let broker = Broker::start();
    if !broker.is_mosquitto() {
        eprintln!("SKIPPED: the reload test reads Mosquitto's connection log; install mosquitto");
        return;
    }
    let mut client = Client::connect(broker.port, "vending/#").await;
    let boards: Vec<TestBoard> = (0..4)
        .map(|_| TestBoard::start(Script::default()))
        .collect();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| boards[i].path.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let first = config(
        &broker,
        dir.path(),
        &[("vm-a", &a), ("vm-b", &b), ("vm-c", &c)],
        "",
    );
    let gateway = Gateway::start(dir.path(), &first);
    for machine in ["vm-a", "vm-b", "vm-c"] {
        client.expect_status(machine, "online", SECS(10)).await;
    }

    // Money keeps coming on vm-a while the config changes under it.
    let money = boards[0].control.clone();
    let flow = tokio::spawn(async move {
        for amount in 1..=40u32 {
            let values = json!({"mode": "coin", "amount": amount});
            let Value::Object(values) = values else {
                unreachable!()
            };
            let send = vendgate::sim::Control::Send {
                message: "money_collected".into(),
                values,
            };
            if money.send(send).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // vm-b changes, vm-c goes, vm-d comes.
    let second = config(
        &broker,
        dir.path(),
        &[("vm-a", &a), ("vm-b", &b), ("vm-d", &d)],
        "    link_timeout: 900ms\n",
    );
    write_file(&gateway.config, &second);
    gateway.hangup();
    client.expect_status("vm-c", "offline", SECS(10)).await;
    client.expect_status("vm-b", "offline", SECS(10)).await;
    client.expect_status("vm-b", "online", SECS(10)).await;
    client.expect_status("vm-d", "online", SECS(10)).await;
    flow.await.expect("money flow");
    let seen = client.drain(SECS(3)).await;
    assert_eq!(
        seqs(&seen, "vm-a"),
        (1..=40).collect::<Vec<_>>(),
        "vm-a lost nothing and repeated nothing across the reload"
    );
    let a_statuses: Vec<&Msg> = seen
        .iter()
        .filter(|m| m.topic == "vending/vm-a/status")
        .collect();
    assert!(
        a_statuses.iter().all(|m| m.payload == "online"),
        "vm-a never went offline: {a_statuses:?}"
    );
    assert_eq!(broker.connects("vm-a"), 1, "vm-a kept its session");
    assert_eq!(broker.connects("vm-b"), 2, "vm-b was restarted");
    assert_eq!(broker.connects("vm-c"), 1);
    assert_eq!(broker.connects("vm-d"), 1);
    assert_eq!(
        broker.connects("gw-test"),
        1,
        "the gateway session was not touched"
    );

    // The health report names the config now running.
    let running = sha256sum(&gateway.config);
    let names_it = |m: &Msg| {
        m.topic == "vending/gateways/gw-test/health"
            && m.json()["config"]["sha256"] == running.as_str()
    };
    let health = match seen.iter().rev().find(|m| names_it(m)) {
        Some(m) => m.clone(),
        None => {
            client
                .expect(SECS(10), "health naming the new config", names_it)
                .await
        }
    };
    assert!(
        health.json()["machines"].get("vm-c").is_none(),
        "{}",
        health.payload
    );
    assert!(
        health.json()["machines"].get("vm-d").is_some(),
        "{}",
        health.payload
    );

    // A broken config: logged with file:line:column, nothing changes.
    let broken = second.replace(
        "    link_timeout: 900ms\n",
        "    link_timeout: 900ms\n    parity: odd\n",
    );
    write_file(&gateway.config, &broken);
    gateway.hangup();
    let quiet = client.drain(SECS(3)).await;
    let statuses: BTreeSet<String> = quiet
        .iter()
        .filter(|m| m.topic.ends_with("/status"))
        .map(|m| format!("{} {}", m.topic, m.payload))
        .collect();
    assert!(statuses.is_empty(), "no status changed: {statuses:?}");
    let log = gateway.log_text();
    assert!(log.contains("reload refused"), "{log}");
    let line = broken
        .lines()
        .position(|l| l.contains("parity"))
        .unwrap_or(0)
        + 1;
    let at = format!("{}:{line}:", gateway.config.display());
    assert!(log.contains(&at), "the error names {at}: {log}");
    for machine in ["vm-a", "vm-b", "vm-d"] {
        assert_eq!(
            broker.connects(machine),
            if machine == "vm-b" { 2 } else { 1 },
            "{machine} untouched by the refused reload"
        );
    }
    // Still running the second config: vm-a's events still flow.
    boards[0]
        .send("money_collected", json!({"mode": "coin", "amount": 41}))
        .await;
    client
        .expect(SECS(5), "vm-a seq 41", |m| {
            m.topic == "vending/vm-a/event/money_collected" && m.json()["seq"] == 41
        })
        .await;
}

/// Serial port opens of `machine` in the gateway's log.
fn port_opens(gateway: &Gateway, machine: &str) -> usize {
    gateway
        .log_text()
        .lines()
        .filter(|l| l.contains("serial port open") && l.contains(machine))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_to_topics_and_payloads_restarts_the_sessions_but_no_serial_port() {
    let broker = Broker::start();
    if !broker.is_mosquitto() {
        eprintln!("SKIPPED: the reload test reads Mosquitto's connection log; install mosquitto");
        return;
    }
    let mut client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let first = config(&broker, dir.path(), &[("vm-a", &board.path)], "");
    let gateway = Gateway::start(dir.path(), &first);
    client.expect_status("vm-a", "online", SECS(10)).await;
    for amount in 1..=3 {
        board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    client
        .expect(SECS(5), "seq 3", |m| {
            m.topic.ends_with("/event/money_collected") && m.json()["seq"] == 3
        })
        .await;

    let second = format!(
        "{first}topics:\n  event: \"{{prefix}}/{{machine}}/ev/{{name}}\"\nstatus_payloads:\n  online: up\n"
    );
    write_file(&gateway.config, &second);
    gateway.hangup();
    client.expect_status("vm-a", "up", SECS(10)).await;
    client
        .expect(SECS(10), "the gateway's new status", |m| {
            m.topic == "vending/gateways/gw-test/status" && m.payload == "up"
        })
        .await;
    board
        .send("money_collected", json!({"mode": "coin", "amount": 4}))
        .await;
    let event = client
        .expect(SECS(5), "seq 4 on the new event topic", |m| {
            m.topic == "vending/vm-a/ev/money_collected"
        })
        .await;
    assert_eq!(event.json()["seq"], 4, "no seq gap, none reused");
    assert_eq!(
        broker.connects("vm-a"),
        2,
        "the machine's session restarted"
    );
    assert_eq!(broker.connects("gw-test"), 2, "and the gateway's");
    assert_eq!(
        port_opens(&gateway, "vm-a"),
        1,
        "the serial port was not reopened"
    );
}
