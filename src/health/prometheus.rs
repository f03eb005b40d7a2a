//! The health counters in the Prometheus text exposition format (0.0.4).

use std::fmt::Write;

use super::{MachineSnapshot, Snapshot, LATENCY_BOUNDS_US};

/// A per-machine metric: name, type, help, and its value (if known).
type PerMachine = (
    &'static str,
    &'static str,
    &'static str,
    fn(&MachineSnapshot) -> Option<u64>,
);

/// Renders every metric (README "Health" lists them).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();

    header(
        &mut out,
        "vendgate_build_info",
        "gauge",
        "Always 1; the version as a label.",
    );
    let _ = writeln!(
        out,
        "vendgate_build_info{{version=\"{}\"}} 1",
        escape(s.version)
    );
    header(
        &mut out,
        "vendgate_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
    );
    let _ = writeln!(out, "vendgate_uptime_seconds {}", s.uptime.as_secs());
    header(
        &mut out,
        "vendgate_config_loaded_timestamp_seconds",
        "gauge",
        "When the running config was loaded (start or reload), Unix time.",
    );
    let _ = writeln!(
        out,
        "vendgate_config_loaded_timestamp_seconds{{sha256=\"{}\"}} {}",
        s.loaded.config_sha256,
        s.loaded.at.timestamp()
    );

    let per_machine: [PerMachine; 13] = [
        (
            "vendgate_link_up",
            "gauge",
            "1 while the machine's serial link is up (its status is online).",
            |m| Some(u64::from(m.link.online)),
        ),
        (
            "vendgate_frames_received_total",
            "counter",
            "Valid frames decoded from the machine.",
            |m| Some(m.frames_in),
        ),
        (
            "vendgate_frames_sent_total",
            "counter",
            "Frames written to the machine.",
            |m| Some(m.frames_out),
        ),
        (
            "vendgate_checksum_errors_total",
            "counter",
            "Frames dropped for a bad checksum.",
            |m| Some(m.checksum_errors),
        ),
        (
            "vendgate_resyncs_total",
            "counter",
            "Times the decoder re-synchronised on garbage.",
            |m| Some(m.resyncs),
        ),
        (
            "vendgate_skipped_bytes_total",
            "counter",
            "Bytes discarded while re-synchronising.",
            |m| Some(m.skipped_bytes),
        ),
        (
            "vendgate_retransmissions_total",
            "counter",
            "Commands written again because the machine did not acknowledge them.",
            |m| Some(m.retransmissions),
        ),
        (
            "vendgate_unexpected_frames_total",
            "counter",
            "Frames no request waited for (another device's address, or late), dropped.",
            |m| Some(m.unexpected_frames),
        ),
        (
            "vendgate_error_answers_total",
            "counter",
            "Poll requests the device answered with the request's error message.",
            |m| Some(m.error_answers),
        ),
        (
            "vendgate_interface_errors_total",
            "counter",
            "Interface file programs that failed for one message (nothing published for it).",
            |m| Some(m.interface_errors),
        ),
        (
            "vendgate_outbox_items",
            "gauge",
            "Items in the machine's outbox, not yet acknowledged by the broker.",
            |m| m.outbox_depth,
        ),
        (
            "vendgate_mqtt_reconnects_total",
            "counter",
            "MQTT reconnects of the machine's session (the first connect not counted).",
            |m| Some(m.mqtt_reconnects),
        ),
        (
            "vendgate_mqtt_refused_total",
            "counter",
            "Publishes the broker refused with an MQTT 5 reason code; each is kept in the outbox and published again.",
            |m| Some(m.mqtt_refused),
        ),
    ];
    for (name, kind, help, value) in per_machine {
        header(&mut out, name, kind, help);
        for m in &s.machines {
            if let Some(v) = value(m) {
                let _ = writeln!(out, "{name}{{machine=\"{}\"}} {v}", escape(&m.id));
            }
        }
    }

    let name = "vendgate_poll_answer_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "From a POLL's decoding to the end of its answer's write.",
    );
    for m in &s.machines {
        let machine = escape(&m.id);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BOUNDS_US.iter().zip(&m.poll_latency.buckets) {
            cumulative += n;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{machine=\"{machine}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = m.poll_latency.count();
        let sum = m.poll_latency.sum_us as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{machine=\"{machine}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{name}_sum{{machine=\"{machine}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{machine=\"{machine}\"}} {count}");
    }

    header(
        &mut out,
        "vendgate_outbox_bytes",
        "gauge",
        "Encoded size of everything in the outbox (all sessions).",
    );
    let _ = writeln!(out, "vendgate_outbox_bytes {}", s.store.outbox_bytes);
    header(
        &mut out,
        "vendgate_outbox_dropped_total",
        "counter",
        "Outbox items dropped by the size cap, per class (persisted across restarts).",
    );
    for (class, n) in [
        ("telemetry", s.store.dropped_telemetry),
        ("results", s.store.dropped_results),
        ("events", s.store.dropped_events),
    ] {
        let _ = writeln!(
            out,
            "vendgate_outbox_dropped_total{{class=\"{class}\"}} {n}"
        );
    }
    header(
        &mut out,
        "vendgate_gateway_mqtt_reconnects_total",
        "counter",
        "MQTT reconnects of the gateway's own session.",
    );
    let _ = writeln!(
        out,
        "vendgate_gateway_mqtt_reconnects_total {}",
        s.mqtt_reconnects
    );
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
