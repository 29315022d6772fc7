//! The command line: `start`, `clean_cache` (alias `clean-cache`), `check-config`, `token`,
//! `tokens create | list | revoke`, `users list | revoke`.
//!
//! Exit codes: 0 success, 1 a runtime failure (port taken, data directory locked, no data,
//! supervisor gave up), 2 a bad config.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

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
        /// The configuration file [default: config.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Empty the OAuth cache for the Telegram bot: every user must /start again.
    #[command(name = "clean_cache", alias = "clean-cache")]
    CleanCache {
        /// The configuration file [default: config.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print a short-lived REST API token signed with a local P-384 private key (development:
    /// the key must be the one whose public half is `[oauth].jwt_key`).
    Token {
        /// The configuration file (for the issuer, organization and trusted key) [default:
        /// config.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
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
    /// API tokens issued by cockpit (works with or without a running server).
    Tokens {
        /// The configuration file [default: config.toml].
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// What to do with them.
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The people who hold access (works with or without a running server).
    Users {
        /// The configuration file [default: config.toml].
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// What to do with them.
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Validate a configuration file: exit 0, or list every problem and exit 2.
    CheckConfig {
        /// The configuration file [default: config.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print attachment INDEX (from 1, as in the `email` event's `attachments`) of a received
    /// mail's file, decoded (what a mail action runs as its attachment's `extract`).
    #[command(name = "mail-attachment")]
    MailAttachment {
        /// The mail's file (the event's `raw`).
        raw: PathBuf,
        /// The attachment's `index`.
        index: usize,
    },
}

/// `cockpit tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token and print it (the only time it is shown).
    Create {
        /// Whose token it is (`github:alice`, `itsyouonline:bob`).
        #[arg(long)]
        identity: String,
        /// `viewer`, `operator` or `admin`.
        #[arg(long)]
        role: String,
        /// Days until it stops working.
        #[arg(long, default_value_t = 90)]
        ttl_days: u64,
        /// What it is for.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List every token (never the tokens themselves).
    List,
    /// Revoke a token by its id: the next request with it is refused, also by a running server.
    Revoke {
        /// The token's id (`tok_…`).
        id: String,
    },
}

/// `cockpit users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List everyone who holds a Telegram login or an API token.
    List,
    /// Log someone out everywhere: their Telegram links and their tokens.
    Revoke {
        /// The identity (`itsyouonline:bob`).
        identity: String,
    },
}

/// Who runs the command line, for the audit trail: `cli:<login>`.
fn cli_identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("cli:{user}")
}

/// Runs `cockpit tokens ...` on an existing database.
fn tokens_command(config: &Config, command: TokensCommand) -> Result<(), String> {
    use crate::auth::access::{Principal, Role};
    use crate::auth::audit::{self, Door, Outcome};
    use crate::auth::tokens;
    let store = crate::server::open_existing_store(&config.storage).map_err(|e| e.to_string())?;
    let actor = cli_identity();
    match command {
        TokensCommand::Create {
            identity,
            role,
            ttl_days,
            name,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                format!("--role: expected viewer, operator or admin, got {role:?}")
            })?;
            // With `[access]`, the owner's role is what it gives the identity itself (groups
            // are only known at login); without it, the operator at the machine vouches.
            let owner = if config.access.is_some() {
                config
                    .access_rules()
                    .role(&Principal::new(identity.clone(), Vec::new()))
            } else {
                Some(Role::Admin)
            };
            let Some(owner) = owner else {
                let why = format!("{identity} has no role in [access]");
                let row = audit::record(
                    Door::Cli,
                    &actor,
                    crate::auth::access::Action::TokenCreate,
                    &identity,
                    &Outcome::Denied(why.clone()),
                );
                audit::write(&store, &row);
                return Err(why);
            };
            let (token, record) = tokens::issue(
                &store,
                Door::Cli,
                &actor,
                &identity,
                owner,
                &name,
                role,
                ttl_days,
            )
            .map_err(|e| e.to_string())?;
            eprintln!(
                "token {} for {} ({}), expires at {} ms; shown only this once:",
                record.id, record.identity, record.role, record.expires_ms
            );
            println!("{token}");
        }
        TokensCommand::List => {
            let list = store.list_tokens(None).map_err(|e| e.to_string())?;
            for t in list {
                println!(
                    "{}\t{}\t{}\t{}\texpires_ms={}",
                    t.id, t.identity, t.role, t.name, t.expires_ms
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let row = audit::record(
                Door::Cli,
                &actor,
                crate::auth::access::Action::TokenRevoke,
                &id,
                &Outcome::Ok,
            );
            if !store.revoke_token(&id, &row).map_err(|e| e.to_string())? {
                return Err(format!("no token {id}"));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Runs `cockpit users ...` on an existing database.
fn users_command(config: &Config, command: UsersCommand) -> Result<(), String> {
    use crate::auth::audit::{self, Door, Outcome};
    let store = crate::server::open_existing_store(&config.storage).map_err(|e| e.to_string())?;
    match command {
        UsersCommand::List => {
            for (identity, links, tokens) in store.list_users().map_err(|e| e.to_string())? {
                println!("{identity}\ttelegram_links={links}\ttokens={tokens}");
            }
        }
        UsersCommand::Revoke { identity } => {
            let row = audit::record(
                Door::Cli,
                &cli_identity(),
                crate::auth::access::Action::UserRevoke,
                &identity,
                &Outcome::Ok,
            );
            let revoked = store
                .revoke_user(&identity, &row)
                .map_err(|e| e.to_string())?;
            if !revoked.any() {
                return Err(format!("nobody of identity {identity} holds access"));
            }
            let jwts = if revoked.jwts {
                "; its JWTs issued before now are refused"
            } else {
                ""
            };
            println!(
                "logged out {identity}: {} Telegram link(s), {} token(s){jwts}",
                revoked.links, revoked.tokens
            );
        }
    }
    Ok(())
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Start { .. }) {
        init_logging(LogFormat::Text);
    }
    match cli.command {
        Command::MailAttachment { raw, index } => mail_attachment(&raw, index),
        Command::CheckConfig { config } => {
            let path = config_path(config.as_deref());
            match load(&path) {
                Ok(_) => {
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::CleanCache { config } => {
            let config = match load(&config_path(config.as_deref())) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let data = absolute(&config.storage.path);
            println!("data directory: {}", data.display());
            let cleaned = crate::server::open_existing_store(&config.storage).and_then(|store| {
                let report = store.clean_oauth_cache()?;
                let row = crate::auth::audit::record(
                    crate::auth::audit::Door::Cli,
                    &cli_identity(),
                    crate::auth::access::Action::CacheClean,
                    "oauth_cache",
                    &crate::auth::audit::Outcome::Ok,
                );
                crate::auth::audit::write(&store, &row);
                Ok(report)
            });
            match cleaned {
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
        Command::Tokens { config, command } => {
            let config = match load(&config_path(config.as_deref())) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match tokens_command(&config, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("tokens: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Users { config, command } => {
            let config = match load(&config_path(config.as_deref())) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match users_command(&config, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("users: {err}");
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
            let config = match load(&config_path(config.as_deref())) {
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
            let config = match load(&config_path(config.as_deref())) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logging(config.log.format);
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

/// Writes attachment `index` of the mail file `raw` to stdout.
fn mail_attachment(raw: &Path, index: usize) -> ExitCode {
    use std::io::Write as _;
    let data = match std::fs::read(raw) {
        Ok(data) => data,
        Err(err) => {
            eprintln!("cannot read the mail {}: {err}", raw.display());
            return ExitCode::from(1);
        }
    };
    let Some(contents) = crate::mail::message::attachment(&data, index) else {
        eprintln!("{} has no attachment {index}", raw.display());
        return ExitCode::from(1);
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&contents).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the attachment: {err}");
            ExitCode::from(1)
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

/// The file given with `-c`, else `config.toml` in the working directory.
fn config_path(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf)
}

/// The config file looked for without `-c`.
const DEFAULT_CONFIG: &str = "config.toml";

/// `path` as an absolute path, for messages (relative paths start from the working directory).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Loads a config, printing every problem and returning exit code 2 when it is bad.
fn load(path: &Path) -> Result<Config, ExitCode> {
    if path == Path::new(DEFAULT_CONFIG) && !path.exists() {
        eprintln!(
            "no config file: looked for {} (the default without -c); \
             to run locally: cockpit start -c config/local.toml (config/config.toml lists every key)",
            absolute(path).display()
        );
        return Err(ExitCode::from(2));
    }
    Config::load(path).map_err(|err| {
        eprintln!("{}: {} problem(s):", path.display(), err.problems.len());
        for problem in &err.problems {
            eprintln!("  {problem}");
        }
        ExitCode::from(2)
    })
}

/// The log directive that keeps PostgreSQL's statement parameters out of the log.
const NO_STATEMENT_PARAMETERS: &str = "tokio_postgres=info";

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), as text or as one
/// JSON object per line (`[log] format`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // PostgreSQL's client logs every statement's parameters at DEBUG (tokens' hashes, the
    // providers' tokens of Telegram users, the replicas' key): never below INFO, whatever
    // `RUST_LOG` asks for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(NO_STATEMENT_PARAMETERS.parse().expect("a valid directive"));
    let debug = filter
        .max_level_hint()
        .is_some_and(|level| level >= tracing::level_filters::LevelFilter::DEBUG);
    let mistakes = ClientMistakes { show: debug };
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(mistakes)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(mistakes)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Keeps the HTTP library's reports of a client's malformed request (a bad URI, a NUL byte in a
/// header) out of the log unless debug logging is on: they are the client's mistakes, logged by
/// warp at ERROR, and an ERROR line must mean something went wrong here.
struct ClientMistakes {
    /// Whether debug logging is on (then they are shown).
    show: bool,
}

impl<S> tracing_subscriber::layer::Filter<S> for ClientMistakes {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if self.show
            || *meta.level() != tracing::Level::ERROR
            || !meta.target().starts_with("warp::server")
        {
            return true;
        }
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}").starts_with("server connection error");
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        !message.0
    }
}
