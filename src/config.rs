//! The `config.toml` schema: every key of SPEC §2 with its default, and validation that reports
//! *every* problem with its key path (`[mail].port: expected an integer from 1 to 65535, got 70000`).
//!
//! The file is read into a raw [`toml::Table`] first and walked by hand, so that one bad value never
//! hides the next one and no secret value is ever echoed back in a message.

use crate::auth::access::{Access, AccessConfig, Action};
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A secret string (client secret, bot token, key material) that never prints its content.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (an HTTP request, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole configuration of one cockpit process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[oauth]`: ItsYou.online login for Telegram users and the JWT rules of the REST API.
    pub oauth: OAuthConfig,
    /// `[api.ays]`: the HTTP server (REST API, OAuth endpoints, health, metrics).
    pub api: ApiConfig,
    /// `[bot]`: the Telegram bot.
    pub bot: BotConfig,
    /// `[mail]`: the SMTP receiver.
    pub mail: MailConfig,
    /// `[storage]`: where durable state lives.
    pub storage: StorageConfig,
    /// `[mode]`: production switches.
    pub mode: ModeConfig,
    /// `[supervisor]`: restart policy of the actor tree.
    pub supervisor: SupervisorConfig,
    /// `[oauth_proxy]`: the central OAuth2 server; `None` when disabled.
    pub oauth_proxy: Option<OAuthProxyConfig>,
    /// `[[oauth_provider]]`: the login providers, used by the central OAuth2 server and by
    /// `[login]` (the bot's login).
    pub providers: Vec<ProviderConfig>,
    /// `[login]`: how people log in to the bot, how long a login lasts, how often membership is
    /// checked again.
    pub login: LoginConfig,
    /// `[ays]`: the engine's job execution.
    pub ays: AysConfig,
    /// `[debug]`: switches for operators testing their deployment; all off by default.
    pub debug: DebugConfig,
    /// `[log]`: how log lines are written.
    pub log: LogConfig,
    /// `[notify]`: failure notices sent to HTTP webhooks.
    pub notify: NotifyConfig,
    /// `[webhooks]`: events from outside (`POST /ays/event/{channel}`, `POST /webhooks/github`).
    pub webhooks: WebhooksConfig,
    /// `[access]`: who gets which role; `None` when the section is absent (members of
    /// `[oauth].organization` are admins then, as before roles existed).
    pub access: Option<AccessConfig>,
    /// `[audit]`: how long the audit trail is kept.
    pub audit: AuditConfig,
}

/// `[notify]`: where failure notices (a run ended `error` or `cancelled`) are POSTed, and how
/// hard cockpit tries.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `webhooks = [{url, secret}]`: each gets every failure notice, signed with its secret.
    pub webhooks: Vec<WebhookTarget>,
    /// How long one delivery may take before it counts as failed.
    pub timeout_ms: u64,
    /// The delay before the first retry; it doubles with each failed attempt.
    pub retry_min_ms: u64,
    /// The longest delay between two attempts.
    pub retry_max_ms: u64,
    /// Attempts after which a notice is given up.
    pub max_attempts: u32,
    /// Age after which an undelivered notice is given up.
    pub max_age_secs: u64,
    /// Undelivered notices kept at most; beyond it the oldest are dropped.
    pub max_outbox: u32,
}

/// One webhook of `[notify] webhooks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// Where notices are POSTed.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Cockpit-Signature-256`.
    pub secret: Secret,
}

/// `[webhooks]`: events from outside.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// The secret GitHub signs its deliveries with; `POST /webhooks/github` refuses every
    /// request while it is unset.
    pub github_secret: Option<Secret>,
    /// The largest body `POST /ays/event/{channel}` and `POST /webhooks/github` accept.
    pub max_body_bytes: u64,
}

impl Config {
    /// Who gets which role under this configuration (`[access]`, else the organization's
    /// members as admins).
    pub fn access_rules(&self) -> Access {
        Access::new(self.access.clone(), self.oauth.organization.clone())
    }
}

/// `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Days an audit row is kept (365 by default).
    pub keep_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { keep_days: 365 }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Human-readable lines (the default) or one JSON object per line for log shippers.
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO cockpit::http: request method=GET ...`.
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","fields":{...},"target":"..."}`.
    Json,
}

/// `[oauth]`.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The OAuth client id registered at ItsYou.online.
    pub client_id: String,
    /// The OAuth client secret; never logged.
    pub client_secret: Option<Secret>,
    /// Where ItsYou.online sends the browser back after login (`.../oauth/callback`).
    pub redirect_uri: String,
    /// The organization whose members may use this cockpit.
    pub organization: String,
    /// The P-384 public key (SPKI PEM) that verifies REST API JWTs.
    pub jwt_key: Option<String>,
    /// Base URL of ItsYou.online (or a compatible server).
    pub itsyouonlinehost: String,
    /// The `iss` that every accepted JWT must carry.
    pub jwt_issuer: String,
    /// How long a pending login state stays valid, in seconds.
    pub state_ttl_secs: u64,
}

/// `[api.ays]`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Whether the HTTP server runs at all.
    pub active: bool,
    /// The address to bind.
    pub host: String,
    /// The port to bind; 0 picks a free one (tests use this).
    pub port: u16,
    /// Open HTTP connections at most; at the cap the oldest is dropped for a new one.
    pub max_connections: usize,
    /// Open HTTP connections per peer IP at most; beyond it new ones are closed at once.
    pub max_connections_per_ip: usize,
    /// How long a connection may take to send a request head, first or next on keep-alive
    /// (so also how long an idle keep-alive connection stays open), in milliseconds.
    pub header_timeout_ms: u64,
    /// The load balancers and reverse proxies in front (addresses or networks): a request from
    /// one is counted against the client its `X-Forwarded-For` names, and one of them may hold
    /// any number of connections (within `max_connections`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// At most this many `[api.ays] trusted_proxies` entries.
pub const MAX_TRUSTED_PROXIES: usize = 64;

/// `[bot]`.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The Bot API token; never logged.
    pub token: Option<Secret>,
    /// Whether the bot runs (default: when a token is set).
    pub active: bool,
    /// Base URL of the Bot API (a local Bot API server or a test double).
    pub api_url: String,
    /// Whether sends are held to Telegram's rate limits (30 messages/s, 1/s per chat). Only a
    /// Bot API without those limits (a test double, a benchmark) is a reason to turn it off.
    pub throttle: bool,
    /// Webhook mode: the public HTTPS URL Telegram posts updates to (a load balancer in front
    /// of the replicas), ending in [`WEBHOOK_PATH`]. `None`: long polling.
    pub webhook_url: Option<url::Url>,
    /// With `webhook_url`: the secret Telegram sends with every update
    /// (`X-Telegram-Bot-Api-Secret-Token`); an update without it is refused.
    pub webhook_secret: Option<Secret>,
}

/// The route cockpit takes Telegram's webhook updates on (`[bot] webhook_url` ends with it; a
/// proxy in front may add a prefix).
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

/// The ports Telegram delivers webhooks to.
pub const WEBHOOK_PORTS: [u16; 4] = [443, 80, 88, 8443];

