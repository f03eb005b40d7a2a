//! The health report (retained JSON on the gateway's health topic) and the
//! Prometheus endpoint of `run --metrics-listen`, end to end.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::Value;
use vendgate::sim::Script;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const HEALTH: &str = "vending/gateways/gw-test/health";
const EVERY_SECOND: &str = "health:\n  interval: 1s\n";

/// The next health report whose vm-001 entry satisfies `pred`.
async fn report(client: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    client
        .expect(SECS(10), what, |m| {
            m.topic == HEALTH && pred(&m.json()["machines"]["vm-001"])
        })
        .await
        .json()
}

/// Drops the reports seen so far, so the next wait sees only newer ones.
fn forget_reports(client: &mut Client) {
    client.seen.retain(|m| m.topic != HEALTH);
}

fn count(machine: &Value, key: &str) -> u64 {
    machine[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {machine}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_report_counts_frames_and_errors_and_follows_the_link() {
    let mut r = rig_with(Script::default(), EVERY_SECOND).await;

    let doc = report(&mut r.client, "online report", |m| m["link"] == "online").await;
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["uptime_s"].is_u64(), "{doc}");
    assert!(doc["ts"].is_string(), "{doc}");
    assert!(doc["outbox"]["dropped"]["events"].is_u64(), "{doc}");
    assert!(doc["mqtt_reconnects"].is_u64(), "{doc}");
    let m = &doc["machines"]["vm-001"];
    let frames = count(m, "frames_in");
    // At least the POLL that brought the link up (its answer may still be
    // on its way when the link change triggers the report).
    assert!(frames > 0, "{m}");
    assert_eq!(count(m, "checksum_errors"), 0, "{m}");
    assert!(m["outbox_depth"].is_u64(), "{m}");

    // The board keeps polling: frames_in grows, POLL answers are timed.
    let doc = report(&mut r.client, "growing frames_in", |m| {
        m["frames_in"].as_u64() > Some(frames)
    })
    .await;
    let m = &doc["machines"]["vm-001"];
    assert!(count(m, "frames_out") > 0, "{m}");
    assert!(count(m, "polls_answered") > 0, "{m}");
    assert!(m["poll_latency_us"]["p50"].is_u64(), "{m}");
    assert!(m["poll_latency_us"]["p99"].is_u64(), "{m}");

    // A frame with a wrong XOR is counted, not published.
    let mut bad = money(9, 100);
    if let Some(xor) = bad.last_mut() {
        *xor ^= 0x5A;
    }
    r.board.raw(bad).await;
    report(&mut r.client, "a checksum error", |m| {
        m["checksum_errors"].as_u64() >= Some(1)
    })
    .await;

    // The board stops polling: the link state and its reason change, and
    // the report follows the change without waiting for the interval.
    forget_reports(&mut r.client);
    r.board.polling(false).await;
    let doc = report(&mut r.client, "offline report", |m| m["link"] == "offline").await;
    assert_eq!(
        doc["machines"]["vm-001"]["last_offline_reason"],
        "link_lost"
    );
    forget_reports(&mut r.client);
    r.board.polling(true).await;
    let doc = report(&mut r.client, "online again", |m| m["link"] == "online").await;
    // While online, the report still says why the machine was last offline.
    assert_eq!(
        doc["machines"]["vm-001"]["last_offline_reason"],
        "link_lost"
    );

    // The report is retained: a client arriving now gets the latest at once.
    let mut late = Client::connect(r.broker.port, HEALTH).await;
    let retained = late
        .expect(SECS(5), "retained health report", |m| m.topic == HEALTH)
        .await;
    assert!(retained.retain, "{retained:?}");
    assert!(retained.json()["machines"]["vm-001"].is_object());
}

/// One HTTP request on a fresh connection; the whole response.
async fn http(port: u16, request: &'static [u8]) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(SECS(5))).expect("timeout");
        stream.write_all(request).expect("write request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        response
    })
    .await
    .expect("request task")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_serves_prometheus_text() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let r = rig_with_args(Script::default(), "", &["--metrics-listen", &listen]).await;

    let get = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut response = http(port, get).await;
    // The machine is online by now; wait for its frames to be counted.
    let deadline = tokio::time::Instant::now() + SECS(5);
    while response.contains("vendgate_frames_received_total{machine=\"vm-001\"} 0")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        response = http(port, get).await;
    }
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    for line in [
        "# TYPE vendgate_frames_received_total counter",
        "vendgate_link_up{machine=\"vm-001\"} 1",
        "# TYPE vendgate_poll_answer_latency_seconds histogram",
        "vendgate_checksum_errors_total{machine=\"vm-001\"} 0",
        "vendgate_gateway_mqtt_reconnects_total 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    let frames: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("vendgate_frames_received_total{machine=\"vm-001\"} "))
        .and_then(|v| v.parse().ok())
        .expect("frames_received sample");
    assert!(frames > 0, "{body}");

    assert!(http(port, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(http(port, b"\x00\xffnot http at all\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 400"));
    // Garbage did not hurt the server.
    assert!(http(port, get).await.starts_with("HTTP/1.1 200 OK"));
    drop(r);
}

#[test]
fn a_metrics_address_in_use_is_fatal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    write_file(
        &config,
        &config_yaml(
            free_port(),
            &dir.path().join("store"),
            &[("vm-001", "/dev/null")],
        ),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vendgate"))
        .args(["run", "-c"])
        .arg(&config)
        .args(["--metrics-listen", &addr])
        .output()
        .expect("run vendgate");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen for metrics"), "{stderr}");
}
