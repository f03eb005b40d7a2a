//! MQTT 5 request/response end to end: the real binary speaking MQTT 5
//! (`mqtt.version: 5`) to Mosquitto, the simulated board, and a real MQTT 5
//! client on the business side (`mosquitto_pub` / `mosquitto_sub -V mqttv5`).
//!
//! A command carrying a Response Topic and Correlation Data gets its results
//! on the usual result topic and also on that response topic with the same
//! correlation data; a Message Expiry Interval is honoured like `expires_at`;
//! a command delivered retained (retain-as-published) is refused; an item the
//! broker refuses with a failure reason code stays in the outbox; and MQTT
//! 3.1.1 keeps working as before.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use vendgate::sim::{BoardEvent, Script};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MONEY: &str = "vending/vm-001/event/money_collected";
/// `mosquitto_sub -F`: retain flag, topic, correlation data, payload.
const FORMAT: &str = "%r|%t|%D|%p";
/// What the test client publishes on a response topic to learn that
/// `mosquitto_sub` is subscribed; never a reply.
const PROBE: &str = "vendgate-test-probe";

/// True, after saying so, when Mosquitto or its clients are missing (never
/// under CI): these tests need a real MQTT 5 broker and client.
fn without_mosquitto() -> bool {
    let in_path = |name: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
            .unwrap_or(false)
    };
    if mosquitto_path().is_some() && in_path("mosquitto_pub") && in_path("mosquitto_sub") {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs Mosquitto");
    eprintln!("skipped: needs Mosquitto and mosquitto_pub/mosquitto_sub for MQTT 5");
    true
}

/// A name no other test run uses.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// `mosquitto_pub -V mqttv5 -q 1` of `payload` (None: a zero-length
/// message), with `-r` when `retain`, and each of `props` as
/// `-D publish NAME VALUE` (e.g. `response-topic`, `correlation-data`,
/// `message-expiry-interval`).
async fn publish_v5(
    port: u16,
    topic: &str,
    payload: Option<&str>,
    retain: bool,
    props: &[(&str, &str)],
) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-V", "mqttv5", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-q", "1", "-t", topic]);
    match payload {
        Some(payload) => {
            cmd.args(["-m", payload]);
        }
        None => {
            cmd.arg("-n");
        }
    }
    if retain {
        cmd.arg("-r");
    }
    for (name, value) in props {
        cmd.args(["-D", "publish", name, value]);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(SECS(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("mosquitto_pub to {topic} did not finish within 20 s"))
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub to {topic}: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One message `mosquitto_sub -V mqttv5` received.
#[derive(Debug, Clone)]
struct Reply {
    retain: bool,
    topic: String,
    correlation: String,
    payload: String,
}

impl Reply {
    fn parse(line: &str) -> Reply {
        let mut parts = line.splitn(4, '|');
        let mut next = || parts.next().unwrap_or_default().to_owned();
        let retain = next();
        Reply {
            retain: retain == "1",
            topic: next(),
            correlation: next(),
            payload: next(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }
}

/// Lines of `reader` until it ends, each to `each`.
async fn each_line(mut reader: impl AsyncBufRead + Unpin, mut each: impl FnMut(String) -> bool) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if !each(line.trim_end_matches(['\n', '\r']).to_owned()) {
                    return;
                }
            }
        }
    }
}

/// A `mosquitto_sub -V mqttv5 -q 1` on one topic (the response topic), with
/// each message's retain flag and correlation data.
struct Replies {
    topic: String,
    rx: mpsc::UnboundedReceiver<Reply>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<Reply>,
    _child: tokio::process::Child,
}

