//! The command line: `check` names file, line and column; exit codes.

mod common;

use std::process::{Command, Output};

use common::{repo, write_file};

fn vendgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vendgate"))
        .args(args)
        .output()
        .expect("run vendgate")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config next to a copy of the shipped profiles, so a test can break one.
fn setup(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("device-profiles");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    for entry in std::fs::read_dir(repo().join("device-profiles")).expect("profiles") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), profiles.join(entry.file_name())).expect("copy");
    }
    write_file(&dir.path().join("config.yaml"), config);
    dir
}

const VALID: &str = "gateway:\n  id: gw-001\nmqtt:\n  url: mqtt://127.0.0.1\nstore:\n  path: state\ndevices:\n  - id: vm-001\n    profile: vmc-upper-computer\n    port: /dev/ttyUSB0\n";

#[test]
fn check_accepts_a_valid_config_and_its_profile() {
    let dir = setup(VALID);
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "check writes to stderr only");
    assert!(!dir.path().join("state").exists(), "check opens no store");
}

#[test]
fn check_names_line_and_column_of_a_config_mistake() {
    let dir = setup(&VALID.replace(
        "  url: mqtt://127.0.0.1\n",
        "  url: mqtt://127.0.0.1\n  keepalive: 30s\n",
    ));
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:5:3:", config.display())), "{err}");
    assert!(err.contains("keepalive"), "{err}");
}

#[test]
fn check_names_line_and_column_of_a_profile_mistake() {
    let dir = setup(VALID);
    let profile = dir.path().join("device-profiles/vmc-upper-computer.yaml");
    let text = std::fs::read_to_string(&profile).expect("profile");
    // A typo in a key of the first message.
    let (line_no, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with("kind:"))
        .expect("a kind: line");
    let column = line.len() - line.trim_start().len() + 1;
    let broken = text.replacen(line, &line.replacen("kind:", "knid:", 1), 1);
    write_file(&profile, &broken);
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!("{}:{}:{}:", profile.display(), line_no + 1, column);
    assert!(err.contains(&expected), "expected {expected} in {err}");
    assert!(err.contains("knid"), "{err}");
}

#[test]
fn run_exits_2_on_a_config_error_without_starting() {
    let dir = setup("gateway:\n  id: bad id!\n");
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["run", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.path().join("state").exists());
}

#[test]
fn run_exits_2_on_a_missing_profile() {
    let dir = setup(&VALID.replace("profile: vmc-upper-computer", "profile: no-such-profile"));
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["run", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-profile"), "{}", stderr(&out));
}
