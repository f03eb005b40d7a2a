//! The device core frame by frame, with the clock in the test's hand: what
//! it writes, persists and publishes for each event. No port, no store, no
//! broker: the actions are the whole story.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{Action, Core, CoreContext, Restored};
use crate::codec::{Frame, FrameCode};
use crate::config::Config;
use crate::health::MachineHealth;
use crate::mqtt::Availability;
use crate::profile::Profile;
use crate::queue::{Job, QueueSlot, QueuedCommand};
use crate::store::Op;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn repo_profile(name: &str) -> Arc<Profile> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
    Arc::new(Profile::resolve(&dir, name).expect("shipped profile"))
}

fn core(profile: &str, address: Option<u16>, t0: Instant) -> Core {
    let text = format!(
        "gateway: {{id: gw}}\nmqtt: {{url: \"mqtt://127.0.0.1:1883\"}}\nstore: {{path: /tmp/unused}}\ndevices:\n  - {{id: m1, profile: {profile}, port: /dev/null}}\n"
    );
    let config = Config::from_str(&text, std::path::Path::new("/tmp/c.yaml")).expect("config");
    let mut device = config.devices[0].clone();
    device.address = address;
    let health = MachineHealth::new(Default::default(), Default::default(), Default::default());
    let ctx = CoreContext {
        config: Arc::new(config),
        device,
        profile: repo_profile(profile),
        health: Arc::new(health),
    };
    let mut core = Core::new(ctx, Restored::default(), t0);
    core.port_opened(t0);
    core
}

fn cooler(t0: Instant) -> Core {
    core("coolmax-cc200", Some(5), t0)
}

fn frame(address: Option<u16>, code: u32, payload: &[u8]) -> Frame {
    Frame {
        address,
        code: FrameCode::Num(code),
        payload: Bytes::copy_from_slice(payload),
    }
}

fn writes(actions: &[Action]) -> Vec<&Frame> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write(t) => Some(&t.frame),
            _ => None,
        })
        .collect()
}

fn telemetry(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Telemetry(item) => serde_json::from_slice(&item.payload).ok(),
            _ => None,
        })
        .collect()
}

/// The payloads appended to the outbox by the `Persist` actions.
fn appended(actions: &[Action]) -> Vec<(String, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(ops) => Some(ops),
            _ => None,
        })
        .flatten()
        .filter_map(|op| match op {
            Op::Append { item, .. } => {
                let payload = serde_json::from_slice(&item.payload).ok()?;
                Some((item.topic.clone(), payload))
            }
            _ => None,
        })
        .collect()
}

/// The CC-200's answer to `read_status`: 4.5 °C, setpoint 3.0, running.
fn status_answer() -> Frame {
    frame(Some(5), 0x03, &[8, 0, 45, 0, 30, 0, 0, 0, 1])
}

fn counters_answer() -> Frame {
    frame(Some(5), 0x03, &[6, 0x04, 0xD2, 0, 56, 0x03, 0x15])
}

fn set_setpoint(celsius: f64) -> QueuedCommand {
    let profile = repo_profile("coolmax-cc200");
    let def = profile.command("set_setpoint").expect("command").clone();
    let mut args = Map::new();
    args.insert("celsius".into(), json!(celsius));
    QueuedCommand {
        id: "sp-1".into(),
        body: def.encode(&args).expect("valid"),
        def,
        args,
        expires_at: None,
        accepted: Instant::now(),
        accepted_ms: 0,
        job: Job::Single,
        reply: None,
        slot: QueueSlot::none(),
    }
}

