//! Which devices share which serial line, and whether that is sound
//! (DESIGN §3): devices whose ports are the same device file (links and
//! USB identities resolved, not compared as text) are one bus. Run by
//! `check` and at start, before anything is opened.
//!
//! Refused, each at the config key it is about:
//! - a shared line with a profile that is not `host_polls` (only a master
//!   can share a half-duplex line; a polling machine owns its line);
//! - different serial settings or framings on one line;
//! - two devices with one address on a line, or several devices on a line
//!   whose framing has no address field (their answers could not be told
//!   apart);
//! - a device without `address` whose profile's framing has an address
//!   field, an address outside the profile's `link.address_range`, and an
//!   `address` on a device whose framing has none (it would be ignored).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigErrors, DeviceConfig};
use crate::profile::{LinkMode, Profile};

/// The devices of each line, as indices into `config.devices`, in config
/// order.
pub type Lines = Vec<Vec<usize>>;

/// Groups the devices by line and checks each line. `profiles` are the
/// loaded profiles by the name the devices give.
pub fn plan_lines(
    config: &Config,
    profiles: &HashMap<String, Arc<Profile>>,
) -> Result<Lines, ConfigErrors> {
    let mut lines: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut problems = Vec::new();
    for (i, device) in config.devices.iter().enumerate() {
        let file = super::device_file(device).ok();
        let line = file
            .as_ref()
            .and_then(|f| lines.iter_mut().find(|(other, _)| other == f));
        match line {
            Some((_, members)) => members.push(i),
            None => lines.push((file.unwrap_or_default(), vec![i])),
        }
        if let Some(profile) = profiles.get(&device.profile) {
            problems.extend(address_problem(device, profile).map(|p| (i, p)));
        }
    }
    for (file, members) in &lines {
        problems.extend(line_problems(config, profiles, file, members));
    }
    if problems.is_empty() {
        return Ok(lines.into_iter().map(|(_, members)| members).collect());
    }
    Err(located(config, problems))
}

/// A problem with device `index`, and the key it is about.
type Problem = (&'static str, String);

fn address_problem(device: &DeviceConfig, profile: &Profile) -> Option<Problem> {
    // The range is bounded by what the address field can hold.
    let (lo, hi) = profile.link.address_range;
    let hi = hi.min(profile.framing.max_address().unwrap_or(0));
    match (profile.framing.has_address(), device.address) {
        (true, None) => Some(("id", format!(
            "profile {} has an address field in its frames: give this device its `address` on the line ({lo}..={hi})",
            profile.name
        ))),
        (true, Some(a)) if a < lo || a > hi => Some(("address", format!(
            "address {a} is outside profile {}'s link.address_range [{lo}, {hi}]",
            profile.name
        ))),
        (false, Some(_)) => Some(("address", format!(
            "profile {}'s frames carry no address: remove `address` (it would be ignored)",
            profile.name
        ))),
        _ => None,
    }
}

fn line_problems(
    config: &Config,
    profiles: &HashMap<String, Arc<Profile>>,
    file: &std::path::Path,
    members: &[usize],
) -> Vec<(usize, Problem)> {
    let mut problems = Vec::new();
    if members.len() < 2 {
        return problems;
    }
    let device = |i: usize| &config.devices[i];
    let profile = |i: usize| profiles.get(&device(i).profile);
    let first = members[0];
    let shown = file.display();
    let mut addresses: HashMap<u16, usize> = HashMap::new();
    for &i in members {
        let Some(p) = profile(i) else { continue };
        if p.link.mode != LinkMode::HostPolls {
            problems.push((i, ("port", format!(
                "port {shown} is shared with device {}, but profile {} is not `host_polls`: only devices the gateway polls can share a line (a bus)",
                device(first).id, p.name
            ))));
            continue;
        }
        if i != first {
            if let Some(why) =
                profile(first).and_then(|f| serial_difference(device(first), f, device(i), p))
            {
                problems.push((i, ("port", format!(
                    "port {shown} is shared with device {}, but {why}: one line has one set of serial settings",
                    device(first).id
                ))));
            }
        }
        if !p.framing.has_address() {
            problems.push((i, ("port", format!(
                "port {shown} is shared with device {}, but profile {}'s frames carry no address, so answers could not be told apart",
                device(first).id, p.name
            ))));
        }
        if let Some(a) = device(i).address {
            if let Some(&other) = addresses.get(&a) {
                problems.push((
                    i,
                    (
                        "address",
                        format!(
                            "address {a} is already used by device {} on port {shown}",
                            device(other).id
                        ),
                    ),
                ));
            }
            addresses.insert(a, i);
        }
    }
    problems
}

/// How two devices' serial settings differ, if they do.
fn serial_difference(
    a: &DeviceConfig,
    pa: &Profile,
    b: &DeviceConfig,
    pb: &Profile,
) -> Option<String> {
    let baud_a = a.baud.unwrap_or(pa.serial.baud);
    let baud_b = b.baud.unwrap_or(pb.serial.baud);
    if baud_a != baud_b {
        return Some(format!("it runs at {baud_b} baud and {} at {baud_a}", a.id));
    }
    if pa.serial != pb.serial {
        return Some(format!(
            "profile {} uses {:?} and profile {} {:?}",
            pb.name, pb.serial, pa.name, pa.serial
        ));
    }
    // The framings are compiled from different files: compare what the
    // codec would do with them.
    if format!("{:?}", pa.framing) != format!("{:?}", pb.framing) {
        return Some(format!(
            "profile {} frames differently from profile {}",
            pb.name, pa.name
        ));
    }
    None
}

/// The problems as config errors at their keys (file:line:column).
fn located(config: &Config, problems: Vec<(usize, Problem)>) -> ConfigErrors {
    let text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(i, (key, message))| {
            let at = crate::config::device_path(i, key);
            let (line, column) = crate::config::locate_key(&text, &at).unwrap_or((0, 0));
            ConfigError {
                path: config.path.clone(),
                line,
                column,
                message: format!("{at}: {message}"),
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
    ConfigErrors(errors)
}

#[cfg(test)]
mod tests;