impl Replies {
    /// Subscribed to `topic` when it returns: `probe` publishes a probe
    /// message there until one arrives (probes are never returned).
    async fn start(port: u16, topic: &str, probe: &Client) -> Replies {
        let mut child = Command::new("mosquitto_sub")
            .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-q", "1", "-t", topic, "-F", FORMAT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().expect("mosquitto_sub stdout");
        let stderr_pipe = child.stderr.take().expect("mosquitto_sub stderr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(each_line(BufReader::new(stdout), move |line| {
            tx.send(Reply::parse(&line)).is_ok()
        }));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(each_line(BufReader::new(stderr_pipe), move |line| {
            if let Ok(mut text) = sink.lock() {
                text.push_str(&line);
                text.push('\n');
            }
            true
        }));
        let mut replies = Replies {
            topic: topic.to_owned(),
            rx,
            stderr,
            seen: Vec::new(),
            _child: child,
        };
        let deadline = tokio::time::Instant::now() + SECS(10);
        loop {
            probe.publish(topic, PROBE, false).await;
            match tokio::time::timeout(Duration::from_millis(300), replies.rx.recv()).await {
                Ok(Some(reply)) if reply.payload == PROBE => break,
                Ok(Some(reply)) => replies.seen.push(reply),
                Ok(None) => panic!(
                    "mosquitto_sub on {topic} exited; stderr: {}",
                    replies.stderr_text()
                ),
                Err(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "mosquitto_sub on {topic} not subscribed within 10 s; stderr: {}",
                    replies.stderr_text()
                ),
            }
        }
        replies
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }

    /// The next message that is not a probe, None past `deadline` or when
    /// `mosquitto_sub` exited.
    async fn next_until(&mut self, deadline: tokio::time::Instant) -> Option<Reply> {
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(reply)) if reply.payload == PROBE => continue,
                Ok(reply) => return reply,
                Err(_) => return None,
            }
        }
    }

    /// The next message (seen before or arriving) matching `pred`.
    async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Reply) -> bool,
    ) -> Reply {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        while let Some(reply) = self.next_until(deadline).await {
            if pred(&reply) {
                return reply;
            }
            self.seen.push(reply);
        }
        panic!(
            "no {what} on {} within {within:?}; seen there: {:#?}; mosquitto_sub stderr: {}",
            self.topic,
            self.seen,
            self.stderr_text()
        )
    }

    /// Everything arriving during `period` (plus what was seen before).
    async fn drain(&mut self, period: Duration) -> Vec<Reply> {
        let deadline = tokio::time::Instant::now() + period;
        while let Some(reply) = self.next_until(deadline).await {
            self.seen.push(reply);
        }
        std::mem::take(&mut self.seen)
    }
}