/// `[mail]`.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// Whether the SMTP receiver runs.
    pub active: bool,
    /// The address to bind.
    pub host: String,
    /// The port to bind (25 in production).
    pub port: u16,
    /// Accepted recipient domains; empty accepts any (never a relay: mail is only ever consumed).
    pub domains: Vec<String>,
    /// Mails larger than this get 552.
    pub max_message_bytes: u64,
    /// More recipients than this get 452.
    pub max_recipients: u32,
    /// Concurrent SMTP connections at most.
    pub max_connections: u32,
    /// Seconds of silence after which a client is disconnected.
    pub idle_timeout_secs: u64,
    /// Concurrent SMTP connections from one IP address at most.
    pub max_connections_per_peer: u32,
    /// Seconds a whole `DATA` transfer may take, however steadily the client trickles.
    pub data_timeout_secs: u64,
    /// Attachments listed in a mail's event per mail at most (the rest are only counted).
    pub max_attachments: u32,
    /// Days a mail's files are kept once its event is processed.
    pub keep_days: u32,
    /// Work waiting for the engine (runs not started, events not yet turned into runs) beyond
    /// which new mail gets `452` at `RCPT` and `DATA`.
    pub max_queued_runs: u64,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data directory: the database file and the AYS repositories (relative to the working
    /// directory when not absolute).
    pub path: PathBuf,
    /// `postgres://user:password@host:port/database`: keep the durable state in PostgreSQL
    /// instead of `<path>/cockpit.db` (a secret: it carries the password).
    pub url: Option<Secret>,
    /// The PostgreSQL schema cockpit's tables live in (created if missing); `None`: the
    /// database's default (`public`).
    pub schema: Option<String>,
    /// With `url`: the URL the other replicas reach this server's HTTP door at
    /// (`http://host:port`), to forward requests to it while it holds the store. `None`:
    /// `http://<[api.ays] host>:<port>`, the host name when it listens on every address.
    pub replica_url: Option<url::Url>,
}

/// `[mode]`.
#[derive(Debug, Clone)]
pub struct ModeConfig {
    /// `false` disables JWT checks on the REST API (development only; logged loudly).
    pub prod: bool,
}

/// `[supervisor]`: how failing actors are restarted.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Restarts of one child allowed inside `window_secs` before the supervisor gives up.
    pub max_restarts: u32,
    /// The window over which restarts are counted.
    pub window_secs: u64,
    /// First restart delay; doubles with each restart inside the window.
    pub backoff_initial_ms: u64,
    /// Upper bound of the restart delay.
    pub backoff_max_ms: u64,
}

/// `[oauth_proxy]`; its providers are the top-level `[[oauth_provider]]` list.
#[derive(Debug, Clone)]
pub struct OAuthProxyConfig {
    /// The public base URL of the proxy (`https://host/oauth`).
    pub url: String,
    /// Path of the Ed25519 signing key (generated on first start if missing).
    pub signing_key: PathBuf,
    /// Redirect URLs apps may ask for, matched exactly.
    pub allowed_redirects: Vec<String>,
}

impl OAuthProxyConfig {
    /// The web console's login callback (`https://host/console/callback`), derived from `url`
    /// when it ends in `/oauth`: the console is an app of this server on the same host, and the
    /// proxy allows this one redirect besides `allowed_redirects`.
    pub fn console_callback(&self) -> Option<String> {
        let base = self.url.trim_end_matches('/').strip_suffix("/oauth")?;
        Some(format!("{base}/console/callback"))
    }

    /// Whether the proxy may send a login back to `url`: exactly an allowed redirect, or the
    /// console's callback.
    pub fn redirect_allowed(&self, url: &str) -> bool {
        // Exact string equality, as `oauth::token::redirect_allowed` (the base imports no core).
        self.allowed_redirects.iter().any(|a| a == url)
            || self.console_callback().is_some_and(|c| c == url)
    }
}

/// `[login]`.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// The `[[oauth_provider]]` the bot logs people in with; `None`: ItsYou.online through
    /// `[oauth]`, as before providers existed.
    pub provider: Option<String>,
    /// Where the provider sends the browser back: cockpit's public `/oauth/callback`. Defaults
    /// to `[oauth].redirect_uri`.
    pub redirect_uri: String,
    /// Groups whose members may log in (any one of them). Defaults to `[oauth].organization`;
    /// empty: anyone the provider knows may log in (roles decide what they may do).
    pub allowed_groups: Vec<String>,
    /// Days a Telegram login lasts before the user must log in again.
    pub session_days: u32,
    /// Hours between two membership checks with the provider (0: at every command).
    pub recheck_hours: u32,
}

/// What kind of provider a `[[oauth_provider]]` is: how its user is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// GitHub: identity `github:<login>`, groups its organizations and `org/team` slugs.
    Github,
    /// OpenID Connect: endpoints from discovery, a verified ID token.
    Oidc,
    /// Plain OAuth2 with a user info endpoint.
    OAuth2,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1, OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with the form-encoded client id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// One `[[oauth_provider]]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The provider's name in URLs (`github`) and identities (`<name>:<user>` for OIDC and OAuth2).
    pub name: String,
    /// What kind of provider it is.
    pub kind: ProviderKind,
    /// Client id at the provider.
    pub client_id: String,
    /// Client secret at the provider; never logged.
    pub client_secret: Secret,
    /// How the client secret is sent to the token endpoint.
    pub token_auth: TokenAuth,
    /// The provider's authorize endpoint (empty for OIDC: from discovery).
    pub authorize_url: String,
    /// The provider's token endpoint (empty for OIDC: from discovery).
    pub access_token_url: String,
    /// The provider's user info endpoint (empty for OIDC: from discovery).
    pub user_info_url: String,
    /// The OIDC issuer (`kind = "oidc"`): discovery at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The GitHub REST API's base URL (`kind = "github"`).
    pub api_url: String,
    /// The claim (OIDC) or user info field (OAuth2) naming the user in the identity.
    pub identity_claim: String,
    /// The claim or user info field that lists the user's groups.
    pub groups_claim: String,
    /// Scope requested from the provider.
    pub scope: String,
    /// Which user info fields are passed on to apps.
    pub user_info_fields: Vec<String>,
}

/// `[ays]`.
#[derive(Debug, Clone)]
pub struct AysConfig {
    /// Jobs running at once, across all repositories.
    pub workers: usize,
    /// Seconds after which a job's process is killed and the job is `error`.
    pub job_timeout_secs: u64,
    /// Whether a recurring slot that passed while cockpit was down runs once at start (true) or
    /// is skipped until the next slot (false).
    pub run_missed: bool,
    /// Days ended runs (with their jobs and logs) are kept before they are pruned.
    pub keep_days: u32,
}

/// `[debug]`.
#[derive(Debug, Clone, Default)]
pub struct DebugConfig {
    /// Enables `POST /debug/crash/{actor}` and the bot's `/crash` so operators (and tests) can see
    /// the supervisor restart a failing actor. Never enable it on a public server.
    pub fault_injection: bool,
    /// DEVELOPMENT ONLY: the web console's login page offers a button that logs in as
    /// `dev:local`, an admin, with no provider at all (as `[mode].prod = false` does). Never
    /// enable it on a server anyone else can reach.
    pub console_dev_login: bool,
}

/// One thing wrong with a config file, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `[mail].port`, or the file itself.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// All the problems, in file order as far as possible.
    pub problems: Vec<Problem>,
}

impl Config {
    /// Reads and validates a config file, including the files and directories it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            problems: vec![Problem {
                path: path.display().to_string(),
                message: format!("cannot read the config file: {err}"),
            }],
        })?;
        let named = |mut err: ConfigError| {
            for problem in &mut err.problems {
                if problem.path.is_empty() {
                    problem.path = path.display().to_string();
                }
            }
            err
        };
        let config = Config::parse(&text).map_err(named)?;
        let problems = config.file_problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Paths in the config that exist but are the wrong kind of thing (a file where the data
    /// directory should be...). Missing ones are fine: cockpit creates them.
    pub fn file_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let storage = &self.storage.path;
        if storage.exists() && !storage.is_dir() {
            problems.push(Problem {
                path: "[storage].path".into(),
                message: format!("{} exists and is not a directory", storage.display()),
            });
        }
        if let Some(proxy) = &self.oauth_proxy {
            let key = &proxy.signing_key;
            if key.exists() && !key.is_file() {
                problems.push(Problem {
                    path: "[oauth_proxy].signing_key".into(),
                    message: format!("{} exists and is not a file", key.display()),
                });
            }
            if let Some(parent) = key.parent().filter(|p| !p.as_os_str().is_empty())
                && parent.exists()
                && !parent.is_dir()
            {
                problems.push(Problem {
                    path: "[oauth_proxy].signing_key".into(),
                    message: format!("{} is not a directory", parent.display()),
                });
            }
        }
        problems
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table: Table = text.parse().map_err(|err: toml::de::Error| ConfigError {
            problems: vec![syntax_problem(text, &err)],
        })?;
        let mut r = Reader::default();
        let config = r.config(&table);
        if r.problems.is_empty() {
            Ok(config)
        } else {
            // One problem per key: the first found says what is wrong with it.
            let mut seen = std::collections::HashSet::new();
            let mut problems = r.problems;
            problems.retain(|p| seen.insert(p.path.clone()));
            Err(ConfigError { problems })
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.storage.path.join("cockpit.db")
    }
}

