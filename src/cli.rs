//! The command line: `start`, `clean_cache` (alias `clean-cache`), `check-config`.
//!
//! Exit codes: 0 success, 1 a runtime failure (port taken, supervisor gave up), 2 a bad config.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::store::Store;

/// Cockpit: an ops control plane (REST API, Telegram bot, mail) over the AYS engine.
#[derive(Debug, Parser)]
#[command(name = "cockpit", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the cockpit server.
    Start {
        /// The configuration file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Empty the OAuth cache for the Telegram bot: every user must /start again.
    #[command(name = "clean_cache", alias = "clean-cache")]
    CleanCache {
        /// The configuration file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0, or list every problem and exit 2.
    CheckConfig {
        /// The configuration file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => match load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::CleanCache { config } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match Store::open(&config.storage.path).and_then(|s| s.clean_oauth_cache()) {
                Ok(report) => {
                    println!(
                        "removed {} authorized user(s) and {} pending login state(s)",
                        report.users, report.states
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("clean_cache failed: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Start { config } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("cannot start the tokio runtime: {err}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(crate::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Loads a config, printing every problem and returning exit code 2 when it is bad.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| {
        eprintln!("{}: {} problem(s):", path.display(), err.problems.len());
        for problem in &err.problems {
            eprintln!("  {problem}");
        }
        ExitCode::from(2)
    })
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
