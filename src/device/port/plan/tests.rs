//! Which devices share a line, and every unsound combination refused at
//! its key with file:line:column.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::plan_lines;
use crate::config::{Config, ConfigErrors};
use crate::profile::Profile;

fn profiles() -> HashMap<String, Arc<Profile>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
    ["coolmax-cc200", "vmc-upper-computer"]
        .into_iter()
        .map(|name| {
            let profile = Profile::resolve(&dir, name).expect("shipped profile");
            (name.to_owned(), Arc::new(profile))
        })
        .collect()
}

/// A config with `devices` (YAML list items) in a folder holding `tty`, a
/// file standing in for a serial port, and `by-id`, a link to it.
fn plan(devices: &str) -> Result<Vec<Vec<usize>>, ConfigErrors> {
    let dir = tempfile::tempdir().expect("tempdir");
    let tty = dir.path().join("tty");
    std::fs::write(&tty, "").expect("tty");
    std::os::unix::fs::symlink(&tty, dir.path().join("by-id")).expect("link");
    let devices = devices.replace("DIR", &dir.path().display().to_string());
    let text = format!(
        "gateway: {{id: gw}}\nmqtt: {{url: \"mqtt://127.0.0.1:1883\"}}\nstore: {{path: store}}\ndevices:\n{devices}"
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).expect("config");
    let config = Config::from_str(&text, &path).expect("valid on its own");
    plan_lines(&config, &profiles())
}

fn refused(devices: &str) -> String {
    match plan(devices) {
        Ok(lines) => panic!("accepted: {lines:?}"),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn devices_on_one_device_file_are_one_bus_even_through_a_link() {
    let lines = plan(
        "  - {id: c5, profile: coolmax-cc200, port: DIR/tty, address: 5}\n\
         \x20 - {id: vm, profile: vmc-upper-computer, port: DIR/other}\n\
         \x20 - {id: c6, profile: coolmax-cc200, port: DIR/by-id, address: 6}\n",
    )
    .expect("sound");
    assert_eq!(lines, vec![vec![0, 2], vec![1]]);
}

#[test]
fn a_machine_that_polls_cannot_share_its_line() {
    let error = refused(
        "  - {id: a, profile: vmc-upper-computer, port: DIR/tty}\n\
         \x20 - {id: b, profile: vmc-upper-computer, port: DIR/by-id}\n",
    );
    assert!(error.contains("config.yaml:6:"), "{error}");
    assert!(error.contains("devices[0].port"), "{error}");
    assert!(error.contains("is not `host_polls`"), "{error}");
}

#[test]
fn one_line_has_one_baud_rate() {
    let error = refused(
        "  - {id: a, profile: coolmax-cc200, port: DIR/tty, address: 1}\n\
         \x20 - {id: b, profile: coolmax-cc200, port: DIR/tty, address: 2, baud: 9600}\n",
    );
    assert!(error.contains("devices[1].port"), "{error}");
    assert!(error.contains("9600 baud"), "{error}");
}

#[test]
fn two_devices_cannot_have_one_address_on_a_line() {
    let error = refused(
        "  - {id: a, profile: coolmax-cc200, port: DIR/tty, address: 5}\n\
         \x20 - {id: b, profile: coolmax-cc200, port: DIR/by-id, address: 5}\n",
    );
    assert!(error.contains("config.yaml:6:"), "{error}");
    assert!(error.contains("devices[1].address"), "{error}");
    assert!(error.contains("already used by device a"), "{error}");
}

#[test]
fn an_address_field_needs_an_address_within_the_profiles_range() {
    let error = refused("  - {id: a, profile: coolmax-cc200, port: DIR/tty}\n");
    assert!(error.contains("give this device its `address`"), "{error}");
    let error = refused("  - {id: a, profile: coolmax-cc200, port: DIR/tty, address: 0}\n");
    assert!(
        error.contains("outside profile coolmax-cc200's link.address_range [1, 247]"),
        "{error}"
    );
}

#[test]
fn an_address_on_a_device_whose_frames_carry_none_is_refused() {
    let error = refused("  - {id: a, profile: vmc-upper-computer, port: DIR/tty, address: 3}\n");
    assert!(error.contains("devices[0].address"), "{error}");
    assert!(error.contains("carry no address"), "{error}");
}

#[test]
fn a_two_byte_address_field_takes_addresses_above_255() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles");
    let text = std::fs::read_to_string(dir.join("coolmax-cc200.yaml"))
        .expect("profile")
        .replace("address: true ", "address: {size: 2}")
        .replace("address_range: [1, 247]", "address_range: [1, 4000]");
    let profile = Profile::from_str(&text, Path::new("wide.yaml")).expect("valid");
    assert_eq!(profile.framing.max_address(), Some(u16::MAX));
    let mut profiles = profiles();
    profiles.insert("coolmax-cc200".into(), Arc::new(profile));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let text = "gateway: {id: gw}\nmqtt: {url: \"mqtt://127.0.0.1:1883\"}\nstore: {path: store}\ndevices:\n  - {id: a, profile: coolmax-cc200, port: /dev/x, address: 3000}\n";
    std::fs::write(&path, text).expect("config");
    let config = Config::from_str(text, &path).expect("config");
    assert!(plan_lines(&config, &profiles).is_ok());
}