/// Keys whose values are secrets: a syntax error on their line shows the key, not the value.
const SECRET_KEYS: &[&str] = &["client_secret", "token", "jwt_key"];

/// A TOML syntax error with its place: line, column, the key or text at fault, and the line
/// itself (with the value hidden when the line sets a secret).
fn syntax_problem(text: &str, err: &toml::de::Error) -> Problem {
    let mut message = err.message().trim_end().to_string();
    if message == "duplicate key" {
        message.push_str(" (a key or table may appear only once in a file: merge the two)");
    }
    let Some(span) = err.span() else {
        return Problem {
            path: String::new(),
            message: format!("not valid TOML: {message}"),
        };
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let shown = match line_text.split_once('=') {
        Some((key, _)) if SECRET_KEYS.contains(&key.trim()) => format!("{} = ***", key.trim_end()),
        _ => line_text.to_string(),
    };
    let at = text
        .get(span.clone())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 80 && !s.contains('\n'))
        .filter(|s| {
            !line_text
                .split_once('=')
                .is_some_and(|(key, value)| SECRET_KEYS.contains(&key.trim()) && value.contains(s))
        })
        .map(|s| format!(" (at `{s}`)"))
        .unwrap_or_default();
    Problem {
        path: String::new(),
        message: format!(
            "not valid TOML at line {line}, column {column}: {message}{at}\n    {line} | {shown}"
        ),
    }
}

/// Walks a raw table, collecting problems instead of stopping at the first one.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

/// One table being read, with its path for messages.
struct Section<'a> {
    name: String,
    table: Option<&'a Table>,
}

