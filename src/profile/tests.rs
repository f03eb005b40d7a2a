//! Loader and error-location tests.

use super::*;

pub(crate) fn vmc() -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles/vmc-upper-computer.yaml");
    Profile::load(&path).unwrap()
}

#[test]
fn vmc_profile_loads() {
    let p = vmc();
    assert_eq!(p.name, "vmc-upper-computer");
    assert_eq!(p.serial.baud, 57600);
    assert_eq!(p.messages().len(), 11);
    assert_eq!(p.commands().len(), 17);
}

const MINI: &str = "\
name: mini
framing:
  sync: [0xFA, 0xFB]
  length: {size: 1}
  checksum: {algorithm: xor}
link:
  mode: device_polls
  poll: 0x41
messages:
  - code: 0x21
    name: money
    kind: event
    fields:
      - {name: mode, type: enum, values: {1: bill}}
commands:
  - name: check
    code: 0x01
    completion: {answer: money}
";

/// Loads `MINI` with `from` replaced by `to`; returns the error text.
fn broken(from: &str, to: &str) -> String {
    assert!(MINI.contains(from), "{from}");
    let text = MINI.replacen(from, to, 1);
    Profile::from_str(&text, Path::new("p.yaml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn mini_profile_is_valid() {
    let p = Profile::from_str(MINI, Path::new("mini.yaml")).unwrap();
    assert_eq!(p.link.poll_interval.as_millis(), 200);
    assert_eq!(p.serial.baud, 9600);
}

#[test]
fn broken_profiles_point_at_the_line() {
    let cases = [
        (
            "  sync: [0xFA, 0xFB]",
            "  sync: [0xFA, 0xFB\n",
            "p.yaml:3:16: framing.sync[1]: invalid type",
        ),
        (
            "  poll: 0x41",
            "  poll: 0x41\n  pol: 3",
            "p.yaml:9:3: link: unknown field `pol`",
        ),
        (
            "{size: 1}",
            "{size: one}",
            "p.yaml:4:18: framing.length.size: invalid type: string \"one\"",
        ),
        (
            "{answer: money}",
            "{answer: nothing}",
            "p.yaml:18:26: answer names message \"nothing\"",
        ),
        (
            "algorithm: xor",
            "algorithm: CRC_99",
            "p.yaml:5:25: unknown checksum \"CRC_99\"",
        ),
        (
            "name: check",
            "name: check\n    args: [{name: d, type: hex}, {name: e, type: u8}]",
            "p.yaml:17:34: no field may follow the rest-of-frame field d",
        ),
        (
            "{1: bill}}",
            "{1: bill}, default: coin}",
            "p.yaml:14:62: default is not a valid value: mode: must be one of bill",
        ),
        (
            "type: enum",
            "type: enumm",
            "p.yaml:14:28: messages[0].fields[0].type: unknown variant `enumm`",
        ),
        (
            "kind: event",
            "kind: evnt",
            "p.yaml:12:11: messages[0].kind: unknown variant `evnt`",
        ),
        (
            "  mode: device_polls\n  poll: 0x41",
            "  mode: device_polls",
            "p.yaml:7:3: device_polls needs",
        ),
    ];
    for (from, to, want) in cases {
        let got = broken(from, to);
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
    }
    // Duplicate message code (the second list becomes messages[1]).
    let dup = MINI.replace(
        "commands:\n",
        "  - code: 0x21\n    name: m2\n    kind: event\ncommands:\n",
    );
    let err = Profile::from_str(&dup, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("p.yaml:15:11: code 0x21 is already used by message money"),
        "{err}"
    );
}

#[test]
fn gateway_command_names_are_reserved() {
    for name in ["batch", "cancel"] {
        let err = broken("  - name: check", &format!("  - name: {name}"));
        assert!(
            err.starts_with("p.yaml:16:11: command name") && err.contains("reserved"),
            "{err}"
        );
    }
}

#[test]
fn loading_never_panics_on_odd_input() {
    for text in [
        "",
        "---",
        "[]",
        "name: [",
        "framing: 3",
        "\u{0}",
        "a: !tag x",
        "*x",
        "framing: {ascii_line: {}}\nlink: {mode: unsolicited}",
    ] {
        let _ = Profile::from_str(text, Path::new("x.yaml"));
    }
    let missing = Profile::load(Path::new("/nonexistent/x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(missing.starts_with("/nonexistent/x.yaml: cannot read"));
}

fn fixture(name: &str) -> Profile {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/profiles");
    Profile::resolve(&dir, name).unwrap()
}

#[test]
fn fixture_profiles_load_and_work() {
    use serde_json::json;
    let modbus = fixture("modbus-rtu");
    assert_eq!(modbus.link.poll_requests.len(), 1);
    let body = crate::codec::hex::decode("06 00 D7 FF 9C 00 05").unwrap();
    let v = modbus.message("cooler").unwrap().decode(&body).unwrap();
    assert_eq!(
        Value::Object(v),
        json!({"temperature": 21.5, "setpoint": -10, "alarms": ["door_open", "sensor_fault"]})
    );
    let set = modbus.command("set_setpoint").unwrap();
    assert_eq!(
        set.encode(json!({"celsius": 4.5}).as_object().unwrap())
            .unwrap(),
        [0, 1, 0, 45]
    );

    let stx = fixture("stx-etx-dle.yaml");
    let clock = stx
        .message("clock")
        .unwrap()
        .decode(&crate::codec::hex::decode("20261122093005 00001234").unwrap());
    assert_eq!(clock.unwrap()["serial"], json!(1234));
    assert!(stx
        .message("clock")
        .unwrap()
        .decode(&[0x20, 0x26, 0x13, 0x22, 0, 0, 0, 0, 0, 0, 0])
        .is_err());

    let line = fixture("ascii-line");
    let v = line.message("vend").unwrap().decode(b"12,OK").unwrap();
    assert_eq!(Value::Object(v), json!({"selection": 12, "result": "OK"}));
    let v = line
        .message("temperature")
        .unwrap()
        .decode(b"21.5,OK")
        .unwrap();
    assert_eq!(v["celsius"], json!(21.5));
    assert!(line
        .message("temperature")
        .unwrap()
        .decode(b"warm,OK")
        .is_err());
    let vend = line.command("vend").unwrap();
    assert_eq!(
        vend.encode(json!({"selection": 7}).as_object().unwrap())
            .unwrap(),
        b"7"
    );
}
