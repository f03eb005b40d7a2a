//! The gateway as Modbus RTU bus master, end to end: the real binary, a real
//! broker, and CoolMax CC-200 slaves played by pymodbus, a third-party Modbus
//! stack (tests/peers/modbus_slaves.py), so our Modbus is checked against an
//! implementation that is not our own. Gateway and slaves meet on one line: a
//! pty pair made by socat. Three devices share it: addresses 5 and 6 answer,
//! nobody answers 7.
//!
//! Needs socat and python3 with pymodbus 3.x and pyserial (.ci/run installs
//! them); without them the tests say SKIPPED, or fail when CI is set.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Register blocks of the CC-200 map (device-profiles/coolmax-cc200.yaml).
const STATUS_BLOCK: u64 = 0x0000;
const COUNTERS_BLOCK: u64 = 0x0010;

/// A child process killed and reaped when dropped, so no test leaves a
/// socat or a Python process behind, also when it panics half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why the slave bus cannot run here, if it cannot.
fn missing_tools() -> Option<&'static str> {
    let runs = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("socat", &["-V"]) {
        return Some("socat is not installed");
    }
    // SimDevice with `action`: the datastore API the script uses (3.x, recent).
    let check = "import serial; from pymodbus.simulator import SimDevice; SimDevice.action";
    if !runs("python3", &["-c", check]) {
        return Some("python3 with pymodbus (3.16) and pyserial is not installed");
    }
    None
}

/// The script's stdout lines, each with the time it arrived.
type Lines = Arc<Mutex<Vec<(Instant, Value)>>>;

/// socat's pty pair with the pymodbus slaves on its `bus` end; the gateway
/// opens `gw`. Every JSON line the script prints is kept with the time it
/// arrived, so tests can count the requests served in a time window.
struct SlaveBus {
    gw: PathBuf,
    stdin: ChildStdin,
    lines: Lines,
    stderr_log: PathBuf,
    // Dropped in this order: the slaves before the line they sit on.
    slaves: KillOnDrop,
    _socat: KillOnDrop,
}