impl Reader {
    fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    fn section<'a>(&mut self, root: &'a Table, name: &str, keys: &[&str]) -> Section<'a> {
        let mut table = Some(root);
        for key in name.split('.') {
            table = match table.and_then(|t| t.get(key)) {
                None => None,
                Some(Value::Table(t)) => Some(t),
                Some(other) => {
                    self.problem(
                        format!("[{name}]"),
                        format!("expected a table, got {}", kind(other)),
                    );
                    None
                }
            };
        }
        if let Some(t) = table {
            for key in t.keys() {
                if !keys.contains(&key.as_str()) {
                    self.problem(
                        format!("[{name}].{key}"),
                        format!("unknown key (known keys: {})", keys.join(", ")),
                    );
                }
            }
        }
        Section {
            name: name.to_string(),
            table,
        }
    }

    fn get<'a>(&self, s: &Section<'a>, key: &str) -> Option<&'a Value> {
        s.table.and_then(|t| t.get(key))
    }

    fn string(&mut self, s: &Section, key: &str) -> Option<String> {
        match self.get(s, key) {
            None => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(other) => {
                self.problem(
                    format!("[{}].{key}", s.name),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn string_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        self.string(s, key).unwrap_or_else(|| default.to_string())
    }

    /// A string that, when given, must not be empty (a name, a host, a path).
    fn name_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        match self.string(s, key) {
            Some(v) if v.trim().is_empty() => {
                let hint = if default.is_empty() {
                    String::new()
                } else {
                    format!(" (leave the key out for the default {default:?})")
                };
                self.problem(
                    format!("[{}].{key}", s.name),
                    format!("must not be empty{hint}"),
                );
                default.to_string()
            }
            Some(v) => v,
            None => default.to_string(),
        }
    }

    fn bool(&mut self, s: &Section, key: &str) -> Option<bool> {
        match self.get(s, key) {
            None => None,
            Some(Value::Boolean(v)) => Some(*v),
            Some(other) => {
                self.problem(
                    format!("[{}].{key}", s.name),
                    format!("expected true or false, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn int(&mut self, s: &Section, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let path = format!("[{}].{key}", s.name);
        let expected = format!("expected an integer from {min} to {max}");
        match self.get(s, key) {
            None => default,
            Some(Value::Integer(v)) if (min..=max).contains(v) => *v,
            Some(Value::Integer(v)) => {
                self.problem(path, format!("{expected}, got {v}"));
                default
            }
            Some(other) => {
                self.problem(path, format!("{expected}, got {}", kind(other)));
                default
            }
        }
    }

    fn strings(&mut self, s: &Section, key: &str) -> Vec<String> {
        let path = format!("[{}].{key}", s.name);
        match self.get(s, key) {
            None => Vec::new(),
            Some(Value::String(v)) => vec![v.clone()],
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(v) => out.push(v.clone()),
                        other => self.problem(
                            format!("{path}[{i}]"),
                            format!("expected a string, got {}", kind(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    path,
                    format!("expected a list of strings, got {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    fn url(&mut self, s: &Section, key: &str, value: String) -> String {
        self.check_url(format!("[{}].{key}", s.name), &value);
        value.trim_end_matches('/').to_string()
    }

    /// Checks that `value` parses as an absolute http(s) URL with a host.
    fn check_url(&mut self, path: String, value: &str) {
        match url::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) if !matches!(url.scheme(), "http" | "https") => self.problem(
                path,
                format!(
                    "expected an http:// or https:// URL, got {value:?} (scheme {:?})",
                    url.scheme()
                ),
            ),
            Ok(_) => self.problem(path, format!("expected a URL with a host, got {value:?}")),
            Err(err) => self.problem(
                path,
                format!("expected an http:// or https:// URL, got {value:?} ({err})"),
            ),
        }
    }

    fn config(&mut self, root: &Table) -> Config {
        const TOP: &[&str] = &[
            "oauth",
            "api",
            "bot",
            "mail",
            "storage",
            "mode",
            "supervisor",
            "oauth_proxy",
            "oauth_provider",
            "login",
            "ays",
            "debug",
            "log",
            "notify",
            "webhooks",
            "access",
            "audit",
        ];
        for key in root.keys() {
            if !TOP.contains(&key.as_str()) {
                self.problem(
                    format!("[{key}]"),
                    format!("unknown section (known sections: {})", TOP.join(", ")),
                );
            }
        }
        let oauth = self.oauth(root);
        let api = self.api(root);
        let bot = self.bot(root);
        let mail = self.mail(root);
        let s = self.section(root, "storage", &["path", "url", "schema", "replica_url"]);
        let storage = StorageConfig {
            path: PathBuf::from(self.name_or(&s, "path", "data")),
            url: self.string(&s, "url").and_then(|url| {
                let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
                if !postgres {
                    // The value is not echoed: it may carry a password.
                    self.problem(
                        "[storage].url".into(),
                        "must be a PostgreSQL URL, postgres://user:password@host:port/database \
                         (leave it out for the SQLite file in [storage].path)",
                    );
                }
                postgres.then(|| Secret::new(url))
            }),
            schema: self.string(&s, "schema").and_then(|schema| {
                let mut chars = schema.chars();
                let identifier = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && schema.len() <= 63;
                if !identifier {
                    self.problem(
                        "[storage].schema".into(),
                        format!(
                            "{schema:?} is not a plain PostgreSQL name (a-z, 0-9, _, not starting \
                             with a digit, at most 63)"
                        ),
                    );
                }
                identifier.then_some(schema)
            }),
            replica_url: self.string(&s, "replica_url").and_then(|text| {
                let parsed = url::Url::parse(&text).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                        && u.username().is_empty()
                });
                if parsed.is_none() {
                    self.problem(
                        "[storage].replica_url".into(),
                        format!(
                            "{text:?} is not a base URL like http://10.0.0.5:5000 (http or https, \
                             a host, no path, no credentials)"
                        ),
                    );
                }
                parsed
            }),
        };
        if storage.replica_url.is_some() && storage.url.is_none() {
            self.problem(
                "[storage].replica_url".into(),
                "only applies with [storage].url (PostgreSQL replicas)",
            );
        }
        if storage.schema.is_some() && storage.url.is_none() {
            self.problem(
                "[storage].schema".into(),
                "only applies with [storage].url (PostgreSQL)",
            );
        }
        let s = self.section(root, "mode", &["prod"]);
        let mode = ModeConfig {
            prod: self.bool(&s, "prod").unwrap_or(true),
        };
        let supervisor = self.supervisor(root);
        let providers = self.providers(root);
        let oauth_proxy = self.oauth_proxy(root);
        let login = self.login(root, &oauth, &providers);
        let s = self.section(
            root,
            "ays",
            &["workers", "job_timeout_secs", "run_missed", "keep_days"],
        );
        let ays = AysConfig {
            workers: self.int(&s, "workers", 1, 1024, 8) as usize,
            job_timeout_secs: self.int(&s, "job_timeout_secs", 1, 86_400, 600) as u64,
            run_missed: self.bool(&s, "run_missed").unwrap_or(true),
            keep_days: self.int(&s, "keep_days", 1, 36_500, 30) as u32,
        };
        let s = self.section(root, "debug", &["fault_injection", "console_dev_login"]);
        let debug = DebugConfig {
            fault_injection: self.bool(&s, "fault_injection").unwrap_or(false),
            console_dev_login: self.bool(&s, "console_dev_login").unwrap_or(false),
        };
        let s = self.section(root, "log", &["format"]);
        let format = match self.string(&s, "format").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "[log].format".into(),
                    format!("expected \"text\" or \"json\", got {other:?}"),
                );
                LogFormat::Text
            }
        };
        let log = LogConfig { format };
        let notify = self.notify(root);
        let s = self.section(root, "webhooks", &["github_secret", "max_body_bytes"]);
        let webhooks = WebhooksConfig {
            github_secret: self
                .string(&s, "github_secret")
                .filter(|v| !v.is_empty())
                .map(Secret),
            max_body_bytes: self.int(&s, "max_body_bytes", 1024, 25 << 20, 1 << 20) as u64,
        };
        let access = self.access(root);
        let s = self.section(root, "audit", &["keep_days"]);
        let audit = AuditConfig {
            keep_days: self.int(&s, "keep_days", 1, 36_500, 365) as u64,
        };
        if let Some(key) = &oauth.jwt_key
            && key.contains("-----BEGIN PUBLIC KEY-----")
            && let Err(err) =
                crate::auth::JwtRules::new(key, &oauth.jwt_issuer, &oauth.organization)
        {
            self.problem("[oauth].jwt_key".into(), err.to_string());
        }
        if bot.active && login.provider.is_none() {
            // The bot logs users in through ItsYou.online: without these, /start cannot work.
            let needed = [
                ("client_id", oauth.client_id.is_empty()),
                ("redirect_uri", oauth.redirect_uri.is_empty()),
                ("organization", oauth.organization.is_empty()),
                ("client_secret", oauth.client_secret.is_none()),
            ];
            for (key, missing) in needed {
                if missing {
                    self.problem(
                        format!("[oauth].{key}"),
                        "required when [bot].active is true (the bot logs users in with it)",
                    );
                }
            }
        }
        if api.active && mode.prod && oauth.jwt_key.is_none() {
            self.problem(
                "[oauth].jwt_key".into(),
                "required while [api.ays] is active and [mode].prod is true \
                 (the REST API verifies JWTs with it)",
            );
        }
        Config {
            oauth,
            api,
            bot,
            mail,
            storage,
            mode,
            supervisor,
            oauth_proxy,
            providers,
            login,
            ays,
            debug,
            log,
            notify,
            webhooks,
            access,
            audit,
        }
    }

    fn notify(&mut self, root: &Table) -> NotifyConfig {
        let s = self.section(
            root,
            "notify",
            &[
                "webhooks",
                "timeout_ms",
                "retry_min_ms",
                "retry_max_ms",
                "max_attempts",
                "max_age_secs",
                "max_outbox",
            ],
        );
        let mut webhooks = Vec::new();
        match self.get(&s, "webhooks") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("[notify].webhooks[{i}]");
                    let Value::Table(table) = item else {
                        self.problem(
                            path,
                            format!("expected a table {{url, secret}}, got {}", kind(item)),
                        );
                        continue;
                    };
                    for key in table
                        .keys()
                        .filter(|k| !["url", "secret"].contains(&k.as_str()))
                    {
                        self.problem(
                            format!("{path}.{key}"),
                            "unknown key (known keys: url, secret)",
                        );
                    }
                    let url = match table.get("url") {
                        Some(Value::String(url)) => {
                            self.check_url(format!("{path}.url"), url);
                            url.clone()
                        }
                        Some(other) => {
                            self.problem(
                                format!("{path}.url"),
                                format!("expected a string, got {}", kind(other)),
                            );
                            continue;
                        }
                        None => {
                            self.problem(format!("{path}.url"), "required");
                            continue;
                        }
                    };
                    let secret = match table.get("secret") {
                        Some(Value::String(secret)) if !secret.is_empty() => Secret(secret.clone()),
                        Some(Value::String(_)) => {
                            self.problem(format!("{path}.secret"), "must not be empty");
                            continue;
                        }
                        Some(other) => {
                            self.problem(
                                format!("{path}.secret"),
                                format!("expected a string, got {}", kind(other)),
                            );
                            continue;
                        }
                        None => {
                            self.problem(
                                format!("{path}.secret"),
                                "required (the receiver checks the signature with it)",
                            );
                            continue;
                        }
                    };
                    if webhooks.iter().any(|w: &WebhookTarget| w.url == url) {
                        self.problem(format!("{path}.url"), format!("duplicate webhook {url:?}"));
                        continue;
                    }
                    webhooks.push(WebhookTarget { url, secret });
                }
            }
            Some(other) => self.problem(
                "[notify].webhooks".into(),
                format!(
                    "expected an array of tables {{url, secret}}, got {}",
                    kind(other)
                ),
            ),
        }
        let retry_min_ms = self.int(&s, "retry_min_ms", 1, 3_600_000, 1_000) as u64;
        let retry_max_ms = self.int(&s, "retry_max_ms", 1, 86_400_000, 600_000) as u64;
        if retry_max_ms < retry_min_ms {
            self.problem(
                "[notify].retry_max_ms".into(),
                format!("must be at least retry_min_ms ({retry_min_ms})"),
            );
        }
        NotifyConfig {
            webhooks,
            timeout_ms: self.int(&s, "timeout_ms", 1, 600_000, 10_000) as u64,
            retry_min_ms,
            retry_max_ms,
            max_attempts: self.int(&s, "max_attempts", 1, 1000, 12) as u32,
            max_age_secs: self.int(&s, "max_age_secs", 1, 30 * 86_400, 86_400) as u64,
            max_outbox: self.int(&s, "max_outbox", 1, 1_000_000, 10_000) as u32,
        }
    }

    fn login(
        &mut self,
        root: &Table,
        oauth: &OAuthConfig,
        providers: &[ProviderConfig],
    ) -> LoginConfig {
        let s = self.section(
            root,
            "login",
            &[
                "provider",
                "redirect_uri",
                "allowed_groups",
                "session_days",
                "recheck_hours",
            ],
        );
        let provider = self.string(&s, "provider");
        if let Some(name) = &provider
            && !providers.iter().any(|p| &p.name == name)
        {
            let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            self.problem(
                "[login].provider".into(),
                format!(
                    "no [[oauth_provider]] is named {name:?} (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        let redirect_uri = match self.string(&s, "redirect_uri") {
            Some(uri) => {
                self.check_url("[login].redirect_uri".into(), &uri);
                uri
            }
            None => oauth.redirect_uri.clone(),
        };
        if provider.is_some() && redirect_uri.is_empty() {
            self.problem(
                "[login].redirect_uri".into(),
                "required with [login].provider (cockpit's public /oauth/callback URL), \
                 unless [oauth].redirect_uri is set",
            );
        }
        let allowed_groups = match self.get(&s, "allowed_groups") {
            Some(_) => self.strings(&s, "allowed_groups"),
            None if oauth.organization.is_empty() => Vec::new(),
            None => vec![oauth.organization.clone()],
        };
        LoginConfig {
            provider,
            redirect_uri,
            allowed_groups,
            session_days: self.int(&s, "session_days", 1, 3650, 30) as u32,
            recheck_hours: self.int(&s, "recheck_hours", 0, 8760, 24) as u32,
        }
    }

    fn access(&mut self, root: &Table) -> Option<AccessConfig> {
        let s = self.section(
            root,
            "access",
            &["viewer", "operator", "admin", "two_person"],
        );
        s.table?;
        let mut access = AccessConfig::default();
        for (key, list) in [
            ("viewer", &mut access.viewer),
            ("operator", &mut access.operator),
            ("admin", &mut access.admin),
        ] {
            for (i, entry) in self.strings(&s, key).into_iter().enumerate() {
                let valid = entry
                    .split_once(':')
                    .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty());
                if valid {
                    list.push(entry);
                } else {
                    self.problem(
                        format!("[access].{key}[{i}]"),
                        format!(
                            "expected an identity (\"github:alice\", \"itsyouonline:bob\") or a group (\"group:myorg\", \"group:myorg/ops\"), got {entry:?}"
                        ),
                    );
                }
            }
        }
        for (i, action) in self.strings(&s, "two_person").into_iter().enumerate() {
            if Action::parse(&action).is_some_and(|a| a.holdable()) {
                access.two_person.push(action);
            } else {
                self.problem(
                    format!("[access].two_person[{i}]"),
                    format!(
                        "expected repo.delete, blueprint.delete or service.delete, got {action:?}"
                    ),
                );
            }
        }
        Some(access)
    }

    fn oauth(&mut self, root: &Table) -> OAuthConfig {
        let s = self.section(
            root,
            "oauth",
            &[
                "client_id",
                "client_secret",
                "redirect_uri",
                "organization",
                "jwt_key",
                "itsyouonlinehost",
                "jwt_issuer",
                "state_ttl_secs",
            ],
        );
        let host = self.string_or(&s, "itsyouonlinehost", "https://itsyou.online");
        let jwt_key = self.string(&s, "jwt_key").map(|k| k.replace("\\n", "\n"));
        if let Some(key) = &jwt_key
            && !(key.contains("-----BEGIN PUBLIC KEY-----")
                && key.contains("-----END PUBLIC KEY-----"))
        {
            self.problem(
                "[oauth].jwt_key".into(),
                "expected a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)",
            );
        }
        let redirect_uri = match self.string(&s, "redirect_uri") {
            Some(uri) => {
                self.check_url("[oauth].redirect_uri".into(), &uri);
                uri
            }
            None => String::new(),
        };
        OAuthConfig {
            client_id: self.name_or(&s, "client_id", ""),
            client_secret: self.string(&s, "client_secret").map(Secret),
            redirect_uri,
            organization: self.name_or(&s, "organization", ""),
            jwt_key,
            itsyouonlinehost: self.url(&s, "itsyouonlinehost", host),
            jwt_issuer: self.name_or(&s, "jwt_issuer", "itsyouonline"),
            state_ttl_secs: self.int(&s, "state_ttl_secs", 10, 86_400, 600) as u64,
        }
    }

    fn api(&mut self, root: &Table) -> ApiConfig {
        let s = self.section(
            root,
            "api.ays",
            &[
                "active",
                "host",
                "port",
                "max_connections",
                "max_connections_per_ip",
                "header_timeout_ms",
                "trusted_proxies",
            ],
        );
        let mut trusted_proxies = Vec::new();
        for (i, entry) in self.strings(&s, "trusted_proxies").iter().enumerate() {
            let parsed = entry.trim().parse::<ipnet::IpNet>().or_else(|_| {
                entry
                    .trim()
                    .parse::<std::net::IpAddr>()
                    .map(ipnet::IpNet::from)
            });
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.problem(
                    format!("[api.ays].trusted_proxies[{i}]"),
                    format!("{entry:?} is not an IP address or network (10.0.0.5, 10.0.0.0/24)"),
                ),
            }
        }
        if trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            self.problem(
                "[api.ays].trusted_proxies".into(),
                format!("at most {MAX_TRUSTED_PROXIES} entries (use networks)"),
            );
        }
        if let Some(Value::Table(api)) = root.get("api") {
            for key in api.keys().filter(|k| *k != "ays") {
                self.problem(format!("[api].{key}"), "unknown key (known keys: ays)");
            }
        }
        ApiConfig {
            active: self.bool(&s, "active").unwrap_or(true),
            host: self.name_or(&s, "host", "127.0.0.1"),
            port: self.int(&s, "port", 0, 65535, 5000) as u16,
            max_connections: self.int(&s, "max_connections", 1, 1_000_000, 1024) as usize,
            max_connections_per_ip: self.int(&s, "max_connections_per_ip", 1, 1_000_000, 64)
                as usize,
            header_timeout_ms: self.int(&s, "header_timeout_ms", 1, 3_600_000, 10_000) as u64,
            trusted_proxies,
        }
    }

    fn bot(&mut self, root: &Table) -> BotConfig {
        let s = self.section(
            root,
            "bot",
            &[
                "token",
                "active",
                "api_url",
                "throttle",
                "webhook_url",
                "webhook_secret",
            ],
        );
        let token = self
            .string(&s, "token")
            .filter(|t| !t.is_empty())
            .map(Secret);
        let active = self.bool(&s, "active").unwrap_or(token.is_some());
        if active && token.is_none() {
            self.problem("[bot].token".into(), "required when [bot].active is true");
        }
        let api_url = self.string_or(&s, "api_url", "https://api.telegram.org");
        let webhook_url = self.string(&s, "webhook_url").and_then(|text| {
            let parsed = url::Url::parse(&text).ok().filter(|u| {
                u.scheme() == "https"
                    && u.host_str().is_some()
                    && u.port_or_known_default()
                        .is_some_and(|p| WEBHOOK_PORTS.contains(&p))
                    && u.path().ends_with(WEBHOOK_PATH)
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
            });
            if parsed.is_none() {
                self.problem(
                    "[bot].webhook_url".into(),
                    format!(
                        "{text:?} is not a webhook URL Telegram accepts that reaches cockpit: \
                         https, port 443, 80, 88 or 8443, a path ending in {WEBHOOK_PATH}, no query"
                    ),
                );
            }
            parsed
        });
        let webhook_secret = self.string(&s, "webhook_secret").and_then(|secret| {
            let fine = (1..=256).contains(&secret.len())
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !fine {
                // Not echoed: it is a secret.
                self.problem(
                    "[bot].webhook_secret".into(),
                    "must be 1 to 256 of A-Z a-z 0-9 _ - (Telegram's rule for secret_token)",
                );
            }
            fine.then_some(Secret(secret))
        });
        if webhook_url.is_some() && webhook_secret.is_none() {
            self.problem(
                "[bot].webhook_secret".into(),
                "required with [bot].webhook_url: updates are checked against it",
            );
        }
        BotConfig {
            token,
            active,
            api_url: self.url(&s, "api_url", api_url),
            throttle: self.bool(&s, "throttle").unwrap_or(true),
            webhook_url,
            webhook_secret,
        }
    }

    fn mail(&mut self, root: &Table) -> MailConfig {
        let s = self.section(
            root,
            "mail",
            &[
                "active",
                "host",
                "port",
                "domain",
                "max_message_bytes",
                "max_recipients",
                "max_connections",
                "idle_timeout_secs",
                "max_connections_per_peer",
                "data_timeout_secs",
                "max_attachments",
                "keep_days",
                "max_queued_runs",
            ],
        );
        let present = s.table.is_some();
        MailConfig {
            active: self.bool(&s, "active").unwrap_or(present),
            host: self.name_or(&s, "host", "127.0.0.1"),
            port: self.int(&s, "port", 0, 65535, 2525) as u16,
            domains: self.strings(&s, "domain"),
            max_message_bytes: self.int(&s, "max_message_bytes", 1024, 1 << 30, 10 << 20) as u64,
            max_recipients: self.int(&s, "max_recipients", 1, 10_000, 100) as u32,
            max_connections: self.int(&s, "max_connections", 1, 100_000, 1024) as u32,
            idle_timeout_secs: self.int(&s, "idle_timeout_secs", 1, 3600, 300) as u64,
            max_connections_per_peer: self.int(&s, "max_connections_per_peer", 1, 100_000, 50)
                as u32,
            data_timeout_secs: self.int(&s, "data_timeout_secs", 1, 86_400, 600) as u64,
            max_attachments: self.int(&s, "max_attachments", 0, 10_000, 32) as u32,
            keep_days: self.int(&s, "keep_days", 1, 36_500, 7) as u32,
            max_queued_runs: self.int(&s, "max_queued_runs", 1, 10_000_000, 10_000) as u64,
        }
    }

    fn supervisor(&mut self, root: &Table) -> SupervisorConfig {
        let s = self.section(
            root,
            "supervisor",
            &[
                "max_restarts",
                "window_secs",
                "backoff_initial_ms",
                "backoff_max_ms",
            ],
        );
        SupervisorConfig {
            max_restarts: self.int(&s, "max_restarts", 0, 1000, 5) as u32,
            window_secs: self.int(&s, "window_secs", 1, 86_400, 60) as u64,
            backoff_initial_ms: self.int(&s, "backoff_initial_ms", 1, 60_000, 100) as u64,
            backoff_max_ms: self.int(&s, "backoff_max_ms", 1, 600_000, 5_000) as u64,
        }
    }

    fn oauth_proxy(&mut self, root: &Table) -> Option<OAuthProxyConfig> {
        let s = self.section(
            root,
            "oauth_proxy",
            &["url", "signing_key", "allowed_redirects"],
        );
        s.table?;
        let url = match self.string(&s, "url") {
            Some(url) => self.url(&s, "url", url),
            None => {
                self.problem("[oauth_proxy].url".into(), "required");
                String::new()
            }
        };
        let allowed_redirects = self.strings(&s, "allowed_redirects");
        for (i, redirect) in allowed_redirects.iter().enumerate() {
            self.check_url(format!("[oauth_proxy].allowed_redirects[{i}]"), redirect);
        }
        Some(OAuthProxyConfig {
            url,
            signing_key: PathBuf::from(self.name_or(&s, "signing_key", "data/oauth_proxy.key")),
            allowed_redirects,
        })
    }

    fn providers(&mut self, root: &Table) -> Vec<ProviderConfig> {
        let items = match root.get("oauth_provider") {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "[[oauth_provider]]".into(),
                    format!("expected an array of tables, got {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let keys = [
            "name",
            "kind",
            "client_id",
            "client_secret",
            "token_endpoint_auth_method",
            "authorize_url",
            "access_token_url",
            "user_info_url",
            "issuer",
            "api_url",
            "identity_claim",
            "groups_claim",
            "scope",
            "user_info_fields",
        ];
        let mut out: Vec<ProviderConfig> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let name = format!("oauth_provider[{i}]");
            let Value::Table(table) = item else {
                self.problem(format!("[{name}]"), "expected a table");
                continue;
            };
            let mut wrapper = Table::new();
            wrapper.insert(name.clone(), Value::Table(table.clone()));
            let s = self.section(&wrapper, &name, &keys);
            let required = |r: &mut Reader, key: &str| match r.string(&s, key) {
                Some(v) if !v.trim().is_empty() => v,
                Some(_) => {
                    r.problem(format!("[{name}].{key}"), "must not be empty");
                    String::new()
                }
                None => {
                    r.problem(format!("[{name}].{key}"), "required");
                    String::new()
                }
            };
            let kind = match self.string(&s, "kind").as_deref() {
                None | Some("oauth2") => ProviderKind::OAuth2,
                Some("github") => ProviderKind::Github,
                Some("oidc") => ProviderKind::Oidc,
                Some(other) => {
                    self.problem(
                        format!("[{name}].kind"),
                        format!("expected \"github\", \"oidc\" or \"oauth2\", got {other:?}"),
                    );
                    ProviderKind::OAuth2
                }
            };
            let token_auth = match self.string(&s, "token_endpoint_auth_method").as_deref() {
                None | Some("client_secret_basic") => TokenAuth::Basic,
                Some("client_secret_post") => TokenAuth::Post,
                Some(other) => {
                    self.problem(
                        format!("[{name}].token_endpoint_auth_method"),
                        format!(
                            "expected \"client_secret_basic\" or \"client_secret_post\", got {other:?}"
                        ),
                    );
                    TokenAuth::Basic
                }
            };
            let provider_name = required(self, "name");
            if provider_name.contains(':') {
                self.problem(
                    format!("[{name}].name"),
                    "must not contain ':' (it starts identities such as name:user)",
                );
            }
            let client_id = required(self, "client_id");
            let client_secret = Secret(required(self, "client_secret"));
            // An endpoint: required for plain OAuth2, defaulted for GitHub, from discovery for
            // OIDC unless given.
            let endpoint = |r: &mut Reader, key: &str, github: &str| match kind {
                ProviderKind::OAuth2 => {
                    let value = required(r, key);
                    r.url(&s, key, value)
                }
                ProviderKind::Github => {
                    let value = r.string_or(&s, key, github);
                    r.url(&s, key, value)
                }
                ProviderKind::Oidc => match r.string(&s, key) {
                    Some(value) => r.url(&s, key, value),
                    None => String::new(),
                },
            };
            let authorize_url = endpoint(
                self,
                "authorize_url",
                "https://github.com/login/oauth/authorize",
            );
            let access_token_url = endpoint(
                self,
                "access_token_url",
                "https://github.com/login/oauth/access_token",
            );
            let api_url = self.string_or(&s, "api_url", "https://api.github.com");
            let api_url = self.url(&s, "api_url", api_url);
            let user_info_url = endpoint(self, "user_info_url", &format!("{api_url}/user"));
            let issuer = match (kind, self.string(&s, "issuer")) {
                (ProviderKind::Oidc, Some(issuer)) => {
                    self.check_url(format!("[{name}].issuer"), &issuer);
                    issuer
                }
                (ProviderKind::Oidc, None) => {
                    self.problem(format!("[{name}].issuer"), "required for kind = \"oidc\"");
                    String::new()
                }
                (_, Some(_)) => {
                    self.problem(format!("[{name}].issuer"), "only for kind = \"oidc\"");
                    String::new()
                }
                (_, None) => String::new(),
            };
            if out.iter().any(|p| p.name == provider_name) {
                self.problem(
                    format!("[{name}].name"),
                    format!("duplicate provider name {provider_name:?}"),
                );
            }
            let default_scope = match kind {
                ProviderKind::Github => "read:user read:org",
                ProviderKind::Oidc => "openid profile",
                ProviderKind::OAuth2 => "",
            };
            out.push(ProviderConfig {
                name: provider_name,
                kind,
                client_id,
                client_secret,
                token_auth,
                authorize_url,
                access_token_url,
                user_info_url,
                issuer,
                api_url,
                identity_claim: self.name_or(&s, "identity_claim", ""),
                groups_claim: self.name_or(&s, "groups_claim", "groups"),
                scope: self.string_or(&s, "scope", default_scope),
                user_info_fields: self.strings(&s, "user_info_fields"),
            });
        }
        out
    }
}

