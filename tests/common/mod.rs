//! Test harness: a real broker (Mosquitto; the embedded broker only where
//! Mosquitto is missing and CI is not set), the real `vendgate` binary, a
//! simulated board on a real pseudo-terminal, and an MQTT client.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vendgate::profile::Profile;
use vendgate::sim::{pty_pair, Board, BoardEvent, Control, Script};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The gateway binary under test: the one cargo built, or the one
/// `VENDGATE_TEST_BIN` names (e.g. the board build, to run the end-to-end
/// suite against exactly what ships: README "Development").
pub fn binary() -> PathBuf {
    std::env::var_os("VENDGATE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vendgate")))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "broker did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The broker of one test.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: String,
}

pub fn mosquitto_path() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Broker {
    /// Mosquitto when installed. Without it the tests fail under CI (the
    /// interop tests must not silently run against our own broker) and use
    /// the embedded broker elsewhere.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut broker = Broker {
            port,
            child: None,
            dir,
            extra: String::new(),
        };
        if mosquitto_path().is_some() {
            broker.start_mosquitto();
        } else {
            assert!(
                std::env::var_os("CI").is_none()
                    || std::env::var_os("VENDGATE_TEST_EMBEDDED_BROKER").is_some(),
                "CI is set and Mosquitto is not installed: .ci/run must install it"
            );
            eprintln!("mosquitto not found: using the embedded broker");
            vendgate::broker::start(port).expect("embedded broker");
            wait_for_port(port);
        }
        broker
    }

    pub fn is_mosquitto(&self) -> bool {
        self.child.is_some()
    }

    /// Mosquitto that accepts only `user` with `password`, logging every
    /// connection attempt to `log_path()`. None without Mosquitto.
    pub fn with_password(user: &str, password: &str) -> Option<Broker> {
        Broker::with_auth(&[(user, password)], None)
    }

    /// Mosquitto with password authentication for `users` and, if given,
    /// an ACL file; every connection attempt is logged to `log_path()`.
    /// None without Mosquitto.
    pub fn with_auth(users: &[(&str, &str)], acl: Option<&str>) -> Option<Broker> {
        mosquitto_path()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").expect("passwd");
        for (user, password) in users {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd");
            assert!(status.success());
        }
        let mut extra = format!(
            "allow_anonymous false\npassword_file {}\nlog_type all\nlog_dest stderr\n",
            passwd.display(),
        );
        if let Some(acl) = acl {
            let path = dir.path().join("acl");
            std::fs::write(&path, acl).expect("acl");
            extra.push_str(&format!("acl_file {}\n", path.display()));
        }
        let mut broker = Broker {
            port: free_port(),
            child: None,
            dir,
            extra,
        };
        broker.start_mosquitto();
        Some(broker)
    }

    /// Mosquitto with its plain listener on `port` (for the test client)
    /// plus a second listener on `listener_port` configured by `options`
    /// (e.g. `protocol websockets`, `cafile`/`certfile`/`keyfile`), logging
    /// every connection attempt to `log_path()`. None without Mosquitto.
    pub fn with_listener(listener_port: u16, options: &str) -> Option<Broker> {
        mosquitto_path()?;
        let mut broker = Broker {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: String::new(),
        };
        // Listener options must follow their `listener` line; the global
        // ones go first.
        broker.extra = format!(
            "allow_anonymous true\nlog_type all\nlog_dest stderr\n\
             listener {listener_port} 127.0.0.1\n{options}\n"
        );
        broker.start_mosquitto();
        wait_for_port(listener_port);
        Some(broker)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// How often a client `client_id` connected, from Mosquitto's log
    /// ("New client connected ... as ID"): who kept a session and who did not.
    pub fn connects(&self, client_id: &str) -> usize {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let needle = format!(" as {client_id} ");
        log.lines()
            .filter(|l| l.contains("New client connected") && l.contains(&needle))
            .count()
    }

    /// The ACL file of a broker made by `with_auth` with an ACL: rewrite it,
    /// then `reload`.
    pub fn acl_path(&self) -> PathBuf {
        self.dir.path().join("acl")
    }

    /// SIGHUP: Mosquitto reloads its password and ACL files, keeping its
    /// connections (only Mosquitto can reload).
    pub fn reload(&self) {
        let child = self.child.as_ref().expect("reload needs Mosquitto");
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP mosquitto: {status}");
    }

    fn start_mosquitto(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            // max_queued_messages 0: Mosquitto's default (1000 per client)
            // silently drops QoS 1 commands that queue up while a loaded
            // machine's gateway works through a 10,000-command flood; a
            // production broker facing such floods needs the same setting.
            format!(
                "listener {} 127.0.0.1\npersistence false\nmax_queued_messages 0\n{}",
                self.port,
                if self.extra.is_empty() {
                    "allow_anonymous true\n"
                } else {
                    &self.extra
                }
            ),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(mosquitto_path().expect("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Stops Mosquitto (only Mosquitto can be stopped).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_mosquitto();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real gateway binary with a config of the test's own.
pub struct Gateway {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (e.g. NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
    /// Appended to `run -c CONFIG`.
    pub args: Vec<String>,
}

pub fn config_yaml(broker_port: u16, store: &Path, devices: &[(&str, &str)]) -> String {
    let mut text = format!(
        "gateway:\n  id: gw-test\nmqtt:\n  url: mqtt://127.0.0.1:{broker_port}\n  keep_alive: 5s\nstore:\n  path: {}\nprofiles_dir: {}\ndevices:\n",
        store.display(),
        repo().join("device-profiles").display()
    );
    for (id, port) in devices {
        text.push_str(&format!(
            "  - id: {id}\n    profile: vmc-upper-computer\n    port: {port}\n"
        ));
    }
    text
}

/// `config` (from `config_yaml`) with `lines` added to its `mqtt:` section
/// (each indented by two spaces and ending in a newline).
pub fn with_mqtt(config: &str, lines: &str) -> String {
    const KEEP_ALIVE: &str = "  keep_alive: 5s\n";
    assert!(
        config.contains(KEEP_ALIVE),
        "not a config_yaml config: {config}"
    );
    config.replacen(KEEP_ALIVE, &format!("{KEEP_ALIVE}{lines}"), 1)
}

/// `config` with `mqtt.version` set: 3 = MQTT 3.1.1, 5 = MQTT 5.
pub fn with_mqtt_version(config: &str, version: u8) -> String {
    with_mqtt(config, &format!("  version: {version}\n"))
}

/// `config` with the gateway's MQTT username and password.
pub fn with_login(config: &str, user: &str, password: &str) -> String {
    with_mqtt(
        config,
        &format!("  username: {user}\n  password: {password}\n"),
    )
}

impl Gateway {
    pub fn start(dir: &Path, config: &str) -> Gateway {
        Gateway::start_with(dir, config, &[], &[])
    }

    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with(dir, config, &[], env)
    }

    /// Like `start`, with `args` after `run -c CONFIG` (e.g. `--metrics-listen`).
    pub fn start_with_args(dir: &Path, config: &str, args: &[&str]) -> Gateway {
        Gateway::start_with(dir, config, args, &[])
    }

    pub fn start_with(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        std::fs::create_dir_all(dir).expect("dir");
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let mut gateway = Gateway {
            child: None,
            dir: dir.to_owned(),
            config: config_path,
            log: dir.join("gateway.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        gateway.spawn();
        gateway
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(binary())
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .args(&self.args)
            .env("RUST_LOG", "debug,rumqttc=info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vendgate");
        self.child = Some(child);
    }

    /// SIGHUP: `systemctl reload`.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP vendgate: {status}");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One message seen by the test client.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    /// When the client's event loop got it (benches/versus.rs measures
    /// board -> subscriber latency from it, finer than any drain period).
    pub received: Instant,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }
}

/// An MQTT client playing the business side.
pub struct Client {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    pub seen: Vec<Msg>,
}

impl Client {
    pub async fn connect(port: u16, filter: &str) -> Client {
        Client::connect_as(port, filter, None).await
    }

    /// Like `connect`, with a username and password.
    pub async fn connect_as(port: u16, filter: &str, login: Option<(&str, &str)>) -> Client {
        let id = format!("test-{}-{}", std::process::id(), free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 20_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel();
        let filter = filter.to_owned();
        let sub_client = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub_client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let msg = Msg {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                            received: Instant::now(),
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx.recv())
            .await
            .expect("subscribed");
        Client {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish");
    }

    /// The next message (seen before or arriving) matching `pred`.
    pub async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(msg)) if pred(&msg) => return msg,
                Ok(Some(msg)) => self.seen.push(msg),
                _ => panic!(
                    "no {what} within {within:?}; seen: {:#?}",
                    self.seen
                        .iter()
                        .map(|m| format!("{} {}", m.topic, m.payload))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Everything arriving during `period` (plus what was seen before).
    pub async fn drain(&mut self, period: Duration) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(msg);
        }
        std::mem::take(&mut self.seen)
    }

    pub async fn expect_status(&mut self, machine: &str, payload: &str, within: Duration) {
        let topic = format!("vending/{machine}/status");
        self.expect(within, &format!("{topic} = {payload}"), |m| {
            m.topic == topic && m.payload == payload
        })
        .await;
    }

    pub async fn expect_result(
        &mut self,
        machine: &str,
        command: &str,
        id: &str,
        within: Duration,
    ) -> Value {
        let topic = format!("vending/{machine}/cmd/{command}/result");
        let id = id.to_owned();
        self.expect(within, &format!("result of {id} on {topic}"), |m| {
            m.topic == topic && m.json()["id"] == id.as_str()
        })
        .await
        .json()
    }
}

/// The simulated VMC board on a pseudo-terminal.
pub struct TestBoard {
    pub control: mpsc::Sender<Control>,
    pub events: mpsc::UnboundedReceiver<BoardEvent>,
    pub path: String,
    pub seen: Vec<BoardEvent>,
    _gateway_end: tokio_serial::SerialStream,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub fn vmc_profile() -> Arc<Profile> {
    Arc::new(
        Profile::resolve(&repo().join("device-profiles"), "vmc-upper-computer").expect("profile"),
    )
}

pub fn vmc_script() -> Script {
    vmc_profile().simulator.clone()
}

impl TestBoard {
    pub fn start(script: Script) -> TestBoard {
        let (device_end, gateway_end, path) = pty_pair().expect("pty");
        let (board, handle) = Board::new(vmc_profile(), script, device_end);
        TestBoard {
            control: handle.control,
            events: handle.events,
            path,
            seen: Vec::new(),
            _gateway_end: gateway_end,
            task: tokio::spawn(board.run()),
        }
    }

    pub async fn send(&self, message: &str, values: Value) {
        let Value::Object(values) = values else {
            panic!("values must be an object")
        };
        self.control
            .send(Control::Send {
                message: message.into(),
                values,
            })
            .await
            .expect("board alive");
    }

    pub async fn raw(&self, bytes: Vec<u8>) {
        self.control
            .send(Control::Raw(bytes))
            .await
            .expect("board alive");
    }

    pub async fn polling(&self, on: bool) {
        self.control
            .send(Control::Polling(on))
            .await
            .expect("board alive");
    }

    /// Waits for a board event matching `pred`.
    pub async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&BoardEvent) -> bool,
    ) -> BoardEvent {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if pred(&event) => return event,
                Ok(Some(event)) => {
                    if !matches!(event, BoardEvent::PollAnswered { command: false, .. }) {
                        self.seen.push(event)
                    }
                }
                _ => panic!("board: no {what} within {within:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Every event during `period` except plain POLL/ACK exchanges.
    pub async fn drain(&mut self, period: Duration) -> Vec<BoardEvent> {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if !matches!(event, BoardEvent::PollAnswered { command: false, .. }) {
                self.seen.push(event);
            }
        }
        std::mem::take(&mut self.seen)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// A symlink that tests can point at another pty, standing in for a
/// `/dev/serial/by-id/...` link.
pub fn relink(link: &Path, target: &str) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

pub fn write_file(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
}

/// A VMC frame with its XOR (protocol §2), for hand-made frames.
pub fn vmc_frame(cmd: u8, packno: u8, text: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xFA, 0xFB, cmd, (text.len() + 1) as u8, packno];
    frame.extend_from_slice(text);
    let xor = frame.iter().fold(0u8, |x, b| x ^ b);
    frame.push(xor);
    frame
}

/// A money_collected frame (coin) for `amount`.
pub fn money(packno: u8, amount: u32) -> Vec<u8> {
    let mut text = vec![2];
    text.extend_from_slice(&amount.to_be_bytes());
    vmc_frame(0x21, packno, &text)
}

/// Broker, simulated board, gateway and a business-side client, with the
/// machine online.
pub struct Rig {
    pub broker: Broker,
    pub board: TestBoard,
    pub gateway: Gateway,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub async fn rig(script: Script) -> Rig {
    rig_with(script, "").await
}

/// Like `rig`, with `extra` appended to the config (top-level keys).
pub async fn rig_with(script: Script, extra: &str) -> Rig {
    rig_with_args(script, extra, &[]).await
}

/// Like `rig_with`, with `args` for `vendgate run` (e.g. `--metrics-listen`).
pub async fn rig_with_args(script: Script, extra: &str, args: &[&str]) -> Rig {
    rig_full(script, extra, args, None).await
}

/// Like `rig`, with the gateway speaking MQTT 5 (`mqtt.version: 5`).
pub async fn rig_v5(script: Script) -> Rig {
    rig_full(script, "", &[], Some(5)).await
}

/// Like `rig_v5`, with `extra` appended to the config.
#[allow(dead_code)] // each test binary uses its own part of this module
pub async fn rig_v5_with(script: Script, extra: &str) -> Rig {
    rig_full(script, extra, &[], Some(5)).await
}

/// `rig_with_args` with `mqtt.version` set when `version` is given.
async fn rig_full(script: Script, extra: &str, args: &[&str], version: Option<u8>) -> Rig {
    let broker = Broker::start();
    let client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(script);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_yaml(
        broker.port,
        &dir.path().join("store"),
        &[("vm-001", &board.path)],
    );
    if let Some(version) = version {
        config = with_mqtt_version(&config, version);
    }
    config.push_str(extra);
    let gateway = Gateway::start_with_args(dir.path(), &config, args);
    let mut rig = Rig {
        broker,
        board,
        gateway,
        client,
        _dir: dir,
    };
    // With an interface file the status is on the interface's topic; its
    // tests wait for it themselves.
    if !extra.contains("interface:") {
        rig.client
            .expect_status("vm-001", "online", Duration::from_secs(10))
            .await;
    }
    // Forget earlier statuses so tests can wait for the next change.
    rig.client
        .seen
        .retain(|m| m.topic != "vending/vm-001/status");
    rig
}

/// A gateway whose device `port` is a symlink (standing in for a
/// `/dev/serial/by-id/...` link) to the board's pty, machine online.
pub struct LinkedRig {
    pub broker: Broker,
    pub client: Client,
    pub board: TestBoard,
    pub gateway: Gateway,
    pub link: PathBuf,
    pub dir: tempfile::TempDir,
}

pub async fn linked_rig() -> LinkedRig {
    let broker = Broker::start();
    let mut client = Client::connect(broker.port, "vending/#").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttyVMC");
    let board = TestBoard::start(Script::default());
    relink(&link, &board.path);
    let config = config_yaml(
        broker.port,
        &dir.path().join("store"),
        &[("vm-001", link.to_str().expect("utf8"))],
    );
    let gateway = Gateway::start(dir.path(), &config);
    client
        .expect_status("vm-001", "online", Duration::from_secs(10))
        .await;
    LinkedRig {
        broker,
        client,
        board,
        gateway,
        link,
        dir,
    }
}

// ------------------------------------------------------------- batches

/// The batch command topic of the rigs' machine.
pub const BATCH: &str = "vending/vm-001/cmd/batch";

/// `n` set_price steps: selection 1 + i % 999, price 100 + i.
pub fn price_steps(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"cmd": "set_price", "selection": 1 + i % 999, "price": 100 + i}))
        .collect()
}

pub fn batch(id: &str, steps: Vec<Value>) -> String {
    json!({"id": id, "steps": steps}).to_string()
}

/// The set_price prices the board received, in order.
pub fn prices(events: &[BoardEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            BoardEvent::Command { name, args, .. } if name == "set_price" => {
                args.get("price").and_then(Value::as_u64)
            }
            _ => None,
        })
        .collect()
}

pub fn commands<'a>(events: &'a [BoardEvent], wanted: &'a str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, BoardEvent::Command { name, .. } if name == wanted))
        .count()
}

/// Board events until `n` set_price steps reached the board.
pub async fn steps_seen(r: &mut Rig, n: usize) -> Vec<BoardEvent> {
    let mut seen = Vec::new();
    while prices(&seen).len() < n {
        let e = r
            .board
            .expect(Duration::from_secs(10), "a step", |e| {
                matches!(e, BoardEvent::Command { .. })
            })
            .await;
        seen.push(e);
    }
    seen
}

pub async fn final_result(r: &mut Rig, id: &str, within: Duration) -> Value {
    let topic = format!("{BATCH}/result");
    let id = id.to_owned();
    r.client
        .expect(within, &format!("final result of {id}"), |m| {
            let v = m.json();
            m.topic == topic && v["id"] == id.as_str() && v["status"] != "running"
        })
        .await
        .json()
}

/// Polls every 100 ms from now on (board and gateway).
pub async fn fast_polls(r: &mut Rig) {
    r.client
        .publish(
            "vending/vm-001/cmd/set_poll_interval",
            r#"{"id":"pi","interval_ms":100}"#,
            false,
        )
        .await;
    let v = r
        .client
        .expect_result("vm-001", "set_poll_interval", "pi", Duration::from_secs(5))
        .await;
    assert_eq!(v["status"], "ok", "{v}");
    r.board.drain(Duration::from_millis(300)).await;
}
