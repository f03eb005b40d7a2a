//! `vendgate simulate --profile NAME (--port PATH | --pty) [--address N]...`.

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info};

use super::{shutdown_signal, EXIT_CONFIG, EXIT_FATAL};
use crate::device::open_port;
use crate::profile::Profile;
use crate::sim::{pty_pair, Board, BoardEvent, BoardHandle, Script};

pub async fn simulate(
    name: &str,
    dir: &Path,
    port: Option<&Path>,
    pty: bool,
    addresses: Option<Vec<u16>>,
) -> i32 {
    let profile = match Profile::resolve(dir, name) {
        Ok(profile) => Arc::new(profile),
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let script = profile.simulator.clone();
    let (task, handle) = match (port, pty) {
        (Some(path), _) => match open_port(path, profile.serial.baud, &profile.serial) {
            Ok(port) => start(profile, script, port, addresses),
            Err(e) => {
                error!("{e}");
                return EXIT_FATAL;
            }
        },
        (None, _) => match pty_pair() {
            Ok((device_end, gateway_end, path)) => {
                // The path is the one line this command prints on stdout,
                // so scripts can capture it.
                println!("{path}");
                let (task, handle) = start(profile, script, device_end, addresses);
                // Keep the gateway's end open for the whole run.
                let task = tokio::spawn(async move {
                    let _keep = gateway_end;
                    task.await
                });
                (flatten(task), handle)
            }
            Err(e) => {
                error!("cannot create a pseudo-terminal: {e}");
                return EXIT_FATAL;
            }
        },
    };
    tokio::spawn(log_events(handle));
    tokio::select! {
        _ = shutdown_signal() => 0,
        result = task => match result {
            Ok(()) => 0,
            Err(e) => {
                error!("simulator stopped: {e}");
                EXIT_FATAL
            }
        },
    }
}

type BoardTask = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

fn start<P>(
    profile: Arc<Profile>,
    script: Script,
    port: P,
    addresses: Option<Vec<u16>>,
) -> (BoardTask, BoardHandle)
where
    P: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (board, handle) = Board::new(profile, script, port);
    let board = board.answering(addresses);
    (Box::pin(board.run()), handle)
}

fn flatten(task: tokio::task::JoinHandle<std::io::Result<()>>) -> BoardTask {
    Box::pin(async move { task.await.map_err(std::io::Error::other)? })
}

async fn log_events(mut handle: BoardHandle) {
    let _control = handle.control;
    while let Some(event) = handle.events.recv().await {
        match event {
            BoardEvent::PollAnswered { command: false, .. } => {}
            BoardEvent::PollUnanswered => tracing::debug!("POLL not answered"),
            other => info!(event = ?other, "simulator"),
        }
    }
}