/// A value's type in words, for messages (never the value itself: it might be a secret).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's file, exactly as `seeds/cockpit-configuration.md` prints it.
    pub const SEED: &str = include_str!("../tests/support/seed_config.toml");

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(err) => err.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config = Config::parse(
            "[mode]\nprod=false\n[api.ays]\ntrusted_proxies = [\"10.0.0.5\", \"10.1.0.0/24\", \"::1\"]\n",
        )
        .expect("config");
        let shown: Vec<String> = config
            .api
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.5/32", "10.1.0.0/24", "::1/128"]);
        let all = problems(
            "[mode]\nprod=false\n[api.ays]\ntrusted_proxies = [\"lb.example\", \"10.0.0.0/33\"]\n",
        )
        .join("\n");
        assert!(all.contains("[api.ays].trusted_proxies[0]"), "{all}");
        assert!(all.contains("[api.ays].trusted_proxies[1]"), "{all}");
        let many: Vec<String> = (0..65).map(|n| format!("\"10.0.{n}.1\"")).collect();
        let all = problems(&format!(
            "[mode]\nprod=false\n[api.ays]\ntrusted_proxies = [{}]\n",
            many.join(", ")
        ))
        .join("\n");
        assert!(all.contains("at most 64"), "{all}");
    }

    #[test]
    fn the_seed_config_loads_unchanged() {
        let config = Config::parse(SEED).expect("seed config must load");
        assert_eq!(config.oauth.organization, "MyID");
        assert_eq!(config.api.port, 5000);
        assert!(config.bot.active, "a token turns the bot on");
        assert_eq!(config.mail.port, 25);
        assert!(config.mail.active);
        assert_eq!(config.oauth.jwt_issuer, "itsyouonline");
        assert!(
            config
                .oauth
                .jwt_key
                .as_deref()
                .unwrap_or("")
                .contains("\nMHYw")
        );
        assert_eq!(config.storage.path, PathBuf::from("data"));
        assert!(config.oauth_proxy.is_none());
    }

    #[test]
    fn the_shipped_example_and_local_configs_load() {
        let example = Config::parse(include_str!("../config/config.toml")).expect("example");
        assert_eq!(example.mail.port, 25);
        let local = Config::parse(include_str!("../config/local.toml")).expect("local");
        assert_eq!(
            (local.api.host.as_str(), local.api.port),
            ("127.0.0.1", 5000)
        );
        assert!(!local.bot.active, "no Telegram token needed locally");
        assert!(
            local.mail.active && local.mail.port > 1024,
            "mail listens locally, no root needed"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = "[api.ays]\nport = \"5000\"\n[mail]\nport = 70000\n[mode]\nprod = false\n";
        assert_eq!(
            problems(text),
            vec![
                "[api.ays].port: expected an integer from 0 to 65535, got a string",
                "[mail].port: expected an integer from 0 to 65535, got 70000",
            ]
        );
    }

    #[test]
    fn a_storage_url_is_postgres_and_never_echoed_and_a_schema_is_a_plain_name() {
        let all = problems(
            "[mode]\nprod=false\n[storage]\nurl = \"mysql://u:hunter2@db/x\"\nschema = \"a-b\"\n",
        )
        .join("\n");
        assert!(
            all.contains("[storage].url: must be a PostgreSQL URL"),
            "{all}"
        );
        assert!(!all.contains("hunter2"), "{all}");
        assert!(all.contains("[storage].schema: \"a-b\" is not a plain PostgreSQL name"));
        let all = problems("[mode]\nprod=false\n[storage]\nschema = \"cockpit\"\n").join("\n");
        assert!(
            all.contains("[storage].schema: only applies with [storage].url"),
            "{all}"
        );
        let config = Config::parse(
            "[mode]\nprod=false\n[storage]\nurl = \"postgres://u:hunter2@db/x\"\nschema = \"cockpit_2\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.storage.url.as_ref().map(Secret::expose),
            Some("postgres://u:hunter2@db/x")
        );
        assert_eq!(config.storage.schema.as_deref(), Some("cockpit_2"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_webhook_url_is_one_telegram_accepts_and_needs_a_secret_never_echoed() {
        let bot = "[mode]\nprod=false\n[bot]\nactive = false\ntoken = \"1:x\"\n";
        for bad in [
            "http://c.example/telegram/webhook",
            "https://c.example:9000/telegram/webhook",
            "https://c.example/other",
            "https://c.example/telegram/webhook?x=1",
        ] {
            let all = problems(&format!(
                "{bot}webhook_url = \"{bad}\"\nwebhook_secret = \"abc\"\n"
            ))
            .join("\n");
            assert!(all.contains("[bot].webhook_url: "), "{bad}: {all}");
        }
        let all = problems(&format!(
            "{bot}webhook_url = \"https://c.example/telegram/webhook\"\n"
        ))
        .join("\n");
        assert!(all.contains("[bot].webhook_secret: required"), "{all}");
        let all = problems(&format!(
            "{bot}webhook_url = \"https://c.example/telegram/webhook\"\nwebhook_secret = \"no spaces here!\"\n"
        ))
        .join("\n");
        assert!(all.contains("[bot].webhook_secret: must be"), "{all}");
        assert!(!all.contains("no spaces here"), "{all}");
        let config = Config::parse(&format!(
            "{bot}webhook_url = \"https://lb.example:8443/cockpit/telegram/webhook\"\nwebhook_secret = \"s3cr3t_-X\"\n"
        ))
        .expect("valid");
        assert_eq!(
            config.bot.webhook_url.map(|u| u.to_string()),
            Some("https://lb.example:8443/cockpit/telegram/webhook".into())
        );
        assert!(!format!("{:?}", config.bot.webhook_secret).contains("s3cr3t"));
    }

    #[test]
    fn a_replica_url_is_a_base_http_url_and_only_with_postgres() {
        let pg = "[mode]\nprod=false\n[storage]\nurl = \"postgres://u:p@db/x\"\n";
        for bad in ["ftp://a:1", "http://a:1/path", "http://user:pw@a:1", "a:1"] {
            let all = problems(&format!("{pg}replica_url = \"{bad}\"\n")).join("\n");
            assert!(
                all.contains("[storage].replica_url: ") && all.contains("is not a base URL"),
                "{bad}: {all}"
            );
        }
        let config =
            Config::parse(&format!("{pg}replica_url = \"http://10.0.0.5:5000\"\n")).expect("valid");
        assert_eq!(
            config.storage.replica_url.map(|u| u.to_string()),
            Some("http://10.0.0.5:5000/".into())
        );
        let all =
            problems("[mode]\nprod=false\n[storage]\nreplica_url = \"http://a:1\"\n").join("\n");
        assert!(
            all.contains("[storage].replica_url: only applies with [storage].url"),
            "{all}"
        );
    }

    #[test]
    fn secrets_are_never_echoed() {
        let text = "[oauth]\nclient_secret = 12345678\n[bot]\ntoken = [\"999:SECRETTOKEN\"]\n[mode]\nprod=false\n";
        let all = problems(text).join("\n");
        assert!(all.contains("[oauth].client_secret: expected a string, got an integer"));
        assert!(all.contains("[bot].token: expected a string, got an array"));
        assert!(
            !all.contains("12345678") && !all.contains("SECRETTOKEN"),
            "{all}"
        );
        let config = Config::parse(SEED).expect("seed");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("okla3Z2PLNmx") && !debug.contains("AAEizYAo"),
            "{debug}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_problems() {
        let text = "[mail]\nprot = 25\n[mayl]\n[mode]\nprod=false\n";
        assert_eq!(
            problems(text),
            vec![
                "[mayl]: unknown section (known sections: oauth, api, bot, mail, storage, mode, supervisor, oauth_proxy, oauth_provider, login, ays, debug, log, notify, webhooks, access, audit)",
                "[mail].prot: unknown key (known keys: active, host, port, domain, max_message_bytes, max_recipients, max_connections, idle_timeout_secs, max_connections_per_peer, data_timeout_secs, max_attachments, keep_days, max_queued_runs)",
            ]
        );
    }

    #[test]
    fn defaults_apply_to_an_almost_empty_file() {
        let config = Config::parse("[mode]\nprod = false\n").expect("loads");
        assert!(config.api.active);
        assert_eq!(
            (config.api.host.as_str(), config.api.port),
            ("127.0.0.1", 5000)
        );
        assert!(!config.bot.active && !config.mail.active);
        assert!(
            config.bot.throttle,
            "sends keep to Telegram's limits unless told"
        );
        assert_eq!(config.mail.max_message_bytes, 10 << 20);
        assert_eq!(config.mail.idle_timeout_secs, 300, "RFC 5321 §4.5.3.2.7");
        assert_eq!(config.mail.keep_days, 7);
        assert_eq!(config.mail.max_connections_per_peer, 50);
        assert_eq!(config.oauth.state_ttl_secs, 600);
        assert_eq!(config.supervisor.max_restarts, 5);
    }

    #[test]
    fn a_production_api_needs_a_jwt_key() {
        assert_eq!(
            problems(""),
            vec![
                "[oauth].jwt_key: required while [api.ays] is active and [mode].prod is true (the REST API verifies JWTs with it)"
            ]
        );
    }

    #[test]
    fn an_active_bot_needs_the_itsyouonline_client() {
        let text =
            "[mode]\nprod = false\n[bot]\ntoken = \"1:SECRET\"\n[oauth]\nclient_id = \"x\"\n";
        assert_eq!(
            problems(text),
            vec![
                "[oauth].redirect_uri: required when [bot].active is true (the bot logs users in with it)",
                "[oauth].organization: required when [bot].active is true (the bot logs users in with it)",
                "[oauth].client_secret: required when [bot].active is true (the bot logs users in with it)",
            ]
        );
    }

    #[test]
    fn providers_are_read_and_checked() {
        let text = r#"
[mode]
prod = false
[oauth_proxy]
url = "https://c.example.com/oauth"
allowed_redirects = ["https://app.example.com/cb", "app"]
[[oauth_provider]]
name = "github"
client_id = "id"
client_secret = "providersecret"
authorize_url = "https://github.com/login/oauth/authorize"
access_token_url = "https://github.com/login/oauth/access_token"
user_info_url = "https://api.github.com/user"
user_info_fields = ["email", "login"]
[[oauth_provider]]
name = "google"
"#;
        let all = problems(text);
        assert!(
            all.iter().any(|p| p.starts_with(
                "[oauth_proxy].allowed_redirects[1]: expected an http:// or https:// URL, got \"app\""
            )),
            "{all:?}"
        );
        assert!(
            all.contains(&"[oauth_provider[1]].client_secret: required".to_string()),
            "{all:?}"
        );
        assert!(!all.join("\n").contains("providersecret"));
    }

    #[test]
    fn bad_access_entries_are_config_problems() {
        let text = "[mode]\nprod = false\n[api.ays]\nactive = false\n[access]\nadmin = [\"alice\"]\ntwo_person = [\"repo.explode\"]\n";
        let err = Config::parse(text).expect_err("problems").to_string();
        assert!(err.contains("[access].admin[0]"), "{err}");
        assert!(err.contains("[access].two_person[0]"), "{err}");
    }

    /// The TOML blocks of the README section under `heading`, in order.
    fn readme_toml(heading: &str) -> Vec<String> {
        let readme = include_str!("../README.md");
        let start = readme.find(heading).expect("README section");
        let section = &readme[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        section
            .split("```toml\n")
            .skip(1)
            .filter_map(|block| block.split_once("\n```").map(|(toml, _)| toml.to_string()))
            .collect()
    }

    /// The README's web console example is accepted beside `config/local.toml`, and the
    /// console's callback follows from the proxy's URL and is allowed, exactly.
    #[test]
    fn the_console_callback_comes_from_the_proxy_url() {
        let local = include_str!("../config/local.toml");
        let blocks = readme_toml("## Web console");
        assert_eq!(blocks.len(), 1);
        let config = Config::parse(&format!("{local}\n{}", blocks[0]))
            .unwrap_or_else(|e| panic!("README example refused: {e}"));
        assert!(
            config.debug.console_dev_login,
            "local.toml offers the development login"
        );
        let proxy = config.oauth_proxy.expect("[oauth_proxy]");
        let callback = "https://cockpit.example.com/console/callback";
        assert_eq!(proxy.console_callback().as_deref(), Some(callback));
        assert!(proxy.redirect_allowed(callback));
        for other in [
            "https://cockpit.example.com/console/callback/",
            "https://cockpit.example.com/console/callbackx",
            "https://cockpit.example.com.evil.net/console/callback",
        ] {
            assert!(!proxy.redirect_allowed(other), "{other}");
        }
        let elsewhere = OAuthProxyConfig {
            url: "https://sso.example.com/login".into(),
            signing_key: PathBuf::new(),
            allowed_redirects: vec!["https://app.example.com/cb".into()],
        };
        assert_eq!(elsewhere.console_callback(), None);
        assert!(elsewhere.redirect_allowed("https://app.example.com/cb"));
    }

    /// What the README tells an operator to write for a GitHub or OpenID Connect login is
    /// accepted, each block beside `config/local.toml` (a file with an `[oauth]` section, as the
    /// README assumes), and means what the README says.
    #[test]
    fn the_readme_s_login_examples_are_accepted() {
        use crate::auth::access::{Principal, Role};
        let local = include_str!("../config/local.toml");
        let blocks = readme_toml("### Logging in with GitHub or an OpenID Connect provider");
        assert_eq!(blocks.len(), 3, "github, keycloak, google");
        let configs: Vec<Config> = blocks
            .iter()
            .map(|block| {
                Config::parse(&format!("{local}\n{block}"))
                    .unwrap_or_else(|e| panic!("README example:\n{block}\nrefused: {e}"))
            })
            .collect();
        let provider = |c: &Config| {
            let name = c.login.provider.clone().expect("[login].provider");
            c.providers
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .expect("the provider [login] names")
        };
        let github = provider(&configs[0]);
        assert_eq!(github.kind, ProviderKind::Github);
        assert_eq!(github.scope, "read:user read:org");
        assert_eq!(
            configs[0].login.redirect_uri,
            "https://cockpit.example.com/oauth/callback"
        );
        assert_eq!(configs[0].login.allowed_groups, ["myorg"]);
        let keycloak = provider(&configs[1]);
        assert_eq!(
            (keycloak.kind, keycloak.token_auth, keycloak.issuer.as_str()),
            (
                ProviderKind::Oidc,
                TokenAuth::Post,
                "https://sso.example.com/realms/ops"
            )
        );
        assert_eq!(keycloak.groups_claim, "groups");
        // Without [login].redirect_uri the callback is [oauth].redirect_uri.
        assert_eq!(configs[1].login.redirect_uri, configs[1].oauth.redirect_uri);
        let google = provider(&configs[2]);
        assert_eq!(
            (google.kind, google.identity_claim.as_str()),
            (ProviderKind::Oidc, "email")
        );
        assert!(configs[2].login.allowed_groups.is_empty());
        let access = configs[2].access_rules();
        let role = |identity: &str| access.role(&Principal::new(identity, Vec::new()));
        assert_eq!(role("google:alice@example.com"), Some(Role::Admin));
        assert_eq!(role("google:bob@example.com"), Some(Role::Viewer));
        assert_eq!(role("google:eve@example.com"), None);
    }
}
