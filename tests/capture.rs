//! `run --capture DIR` (DESIGN §2, §8) with the real binary, a real broker
//! and the pty board: the capture holds the line both ways, as it happened.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vendgate::sim::Script;

#[tokio::test(flavor = "multi_thread")]
async fn a_capture_records_the_line_both_ways_with_a_header() {
    let captures = tempfile::tempdir().expect("tempdir");
    let dir = captures.path().to_str().expect("utf-8 path").to_owned();
    let mut r = rig_with_args(Script::default(), "", &["--capture", &dir]).await;
    r.board
        .send("money_collected", json!({"mode": "coin", "amount": 100}))
        .await;
    r.client
        .expect(Duration::from_secs(5), "the money event", |m| {
            m.topic == "vending/vm-001/event/money_collected"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.gateway.terminate().and_then(|s| s.code()), Some(0));

    let files: Vec<_> = std::fs::read_dir(captures.path())
        .expect("capture dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "one capture per device: {files:?}");
    let name = files[0]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with("vm-001-") && name.ends_with("Z.jsonl"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).expect("capture");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let header = &lines[0];
    assert_eq!(header["vendgate_capture"], 1);
    assert_eq!(header["profile"], "vmc-upper-computer");
    assert_eq!(header["machine"], "vm-001");
    assert_eq!(header["baud"], 57600);
    let chunks = &lines[1..];
    let hex = |dir: &str| -> String {
        chunks
            .iter()
            .filter(|c| c["dir"] == dir)
            .filter_map(|c| c["hex"].as_str())
            .collect()
    };
    // The board's POLLs and its money frame (PackNO varies), the gateway's ACKs.
    assert!(hex("rx").contains("fafb410040"), "POLLs recorded");
    assert!(hex("rx").contains("fafb2106"), "the money frame recorded");
    assert!(hex("tx").contains("fafb420043"), "ACKs recorded");
    let times: Vec<f64> = chunks.iter().filter_map(|c| c["t"].as_f64()).collect();
    assert_eq!(times.len(), chunks.len(), "every chunk has its time");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order of time");
}
