//! `vendgate check -c FILE`: the config and every profile it uses, without
//! opening ports or the network. Everything goes to stderr.

use std::path::Path;

use super::{load_config, EXIT_CONFIG};
use crate::profile::Profile;

pub fn check(path: &Path) -> i32 {
    let config = match load_config(path, |warning| eprintln!("warning: {warning}")) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // The TLS files too: a board must not learn at its first connect that
    // its CA file is not a certificate.
    let mut valid = true;
    if let Err(e) = crate::mqtt::Connection::from_config(&config) {
        eprintln!("{e}");
        valid = false;
    }
    // Every profile is checked, so one run reports every broken file.
    let names: std::collections::BTreeSet<&str> =
        config.devices.iter().map(|d| d.profile.as_str()).collect();
    let mut profiles = std::collections::HashMap::new();
    for name in &names {
        match Profile::resolve(&config.profiles_dir, name) {
            Ok(profile) => {
                // The profile's own test vectors (`tests:`), each failure
                // at its line.
                for (line, column, why) in profile.run_tests() {
                    eprintln!(
                        "{}:{line}:{column}: test vector fails: {why}",
                        profile.path.display()
                    );
                    valid = false;
                }
                profiles.insert(name.to_string(), std::sync::Arc::new(profile));
            }
            Err(e) => {
                eprintln!("{e}");
                valid = false;
            }
        }
    }
    // Lines shared by several devices (buses), with the profiles known.
    if let Err(errors) = crate::device::port::plan_lines(&config, &profiles) {
        eprintln!("{errors}");
        valid = false;
    }
    if !valid {
        return EXIT_CONFIG;
    }
    let names: Vec<&str> = names.into_iter().collect();
    eprintln!(
        "{}: valid ({} device(s); profiles: {})",
        path.display(),
        config.devices.len(),
        names.join(", ")
    );
    0
}