#[test]
fn polls_go_out_in_order_addressed_and_telemetry_is_published_on_change() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    assert_eq!(c.due(t0), Some(t0));
    assert!(c.transmit(t0));
    let actions = c.take_actions();
    let sent = writes(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].address, Some(5), "every frame carries the address");
    assert_eq!(
        &sent[0].payload[..],
        &[0, 0, 0, 4],
        "read_status: 4 registers from 0"
    );
    // One exchange at a time: nothing more until the answer.
    assert_eq!(c.due(t0), None);
    assert!(!c.transmit(t0));

    c.frame(status_answer(), t0 + MS(5));
    let actions = c.take_actions();
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Availability(Availability::Online))));
    let published = telemetry(&actions);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["temperature"], 4.5);
    assert_eq!(published[0]["compressor"], "running");

    // The second block shares the function code: decoded as `counters`.
    assert!(c.transmit(t0 + MS(6)));
    c.take_actions();
    c.frame(counters_answer(), t0 + MS(10));
    let published = telemetry(&c.take_actions());
    assert_eq!(published[0]["compressor_hours"], 1234);

    // A second later the same values: polled, but not published again.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(c.due(t1), Some(t1));
    assert!(c.transmit(t1));
    c.take_actions();
    c.frame(status_answer(), t1 + MS(5));
    assert!(telemetry(&c.take_actions()).is_empty());
    // A change is published at once.
    assert!(c.transmit(t1 + MS(6)));
    c.take_actions();
    c.frame(counters_answer(), t1 + MS(8));
    c.take_actions();
    let t2 = t1 + Duration::from_secs(1);
    assert!(c.transmit(t2));
    c.take_actions();
    c.frame(
        frame(Some(5), 0x03, &[8, 0, 50, 0, 30, 0, 0, 0, 1]),
        t2 + MS(5),
    );
    assert_eq!(telemetry(&c.take_actions())[0]["temperature"], 5.0);
}

#[test]
fn an_unanswered_poll_is_retried_then_the_device_goes_down_and_is_only_probed() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    let mut now = t0;
    let mut actions = Vec::new();
    // down_after_polls 3, retries 1: six unanswered requests.
    for _ in 0..6 {
        let due = c.due(now).expect("something to send");
        now = now.max(due);
        assert!(c.transmit(now), "sent at {:?}", now - t0);
        let by = c.answer_by().expect("waits for its answer");
        assert_eq!(by - now, MS(100), "answer_within");
        now = by;
        c.no_answer(now);
        actions.extend(c.take_actions());
    }
    assert_eq!(writes(&actions).len(), 6);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Availability(Availability::Offline { .. }))),
        "never answered since the start: offline, not just silent"
    );
    // Probed once per down_probe_interval (5 s), not every poll interval.
    let probe = c.due(now).expect("probed");
    assert_eq!(probe - now, Duration::from_secs(5));
    assert!(!c.transmit(now + Duration::from_secs(1)));
    assert!(c.transmit(probe));
    c.take_actions();
    c.frame(status_answer(), probe + MS(5));
    assert!(c
        .take_actions()
        .iter()
        .any(|a| matches!(a, Action::Availability(Availability::Online))));
}

/// Brings the cooler up, then stages `cmd`: returns the time it is on the line.
fn command_on_the_line(c: &mut Core, cmd: QueuedCommand, t0: Instant) -> Instant {
    command_on_the_line_with(c, cmd, t0, 0x06)
}

/// Like `command_on_the_line`, for a command with function code `code`.
fn command_on_the_line_with(c: &mut Core, cmd: QueuedCommand, t0: Instant, code: u32) -> Instant {
    assert!(c.transmit(t0));
    c.frame(status_answer(), t0 + MS(5));
    assert!(c.transmit(t0 + MS(6)));
    c.frame(counters_answer(), t0 + MS(8));
    c.take_actions();
    c.command(cmd, t0 + MS(10));
    // The `Written` record is made durable before the frame can go out.
    let actions = c.take_actions();
    assert!(actions.iter().any(|a| matches!(a, Action::Persist(_))));
    assert!(!c.transmit(t0 + MS(10)), "not before the record is durable");
    // Durable when both polls are due again: the command goes first.
    let t = t0 + Duration::from_secs(1);
    c.committed(true, t);
    c.take_actions();
    assert!(c.transmit(t));
    let sent = c.take_actions();
    let frames = writes(&sent);
    assert_eq!(frames[0].code, FrameCode::Num(code));
    t
}

#[test]
fn a_command_goes_before_polls_and_its_answer_ends_it_ok() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    let t = command_on_the_line(&mut c, set_setpoint(4.0), t0);
    c.frame(frame(Some(5), 0x06, &[0, 1, 0, 40]), t + MS(5));
    let results = appended(&c.take_actions());
    let (topic, result) = &results[0];
    assert_eq!(topic, "vending/m1/cmd/set_setpoint/result");
    assert_eq!(result["status"], "ok");
    assert_eq!(result["response"]["celsius"], 4.0);
}

