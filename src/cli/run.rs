//! `vendgate run -c FILE [--metrics-listen ADDR]`.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tracing::{error, info, warn};

use super::{load_config, shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::gateway::{Gateway, StartError};
use crate::health;

pub async fn run(path: &Path, metrics_listen: Option<SocketAddr>) -> i32 {
    let config = match load_config(path, |warning| warn!("{warning}")) {
        Ok(config) => config,
        Err(code) => return code,
    };
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
    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        // A bad profile or TLS file is a config error, like a bad config.
        Err(e @ (StartError::Profile(_) | StartError::Mqtt(_) | StartError::Lines(_))) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
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
    shutdown_signal().await;
    info!("shutting down");
    gateway.stop().await;
    info!("stopped");
    0
}
