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
    /// Print a short-lived REST API token signed with a local P-384 private key (development:
    /// the key must be the one whose public half is `[oauth].jwt_key`).
    Token {
        /// The configuration file (for the issuer, organization and trusted key).
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The PKCS#8 P-384 private key PEM.
        #[arg(long, default_value = "config/dev-jwt.key")]
        key: PathBuf,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The user the token speaks for.
        #[arg(long, default_value = "local-dev")]
        user: String,
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
        Command::Token {
            config,
            key,
            ttl,
            user,
        } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match token(&config, &key, ttl, &user) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("token: {err}");
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
            match runtime.block_on(crate::server::start(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Mints a token for `user` valid `ttl` seconds, and checks the config would accept it.
fn token(config: &Config, key: &Path, ttl: u64, user: &str) -> Result<String, String> {
    let pem = std::fs::read_to_string(key)
        .map_err(|err| format!("cannot read the key {}: {err}", key.display()))?;
    let now = crate::clock::since_epoch().as_secs();
    let oauth = &config.oauth;
    let claims = serde_json::json!({
        "iss": oauth.jwt_issuer,
        "iat": now,
        "exp": now + ttl,
        "username": user,
        "scope": [format!("user:memberof:{}", oauth.organization)],
    });
    let token = crate::auth::mint_token(&pem, &claims)
        .map_err(|err| format!("{}: {err}", key.display()))?;
    let trusted = oauth
        .jwt_key
        .as_deref()
        .ok_or("the config has no [oauth].jwt_key to check the token against")?;
    crate::auth::JwtRules::new(trusted, &oauth.jwt_issuer, &oauth.organization)
        .map_err(|err| format!("[oauth].jwt_key: {err}"))?
        .verify(&token, now)
        .map_err(|err| {
            format!(
                "the config would refuse this token ({err}): is {} the private half of [oauth].jwt_key?",
                key.display()
            )
        })?;
    Ok(token)
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