#[test]
fn an_exception_answer_fails_the_command_at_once_with_the_decoded_error() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    let t = command_on_the_line(&mut c, set_setpoint(14.0), t0);
    c.frame(frame(Some(5), 0x86, &[3]), t + MS(5));
    let results = appended(&c.take_actions());
    let (_, result) = &results[0];
    assert_eq!(result["status"], "failed");
    assert_eq!(result["response"]["exception"], "illegal_data_value");
    let error = result["error"].as_str().expect("a sentence");
    assert!(error.contains("refused"), "{error}");
    assert!(!error.contains("acknowledged"), "{error}");
}

#[test]
fn an_unanswered_command_is_sent_retries_plus_one_times_then_times_out() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    let t = command_on_the_line(&mut c, set_setpoint(4.0), t0);
    // Its completion timeout (500 ms) bounds the wait for its answer.
    let by = c.answer_by().expect("waiting");
    assert_eq!(by - t, MS(500));
    c.no_answer(by);
    c.take_actions();
    // Until its retry is due, the polls due meanwhile use the line.
    for answer in [status_answer(), counters_answer()] {
        assert!(c.transmit(by));
        assert_eq!(writes(&c.take_actions())[0].code, FrameCode::Num(0x03));
        c.frame(answer, by + MS(2));
        c.take_actions();
    }
    let again = c.due(by + MS(2)).expect("retry");
    assert_eq!(again - by, MS(50), "retry_after");
    assert!(c.transmit(again));
    assert_eq!(writes(&c.take_actions())[0].code, FrameCode::Num(0x06));
    let by = c.answer_by().expect("waiting");
    c.no_answer(by);
    let results = appended(&c.take_actions());
    let (_, result) = &results[0];
    assert_eq!(result["status"], "timeout");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not answer"), "{error}");
}

#[test]
fn a_frame_while_nothing_waits_is_dropped() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    c.frame(status_answer(), t0);
    assert!(c.take_actions().is_empty());
    // And an answer with a code the request does not name is not its answer.
    assert!(c.transmit(t0));
    c.take_actions();
    c.frame(frame(Some(5), 0x06, &[0, 1, 0, 40]), t0 + MS(5));
    assert!(c.take_actions().is_empty());
    assert!(c.answer_by().is_some(), "still waiting for the real answer");
}

#[test]
fn vmc_polls_are_answered_at_once_and_data_is_acked_after_its_commit() {
    let t0 = Instant::now();
    let mut c = core("vmc-upper-computer", None, t0);
    c.frame(frame(None, 0x41, &[]), t0);
    let actions = c.take_actions();
    let sent = writes(&actions);
    assert_eq!(sent.len(), 1, "the POLL's ACK, at once");
    assert_eq!(sent[0].code, FrameCode::Num(0x42));
    // money_collected (0x21): PackNO 7, mode coin, 100.
    c.frame(frame(None, 0x21, &[7, 2, 0, 0, 0, 100]), t0 + MS(1));
    let actions = c.take_actions();
    assert!(
        writes(&actions).is_empty(),
        "no ACK before the event is durable"
    );
    let events = appended(&actions);
    assert_eq!(events[0].1["amount"], 100);
    assert_eq!(events[0].1["seq"], 1);
    c.committed(true, t0 + MS(3));
    let sent = c.take_actions();
    assert_eq!(writes(&sent)[0].code, FrameCode::Num(0x42));
}

#[test]
fn a_poll_command_sent_over_mqtt_answers_in_its_result_and_on_its_telemetry_topic() {
    let t0 = Instant::now();
    let mut c = cooler(t0);
    let profile = repo_profile("coolmax-cc200");
    let def = profile.command("read_status").expect("command").clone();
    let cmd = QueuedCommand {
        id: "rs-1".into(),
        body: def.encode(&Map::new()).expect("valid"),
        def,
        ..set_setpoint(0.0)
    };
    let t = command_on_the_line_with(&mut c, cmd, t0, 0x03);
    c.frame(
        frame(Some(5), 0x03, &[8, 0, 60, 0, 30, 0, 0, 0, 1]),
        t + MS(5),
    );
    let actions = c.take_actions();
    assert_eq!(telemetry(&actions)[0]["temperature"], 6.0);
    let results = appended(&actions);
    assert_eq!(results[0].1["status"], "ok");
    assert_eq!(results[0].1["response"]["temperature"], 6.0);
}
