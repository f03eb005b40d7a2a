//! `vendgate check -c FILE`: the config and every profile it uses, without
//! opening ports or the network. Everything goes to stderr.

use std::path::Path;

use super::EXIT_CONFIG;
use crate::config::Config;
use crate::gateway::load_profiles;

pub fn check(path: &Path) -> i32 {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    // The TLS files too: a board must not learn at its first connect that
    // its CA file is not a certificate.
    if let Err(e) = crate::mqtt::Connection::from_config(&config) {
        eprintln!("{e}");
        return EXIT_CONFIG;
    }
    match load_profiles(&config) {
        Ok(profiles) => {
            let mut names: Vec<&String> = profiles.keys().collect();
            names.sort();
            eprintln!(
                "{}: valid ({} device(s); profiles: {})",
                path.display(),
                config.devices.len(),
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_CONFIG
        }
    }
}
