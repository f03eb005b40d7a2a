use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const CFG: &str = "/etc/vendgate/config.yaml";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/config")
        .join(name)
}

/// A minimal valid config with `extra` appended under the given top key
/// position, so each test states only what it breaks.
fn minimal_with(mqtt_extra: &str, device_extra: &str, tail: &str) -> String {
    format!(
        "gateway:\n  id: gw-001\nmqtt:\n  url: mqtt://127.0.0.1\n{mqtt_extra}store:\n  path: state\ndevices:\n  - id: vm-001\n    profile: vmc-upper-computer\n{device_extra}{tail}"
    )
}

/// (line, column, message) of every error.
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    match Config::from_str(text, Path::new(CFG)) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        }
    }
}

fn one_error(text: &str) -> (usize, usize, String) {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

#[test]
fn minimal_config_gets_all_defaults() {
    let c = Config::load(&fixture("minimal.yaml")).unwrap();
    let dir = fixture("");
    assert_eq!(c.gateway.id, "gw-001");
    assert_eq!(c.mqtt.urls[0].scheme, Scheme::Mqtt);
    assert_eq!(c.mqtt.urls[0].host, "127.0.0.1");
    assert_eq!(c.mqtt.urls[0].port, 1883);
    assert_eq!(c.mqtt.urls[0].path, "");
    assert_eq!(c.mqtt.username, None);
    assert!(c.mqtt.password.is_none());
    assert_eq!(c.mqtt.keep_alive, Duration::from_secs(30));
    assert_eq!(c.mqtt.topic_prefix, "vending");
    assert_eq!(c.mqtt.client_id, "{machine}");
    assert_eq!(c.mqtt.version, MqttVersion::V3);
    assert!(c.mqtt.tls.is_none());
    assert_eq!(c.topics, TopicsConfig::default());
    assert_eq!(c.topics.health, "{prefix}/gateways/{gateway}/health");
    assert_eq!(c.store.path, dir.join("state"));
    assert_eq!(c.store.max_outbox, 64 * 1024 * 1024);
    assert_eq!(c.profiles_dir, dir.join("device-profiles"));
    assert_eq!(c.devices.len(), 1);
    let d = &c.devices[0];
    assert_eq!(d.id, "vm-001");
    assert_eq!(d.profile, "vmc-upper-computer");
    assert_eq!(d.port.as_deref(), Some(Path::new("/dev/ttyUSB0")));
    assert_eq!((d.usb.clone(), d.baud, d.link_timeout), (None, None, None));
    assert_eq!(c.status_payloads.online, "online");
    assert_eq!(c.status_payloads.offline, "offline");
    assert_eq!(c.status_payloads.debounce, Duration::ZERO);
    assert_eq!(c.health.interval, Duration::from_secs(30));
    assert_eq!(c.commands, CommandsConfig::default());
    assert_eq!(c.commands.queue_limit, 100);
    assert_eq!(c.commands.id_window, 10_000);
    assert_eq!(c.commands.id_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.commands.max_payload, 65_536);
    assert!(c.warnings.is_empty());
}

#[test]
fn example_config_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let path = tmp.path().join("config.yaml");
    std::fs::copy(&example, &path).unwrap();
    std::fs::write(tmp.path().join("mqtt.pass"), "s3cret-pw\n").unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mqtt.urls[0].scheme, Scheme::Mqtts);
    assert_eq!(c.mqtt.urls[0].port, 8883);
    assert_eq!(c.mqtt.password.as_ref().unwrap().expose(), "s3cret-pw");
    let tls = c.mqtt.tls.as_ref().unwrap();
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(tmp.path().join("ca.pem").as_path())
    );
    assert_eq!(c.devices[0].profile, "vmc-upper-computer");
    assert!(c.devices[0]
        .port
        .as_ref()
        .unwrap()
        .starts_with("/dev/serial/by-id"));
    // The example shows every default, so it must equal them.
    assert_eq!(c.topics, TopicsConfig::default());
    assert_eq!(c.commands, CommandsConfig::default());
    assert_eq!(c.store.max_outbox, crate::store::DEFAULT_MAX_OUTBOX_BYTES);
}

fn with_max_outbox(value: &str) -> String {
    minimal_with("", "    port: /dev/ttyUSB0\n", "").replace(
        "  path: state\n",
        &format!("  path: state\n  max_outbox: {value}\n"),
    )
}

#[test]
fn max_outbox_takes_each_unit() {
    for (value, bytes) in [
        ("64MiB", 64 << 20),
        ("512KiB", 512 << 10),
        ("64KiB", 64 << 10),
        ("1GiB", 1 << 30),
        ("\"2 MiB\"", 2 << 20),
        ("1000000", 1_000_000),
        ("\"1000000\"", 1_000_000),
        ("70000B", 70_000),
    ] {
        let c = Config::from_str(&with_max_outbox(value), Path::new(CFG))
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(c.store.max_outbox, bytes, "{value}");
    }
}

