//! Transports to the broker: mqtts:// (with and without a client
//! certificate, against a trusted and an untrusted server certificate), ws://
//! and wss://, each against a real Mosquitto listener. The test client reads
//! on a second, plain listener of the same Mosquitto, so it needs no TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use vendgate::sim::Script;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MONEY: &str = "vending/vm-001/event/money_collected";

/// Test certificates made with the `openssl` CLI: a CA, a server
/// certificate for localhost/127.0.0.1 and a client certificate signed by
/// it, and a second CA that signed nothing we use.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "gw-test", "extendedKeyUsage=clientAuth\n");
        // Mosquitto started as root reads its key files after dropping to
        // the `mosquitto` user: these throwaway test keys must be readable.
        use std::os::unix::fs::PermissionsExt;
        let readable = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        readable(pki.dir.path(), 0o755);
        for key in ["server.key", "client.key", "ca.key", "other-ca.key"] {
            readable(&pki.path(key), 0o644);
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=vendgate test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// `name.key` and `name.pem`, signed by `ca`.
    fn leaf(&self, name: &str, cn: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )
        .expect("ext");
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// Mosquitto listener options serving the server certificate.
    fn listener(&self, require_client_cert: bool) -> String {
        let mut text = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display(),
        );
        if require_client_cert {
            text.push_str("require_certificate true\n");
        }
        text
    }
}

fn mosquitto_or_skip(broker: Option<Broker>) -> Option<Broker> {
    if broker.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI needs Mosquitto");
        eprintln!("skipped: needs Mosquitto");
    }
    broker
}

/// The gateway's config with `mqtt.url` replaced by `url` and the given
/// `mqtt.tls` lines (already indented by four spaces).
fn config(broker: &Broker, store: &Path, board: &str, url: &str, tls: &[String]) -> String {
    let base = config_yaml(broker.port, store, &[("vm-001", board)]);
    let mut mqtt = format!("  url: {url}\n");
    if !tls.is_empty() {
        mqtt.push_str("  tls:\n");
        for line in tls {
            mqtt.push_str(&format!("    {line}\n"));
        }
    }
    base.replace(&format!("  url: mqtt://127.0.0.1:{}\n", broker.port), &mqtt)
}

fn ca_file(path: PathBuf) -> String {
    format!("ca_file: {}", path.display())
}

/// The gateway comes online over the transport and an event reaches the
/// plain-listener client.
/// A test client, a simulated board and the gateway connected to `url`.
async fn gateway_on(
    broker: &Broker,
    url: &str,
    tls: &[String],
) -> (Client, TestBoard, Gateway, tempfile::TempDir) {
    let client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let gateway = Gateway::start(dir.path(), &config(broker, &store, &board.path, url, tls));
    (client, board, gateway, dir)
}

async fn online_and_event(client: &mut Client, board: &TestBoard, gateway: &Gateway) {
    client
        .expect(SECS(15), "vm-001 online", |m| {
            m.topic == "vending/vm-001/status" && m.payload == "online"
        })
        .await;
    board
        .send("money_collected", json!({"mode": "coin", "amount": 42}))
        .await;
    let event = client
        .expect(SECS(10), "money event", |m| m.topic == MONEY)
        .await
        .json();
    assert_eq!(event["amount"], 42, "{}", gateway.log_text());
}

