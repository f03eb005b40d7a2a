//! systemd integration without systemd: a stand-in for `$NOTIFY_SOCKET`
//! receives what the real gateway sends.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use vendgate::sim::Script;

struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify").to_string_lossy().into_owned();
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        NotifySocket {
            socket,
            _dir: dir,
            path,
        }
    }

    /// Every message received during `period`.
    fn collect(&self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        messages
    }
}

async fn start(env: &[(&str, &str)]) -> (Broker, TestBoard, Gateway, Client, tempfile::TempDir) {
    let broker = Broker::start();
    let mut client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_yaml(
        broker.port,
        &dir.path().join("store"),
        &[("vm-001", &board.path)],
    );
    let gateway = Gateway::start_with_env(dir.path(), &config, env);
    client
        .expect_status("vm-001", "online", Duration::from_secs(10))
        .await;
    (broker, board, gateway, client, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_status_and_watchdog_are_sent() {
    let notify = NotifySocket::new();
    let (_b, _board, mut gateway, _c, _d) = start(&[
        ("NOTIFY_SOCKET", &notify.path),
        ("WATCHDOG_USEC", "1000000"),
    ])
    .await;
    let messages = notify.collect(Duration::from_secs(3));
    assert!(
        messages.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("STATUS=1/1 machines online")),
        "{messages:?}"
    );
    let pets = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pets >= 4, "petted every half period: {messages:?}");
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
    let last = notify.collect(Duration::from_millis(500));
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_is_not_petted_while_a_device_task_is_stuck() {
    let notify = NotifySocket::new();
    let (_b, _board, gateway, _c, _d) = start(&[
        ("NOTIFY_SOCKET", &notify.path),
        ("WATCHDOG_USEC", "1000000"),
        // Test builds only: the device task hangs 2 s after start.
        ("VENDGATE_FAILPOINT_STALL_DEVICE", "vm-001"),
    ])
    .await;
    let messages = notify.collect(Duration::from_secs(6));
    let stuck = messages
        .iter()
        .position(|m| m == "STATUS=stuck: device vm-001")
        .unwrap_or_else(|| panic!("the stuck task is reported: {messages:?}"));
    assert!(
        messages[..stuck].iter().any(|m| m == "WATCHDOG=1"),
        "petted while alive: {messages:?}"
    );
    assert!(
        !messages[stuck..].iter().any(|m| m == "WATCHDOG=1"),
        "no petting once a task is stuck: {messages:?}"
    );
    let log = gateway.log_text();
    assert!(
        log.contains("no longer petting the systemd watchdog"),
        "{log}"
    );
    assert!(log.contains("device vm-001"), "names the stuck task");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs systemd-analyze: .ci/run installs it"
        );
        eprintln!("skipped: systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("systemd/vendgate.service")).expect("unit");
    // Point the unit at the binary just built, as an install would.
    let unit = unit.replace("/usr/bin/vendgate", env!("CARGO_BIN_EXE_vendgate"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vendgate.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("vendgate.service"),
        "warnings about the unit: {stderr}"
    );
}

/// `systemctl reload`: RELOADING=1 with MONOTONIC_USEC, then READY=1, also
/// when the new config is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_is_bracketed_by_reloading_and_ready() {
    let notify = NotifySocket::new();
    let (_b, _board, gateway, _c, _d) = start(&[("NOTIFY_SOCKET", &notify.path)]).await;
    let _ = notify.collect(Duration::from_secs(1));
    let config = std::fs::read_to_string(&gateway.config).expect("config");
    for (what, text) in [
        ("an unchanged config", config.clone()),
        (
            "a broken config",
            config.replace("gateway:", "gateway:\n  colour: red"),
        ),
    ] {
        write_file(&gateway.config, &text);
        gateway.hangup();
        let messages = notify.collect(Duration::from_secs(2));
        let reloading = messages
            .iter()
            .position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="))
            .unwrap_or_else(|| panic!("{what}: RELOADING=1 sent: {messages:?}"));
        let usec = messages[reloading]
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(usec.is_some_and(|u| u > 0), "{what}: {messages:?}");
        assert!(
            messages[reloading..]
                .iter()
                .any(|m| m.lines().any(|l| l == "READY=1")),
            "{what}: READY=1 after RELOADING=1: {messages:?}"
        );
    }
    assert!(gateway.log_text().contains("reload refused"));
}
