//! The retained health document on `topics.health`.

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Health, Snapshot};
use crate::store::{ItemClass, OutItem};

/// Renders the health document (README "Health"):
///
/// ```json
/// {"version":"0.1.0","uptime_s":123,"ts":"2026-11-22T09:30:05.123Z",
///  "machines":{"vm-001":{
///     "link":"online","last_offline_reason":"link_lost","since":"2026-11-22T09:28:00.000Z",
///     "frames_in":812,"frames_out":815,"checksum_errors":1,"resyncs":1,"skipped_bytes":9,
///     "retransmissions":0,"unexpected_frames":0,"error_answers":0,"polls_answered":800,"poll_latency_us":{"p50":180,"p99":950},
///     "outbox_depth":0,"mqtt_reconnects":0,"mqtt_refused":0}},
///  "outbox":{"bytes":0,"dropped":{"telemetry":0,"results":0,"events":0}},
///  "mqtt_reconnects":0,
///  "config":{"sha256":"9f86d0…","loaded":"2026-11-22T09:28:00.000Z"}}
/// ```
///
/// `link` is `online` or `offline` as the machine's status topic shows it;
/// `last_offline_reason` is why it was last offline (`starting` until its
/// link was first judged), `since` when `link` last changed. Latencies are
/// `null` before the first POLL, `outbox_depth` when the store cannot be
/// read. The top-level `mqtt_reconnects` is the gateway session's; `config`
/// is the config file the gateway runs with (`sha256sum` of the file) and
/// when it was loaded, at start or by the last reload that took it.
pub fn render_json(s: &Snapshot) -> Value {
    let mut machines = Map::new();
    for m in &s.machines {
        machines.insert(
            m.id.clone(),
            json!({
                "link": if m.link.online { "online" } else { "offline" },
                "last_offline_reason": m.link.last_offline_reason,
                "since": m.link.since.to_rfc3339_opts(SecondsFormat::Millis, true),
                "frames_in": m.frames_in,
                "frames_out": m.frames_out,
                "checksum_errors": m.checksum_errors,
                "resyncs": m.resyncs,
                "skipped_bytes": m.skipped_bytes,
                "retransmissions": m.retransmissions,
                "unexpected_frames": m.unexpected_frames,
                "error_answers": m.error_answers,
                "interface_errors": m.interface_errors,
                "capture_dropped": m.capture_dropped,
                "polls_answered": m.poll_latency.count(),
                "poll_latency_us": {
                    "p50": m.poll_latency.quantile_us(0.5),
                    "p99": m.poll_latency.quantile_us(0.99),
                },
                "outbox_depth": m.outbox_depth,
                "mqtt_reconnects": m.mqtt_reconnects,
                "mqtt_refused": m.mqtt_refused,
            }),
        );
    }
    json!({
        "version": s.version,
        "uptime_s": s.uptime.as_secs(),
        "ts": s.ts.to_rfc3339_opts(SecondsFormat::Millis, true),
        "machines": machines,
        "outbox": {
            "bytes": s.store.outbox_bytes,
            "dropped": {
                "telemetry": s.store.dropped_telemetry,
                "results": s.store.dropped_results,
                "events": s.store.dropped_events,
            },
        },
        "mqtt_reconnects": s.mqtt_reconnects,
        "config": {
            "sha256": s.loaded.config_sha256,
            "loaded": s.loaded.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        },
    })
}

/// Publishes the document every `interval` and at once when a machine's
/// link state changes, retained with QoS 1, through the gateway session's
/// non-durable channel (while the broker is away only the latest is kept).
pub async fn publish(
    health: Arc<Health>,
    topic: String,
    out: mpsc::Sender<OutItem>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = health.changed().notified() => {}
            _ = shutdown.cancelled() => return,
        }
        let item = OutItem {
            topic: topic.clone(),
            payload: render_json(&health.snapshot()).to_string().into_bytes(),
            qos: 1,
            retain: true,
            class: ItemClass::Telemetry,
            correlation: None,
        };
        if out.try_send(item).is_err() {
            // Only while the session is flooded or gone; the next report
            // carries the same counters.
            debug!("health report skipped: the gateway session is not keeping up");
        }
    }
}
