//! `vendgate run -c FILE [--metrics-listen ADDR]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use super::{shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::gateway::{Gateway, Setup};
use crate::health;

pub async fn run(path: &Path, metrics_listen: Option<SocketAddr>, capture: Option<PathBuf>) -> i32 {
    // Taken over before anything starts: SIGHUP's default action would end
    // the process, and `systemctl reload` may come at any time.
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            error!("cannot handle SIGHUP: {e}");
            return EXIT_FATAL;
        }
    };
    // A bad config, profile, interface or TLS file: all are config errors.
    let setup = match Setup::read(path) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    setup.config.warnings.iter().for_each(|w| warn!("{w}"));
    // Bound before anything starts: an address in use is fatal, not a
    // gateway silently running without the metrics it was asked for.
    let metrics = match metrics_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                error!("cannot listen for metrics on {addr}: {e}");
                return EXIT_FATAL;
            }
        },
        None => None,
    };
    // A capture folder that cannot be made is fatal, like an unbindable
    // metrics address: the operator asked for it.
    if let Some(dir) = &capture {
        if let Err(e) = std::fs::create_dir_all(dir) {
            error!("cannot create the capture folder {}: {e}", dir.display());
            return EXIT_FATAL;
        }
    }
    let mut gateway = match Gateway::start(setup, capture) {
        Ok(gateway) => gateway,
        Err(e) => {
            error!("cannot start: {e}");
            return EXIT_FATAL;
        }
    };
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving metrics at /metrics");
        }
        tokio::spawn(health::serve(
            listener,
            gateway.health.clone(),
            gateway.shutdown.clone(),
        ));
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = hangup.recv() => gateway.reload(path).await,
        }
    }
    info!("shutting down");
    gateway.stop().await;
    info!("stopped");
    0
}