/// Connection attempts Mosquitto logged on any listener (the test client's
/// one included).
fn connection_attempts(broker: &Broker) -> usize {
    std::fs::read_to_string(broker.log_path())
        .unwrap_or_default()
        .matches("New connection from")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_a_ca_file_comes_online_and_publishes() {
    let pki = Pki::new();
    let tls_port = free_port();
    let Some(broker) = mosquitto_or_skip(Broker::with_listener(tls_port, &pki.listener(false)))
    else {
        return;
    };
    let (mut client, board, gateway, _dir) = gateway_on(
        &broker,
        &format!("mqtts://localhost:{tls_port}"),
        &[ca_file(pki.path("ca.pem"))],
    )
    .await;
    online_and_event(&mut client, &board, &gateway).await;
    // A command comes back over the same TLS session.
    client
        .publish(
            "vending/vm-001/cmd/buy",
            r#"{"id":"tls-1","selection":11}"#,
            false,
        )
        .await;
    let result = client
        .expect_result("vm-001", "buy", "tls-1", SECS(10))
        .await;
    assert_eq!(result["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let tls_port = free_port();
    let Some(broker) = mosquitto_or_skip(Broker::with_listener(tls_port, &pki.listener(true)))
    else {
        return;
    };
    let mut client = Client::connect(broker.port, "vending/#").await;
    let url = format!("mqtts://localhost:{tls_port}");

    // Without a client certificate the broker refuses the handshake.
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateway = Gateway::start(
        dir.path(),
        &config(
            &broker,
            &dir.path().join("store"),
            &board.path,
            &url,
            &[ca_file(pki.path("ca.pem"))],
        ),
    );
    let seen = client.drain(SECS(4)).await;
    assert!(
        !seen.iter().any(|m| m.payload == "online"),
        "online without a client certificate: {seen:?}"
    );
    let log = gateway.log_text();
    eprintln!(
        "{:#?}",
        log.lines()
            .filter(|l| l.contains("MQTT connection failed"))
            .collect::<Vec<_>>()
    );
    assert!(
        log.contains("TLS: the broker rejected the gateway's client certificate"),
        "the log says why: {log}"
    );
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
    board.stop();

    // With it, the machine comes online.
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Gateway::start(
        dir.path(),
        &config(
            &broker,
            &dir.path().join("store"),
            &board.path,
            &url,
            &[
                ca_file(pki.path("ca.pem")),
                format!("cert_file: {}", pki.path("client.pem").display()),
                format!("key_file: {}", pki.path("client.key").display()),
            ],
        ),
    );
    online_and_event(&mut client, &board, &gateway).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_broker_certificate_is_retried_with_backoff_and_one_clear_line() {
    let pki = Pki::new();
    let tls_port = free_port();
    let Some(broker) = mosquitto_or_skip(Broker::with_listener(tls_port, &pki.listener(false)))
    else {
        return;
    };
    let mut client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let before = connection_attempts(&broker);
    let mut gateway = Gateway::start(
        dir.path(),
        &config(
            &broker,
            &dir.path().join("store"),
            &board.path,
            &format!("mqtts://localhost:{tls_port}"),
            // Trusts a CA that did not sign the broker's certificate.
            &[ca_file(pki.path("other-ca.pem"))],
        ),
    );
    let seen = client.drain(SECS(4)).await;
    assert!(
        !seen.iter().any(|m| m.payload == "online"),
        "online with an untrusted certificate: {seen:?}"
    );
    let log = gateway.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("MQTT connection failed"))
        .collect();
    // Two sessions (the machine's and the gateway's), one line each.
    assert_eq!(lines.len(), 2, "one line per session: {log}");
    for line in &lines {
        assert!(
            line.contains("TLS: the broker's certificate is not trusted (check mqtt.tls.ca_file)"),
            "a clear line: {line}"
        );
    }
    // Backoff, not a tight loop: two sessions from 200 ms doubling, ~5
    // attempts each in ~4 s.
    let attempts = connection_attempts(&broker) - before;
    eprintln!("{attempts} attempts; {lines:#?}");
    assert!(
        (2..=20).contains(&attempts),
        "{attempts} connection attempts in ~4 s"
    );
    // Still running, and stops cleanly.
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_comes_online_and_publishes() {
    let ws_port = free_port();
    let Some(broker) = mosquitto_or_skip(Broker::with_listener(ws_port, "protocol websockets\n"))
    else {
        return;
    };
    let (mut client, board, gateway, _dir) =
        gateway_on(&broker, &format!("ws://127.0.0.1:{ws_port}/mqtt"), &[]).await;
    online_and_event(&mut client, &board, &gateway).await;
}

/// Over wss with the broker's CA, on MQTT `version`: the gateway comes online
/// and an event arrives. The broker, for its log; None without Mosquitto.
async fn over_wss(version: u8) -> Option<Broker> {
    let pki = Pki::new();
    let wss_port = free_port();
    let options = format!("protocol websockets\n{}", pki.listener(false));
    let broker = mosquitto_or_skip(Broker::with_listener(wss_port, &options))?;
    let mut client = Client::connect(broker.port, "vending/#").await;
    let board = TestBoard::start(Script::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("wss://localhost:{wss_port}/mqtt");
    let tls = [ca_file(pki.path("ca.pem"))];
    let store = dir.path().join("store");
    let config = with_mqtt_version(&config(&broker, &store, &board.path, &url, &tls), version);
    let gateway = Gateway::start(dir.path(), &config);
    online_and_event(&mut client, &board, &gateway).await;
    Some(broker)
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_with_a_ca_file_comes_online_and_publishes() {
    over_wss(3).await;
}

/// MQTT 5 takes the same transports.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_over_wss_comes_online_and_publishes() {
    let Some(broker) = over_wss(5).await else {
        return;
    };
    let log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
    assert!(
        log.contains("as vm-001 (p5,"),
        "the gateway's session is MQTT 5 (protocol level 5): {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_tls_file_is_a_config_error() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw!!\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.path().join("bad.key"), secret).expect("key");
    let cases = [
        (
            vec![ca_file(dir.path().join("missing.pem"))],
            "mqtt.tls.ca_file",
            "cannot read it",
        ),
        (
            vec![ca_file(pki.path("ca.key"))],
            "mqtt.tls.ca_file",
            "no certificate in it",
        ),
        (
            vec![
                ca_file(pki.path("ca.pem")),
                format!("cert_file: {}", pki.path("client.pem").display()),
                format!("key_file: {}", dir.path().join("bad.key").display()),
            ],
            "mqtt.tls.key_file",
            "not valid base64",
        ),
        (
            vec![
                ca_file(pki.path("ca.pem")),
                format!("cert_file: {}", pki.path("client.pem").display()),
                format!("key_file: {}", pki.path("server.key").display()),
            ],
            "mqtt.tls.key_file",
            "does not belong to the certificate",
        ),
    ];
    for (i, (tls, key, problem)) in cases.into_iter().enumerate() {
        let case = dir.path().join(format!("case-{i}"));
        std::fs::create_dir_all(&case).expect("dir");
        let mut text = config_yaml(1883, &case.join("store"), &[("vm-001", "/dev/ttyNONE")]);
        text = text.replace(
            "  url: mqtt://127.0.0.1:1883\n",
            &format!(
                "  url: mqtts://localhost:8883\n  tls:\n{}",
                tls.iter().map(|l| format!("    {l}\n")).collect::<String>()
            ),
        );
        let config_path = case.join("config.yaml");
        std::fs::write(&config_path, text).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_vendgate"))
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .output()
            .expect("vendgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(problem),
            "case {i}: {stderr}"
        );
        assert!(!stderr.contains("c2VjcmV0"), "no key bytes: {stderr}");
    }
}