impl SlaveBus {
    /// Slaves `ids` (e.g. "5,6") on a new line in `dir`. None, after saying
    /// SKIPPED, when the tools are missing outside CI.
    fn start(dir: &Path, ids: &str) -> Option<SlaveBus> {
        if let Some(why) = missing_tools() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and {why}: .ci/run must install it"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let (gw, bus) = (dir.join("gw"), dir.join("bus"));
        let socat = KillOnDrop(
            Command::new("socat")
                .args(["-d", "-d"])
                .arg(format!("pty,raw,echo=0,link={}", gw.display()))
                .arg(format!("pty,raw,echo=0,link={}", bus.display()))
                .stdout(Stdio::null())
                .stderr(log_file(&dir.join("socat.log")))
                .spawn()
                .expect("start socat"),
        );
        wait_until(SECS(5), "socat's pty links", || gw.exists() && bus.exists());
        let stderr_log = dir.join("modbus_slaves.log");
        let mut child = Command::new("python3")
            .arg(repo().join("tests/peers/modbus_slaves.py"))
            .arg("--port")
            .arg(bus)
            .args(["--slaves", ids])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&stderr_log))
            .spawn()
            .expect("start modbus_slaves.py");
        let stdin = child.stdin.take().expect("stdin");
        let lines = read_json_lines(child.stdout.take().expect("stdout"));
        let mut slave_bus = SlaveBus {
            gw,
            stdin,
            lines,
            stderr_log,
            slaves: KillOnDrop(child),
            _socat: socat,
        };
        slave_bus.wait_ready();
        Some(slave_bus)
    }

    /// Until the script printed {"ready":true}: it is listening on the line.
    fn wait_ready(&mut self) {
        // Generous: importing pymodbus on a busy 2-core machine takes a while.
        let deadline = Instant::now() + SECS(30);
        while self.find_since(None, |v| v["ready"] == true).is_none() {
            if let Ok(Some(status)) = self.slaves.0.try_wait() {
                panic!("modbus_slaves.py exited ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "modbus_slaves.py not ready within 30 s: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The first line since `from` (or ever) matching `pred`.
    fn find_since(&self, from: Option<Instant>, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let lines = self.lines.lock().expect("lines");
        lines
            .iter()
            .filter(|(at, _)| from.is_none_or(|from| *at >= from))
            .map(|(_, v)| v)
            .find(|v| pred(v))
            .cloned()
    }

    /// The requests the slaves answered between `from` and `to`.
    fn served(&self, from: Instant, to: Instant) -> Vec<Value> {
        let lines = self.lines.lock().expect("lines");
        lines
            .iter()
            .filter(|(at, v)| *at >= from && *at < to && v.get("slave").is_some())
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn served_since(&self, from: Instant) -> Vec<Value> {
        self.served(from, Instant::now() + SECS(3600))
    }

    /// Waits (up to `within`) for a served request since `from` matching `pred`.
    async fn expect_served(
        &self,
        from: Instant,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.find_since(Some(from), |v| v.get("slave").is_some() && pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "slaves served no {what} within {within:?}; served: {:#?}",
                self.served_since(from)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a control line (`mute 6`, `unmute 6`, `set 5 0 215`) and waits
    /// for the script to confirm it took effect.
    async fn control(&mut self, line: &str) {
        let sent = Instant::now();
        writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .expect("write to modbus_slaves.py");
        let deadline = sent + SECS(5);
        let ack = loop {
            if let Some(ack) = self.find_since(Some(sent), |v| v["control"] == line) {
                break ack;
            }
            assert!(
                Instant::now() < deadline,
                "no ack of {line:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(ack["ok"], true, "{ack}");
    }
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).expect("log file")
}

/// Collects the JSON lines of `stdout` in a background thread.
fn read_json_lines(stdout: std::process::ChildStdout) -> Lines {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().expect("lines").push((Instant::now(), v));
            }
        }
    });
    lines
}

fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Answered reads (not exceptions) of the block at `address` on `slave`.
fn reads(served: &[Value], slave: u64, address: u64) -> usize {
    served
        .iter()
        .filter(|v| {
            v["slave"] == slave
                && v["fc"] == 3
                && v["address"] == address
                && v.get("exception").is_none()
        })
        .count()
}

/// The write single register requests among `served`.
fn writes(served: &[Value]) -> Vec<Value> {
    served.iter().filter(|v| v["fc"] == 6).cloned().collect()
}

/// `payload[key]` is `want` °C (compared as numbers: 21.5 may be 21.500000000000004).
fn assert_celsius(payload: &Value, key: &str, want: f64) {
    let got = payload[key].as_f64();
    assert!(
        got.is_some_and(|got| (got - want).abs() < 1e-6),
        "{key} should be {want} °C: {payload}"
    );
}

/// Broker, slaves, gateway with cooler-05, -06 and -07 on one line, and a
/// business-side client that saw cooler-05 and cooler-06 come online.
struct BusRig {
    client: Client,
    gateway: Gateway,
    bus: SlaveBus,
    _broker: Broker,
    _dir: tempfile::TempDir, // last: it holds the ptys' links and the logs
}

fn bus_config(broker_port: u16, dir: &Path, line: &Path) -> String {
    let mut config = config_yaml(broker_port, &dir.join("store"), &[]);
    for address in [5, 6, 7] {
        config.push_str(&format!(
            "  - {{id: cooler-0{address}, profile: coolmax-cc200, port: {}, address: {address}}}\n",
            line.display()
        ));
    }
    config
}

async fn bus_rig() -> Option<BusRig> {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = SlaveBus::start(dir.path(), "5,6")?;
    let broker = Broker::start();
    let mut client = Client::connect(broker.port, "vending/#").await;
    let config = bus_config(broker.port, dir.path(), &bus.gw);
    let gateway = Gateway::start(dir.path(), &config);
    for machine in ["cooler-05", "cooler-06"] {
        client.expect_status(machine, "online", SECS(15)).await;
    }
    // Forget their earlier statuses so tests wait for the next change
    // (cooler-07's are kept: it never comes online).
    client
        .seen
        .retain(|m| m.topic != "vending/cooler-05/status" && m.topic != "vending/cooler-06/status");
    Some(BusRig {
        client,
        gateway,
        bus,
        _broker: broker,
        _dir: dir,
    })
}

impl BusRig {
    async fn command(&mut self, machine: &str, command: &str, payload: Value) -> Value {
        let id = payload["id"].as_str().expect("id").to_owned();
        let topic = format!("vending/{machine}/cmd/{command}");
        self.client
            .publish(&topic, payload.to_string(), false)
            .await;
        self.client
            .expect_result(machine, command, &id, SECS(10))
            .await
    }

    async fn expect_offline(&mut self, machine: &str, within: Duration) {
        // Starts with: the offline payload may be a template with {reason}.
        let topic = format!("vending/{machine}/status");
        self.client
            .expect(within, &format!("{machine} offline"), |m| {
                m.topic == topic && m.payload.starts_with("offline")
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_slaves_are_polled_at_their_rate_and_the_absent_one_is_offline() {
    let Some(mut r) = bus_rig().await else { return };
    // Address 7 never answered since the start: offline, not just silent.
    r.expect_offline("cooler-07", SECS(15)).await;
    let from = Instant::now();
    tokio::time::sleep(SECS(5)).await;
    let served = r.bus.served(from, from + SECS(5));
    for slave in [5, 6] {
        for block in [STATUS_BLOCK, COUNTERS_BLOCK] {
            // poll_interval 1s: about 5 each; a loose bound, never timing-tight.
            let n = reads(&served, slave, block);
            assert!(
                n >= 3,
                "slave {slave} block {block:#06x}: {n} reads in 5 s; {served:#?}"
            );
        }
    }
    let status = r
        .client
        .expect(SECS(5), "cooler-05 status telemetry", |m| {
            m.topic == "vending/cooler-05/telemetry/status"
        })
        .await
        .json();
    // Raw registers 45 and 30, scaled by 0.1: the payload is in °C.
    assert_celsius(&status, "temperature", 4.5);
    assert_celsius(&status, "setpoint", 3.0);
    assert_eq!(status["alarms"], json!([]), "{status}");
    assert_eq!(status["compressor"], "running", "{status}");
    let counters = r
        .client
        .expect(SECS(5), "cooler-06 counters telemetry", |m| {
            m.topic == "vending/cooler-06/telemetry/counters"
        })
        .await
        .json();
    assert_eq!(
        (
            &counters["compressor_hours"],
            &counters["defrosts"],
            &counters["door_openings"]
        ),
        (&json!(1234), &json!(56), &json!(789)),
        "{counters}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_is_published_when_it_changes_not_at_every_poll() {
    let Some(mut r) = bus_rig().await else { return };
    // ~5 polls of unchanged registers; the heartbeats (60 s, 5 m) are not due.
    let seen = r.client.drain(SECS(5)).await;
    for topic in [
        "vending/cooler-05/telemetry/status",
        "vending/cooler-05/telemetry/counters",
        "vending/cooler-06/telemetry/status",
        "vending/cooler-06/telemetry/counters",
    ] {
        let published: Vec<_> = seen.iter().filter(|m| m.topic == topic).collect();
        assert_eq!(published.len(), 1, "{topic}: {published:#?}");
    }
    r.bus.control("set 5 0 215").await;
    let status = r
        .client
        .expect(SECS(5), "cooler-05 status after the change", |m| {
            m.topic == "vending/cooler-05/telemetry/status"
        })
        .await
        .json();
    assert_celsius(&status, "temperature", 21.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_setpoint_writes_one_register_on_its_own_slave() {
    let Some(mut r) = bus_rig().await else { return };
    let from = Instant::now();
    let result = r
        .command(
            "cooler-06",
            "set_setpoint",
            json!({"id": "sp-1", "celsius": 4.0}),
        )
        .await;
    assert_eq!(result["status"], "ok", "{result}");
    // The device's echo of the setpoint register, decoded in °C.
    assert_eq!(result["response"]["celsius"], 4.0, "{result}");
    r.bus
        .expect_served(from, SECS(2), "write", |v| v["fc"] == 6)
        .await;
    // A moment more, so that a duplicate write would be seen too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        writes(&r.bus.served_since(from)),
        vec![json!({"slave": 6, "fc": 6, "address": 1, "value": 40})],
        "exactly one write, to slave 6 only"
    );
    // The device took it: status (published on change) shows the new setpoint.
    r.client
        .expect(SECS(5), "cooler-06 status with setpoint 4.0", |m| {
            m.topic == "vending/cooler-06/telemetry/status"
                && m.json()["setpoint"]
                    .as_f64()
                    .is_some_and(|c| (c - 4.0).abs() < 1e-6)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setpoint_the_device_refuses_fails_with_its_exception() {
    let Some(mut r) = bus_rig().await else { return };
    let from = Instant::now();
    // 14.0 passes the profile's bound (max 15) but not the device's (12.0).
    let result = r
        .command(
            "cooler-06",
            "set_setpoint",
            json!({"id": "sp-2", "celsius": 14.0}),
        )
        .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(
        result["response"]["exception"], "illegal_data_value",
        "{result}"
    );
    let error = result["error"].as_str().unwrap_or_default();
    assert!(!error.trim().is_empty(), "a readable error: {result}");
    r.bus
        .expect_served(from, SECS(2), "write", |v| v["fc"] == 6)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An exception is an answer: the write is not repeated.
    assert_eq!(
        writes(&r.bus.served_since(from)),
        vec![json!({"slave": 6, "fc": 6, "address": 1, "value": 140, "exception": 3})]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setpoint_outside_the_profile_is_rejected_before_the_line() {
    let Some(mut r) = bus_rig().await else { return };
    let from = Instant::now();
    let result = r
        .command(
            "cooler-06",
            "set_setpoint",
            json!({"id": "sp-3", "celsius": 20}),
        )
        .await;
    assert_eq!(result["status"], "rejected", "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("celsius"),
        "the error names the argument: {result}"
    );
    tokio::time::sleep(SECS(1)).await;
    let written = writes(&r.bus.served_since(from));
    assert!(written.is_empty(), "nothing written: {written:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_muted_slave_goes_offline_without_slowing_the_other() {
    let Some(mut r) = bus_rig().await else { return };
    let muted = Instant::now();
    r.bus.control("mute 6").await;
    r.expect_offline("cooler-06", SECS(10)).await;
    tokio::time::sleep_until((muted + SECS(5)).into()).await;
    // Retries and probes of the dead slave must not starve slave 5.
    let served = r.bus.served(muted, muted + SECS(5));
    for block in [STATUS_BLOCK, COUNTERS_BLOCK] {
        let n = reads(&served, 5, block);
        assert!(
            n >= 3,
            "slave 5 block {block:#06x}: {n} reads in the 5 s after the mute; {served:#?}\n{}",
            r.gateway.log_text()
        );
    }
    r.bus.control("unmute 6").await;
    // Probed every down_probe_interval (5 s): the next answer brings it up.
    r.client
        .expect_status("cooler-06", "online", SECS(15))
        .await;
}
