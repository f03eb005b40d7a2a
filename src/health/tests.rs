use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::*;

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

#[test]
fn empty_histogram_has_no_quantiles() {
    let h = Histogram::default().snapshot();
    assert_eq!(h.count(), 0);
    assert_eq!(h.quantile_us(0.5), None);
}

#[test]
fn samples_land_in_the_bucket_of_their_upper_bound() {
    let h = Histogram::default();
    for latency in [0, 10, 11, 1_000_000, 1_000_001, u64::MAX / 2] {
        h.record(us(latency));
    }
    let s = h.snapshot();
    assert_eq!(s.buckets[0], 2, "0 and 10 µs are <= 10");
    assert_eq!(s.buckets[1], 1, "11 µs is in (10, 20]");
    assert_eq!(s.buckets[LATENCY_BOUNDS_US.len() - 1], 1, "1 s is <= 1 s");
    assert_eq!(s.buckets[LATENCY_BOUNDS_US.len()], 2, "overflow");
    assert_eq!(s.count(), 6);
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let h = Histogram::default();
    // 100 samples in (100, 200] µs, one in (5, 10] ms.
    for _ in 0..100 {
        h.record(us(150));
    }
    h.record(us(8_000));
    let s = h.snapshot();
    let p50 = s.quantile_us(0.5).unwrap();
    assert!((100..=200).contains(&p50), "p50 {p50}");
    // Rank 50.5 of 100 in (100, 200]: about half-way.
    assert!((145..=155).contains(&p50), "p50 {p50}");
    let p99 = s.quantile_us(0.99).unwrap();
    assert!((100..=200).contains(&p99), "p99 {p99}");
    assert_eq!(s.quantile_us(1.0), Some(10_000));
}

#[test]
fn a_tail_moves_p99_but_not_p50() {
    let h = Histogram::default();
    for _ in 0..95 {
        h.record(us(300));
    }
    for _ in 0..5 {
        h.record(us(40_000));
    }
    let s = h.snapshot();
    assert!(s.quantile_us(0.5).unwrap() <= 500);
    let p99 = s.quantile_us(0.99).unwrap();
    assert!((20_000..=50_000).contains(&p99), "p99 {p99}");
}

#[test]
fn overflow_reports_the_last_bound() {
    let h = Histogram::default();
    h.record(Duration::from_secs(3));
    assert_eq!(h.snapshot().quantile_us(0.5), Some(1_000_000));
}

fn snapshot() -> Snapshot {
    let h = Histogram::default();
    h.record(us(150));
    h.record(us(150));
    h.record(us(3_000));
    let store = StoreStats {
        outbox_bytes: 512,
        dropped_events: 2,
        ..StoreStats::default()
    };
    Snapshot {
        version: "0.1.0",
        uptime: Duration::from_secs(42),
        ts: Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 5).unwrap(),
        machines: vec![MachineSnapshot {
            id: "vm-001".into(),
            link: LinkState {
                online: true,
                last_offline_reason: Some("link_lost"),
                since: Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap(),
            },
            frames_in: 10,
            frames_out: 11,
            checksum_errors: 1,
            resyncs: 2,
            skipped_bytes: 7,
            retransmissions: 3,
            unexpected_frames: 0,
            error_answers: 0,
            interface_errors: 0,
            capture_dropped: 0,
            poll_latency: h.snapshot(),
            outbox_depth: Some(4),
            mqtt_reconnects: 5,
            mqtt_refused: 8,
        }],
        store,
        mqtt_reconnects: 6,
        loaded: Loaded {
            config_sha256: "ab12".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap(),
        },
    }
}

