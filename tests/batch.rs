//! `cmd/batch` and `cmd/cancel` end to end: the real binary, Mosquitto and
//! the simulated board.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use vendgate::sim::{BoardEvent, Script};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Cancels batch `target` with cancel command `id`; its own result is `ok`.
async fn cancel(r: &mut Rig, id: &str, target: &str) {
    let payload = json!({"id": id, "target": target}).to_string();
    r.client
        .publish("vending/vm-001/cmd/cancel", payload, false)
        .await;
    let v = r
        .client
        .expect_result("vm-001", "cancel", id, SECS(5))
        .await;
    assert_eq!(v["status"], "ok", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_set_price_batch_reaches_the_board_once_in_order_with_progress() {
    let n: usize = std::env::var("VENDGATE_BATCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut r = rig(Script::default()).await;
    // By hand: VENDGATE_BATCH_DEFAULT_POLL=1 leaves the board at 200 ms and
    // lets the batch lower it.
    if std::env::var_os("VENDGATE_BATCH_DEFAULT_POLL").is_none() {
        fast_polls(&mut r).await;
    }
    let started = Instant::now();
    r.client
        .publish(BATCH, batch("big", price_steps(n)), false)
        .await;
    let first = r
        .client
        .expect_result("vm-001", "batch", "big", SECS(5))
        .await;
    assert_eq!(first["status"], "running", "{first}");
    assert_eq!(
        (first["done"].clone(), first["total"].clone()),
        (json!(0), json!(n))
    );
    let result = final_result(&mut r, "big", SECS(30 + n as u64 / 2)).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{n} steps in {elapsed:?} ({:.2} × steps × 100 ms)",
        elapsed.as_secs_f64() / (n as f64 * 0.1)
    );
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        (result["done"].clone(), result["total"].clone()),
        (json!(n), json!(n))
    );
    let events = r.board.drain(Duration::from_millis(500)).await;
    let expected: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
    assert_eq!(prices(&events), expected, "every step once, in order");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, BoardEvent::Command { repeat: true, .. })),
        "no retransmission"
    );
    let reports: Vec<Value> = r
        .client
        .drain(Duration::from_millis(100))
        .await
        .iter()
        .filter(|m| m.topic == format!("{BATCH}/result"))
        .map(|m| m.json())
        .collect();
    let running: Vec<&Value> = reports
        .iter()
        .filter(|v| v["status"] == "running")
        .collect();
    assert!(
        running.len() >= 5 && running.len() <= 2 + elapsed.as_secs() as usize,
        "about one report a second: {running:?}"
    );
    let last = running
        .last()
        .map(|v| v["last"].clone())
        .unwrap_or_default();
    assert_eq!(last["cmd"], "set_price", "{last}");
    assert_eq!(last["status"], "ok", "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_one_invalid_step_is_rejected_and_nothing_is_sent() {
    let mut r = rig(Script::default()).await;
    let mut steps = price_steps(5);
    steps[3] = json!({"cmd": "set_price", "selection": 11, "price": -1});
    r.client.publish(BATCH, batch("bad", steps), false).await;
    let v = r
        .client
        .expect_result("vm-001", "batch", "bad", SECS(5))
        .await;
    assert_eq!(v["status"], "rejected", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("steps[3]") && error.contains("set_price") && error.contains("price"),
        "{v}"
    );
    let events = r.board.drain(SECS(1)).await;
    assert!(prices(&events).is_empty(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_survives_sigkill_and_no_step_but_the_one_in_flight_repeats() {
    let mut r = rig(Script::default()).await;
    let n = 40;
    r.client
        .publish(BATCH, batch("k", price_steps(n)), false)
        .await;
    // Kill after some steps reached the board.
    let mut seen = steps_seen(&mut r, 10).await;
    r.gateway.kill9();
    r.gateway.spawn();
    let result = final_result(&mut r, "k", SECS(60)).await;
    assert_eq!(result["status"], "ok", "{result}");
    seen.extend(r.board.drain(Duration::from_millis(500)).await);
    let got = prices(&seen);
    let mut deduped = got.clone();
    deduped.dedup();
    let expected: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
    assert_eq!(deduped, expected, "every step, in order: {got:?}");
    assert!(
        got.len() <= n + 1,
        "at most the step in flight at the kill repeats: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buy_in_flight_at_a_crash_is_reported_unknown_and_not_repeated() {
    let mut r = rig(Script::default()).await;
    // Restart with the failpoint: the gateway dies right after writing the
    // buy, before the board's ACK can be recorded.
    r.gateway.kill9();
    r.gateway
        .env
        .push(("VENDGATE_FAILPOINT_ABORT_AFTER_WRITE".into(), "buy".into()));
    r.gateway.spawn();
    r.client.expect_status("vm-001", "online", SECS(10)).await;
    let steps = vec![
        json!({"cmd": "set_price", "selection": 11, "price": 150}),
        json!({"cmd": "buy", "selection": 11}),
        json!({"cmd": "set_price", "selection": 11, "price": 160}),
    ];
    r.client.publish(BATCH, batch("b", steps), false).await;
    r.board
        .expect(
            SECS(10),
            "the buy",
            |e| matches!(e, BoardEvent::Command { name, .. } if name == "buy"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.gateway.kill9();
    r.gateway.env.clear();
    r.gateway.spawn();
    let result = final_result(&mut r, "b", SECS(20)).await;
    assert_eq!(result["status"], "failed", "{result}");
    let step = &result["failed_step"];
    assert_eq!(
        (step["index"].clone(), step["cmd"].clone()),
        (json!(1), json!("buy")),
        "{result}"
    );
    assert!(
        step["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown"),
        "{result}"
    );
    r.client.expect_status("vm-001", "online", SECS(10)).await;
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(commands(&events, "buy"), 0, "buy not repeated: {events:?}");
    assert_eq!(prices(&events), vec![150], "stopped there: {events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_batch_after_its_current_step() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(BATCH, batch("c", price_steps(50)), false)
        .await;
    let mut seen = steps_seen(&mut r, 3).await;
    cancel(&mut r, "x1", "c").await;
    let result = final_result(&mut r, "c", SECS(5)).await;
    assert_eq!(result["status"], "cancelled", "{result}");
    seen.extend(r.board.drain(SECS(1)).await);
    let done = result["done"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        prices(&seen).len(),
        done,
        "only the steps done were sent: {result}"
    );
    assert!(done < 10, "{result}");
    // A finished batch cannot be cancelled.
    r.client
        .publish(
            "vending/vm-001/cmd/cancel",
            r#"{"id":"x2","target":"c"}"#,
            false,
        )
        .await;
    let v = r
        .client
        .expect_result("vm-001", "cancel", "x2", SECS(5))
        .await;
    assert_eq!(v["status"], "rejected", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_expires_at_passed_is_expired_and_nothing_is_sent() {
    let mut r = rig(Script::default()).await;
    let payload = json!({"id": "e", "steps": price_steps(3), "expires_at": "2020-01-01T00:00:00Z"});
    r.client.publish(BATCH, payload.to_string(), false).await;
    let v = r
        .client
        .expect_result("vm-001", "batch", "e", SECS(5))
        .await;
    assert_eq!(v["status"], "expired", "{v}");
    let events = r.board.drain(SECS(1)).await;
    assert!(prices(&events).is_empty(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_continue_failed_steps_are_listed_and_the_rest_runs() {
    // The board answers nothing, so check_selection times out: a failure.
    let mut r = rig(Script::default()).await;
    let steps = vec![
        json!({"cmd": "set_price", "selection": 1, "price": 100}),
        json!({"cmd": "check_selection", "selection": 11}),
        json!({"cmd": "set_price", "selection": 2, "price": 101}),
    ];
    let payload = json!({"id": "cont", "steps": steps, "on_error": "continue"});
    r.client.publish(BATCH, payload.to_string(), false).await;
    let result = final_result(&mut r, "cont", SECS(15)).await;
    assert_eq!(result["status"], "failed", "{result}");
    let failed = result["failed_steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed.len(), 1, "{result}");
    assert_eq!(failed[0]["index"], 1, "{result}");
    let events = r.board.drain(Duration::from_millis(500)).await;
    assert_eq!(prices(&events), vec![100, 101]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_polls_faster_while_it_runs_and_restores_the_interval() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(BATCH, batch("t", price_steps(20)), false)
        .await;
    let result = final_result(&mut r, "t", SECS(20)).await;
    assert_eq!(result["status"], "ok", "{result}");
    let events = r.board.drain(Duration::from_millis(500)).await;
    let sent: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            BoardEvent::Command { name, args, .. } if name == "set_poll_interval" => {
                Some(format!("poll {}", args["interval_ms"]))
            }
            BoardEvent::Command { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut expected = vec!["poll 100".to_owned()];
    expected.extend((0..20).map(|_| "set_price".to_owned()));
    expected.push("poll 200".to_owned());
    assert_eq!(sent, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_machine_goes_silent_ends_offline() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(BATCH, batch("o", price_steps(100)), false)
        .await;
    let mut seen = steps_seen(&mut r, 3).await;
    r.board.polling(false).await;
    let result = final_result(&mut r, "o", SECS(20)).await;
    assert_eq!(result["status"], "offline", "{result}");
    r.board.polling(true).await;
    r.client.expect_status("vm-001", "online", SECS(5)).await;
    seen.extend(r.board.drain(SECS(1)).await);
    let done = result["done"].as_u64().unwrap_or(0) as usize;
    assert_eq!(prices(&seen).len(), done, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_removes_a_queued_batch_before_any_of_its_steps() {
    let mut r = rig(Script::default()).await;
    r.client
        .publish(BATCH, batch("first", price_steps(10)), false)
        .await;
    let second: Vec<Value> = (0..5)
        .map(|i| json!({"cmd": "set_price", "selection": 500, "price": 9000 + i}))
        .collect();
    r.client
        .publish(BATCH, batch("second", second), false)
        .await;
    cancel(&mut r, "x", "second").await;
    let cancelled = final_result(&mut r, "second", SECS(5)).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["done"], 0, "{cancelled}");
    let first = final_result(&mut r, "first", SECS(20)).await;
    assert_eq!(first["status"], "ok", "{first}");
    let events = r.board.drain(Duration::from_millis(500)).await;
    assert_eq!(prices(&events), (100..110).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_resumes_after_a_clean_restart() {
    let mut r = rig(Script::default()).await;
    let n = 30;
    r.client
        .publish(BATCH, batch("s", price_steps(n)), false)
        .await;
    let mut seen = steps_seen(&mut r, 8).await;
    assert_eq!(r.gateway.terminate().and_then(|s| s.code()), Some(0));
    r.gateway.spawn();
    let result = final_result(&mut r, "s", SECS(30)).await;
    assert_eq!(result["status"], "ok", "{result}");
    seen.extend(r.board.drain(Duration::from_millis(500)).await);
    let got = prices(&seen);
    let mut deduped = got.clone();
    deduped.dedup();
    let expected: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
    assert_eq!(deduped, expected, "{got:?}");
    assert!(got.len() <= n + 1, "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_stops_expired_when_expires_at_passes_between_steps() {
    let mut r = rig(Script::default()).await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let payload = json!({"id": "x", "steps": price_steps(100), "expires_at": at.to_rfc3339()});
    r.client.publish(BATCH, payload.to_string(), false).await;
    let result = final_result(&mut r, "x", SECS(10)).await;
    assert_eq!(result["status"], "expired", "{result}");
    let done = result["done"].as_u64().unwrap_or(0) as usize;
    assert!(done > 0 && done < 100, "{result}");
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(prices(&events).len(), done, "{result}");
}
