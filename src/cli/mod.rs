//! The command line (DESIGN §2): a thin layer over the library; exit codes
//! are decided here.

mod check;
mod demo;
mod docs;
mod logging;
mod run;
mod simulate;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a config or profile error.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for any other fatal error.
pub const EXIT_FATAL: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "vendgate",
    version,
    about = "Serial-to-MQTT gateway for vending machines"
)]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The shells `completions` writes for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway until SIGTERM/SIGINT.
    Run {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Serve the health counters as Prometheus text at http://ADDR/metrics (off by default).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Record each device's serial line (both directions, with times) into DIR,
        /// as the capture files `vendgate replay` reads; rotated at 16 MiB, last 4 kept.
        #[arg(long, value_name = "DIR")]
        capture: Option<PathBuf>,
    },
    /// Validate the config and every profile it uses, without opening ports or the network.
    Check {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// No hardware, no broker: embedded broker + simulated machine + gateway, with the traffic shown.
    Demo {
        /// The embedded broker's port on 127.0.0.1.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Where the shipped profiles are.
        #[arg(long, default_value = "device-profiles")]
        profiles_dir: PathBuf,
    },
    /// Print shell completions (bash, zsh or fish) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff, every subcommand) on stdout.
    Man,
    /// Play the device side of a profile on a serial port or a new pseudo-terminal.
    Simulate {
        /// A profile name in --profiles-dir, or a path to a .yaml file.
        #[arg(long)]
        profile: String,
        /// Where the profiles are.
        #[arg(long, default_value = "device-profiles")]
        profiles_dir: PathBuf,
        /// An existing serial port to play on.
        #[arg(long, conflicts_with = "pty", required_unless_present = "pty")]
        port: Option<PathBuf>,
        /// Create a pseudo-terminal and print its path.
        #[arg(long)]
        pty: bool,
        /// `host_polls` profiles: answer requests to this address only
        /// (repeat for several devices on one simulated bus). Without it
        /// the simulator answers every address, as the only device on its line.
        #[arg(long = "address")]
        addresses: Vec<u16>,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // One thread runs every task (serial lines, MQTT sessions, routers):
    // the work is a few hundred small messages a second, and every hand-over
    // between worker threads of a multi-threaded runtime is a futex wake,
    // which was the largest share of the kernel CPU per event (measured
    // with benches/versus.rs, see the README). What may block runs
    // elsewhere: the store's writer thread (fsync), `spawn_blocking`, the
    // demo's broker.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vendgate: cannot start the async runtime: {e}");
            return EXIT_FATAL;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run {
                config,
                metrics_listen,
                capture,
            } => run::run(&config, metrics_listen, capture).await,
            Command::Check { config } => check::check(&config),
            Command::Demo { port, profiles_dir } => demo::demo(port, &profiles_dir).await,
            Command::Simulate {
                profile,
                profiles_dir,
                port,
                pty,
                addresses,
            } => {
                let addresses = (!addresses.is_empty()).then_some(addresses);
                simulate::simulate(&profile, &profiles_dir, port.as_deref(), pty, addresses).await
            }
            Command::Completions { shell } => docs::completions(shell),
            Command::Man => docs::man(),
        }
    })
}

/// Loads the config; on errors prints each (file:line:column) to stderr and
/// returns the exit code. Warnings go to `warn`.
fn load_config(path: &std::path::Path, warn: impl Fn(&str)) -> Result<crate::config::Config, i32> {
    match crate::config::Config::load(path) {
        Ok(config) => {
            config.warnings.iter().for_each(|w| warn(w));
            Ok(config)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Err(EXIT_CONFIG)
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
