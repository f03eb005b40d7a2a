//! Fault injection: each test breaks something for real (the broker, the
//! gateway process, the serial peer, the line) and checks that nothing was
//! lost and nothing was executed twice.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use vendgate::sim::{BoardEvent, Script};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MONEY: &str = "vending/vm-001/event/money_collected";

/// Amounts of the money events published, in arrival order, and their seqs.
fn amounts(messages: &[Msg]) -> (Vec<u64>, Vec<u64>) {
    messages
        .iter()
        .filter(|m| m.topic == MONEY)
        .map(|m| {
            let v = m.json();
            (
                v["amount"].as_u64().unwrap_or(0),
                v["seq"].as_u64().unwrap_or(0),
            )
        })
        .unzip()
}

/// Collects messages until `count` money events arrived or `within` passed.
async fn collect_money(client: &mut Client, count: usize, within: Duration) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + within;
    let mut all = Vec::new();
    while tokio::time::Instant::now() < deadline {
        all.extend(client.drain(Duration::from_millis(500)).await);
        if all.iter().filter(|m| m.topic == MONEY).count() >= count {
            break;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_loses_no_event_and_keeps_their_order() {
    let mut s = rig(Script::default()).await;
    if !s.broker.is_mosquitto() {
        // Only possible outside CI (where Mosquitto is required): the
        // embedded broker cannot be stopped and restarted.
        eprintln!("skipped: needs Mosquitto to stop and restart the broker");
        return;
    }
    s.broker.stop();
    // The machine keeps selling while the broker is away: each event is
    // ACKed to it once durable, without the broker.
    for amount in 1..=40u32 {
        s.board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    for _ in 0..40 {
        s.board
            .expect(SECS(10), "ACK of an event while the broker is down", |e| {
                matches!(e, BoardEvent::DataAcked { .. })
            })
            .await;
    }
    s.broker.restart();
    let mut client = Client::connect(s.broker.port, "vending/#").await;
    for amount in 41..=60u32 {
        s.board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    let messages = collect_money(&mut client, 60, SECS(60)).await;
    let (amounts, seqs) = amounts(&messages);
    assert_eq!(
        amounts,
        (1..=60).collect::<Vec<u64>>(),
        "all events, in order, once"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq has no gap: {seqs:?}"
    );
    let unanswered = s
        .board
        .drain(Duration::ZERO)
        .await
        .iter()
        .filter(|e| matches!(e, BoardEvent::PollUnanswered))
        .count();
    assert_eq!(
        unanswered, 0,
        "POLLs answered in time while the broker was away"
    );
    // The status is published again after the reconnect.
    client.seen = messages;
    client.expect_status("vm-001", "online", SECS(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_no_acked_event_and_reruns_no_command() {
    let mut s = rig(Script::default()).await;
    // A request that the board never answers: at the kill it was written
    // and its completion is unknown.
    s.client
        .publish(
            "vending/vm-001/cmd/check_selection",
            r#"{"id":"k-1","selection":11}"#,
            false,
        )
        .await;
    s.board
        .expect(
            SECS(5),
            "check_selection written",
            |e| matches!(e, BoardEvent::Command { name, .. } if name == "check_selection"),
        )
        .await;
    for amount in 1..=150u32 {
        s.board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    // Kill while the stream is flowing.
    s.board
        .expect(SECS(10), "some events ACKed", |e| {
            matches!(e, BoardEvent::DataAcked { seq: Some(20), .. })
        })
        .await;
    s.gateway.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.gateway.spawn();
    let events = s.board.drain(SECS(8)).await;
    // Every event the board saw ACKed must be published (PackNO = amount
    // here: one frame per amount, fewer than 255).
    let mut acked: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            BoardEvent::DataAcked { seq: Some(seq), .. } => Some(u64::from(*seq)),
            _ => None,
        })
        .collect();
    acked.insert(20);
    let abandoned = events
        .iter()
        .filter(|e| matches!(e, BoardEvent::DataAbandoned { .. }))
        .count();
    let messages = collect_money(&mut s.client, 150 - abandoned, SECS(30)).await;
    let (amounts, seqs) = amounts(&messages);
    // QoS 1 allows a duplicate (an event published just before the kill
    // whose removal from the outbox was not yet durable); it carries the
    // same seq, which is how consumers drop it. Distinct events never
    // share a seq, and no event appears under two seqs.
    let mut by_seq = std::collections::BTreeMap::new();
    for (amount, seq) in amounts.iter().zip(&seqs) {
        let first = by_seq.entry(*seq).or_insert(*amount);
        assert_eq!(first, amount, "seq {seq} reused for another event");
    }
    let published: BTreeSet<u64> = by_seq.values().copied().collect();
    assert_eq!(
        published.len(),
        by_seq.len(),
        "an event published under two seqs: {by_seq:?}"
    );
    let missing: Vec<_> = acked.difference(&published).collect();
    assert!(
        missing.is_empty(),
        "ACKed to the machine but never published: {missing:?}"
    );
    // The command in flight at the kill is reported, never re-sent.
    s.client.seen = messages;
    let result = s
        .client
        .expect_result("vm-001", "check_selection", "k-1", SECS(10))
        .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown"),
        "{result}"
    );
    let sent_again = events
        .iter()
        .filter(|e| matches!(e, BoardEvent::Command { name, .. } if name == "check_selection"))
        .count();
    assert_eq!(sent_again, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serial_peer_that_vanishes_and_returns_loses_and_repeats_nothing() {
    let LinkedRig {
        broker: _broker,
        mut client,
        board,
        link,
        gateway: _gateway,
        dir: _dir,
    } = linked_rig().await;
    board.raw(money(7, 100)).await;
    client
        .expect(SECS(5), "first event", |m| m.topic == MONEY)
        .await;
    board.stop();
    client.expect_status("vm-001", "offline", SECS(5)).await;
    let board = TestBoard::start(Script::default());
    relink(&link, &board.path);
    client.expect_status("vm-001", "online", SECS(15)).await;
    // The board did not see our ACK before the cable went: it sends the
    // frame again with the same PackNO, then its next one.
    board.raw(money(7, 100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    board.raw(money(8, 200)).await;
    let messages = collect_money(&mut client, 1, SECS(5)).await;
    let (amounts, _) = amounts(&messages);
    assert_eq!(
        amounts,
        vec![200],
        "the retransmission is not published again; the next frame is"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn line_noise_never_publishes_a_corrupted_frame_and_loses_no_valid_one() {
    let mut s = rig(Script::default()).await;
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut valid = Vec::new();
    for i in 0..60u32 {
        let packno = (i % 250 + 1) as u8;
        let amount = 1000 + i;
        let frame = money(packno, amount);
        match i % 4 {
            // Random bytes between frames, sometimes with a false sync.
            0 => {
                let mut noise: Vec<u8> = (0..(next() % 20)).map(|_| next() as u8).collect();
                if i % 8 == 0 {
                    noise.extend_from_slice(&[0xFA, 0xFB, 0x21, 0x30]);
                }
                s.board.raw(noise).await;
            }
            // A corrupted copy (one byte flipped) before the valid frame.
            1 => {
                let mut bad = money(packno, amount + 500_000);
                let at = 4 + (next() as usize % (bad.len() - 5));
                bad[at] ^= 1 << (next() % 8);
                s.board.raw(bad).await;
            }
            // A truncated frame.
            2 => {
                s.board
                    .raw(money(packno, amount + 600_000)[..6].to_vec())
                    .await
            }
            _ => {}
        }
        s.board.raw(frame).await;
        valid.push(amount as u64);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let messages = collect_money(&mut s.client, valid.len(), SECS(20)).await;
    let (amounts, _) = amounts(&messages);
    let published: BTreeSet<u64> = amounts.iter().copied().collect();
    let expected: BTreeSet<u64> = valid.iter().copied().collect();
    assert!(
        published.iter().all(|a| *a < 500_000),
        "a corrupted frame was published: {amounts:?}"
    );
    assert_eq!(published, expected, "every valid frame published");
    assert_eq!(amounts.len(), published.len(), "none twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_ten_thousand_commands_each_gets_a_result() {
    let mut s = rig(Script::default()).await;
    // The embedded broker (only outside CI, without Mosquitto) is a demo
    // broker that sheds load past a few thousand queued messages; the
    // 10,000-command flood is Mosquitto's.
    let total = if s.broker.is_mosquitto() {
        10_000
    } else {
        1_000
    };
    for i in 0..total {
        let payload = match i % 50 {
            0 => format!(r#"{{"id":"f-{i}","selection":11,"inventory":3}}"#),
            1 => "{not json".to_owned(),
            2 => format!(r#"{{"id":"f-{i}","selection":"eleven","inventory":3}}"#),
            _ => format!(r#"{{"id":"f-{i}","selection":5000,"inventory":3}}"#),
        };
        s.client
            .publish("vending/vm-001/cmd/set_inventory", payload, false)
            .await;
    }
    let mut results = 0;
    let mut statuses = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + SECS(120);
    while results < total && tokio::time::Instant::now() < deadline {
        for m in s.client.drain(SECS(1)).await {
            if m.topic == "vending/vm-001/cmd/set_inventory/result" {
                results += 1;
                *statuses
                    .entry(m.json()["status"].as_str().unwrap_or("?").to_owned())
                    .or_insert(0) += 1;
            }
        }
    }
    assert_eq!(results, total, "every command gets a result: {statuses:?}");
    let events = s.board.drain(SECS(2)).await;
    let unanswered = events
        .iter()
        .filter(|e| matches!(e, BoardEvent::PollUnanswered))
        .count();
    assert_eq!(
        unanswered, 0,
        "every POLL answered within 100 ms during the flood"
    );
    let written = events
        .iter()
        .filter(|e| matches!(e, BoardEvent::Command { .. }))
        .count();
    let count = |status: &str| statuses.get(status).copied().unwrap_or(0);
    assert_eq!(count("rejected"), total * 49 / 50, "{statuses:?}");
    assert_eq!(count("ok") + count("busy"), total / 50, "{statuses:?}");
    assert_eq!(
        written,
        count("ok"),
        "exactly the accepted commands reached the line"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_refusing_credentials_is_retried_with_backoff_and_loses_nothing() {
    let Some(broker) = Broker::with_password("gw", "right-password") else {
        assert!(std::env::var_os("CI").is_none(), "CI needs Mosquitto");
        eprintln!("skipped: needs Mosquitto for password auth");
        return;
    };
    let mut board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let base = config_yaml(
        broker.port,
        &dir.path().join("store"),
        &[("vm-001", &board.path)],
    );
    let with_password = |password: &str| with_login(&base, "gw", password);
    let mut gateway = Gateway::start(dir.path(), &with_password("wrong-password"));
    // The machine's events are ACKed (durable) while the broker refuses us.
    for amount in 1..=5u32 {
        board
            .send("money_collected", json!({"mode": "coin", "amount": amount}))
            .await;
    }
    for _ in 0..5 {
        board
            .expect(SECS(10), "event ACKed", |e| {
                matches!(e, BoardEvent::DataAcked { .. })
            })
            .await;
    }
    tokio::time::sleep(SECS(4)).await;
    let log = gateway.log_text();
    assert!(
        log.contains("refused the connection"),
        "one clear line: {log}"
    );
    assert!(
        !log.contains("wrong-password"),
        "the password never appears in logs"
    );
    // Backoff, not a tight loop: two sessions over ~5 s.
    let attempts = std::fs::read_to_string(broker.log_path())
        .unwrap_or_default()
        .matches("New connection from")
        .count();
    assert!(
        (2..=30).contains(&attempts),
        "{attempts} connection attempts in ~5 s"
    );
    // The operator fixes the password: everything kept is delivered.
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
    std::fs::write(&gateway.config, with_password("right-password")).expect("config");
    // The test client needs the credentials too.
    let mut client =
        Client::connect_as(broker.port, "vending/#", Some(("gw", "right-password"))).await;
    gateway.spawn();
    let messages = collect_money(&mut client, 5, SECS(15)).await;
    assert_eq!(amounts(&messages).0, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_works_within_a_per_machine_acl() {
    // Each session may only touch its own topics: a machine's session (client
    // id = machine id) its machine's, the gateway's session the gateway's.
    let acl = "user gw\npattern readwrite vending/%c/#\npattern readwrite vending/gateways/%c/#\n\nuser biz\ntopic readwrite vending/#\n";
    let Some(broker) = Broker::with_auth(&[("gw", "gw-pass"), ("biz", "biz-pass")], Some(acl))
    else {
        assert!(std::env::var_os("CI").is_none(), "CI needs Mosquitto");
        eprintln!("skipped: needs Mosquitto for ACLs");
        return;
    };
    let mut biz = Client::connect_as(broker.port, "vending/#", Some(("biz", "biz-pass"))).await;
    let mut board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = with_login(
        &config_yaml(
            broker.port,
            &dir.path().join("store"),
            &[("vm-001", &board.path)],
        ),
        "gw",
        "gw-pass",
    );
    let _gateway = Gateway::start(dir.path(), &config);
    biz.expect(SECS(10), "gateway online", |m| {
        m.topic == "vending/gateways/gw-test/status" && m.payload == "online"
    })
    .await;
    biz.expect_status("vm-001", "online", SECS(10)).await;
    board
        .send("money_collected", json!({"mode": "coin", "amount": 5}))
        .await;
    biz.expect(SECS(10), "the event", |m| {
        m.topic == MONEY && m.json()["amount"] == 5
    })
    .await;
    biz.publish(
        "vending/vm-001/cmd/buy",
        r#"{"id":"acl-1","selection":11}"#,
        false,
    )
    .await;
    assert_eq!(
        biz.expect_result("vm-001", "buy", "acl-1", SECS(10)).await["status"],
        "ok"
    );
    board
        .expect(
            SECS(5),
            "the buy on the line",
            |e| matches!(e, BoardEvent::Command { name, .. } if name == "buy"),
        )
        .await;
}
