//! tracing to stderr, text or JSON; RUST_LOG sets the level. Under systemd
//! (`$JOURNAL_STREAM` set) with text format, records go to journald with
//! their levels and fields instead of as plain text lines.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::LogFormat;

pub fn init(format: LogFormat) {
    let filter = filter();
    if matches!(format, LogFormat::Text) && stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("vendgate".into()))
                .try_init();
            return;
        }
    }
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

/// `RUST_LOG` as comma-separated `level` and `target=level` directives;
/// without it (or if it cannot be read) info, and warnings of rumqttc.
fn filter() -> Targets {
    const DEFAULT: &str = "info,rumqttd=off,rumqttc=warn";
    let default = || DEFAULT.parse::<Targets>().unwrap_or_default();
    match std::env::var("RUST_LOG") {
        Ok(text) => text.parse().unwrap_or_else(|e| {
            eprintln!("vendgate: RUST_LOG={text:?} is not a list of `level` and `target=level` ({e}); using {DEFAULT}");
            default()
        }),
        Err(_) => default(),
    }
}

/// systemd's way to tell a service its stderr is the journal: `$JOURNAL_STREAM`
/// names the device and inode of that stream (an inherited variable alone
/// does not count).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
