//! The systemd side of a running gateway: `READY=1` once the ports were
//! first tried, then a `STATUS=` line that says which machines are online.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::health::Health;
use crate::systemd::Notifier;

/// One line for `systemctl status`: which machines are online.
pub fn summary(health: &Health) -> String {
    let links = health.links();
    let online = links.iter().filter(|(_, up)| *up).count();
    let offline: Vec<&str> = links
        .iter()
        .filter(|(_, up)| !up)
        .map(|(id, _)| id.as_str())
        .collect();
    let mut line = format!("{online}/{} machines online", links.len());
    if !offline.is_empty() {
        line.push_str(&format!("; offline: {}", offline.join(", ")));
    }
    line
}

/// Waits until every line was opened or failed its first open attempt (a
/// line task that ended before has nothing more to wait for), at most
/// `limit`: a reload must not keep systemd waiting on one slow adapter.
pub async fn first_opens(opened: Vec<oneshot::Receiver<()>>, limit: Duration) {
    let _ = tokio::time::timeout(limit, futures::future::join_all(opened)).await;
}

/// READY=1 once the lines were first opened, then keeps STATUS= current.
pub async fn ready_then_report(
    notifier: Arc<Notifier>,
    opened: Vec<oneshot::Receiver<()>>,
    health: Arc<Health>,
) {
    futures::future::join_all(opened).await;
    let mut last = summary(&health);
    notifier.notify(&format!("READY=1\nSTATUS={last}"));
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = summary(&health);
        if line != last {
            notifier.notify(&format!("STATUS={line}"));
            last = line;
        }
    }
}