#[test]
fn prometheus_text_has_help_type_and_labelled_samples() {
    let text = render_prometheus(&snapshot());
    for line in [
        "# HELP vendgate_frames_received_total Valid frames decoded from the machine.",
        "# TYPE vendgate_frames_received_total counter",
        "vendgate_frames_received_total{machine=\"vm-001\"} 10",
        "vendgate_frames_sent_total{machine=\"vm-001\"} 11",
        "vendgate_checksum_errors_total{machine=\"vm-001\"} 1",
        "vendgate_resyncs_total{machine=\"vm-001\"} 2",
        "vendgate_skipped_bytes_total{machine=\"vm-001\"} 7",
        "vendgate_retransmissions_total{machine=\"vm-001\"} 3",
        "vendgate_link_up{machine=\"vm-001\"} 1",
        "vendgate_outbox_items{machine=\"vm-001\"} 4",
        "vendgate_config_loaded_timestamp_seconds{sha256=\"ab12\"} 1795334400",
        "vendgate_mqtt_reconnects_total{machine=\"vm-001\"} 5",
        "vendgate_mqtt_refused_total{machine=\"vm-001\"} 8",
        "# TYPE vendgate_poll_answer_latency_seconds histogram",
        "vendgate_poll_answer_latency_seconds_bucket{machine=\"vm-001\",le=\"0.0001\"} 0",
        "vendgate_poll_answer_latency_seconds_bucket{machine=\"vm-001\",le=\"0.0002\"} 2",
        "vendgate_poll_answer_latency_seconds_bucket{machine=\"vm-001\",le=\"0.005\"} 3",
        "vendgate_poll_answer_latency_seconds_bucket{machine=\"vm-001\",le=\"+Inf\"} 3",
        "vendgate_poll_answer_latency_seconds_sum{machine=\"vm-001\"} 0.0033",
        "vendgate_poll_answer_latency_seconds_count{machine=\"vm-001\"} 3",
        "vendgate_outbox_bytes 512",
        "vendgate_outbox_dropped_total{class=\"events\"} 2",
        "vendgate_outbox_dropped_total{class=\"telemetry\"} 0",
        "vendgate_gateway_mqtt_reconnects_total 6",
        "vendgate_uptime_seconds 42",
        "vendgate_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every sample's metric has HELP and TYPE, and counters end in _total.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name
            .strip_suffix("_bucket")
            .or(name.strip_suffix("_sum"))
            .or(name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {name}"
        );
        let kind = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {family} ")))
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        if kind == "counter" {
            assert!(family.ends_with("_total"), "{family}");
        }
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn unknown_outbox_depth_is_left_out() {
    let mut s = snapshot();
    s.machines[0].outbox_depth = None;
    let text = render_prometheus(&s);
    assert!(!text.contains("vendgate_outbox_items{"));
    assert_eq!(
        render_json(&s)["machines"]["vm-001"]["outbox_depth"],
        serde_json::Value::Null
    );
}

#[test]
fn json_document_has_the_documented_shape() {
    let doc = render_json(&snapshot());
    assert_eq!(doc["version"], "0.1.0");
    assert_eq!(doc["uptime_s"], 42);
    assert_eq!(doc["ts"], "2026-11-22T09:30:05.000Z");
    assert_eq!(doc["config"]["sha256"], "ab12");
    assert_eq!(doc["config"]["loaded"], "2026-11-22T08:00:00.000Z");
    let m = &doc["machines"]["vm-001"];
    assert_eq!(m["link"], "online");
    assert_eq!(m["last_offline_reason"], "link_lost");
    assert_eq!(m["since"], "2026-11-22T09:00:00.000Z");
    assert_eq!(m["frames_in"], 10);
    assert_eq!(m["frames_out"], 11);
    assert_eq!(m["checksum_errors"], 1);
    assert_eq!(m["resyncs"], 2);
    assert_eq!(m["retransmissions"], 3);
    assert_eq!(m["polls_answered"], 3);
    assert!(m["poll_latency_us"]["p50"].as_u64().unwrap() <= 200);
    assert!(m["poll_latency_us"]["p99"].as_u64().unwrap() > 2_000);
    assert_eq!(m["outbox_depth"], 4);
    assert_eq!(m["mqtt_reconnects"], 5);
    assert_eq!(m["mqtt_refused"], 8);
    assert_eq!(doc["outbox"]["bytes"], 512);
    assert_eq!(doc["outbox"]["dropped"]["events"], 2);
    assert_eq!(doc["mqtt_reconnects"], 6);
}

#[test]
fn link_state_keeps_the_last_offline_reason_while_online() {
    let m = MachineHealth::new(Default::default(), Default::default(), Default::default());
    assert_eq!(m.link_state().last_offline_reason, Some("starting"));
    m.link_changed(&Availability::offline(
        crate::mqtt::OfflineReason::PortMissing,
    ));
    assert!(!m.link_state().online);
    m.link_changed(&Availability::Online);
    let state = m.link_state();
    assert!(state.online);
    assert_eq!(state.last_offline_reason, Some("port_missing"));
}
