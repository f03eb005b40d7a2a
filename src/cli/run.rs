//! `vendgate run -c FILE`.

use std::path::Path;

use tracing::{error, info, warn};

use super::{shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::config::Config;
use crate::gateway::{Gateway, StartError};

pub async fn run(path: &Path) -> i32 {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        // A bad profile or TLS file is a config error, like a bad config.
        Err(e @ (StartError::Profile(_) | StartError::Mqtt(_))) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
        Err(e) => {
            error!("cannot start: {e}");
            return EXIT_FATAL;
        }
    };
    shutdown_signal().await;
    info!("shutting down");
    gateway.stop().await;
    info!("stopped");
    0
}