#[test]
fn bad_max_outbox_is_located() {
    // `  max_outbox: ` is 14 characters: the value starts at column 15 of line 7.
    for (value, needle) in [
        ("64MB", "unknown unit `MB`"),
        ("lots", "not a size"),
        ("-5", "not a size"),
        ("1.5GiB", "whole number"),
        ("99999999999GiB", "too large"),
        ("65535", "at least 64KiB"),
        ("0", "at least 64KiB"),
    ] {
        let text = with_max_outbox(value);
        let (line, col, msg) = one_error(&text);
        assert_eq!((line, col), (7, 15), "{msg}\n{text}");
        assert!(msg.starts_with("store.max_outbox: "), "{msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let e = Config::from_str(&with_max_outbox("64MB"), Path::new(CFG)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/etc/vendgate/config.yaml:7:15: store.max_outbox: `64MB` is not a size"),
        "{e}"
    );
}

#[test]
fn unknown_key_is_an_error_at_the_key() {
    let e = Config::load(&fixture("unknown-key.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    let e = &e.0[0];
    assert_eq!((e.line, e.column), (5, 3), "{e}");
    assert!(e.message.contains("unknown field `keepalive`"), "{e}");
    assert!(e
        .to_string()
        .ends_with(&("unknown-key.yaml:5:3: ".to_owned() + &e.message)));
}

#[test]
fn unknown_key_in_a_device() {
    let (line, col, msg) = one_error(&minimal_with("", "    port: /dev/x\n    bauds: 9600\n", ""));
    assert_eq!((line, col), (11, 5), "{msg}");
    assert!(msg.contains("unknown field `bauds`"), "{msg}");
}

#[test]
fn wrong_type_is_an_error_at_the_value() {
    let e = Config::load(&fixture("wrong-type.yaml")).unwrap_err();
    let e = &e.0[0];
    assert_eq!((e.line, e.column), (11, 11), "{e}");
    assert!(e.message.contains("devices[0].baud"), "{e}");
}

#[test]
fn missing_required_keys() {
    let (line, _, msg) =
        one_error("gateway:\n  id: gw\nmqtt:\n  url: mqtt://h\nstore:\n  path: s\n");
    assert!(msg.contains("missing field `devices`"), "{msg}");
    assert_eq!(line, 1);
    let (line, _, msg) = one_error(
        &minimal_with("", "    port: /p\n", "")
            .replace("  url: mqtt://127.0.0.1\n", "  username: u\n"),
    );
    assert!(msg.contains("missing field `url`"), "{msg}");
    assert_eq!(line, 4);
}

#[test]
fn empty_file() {
    let (line, col, msg) = one_error("");
    assert_eq!((line, col), (1, 1));
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn yaml_syntax_error_has_position() {
    let (line, _, msg) = one_error("gateway:\n  id: gw\nmqtt: [\n");
    assert!(line >= 3, "{line} {msg}");
}

#[test]
fn all_semantic_errors_are_reported_with_positions() {
    let e = Config::load(&fixture("many-errors.yaml")).unwrap_err();
    let got: Vec<(usize, usize)> = e.0.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [
            (2, 7),
            (4, 8),
            (5, 15),
            (6, 12),
            (8, 18),
            (12, 12),
            (13, 11),
            (14, 10),
            (21, 11),
            (22, 19),
            (23, 9),
            (24, 14),
            (26, 10),
            (27, 5),
            (30, 12),
        ],
        "{e}"
    );
    let text = e.to_string();
    assert_eq!(text.lines().count(), 15);
    assert!(!text.contains("hunter2"));
    assert!(
        text.contains("many-errors.yaml:2:7: gateway.id: `gw 001` is not a valid id"),
        "{text}"
    );
}

#[test]
fn each_check_points_at_its_value() {
    let port = "    port: /dev/ttyUSB0\n";
    let cases: &[(String, usize, usize, &str)] = &[
        (
            minimal_with("  keep_alive: 0s\n", port, ""),
            5,
            15,
            "at least 1s",
        ),
        (
            minimal_with("  keep_alive: thirty\n", port, ""),
            5,
            15,
            "not a duration",
        ),
        (
            minimal_with("", port, "health:\n  interval: 5x\n"),
            12,
            13,
            "not a duration",
        ),
        (minimal_with("  version: 4\n", port, ""), 5, 12, "version 4"),
        (
            minimal_with("  tls:\n    ca_file: ca.pem\n", port, ""),
            6,
            5,
            "only used with mqtts",
        ),
        (
            minimal_with("  password: pw\n", port, ""),
            5,
            13,
            "needs `mqtt.username`",
        ),
        (
            minimal_with("  username: u\n  password_file: nope.pass\n", port, ""),
            6,
            18,
            "/etc/vendgate/nope.pass",
        ),
        (minimal_with("", "", ""), 8, 5, "give `port`"),
        (
            minimal_with("", "    usb: {vid: 0x10000, pid: 1}\n", ""),
            10,
            16,
            "not a USB id",
        ),
        (
            minimal_with(
                "",
                port,
                "  - id: vm-001\n    profile: p\n    port: /dev/ttyUSB1\n",
            ),
            11,
            9,
            "more than once",
        ),
        (
            minimal_with("", port, "topics:\n  result: \"{prefix}/{machine}/done\"\n"),
            12,
            11,
            "`{command}`",
        ),
        (
            minimal_with(
                "",
                port,
                "topics:\n  command: \"{prefix}/{machine}/cmd-{command}\"\n",
            ),
            12,
            12,
            "whole topic level",
        ),
        (
            minimal_with(
                "",
                port,
                "topics:\n  telemetry: \"{prefix}/{machine}/t/#\"\n",
            ),
            12,
            14,
            "wildcard",
        ),
        (
            minimal_with(
                "",
                port,
                "topics:\n  result: \"{prefix}/{machine}/cmd/{command}\"\n",
            ),
            12,
            11,
            "command topic",
        ),
        (
            minimal_with("  client_id: \"{gateway}\"\n", port, ""),
            5,
            14,
            "must contain `{machine}`",
        ),
        (
            minimal_with("", port, "").replace("id: gw-001", "id: vm-001"),
            8,
            9,
            "same MQTT client id",
        ),
        (
            minimal_with("  url: mqtt://h:99999\n", port, "")
                .replace("  url: mqtt://127.0.0.1\n", ""),
            4,
            8,
            "not a port",
        ),
        (
            minimal_with("  url: mqtts://:8883\n", port, "")
                .replace("  url: mqtt://127.0.0.1\n", ""),
            4,
            8,
            "no host",
        ),
        (
            minimal_with("  url:\n    - mqtt://a\n    - mqtt://b:0x\n", port, "")
                .replace("  url: mqtt://127.0.0.1\n", ""),
            6,
            7,
            "not a port",
        ),
        (
            minimal_with("  url: []\n", port, "").replace("  url: mqtt://127.0.0.1\n", ""),
            4,
            8,
            "the list is empty",
        ),
        (
            minimal_with("", "    port: /p\n    link_timeout: 0ms\n", ""),
            11,
            19,
            "greater than 0",
        ),
    ];
    for (text, line, col, needle) in cases {
        let (l, c, msg) = one_error(text);
        assert_eq!((l, c), (*line, *col), "{msg}\n{text}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}\n{text}");
    }
}

#[test]
fn password_file_is_read_trimmed_and_relative() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("pw"), "top secret\r\n").unwrap();
    let text = minimal_with("  username: u\n  password_file: pw\n", "    port: /p\n", "");
    let c = Config::from_str(&text, &tmp.path().join("c.yaml")).unwrap();
    assert_eq!(c.mqtt.password.as_ref().unwrap().expose(), "top secret");
}