/// Asserts that `reply` came on `topic` with `correlation`, not retained.
fn assert_reply(reply: &Reply, topic: &str, correlation: &str) {
    assert_eq!(reply.topic, topic, "{reply:?}");
    assert_eq!(
        reply.correlation, correlation,
        "the correlation data of the request: {reply:?}"
    );
    assert!(!reply.retain, "a result is not retained: {reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_with_a_response_topic_gets_its_result_there_with_the_correlation_data() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    let mut replies = Replies::start(r.broker.port, &reply_to, &r.client).await;
    publish_v5(
        r.broker.port,
        "vending/vm-001/cmd/set_price",
        Some(r#"{"id":"rr-1","selection":11,"price":4321}"#),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    let result = r
        .client
        .expect_result("vm-001", "set_price", "rr-1", SECS(10))
        .await;
    assert_eq!(result["status"], "ok", "{result}");
    let reply = replies
        .expect(SECS(10), "the result of rr-1", |m| m.json()["id"] == "rr-1")
        .await;
    assert_reply(&reply, &reply_to, &corr);
    assert_eq!(reply.json()["status"], "ok", "{reply:?}");
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(prices(&events), vec![4321], "the command once: {events:?}");
    for reply in replies.drain(Duration::from_millis(500)).await {
        assert_reply(&reply, &reply_to, &corr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_command_gets_its_rejection_on_the_response_topic() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    let mut replies = Replies::start(r.broker.port, &reply_to, &r.client).await;
    publish_v5(
        r.broker.port,
        "vending/vm-001/cmd/buy",
        Some(r#"{"id":"rej-1","selection":11,"colour":"red"}"#),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "rej-1", SECS(10))
        .await;
    assert_eq!(result["status"], "rejected", "{result}");
    let reply = replies
        .expect(SECS(10), "the rejection of rej-1", |m| {
            m.json()["id"] == "rej-1"
        })
        .await;
    assert_reply(&reply, &reply_to, &corr);
    let v = reply.json();
    assert_eq!(v["status"], "rejected", "{reply:?}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("colour"),
        "the error names the field: {reply:?}"
    );
    let events = r.board.drain(SECS(1)).await;
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, BoardEvent::Command { .. })),
        "nothing written for a rejected command: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_reports_progress_and_its_final_result_on_the_response_topic() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    fast_polls(&mut r).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    let mut replies = Replies::start(r.broker.port, &reply_to, &r.client).await;
    let n = 20;
    publish_v5(
        r.broker.port,
        BATCH,
        Some(&batch("rb", price_steps(n))),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    let last = replies
        .expect(SECS(40), "the final result of rb", |m| {
            let v = m.json();
            v["id"] == "rb" && v["status"] != "running"
        })
        .await;
    assert_reply(&last, &reply_to, &corr);
    let v = last.json();
    assert_eq!(v["status"], "ok", "{last:?}");
    assert_eq!(
        (v["done"].clone(), v["total"].clone()),
        (json!(n), json!(n))
    );
    let running_before = replies
        .seen
        .iter()
        .filter(|m| m.json()["id"] == "rb" && m.json()["status"] == "running")
        .count();
    let all = replies.drain(Duration::from_millis(500)).await;
    assert!(
        running_before >= 1,
        "at least the first running report before the final result: {all:#?}"
    );
    for reply in &all {
        assert_reply(reply, &reply_to, &corr);
        assert_eq!(reply.json()["id"], "rb", "{reply:?}");
    }
    let result = final_result(&mut r, "rb", SECS(10)).await;
    assert_eq!(result["status"], "ok", "also on the result topic: {result}");
    let events = r.board.drain(SECS(1)).await;
    let expected: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
    assert_eq!(prices(&events), expected, "every step once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_whose_message_expiry_passes_in_the_queue_is_expired_not_sent() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    // A 60-step batch keeps the machine's queue busy for at least 6 s (one
    // step per POLL, 100 ms apart at best); a single command waits behind it.
    r.client
        .publish(BATCH, batch("busy", price_steps(60)), false)
        .await;
    let first = r
        .client
        .expect_result("vm-001", "batch", "busy", SECS(10))
        .await;
    assert_eq!(first["status"], "running", "{first}");
    publish_v5(
        r.broker.port,
        "vending/vm-001/cmd/buy",
        Some(r#"{"id":"late-1","selection":11}"#),
        false,
        &[("message-expiry-interval", "1")],
    )
    .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "late-1", SECS(60))
        .await;
    assert_eq!(result["status"], "expired", "{result}");
    assert!(
        !result["error"].as_str().unwrap_or_default().is_empty(),
        "{result}"
    );
    let busy = final_result(&mut r, "busy", SECS(60)).await;
    assert_eq!(busy["status"], "ok", "{busy}");
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(
        commands(&events, "buy"),
        0,
        "the expired command never reached the board: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_stops_expired_when_its_message_expiry_passes_between_steps() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    publish_v5(
        r.broker.port,
        BATCH,
        Some(&batch("mx", price_steps(100))),
        false,
        &[("message-expiry-interval", "2")],
    )
    .await;
    // 100 steps take at least 10 s: a batch that ignored the expiry ends
    // `ok` well within this wait.
    let result = final_result(&mut r, "mx", SECS(40)).await;
    assert_eq!(result["status"], "expired", "{result}");
    let done = result["done"].as_u64().unwrap_or(0) as usize;
    assert!(done > 0 && done < 100, "{result}");
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(
        prices(&events).len(),
        done,
        "exactly the steps done reached the board: {result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_published_retained_is_rejected_under_retain_as_published() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    let topic = "vending/vm-001/cmd/buy";
    // The gateway is subscribed: a live command completes. The retained one
    // below then arrives live, not as a replay at subscription.
    publish_v5(
        r.broker.port,
        topic,
        Some(r#"{"id":"live-1","selection":11}"#),
        false,
        &[],
    )
    .await;
    let live = r
        .client
        .expect_result("vm-001", "buy", "live-1", SECS(10))
        .await;
    assert_eq!(live["status"], "ok", "{live}");
    r.board
        .expect(
            SECS(5),
            "the live buy",
            |e| matches!(e, BoardEvent::Command { name, .. } if name == "buy"),
        )
        .await;
    publish_v5(
        r.broker.port,
        topic,
        Some(r#"{"id":"ret-1","selection":11}"#),
        true,
        &[],
    )
    .await;
    let result = r
        .client
        .expect_result("vm-001", "buy", "ret-1", SECS(10))
        .await;
    let events = r.board.drain(SECS(1)).await;
    // Clear the retained command before judging.
    publish_v5(r.broker.port, topic, None, true, &[]).await;
    assert_eq!(result["status"], "rejected", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or_default()
            .contains("retained"),
        "{result}"
    );
    assert_eq!(
        commands(&events, "buy"),
        0,
        "the retained buy never reached the board: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_response_address_of_a_batch_survives_a_sigkill() {
    if without_mosquitto() {
        return;
    }
    let mut r = rig_v5(Script::default()).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    let mut replies = Replies::start(r.broker.port, &reply_to, &r.client).await;
    let n = 40;
    publish_v5(
        r.broker.port,
        BATCH,
        Some(&batch("kr", price_steps(n))),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    // Kill after some steps reached the board.
    steps_seen(&mut r, 10).await;
    r.gateway.kill9();
    r.gateway.spawn();
    let last = replies
        .expect(SECS(60), "the final result of kr after the restart", |m| {
            let v = m.json();
            v["id"] == "kr" && v["status"] != "running"
        })
        .await;
    assert_reply(&last, &reply_to, &corr);
    assert_eq!(last.json()["status"], "ok", "{last:?}");
    // Running reports, before and after the restart, carry it too.
    for reply in replies.drain(Duration::from_millis(500)).await {
        assert_reply(&reply, &reply_to, &corr);
    }
    let result = final_result(&mut r, "kr", SECS(10)).await;
    assert_eq!(result["status"], "ok", "also on the result topic: {result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mqtt_3_gateway_answers_an_mqtt_5_request_on_the_result_topic() {
    if without_mosquitto() {
        return;
    }
    // The default version: MQTT 3.1.1.
    let mut r = rig(Script::default()).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    publish_v5(
        r.broker.port,
        "vending/vm-001/cmd/set_price",
        Some(r#"{"id":"v3-1","selection":12,"price":2345}"#),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    let result = r
        .client
        .expect_result("vm-001", "set_price", "v3-1", SECS(10))
        .await;
    assert_eq!(result["status"], "ok", "{result}");
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(prices(&events), vec![2345], "the command once: {events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_refused_by_the_broker_stays_in_the_outbox_until_it_is_allowed() {
    if without_mosquitto() {
        return;
    }
    // The gateway may write everything but the machine's events: under
    // MQTT 5 Mosquitto answers their PUBLISH with PUBACK 0x87 (not
    // authorized), a refusal and not a delivery.
    let allowed = "user gw\ntopic readwrite #\n\nuser biz\ntopic readwrite vending/#\n";
    let denied = "user gw\ntopic readwrite #\ntopic deny vending/vm-001/event/#\n\nuser biz\ntopic readwrite vending/#\n";
    let broker = Broker::with_auth(&[("gw", "gw-pass"), ("biz", "biz-pass")], Some(denied))
        .expect("Mosquitto with an ACL");
    let mut biz = Client::connect_as(broker.port, "vending/#", Some(("biz", "biz-pass"))).await;
    let mut board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = with_mqtt_version(
        &config_yaml(
            broker.port,
            &dir.path().join("store"),
            &[("vm-001", &board.path)],
        ),
        5,
    );
    let config = with_login(&config, "gw", "gw-pass") + "health:\n  interval: 1s\n";
    let gateway = Gateway::start(dir.path(), &config);
    biz.expect_status("vm-001", "online", SECS(10)).await;
    board
        .send("money_collected", json!({"mode": "coin", "amount": 5}))
        .await;
    board
        .expect(SECS(10), "the event ACKed (durable)", |e| {
            matches!(e, BoardEvent::DataAcked { .. })
        })
        .await;
    // The gateway tried and the broker refused it.
    let deadline = std::time::Instant::now() + SECS(20);
    loop {
        let log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("Denied PUBLISH") && l.contains(MONEY))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refused PUBLISH of {MONEY} in the broker log within 20 s: {log}\ngateway log: {}",
            gateway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counted in the health report.
    biz.expect(SECS(10), "a health report counting the refusal", |m| {
        m.topic == "vending/gateways/gw-test/health"
            && m.json()["machines"]["vm-001"]["mqtt_refused"]
                .as_u64()
                .is_some_and(|n| n >= 1)
    })
    .await;
    let early: Vec<String> = biz
        .drain(SECS(3))
        .await
        .iter()
        .filter(|m| m.topic == MONEY)
        .map(|m| m.payload.clone())
        .collect();
    assert!(early.is_empty(), "the broker refused the event: {early:?}");
    // The operator fixes the ACL; Mosquitto reloads it on SIGHUP. The gateway
    // keeps running and delivers the event it kept.
    std::fs::write(broker.acl_path(), allowed).expect("rewrite the ACL");
    broker.reload();
    let event = biz
        .expect(SECS(40), "the event once the ACL allows it", |m| {
            m.topic == MONEY
        })
        .await;
    assert_eq!(event.json()["amount"], 5, "{event:?}");
    assert!(event.json()["seq"].is_u64(), "{event:?}");
    // Published again by the retry (5 s, then 10 s more, ...), not at every
    // reconnect: Mosquitto 2.0 drops an MQTT 5 client right after refusing
    // its QoS 1 publish (eclipse-mosquitto/mosquitto#2579), so a gateway
    // that re-sent the refused event at each connect would loop, refused
    // and dropped every 200 ms. How many retries fell before the ACL was
    // fixed depends on the machine's load; each costs one reconnect.
    let broker_log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
    let denied = broker_log
        .lines()
        .filter(|l| l.contains("Denied PUBLISH") && l.contains(MONEY))
        .count();
    let log = gateway.log_text();
    let connects = log
        .lines()
        .filter(|l| l.contains("MQTT connected") && l.contains("session=vm-001"))
        .count();
    assert!(
        (1..=3).contains(&denied) && connects <= denied + 1,
        "{denied} refusals, {connects} connects: {log}\nbroker: {broker_log}"
    );
}

/// With an interface file the MQTT 5 reply address still works: the reply
/// is the interface's payload, with the request's correlation data.
#[tokio::test(flavor = "multi_thread")]
async fn an_interface_reply_reaches_the_response_topic_with_the_correlation_data() {
    if without_mosquitto() {
        return;
    }
    let extra = format!(
        "interface: {}\n",
        repo().join("interfaces/nordvend-nv3.yaml").display()
    );
    let mut r = rig_v5_with(Script::default(), &extra).await;
    let u = unique();
    let (reply_to, corr) = (format!("replies/{u}"), format!("corr-{u}"));
    let mut replies = Replies::start(r.broker.port, &reply_to, &r.client).await;
    publish_v5(
        r.broker.port,
        "nv/vm-001/down",
        Some(r#"{"req_id":"nv-1","op":"set_price","args":{"slot":11,"price_cents":4321}}"#),
        false,
        &[("response-topic", &reply_to), ("correlation-data", &corr)],
    )
    .await;
    let reply = replies
        .expect(SECS(10), "the reply to nv-1", |m| {
            m.json()["req_id"] == "nv-1"
        })
        .await;
    assert_reply(&reply, &reply_to, &corr);
    assert_eq!(
        reply.json(),
        json!({"req_id": "nv-1", "ok": true}),
        "{reply:?}"
    );
    let events = r.board.drain(SECS(1)).await;
    assert_eq!(prices(&events), vec![4321], "the command once: {events:?}");
}
