//! `vendgate run -c FILE`.

use std::path::Path;

use tracing::{error, info, warn};

use super::{load_config, shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::gateway::{Gateway, StartError};

pub async fn run(path: &Path) -> i32 {
    let config = match load_config(path, |warning| warn!("{warning}")) {
        Ok(config) => config,
        Err(code) => return code,
    };
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