#[test]
fn secrets_never_show() {
    let text = minimal_with("  username: u\n  password: hunter2\n", "    port: /p\n", "");
    let c = Config::from_str(&text, Path::new(CFG)).unwrap();
    assert_eq!(c.mqtt.password.as_ref().unwrap().expose(), "hunter2");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("***"));
    // A numeric password is taken as text, not echoed in a type error.
    let text = minimal_with("  username: u\n  password: 987654\n", "    port: /p\n", "");
    let c = Config::from_str(&text, Path::new(CFG)).unwrap();
    assert_eq!(c.mqtt.password.unwrap().expose(), "987654");
    let text = minimal_with("  password: 987654\n  password_file: x\n", "", "");
    let all = format!(
        "{:?} {}",
        errors(&text),
        Config::from_str(&text, Path::new(CFG)).unwrap_err()
    );
    assert!(!all.contains("987654"), "{all}");
}

#[cfg(unix)]
#[test]
fn inline_password_in_world_readable_file_warns() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.yaml");
    let text = minimal_with("  username: u\n  password: hunter2\n", "    port: /p\n", "");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("c.yaml:6:13: mqtt.password"),
        "{}",
        c.warnings[0]
    );
    assert!(!c.warnings[0].contains("hunter2"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::load(&path).unwrap().warnings.is_empty());
}

#[test]
fn missing_config_file() {
    let e = Config::load(Path::new("/nonexistent/vendgate.yaml")).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("/nonexistent/vendgate.yaml: cannot read"));
}

