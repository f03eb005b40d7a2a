//! `vendgate demo`: the whole product on one machine with nothing but Rust:
//! an embedded MQTT broker, a simulated VMC board on a pseudo-terminal, and
//! the gateway between them. stdout shows the MQTT traffic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tracing::error;

use super::{shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::broker;
use crate::config::Config;
use crate::gateway::{Gateway, Setup};
use crate::profile::Profile;
use crate::sim::{pty_pair, Board};

const PROFILE: &str = "vmc-upper-computer";
const MACHINE: &str = "vm-001";

pub async fn demo(port: u16, profiles_dir: &Path) -> i32 {
    let profiles_dir = match std::fs::canonicalize(profiles_dir) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!(
                "{}: {e}; run the demo from the repository root or pass --profiles-dir",
                profiles_dir.display()
            );
            return EXIT_CONFIG;
        }
    };
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        eprintln!("cannot listen on 127.0.0.1:{port}: {e}; is another broker running? pass --port");
        return EXIT_FATAL;
    }
    if let Err(e) = broker::start(port) {
        eprintln!("{e}");
        return EXIT_FATAL;
    }
    let profile = match Profile::resolve(&profiles_dir, PROFILE) {
        Ok(profile) => Arc::new(profile),
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let script = profile.simulator.clone();
    let (board_end, gateway_end, tty) = match pty_pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("cannot create a pseudo-terminal: {e}");
            return EXIT_FATAL;
        }
    };
    let (board, board_handle) = Board::new(profile, script, board_end);
    tokio::spawn(async move {
        let _keep = gateway_end;
        if let Err(e) = board.run().await {
            error!("simulated board stopped: {e}");
        }
    });
    let store = std::env::temp_dir().join(format!("vendgate-demo-{}", std::process::id()));
    let config_text = format!(
        "gateway:\n  id: demo-gw\nmqtt:\n  url: mqtt://127.0.0.1:{port}\n  keep_alive: 30s\nstore:\n  path: {store}\nprofiles_dir: {profiles}\ndevices:\n  - id: {MACHINE}\n    profile: {PROFILE}\n    port: {tty}\n",
        store = store.display(),
        profiles = profiles_dir.display(),
    );
    let config = match Config::from_str(&config_text, &store.join("demo.yaml")) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let started = Setup::new(config, &config_text)
        .map_err(|e| e.to_string())
        .and_then(|setup| Gateway::start(setup, None).map_err(|e| e.to_string()));
    let gateway = match started {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("cannot start the gateway: {e}");
            return EXIT_FATAL;
        }
    };
    println!("vendgate demo: embedded MQTT broker on 127.0.0.1:{port}, simulated VMC board on {tty}, machine id {MACHINE}");
    println!(
        "Watch with any MQTT client:   mosquitto_sub -h 127.0.0.1 -p {port} -t 'vending/#' -v"
    );
    println!("Send a command:               mosquitto_pub -h 127.0.0.1 -p {port} -t vending/{MACHINE}/cmd/buy -m '{{\"id\":\"my-1\",\"selection\":11}}'");
    println!("The demo itself sends a check_selection and a buy in a few seconds. Ctrl-C stops.\n");
    tokio::spawn(view_traffic(port));
    let exit = tokio::select! {
        _ = shutdown_signal() => 0,
        _ = drive(port) => 0,
    };
    drop(board_handle);
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&store);
    exit
}

/// Prints every message under `vending/` on stdout.
async fn view_traffic(port: u16) {
    let mut options = MqttOptions::new("vendgate-demo-viewer", "127.0.0.1", port);
    options.set_max_packet_size(4 * 1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let _ = client.subscribe("vending/#", QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let time = chrono::Local::now().format("%H:%M:%S%.3f");
                let retained = if p.retain { " (retained)" } else { "" };
                println!(
                    "{time}  {}{retained}  {}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload)
                );
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Plays the business side once, so the demo shows commands and results.
async fn drive(port: u16) {
    let options = MqttOptions::new("vendgate-demo-business", "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let commands = [
        ("check_selection", r#"{"id":"demo-1","selection":11}"#),
        ("buy", r#"{"id":"demo-2","selection":11}"#),
        ("machine_status", r#"{"id":"demo-3"}"#),
    ];
    for (command, payload) in commands {
        let topic = format!("vending/{MACHINE}/cmd/{command}");
        let _ = client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    std::future::pending::<()>().await
}
