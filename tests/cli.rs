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
fn a_broken_test_vector_of_the_profile_fails_check_at_its_line() {
    let dir = setup(VALID);
    let profile = dir.path().join("device-profiles/vmc-upper-computer.yaml");
    let text = std::fs::read_to_string(&profile).expect("profile");
    // The protocol page's money frame, with the amount the vector expects changed.
    let broken = text.replace(
        "fields: {mode: coin, amount: 100}",
        "fields: {mode: coin, amount: 101}",
    );
    assert_ne!(broken, text, "the shipped profile carries the money vector");
    write_file(&profile, &broken);
    let line = broken
        .lines()
        .position(|l| l.contains("frame: FA FB 21 06 07"))
        .expect("the vector")
        + 1;
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:{line}:", profile.display())),
        "{err}"
    );
    assert!(
        err.contains("test vector fails") && err.contains("\"amount\":100"),
        "{err}"
    );
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

/// Lines of a child's stdout, readable with a timeout.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let stderr = std::env::var("VENDGATE_TEST_STDERR")
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    panic!(
        "no {what} on stdout; saw:\n{}\nstderr:\n{stderr}",
        seen.join("\n")
    );
}

fn interrupt(child: &mut std::process::Child) -> Option<i32> {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn demo_shows_the_whole_product_and_exits_0_on_ctrl_c() {
    let port = common::free_port();
    let logs = tempfile::tempdir().expect("tempdir");
    let stderr_path = logs.path().join("demo.err");
    // Shown if the test fails (see wait_for_line).
    std::env::set_var("VENDGATE_TEST_STDERR", &stderr_path);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vendgate"))
        .args(["demo", "--port", &port.to_string()])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("demo");
    let lines = stdout_lines(&mut child);
    wait_for_line(&lines, "machine online", |l| {
        l.contains("vending/vm-001/status") && l.ends_with("online")
    });
    wait_for_line(&lines, "buy result", |l| {
        l.contains("vending/vm-001/cmd/buy/result") && l.contains("\"ok\"")
    });
    wait_for_line(&lines, "dispense event", |l| {
        l.contains("vending/vm-001/event/dispense") && l.contains("success")
    });
    assert_eq!(interrupt(&mut child), Some(0));
}

#[test]
fn simulate_pty_plays_the_board_for_a_real_gateway() {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_vendgate"))
        .args([
            "simulate",
            "--profile",
            "vmc-upper-computer",
            "--pty",
            "--profiles-dir",
        ])
        .arg(repo().join("device-profiles"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("simulate");
    let lines = stdout_lines(&mut sim);
    let path = wait_for_line(&lines, "pty path", |l| l.starts_with("/dev/"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = common::Broker::start();
        let mut client = common::Client::connect(broker.port, "vending/#").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            common::config_yaml(broker.port, &dir.path().join("store"), &[("vm-001", &path)]);
        let _gateway = common::Gateway::start(dir.path(), &config);
        let secs = std::time::Duration::from_secs;
        client.expect_status("vm-001", "online", secs(10)).await;
        client
            .expect(secs(10), "periodic selection telemetry", |m| {
                m.topic == "vending/vm-001/telemetry/selection"
            })
            .await;
        client
            .publish(
                "vending/vm-001/cmd/buy",
                r#"{"id":"s-1","selection":12}"#,
                false,
            )
            .await;
        assert_eq!(
            client.expect_result("vm-001", "buy", "s-1", secs(5)).await["status"],
            "ok"
        );
        let dispense = client
            .expect(secs(5), "dispense success", |m| {
                m.topic == "vending/vm-001/event/dispense" && m.json()["status"] == "success"
            })
            .await;
        assert_eq!(dispense.json()["selection"], 12);
    });
    assert_eq!(interrupt(&mut sim), Some(0));
}

#[test]
fn simulate_plays_two_modbus_slaves_for_a_gateway_polling_the_bus() {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_vendgate"))
        .args(["simulate", "--profile", "coolmax-cc200", "--pty"])
        .args(["--address", "5", "--address", "6", "--profiles-dir"])
        .arg(repo().join("device-profiles"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("simulate");
    let lines = stdout_lines(&mut sim);
    let path = wait_for_line(&lines, "pty path", |l| l.starts_with("/dev/"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = common::Broker::start();
        let mut client = common::Client::connect(broker.port, "vending/#").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        // Address 9 is on the line in the config, but nobody answers it.
        let config = format!(
            "gateway: {{id: gw-test}}\nmqtt: {{url: \"mqtt://127.0.0.1:{}\"}}\nstore: {{path: {}}}\nprofiles_dir: {}\ndevices:\n\
             \x20 - {{id: cooler-05, profile: coolmax-cc200, port: {path}, address: 5}}\n\
             \x20 - {{id: cooler-06, profile: coolmax-cc200, port: {path}, address: 6}}\n\
             \x20 - {{id: cooler-09, profile: coolmax-cc200, port: {path}, address: 9}}\n",
            broker.port,
            store.display(),
            repo().join("device-profiles").display(),
        );
        let _gateway = common::Gateway::start(dir.path(), &config);
        let secs = std::time::Duration::from_secs;
        client.expect_status("cooler-05", "online", secs(10)).await;
        client.expect_status("cooler-06", "online", secs(10)).await;
        client.expect_status("cooler-09", "offline", secs(15)).await;
        let status = client
            .expect(secs(5), "cooler-06 status telemetry", |m| {
                m.topic == "vending/cooler-06/telemetry/status"
            })
            .await;
        assert_eq!(status.json()["temperature"], 4.5);
        client
            .publish(
                "vending/cooler-05/cmd/set_setpoint",
                r#"{"id":"sp-1","celsius":6.5}"#,
                false,
            )
            .await;
        let result = client
            .expect_result("cooler-05", "set_setpoint", "sp-1", secs(5))
            .await;
        assert_eq!(result["status"], "ok", "{result}");
        assert_eq!(result["response"]["celsius"], 6.5, "{result}");
    });
    assert_eq!(interrupt(&mut sim), Some(0));
}

#[test]
fn completions_and_the_man_page_cover_every_subcommand() {
    let subcommands = ["run", "check", "demo", "simulate", "completions", "man"];
    for shell in ["bash", "zsh", "fish"] {
        let out = vendgate(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = vendgate(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH vendgate 1"),
        "{page}"
    );
    for sub in subcommands {
        let header = format!(".SH \"VENDGATE {}\"", sub.to_uppercase());
        assert!(page.contains(&header), "the man page lacks {sub}");
    }
    assert!(
        page.contains("metrics\\-listen"),
        "options of run are on the page"
    );
}

/// `VALID` with the shipped NV-3 interface copied next to it as
/// `interface.yaml`, changed by `edit`.
fn setup_interface(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = setup(&format!("{VALID}interface: interface.yaml\n"));
    let text = std::fs::read_to_string(repo().join("interfaces/nordvend-nv3.yaml")).expect("nv3");
    write_file(&dir.path().join("interface.yaml"), &edit(&text));
    dir
}

#[test]
fn check_accepts_the_shipped_interfaces() {
    let dir = setup_interface(str::to_owned);
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_names_the_line_of_an_interface_program_that_does_not_compile() {
    const GOOD: &str = "amount_cents: .data.amount, time: .ts}'";
    let dir = setup_interface(|text| {
        assert!(text.contains(GOOD));
        text.replacen(GOOD, "amount_cents: .data.amount, time: .ts'", 1)
    });
    let interface = dir.path().join("interface.yaml");
    let text = std::fs::read_to_string(&interface).expect("interface");
    let line = text
        .lines()
        .position(|l| l.contains("amount_cents"))
        .expect("the payment program")
        + 1;
    let config = dir.path().join("config.yaml");
    let out = vendgate(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:{line}:", interface.display())),
        "line {line} of the interface in: {err}"
    );
    assert!(err.contains("jq program does not compile"), "{err}");
}