#[test]
fn a_list_of_urls_is_failover_in_order() {
    let text = minimal_with(
        "  url: [mqtt://a:1884, \"mqtts://b\"]\n",
        "    port: /p\n",
        "",
    )
    .replace("  url: mqtt://127.0.0.1\n", "");
    let c = Config::from_str(&text, Path::new("/etc/vendgate/config.yaml")).expect("valid");
    let urls: Vec<String> = c.mqtt.urls.iter().map(|u| u.to_string()).collect();
    assert_eq!(urls, ["mqtt://a:1884", "mqtts://b:8883"]);
}

#[test]
fn usb_and_urls_parse() {
    let text = minimal_with(
        "",
        "    usb: {vid: 0x0403, pid: \"6001\", serial: A12345}\n    baud: 57600\n    link_timeout: 600ms\n",
        "",
    );
    let c = Config::from_str(&text, Path::new(CFG)).unwrap();
    let d = &c.devices[0];
    let usb = d.usb.as_ref().unwrap();
    assert_eq!(
        (usb.vid, usb.pid, usb.serial.as_deref()),
        (0x0403, 0x6001, Some("A12345"))
    );
    assert_eq!(d.baud, Some(57600));
    assert_eq!(d.link_timeout, Some(Duration::from_millis(600)));

    let u = MqttUrl::parse("wss://broker.example.com/mqtt").unwrap();
    assert_eq!(
        (u.scheme, u.port, u.path.as_str()),
        (Scheme::Wss, 443, "/mqtt")
    );
    let u = MqttUrl::parse("ws://[::1]:9001").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("::1", 9001, "/")
    );
    assert_eq!(u.to_string(), "ws://[::1]:9001/");
    assert_eq!(MqttUrl::parse("mqtts://b").unwrap().port, 8883);
    assert_eq!(MqttUrl::parse("ws://b").unwrap().port, 80);
    assert!(MqttUrl::parse("mqtt://u:pw@b")
        .unwrap_err()
        .contains("credentials"));
    assert!(MqttUrl::parse("mqtt://b/path").is_err());
    assert!(MqttUrl::parse("http://b").unwrap_err().contains("`http`"));
}

#[test]
fn templates_render_and_invert() {
    let t = TopicsConfig::default();
    let vars = TopicVars {
        prefix: "vending",
        machine: "vm-001",
        gateway: "gw-001",
        name: "temperature",
        command: "drive",
    };
    assert_eq!(
        TopicsConfig::render(&t.telemetry, &vars),
        "vending/vm-001/telemetry/temperature"
    );
    assert_eq!(
        TopicsConfig::render(&t.result, &vars),
        "vending/vm-001/cmd/drive/result"
    );
    assert_eq!(
        TopicsConfig::render(&t.health, &vars),
        "vending/gateways/gw-001/health"
    );
    assert_eq!(TopicsConfig::render("{x}/{machine}", &vars), "{x}/vm-001");
    assert_eq!(
        t.command_filter("vending", "vm-001", "gw-001"),
        "vending/vm-001/cmd/+"
    );
    assert_eq!(
        t.command_of("vending/vm-001/cmd/drive", "vending", "vm-001", "gw-001")
            .as_deref(),
        Some("drive")
    );
    assert_eq!(
        t.command_of(
            "vending/vm-001/cmd/drive/result",
            "vending",
            "vm-001",
            "gw-001"
        ),
        None
    );
    assert_eq!(
        t.command_of("vending/vm-002/cmd/drive", "vending", "vm-001", "gw-001"),
        None
    );
    assert_eq!(
        t.command_of("vending/vm-001/cmd/", "vending", "vm-001", "gw-001"),
        None
    );

    let custom = TopicsConfig {
        command: "{prefix}/in/{command}/{machine}".into(),
        ..TopicsConfig::default()
    };
    assert_eq!(custom.command_filter("a/b", "m1", "g"), "a/b/in/+/m1");
    assert_eq!(
        custom
            .command_of("a/b/in/vend/m1", "a/b", "m1", "g")
            .as_deref(),
        Some("vend")
    );
    let s = StatusPayloads {
        online: "online".into(),
        offline: r#"{"state":"offline","reason":"{reason}","since":"{since}"}"#.into(),
        debounce: Duration::ZERO,
    };
    assert_eq!(
        s.render_offline("link lost", "2026-11-22T09:30:05.123Z"),
        r#"{"state":"offline","reason":"link lost","since":"2026-11-22T09:30:05.123Z"}"#
    );
}

#[test]
fn json_status_payloads_are_accepted() {
    let text = minimal_with(
        "",
        "    port: /p\n",
        "status_payloads:\n  online: '{\"state\":\"online\"}'\n  offline: '{\"state\":\"offline\",\"reason\":\"{reason}\"}'\n  debounce: 2s\n",
    );
    let c = Config::from_str(&text, Path::new(CFG)).unwrap();
    assert_eq!(c.status_payloads.debounce, Duration::from_secs(2));
}
