//! The core's actors: the AYS engine (`Ays` and one `Repo` per repository) and the OAuth cache,
//! with what they share (notices, fault injection, the supervision helper).
//! Each owns its state and a mailbox and delegates the actual work to the pure modules
//! (`engine`, `auth`, `store`).
//!
//! The core knows no door: nothing here imports `api`, `bot`, `mail` or `notify`. Doors reach the AYS
//! actors through [`crate::client`] and hear from them through [`notice`]. The doors' own actors
//! (the HTTP server, the Telegram bot and its chat sessions, the mail receiver) live in their
//! doors.
//!
//! Actors find each other by their registered names ([`names`]), so a restarted actor is reached
//! by everyone without handing new references around.

pub mod ays;
pub mod error;
pub mod event;
pub mod faults;
pub mod notice;
pub mod oauth_cache;
pub mod repo;
pub mod supervise;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Registered actor names; `/health`, `/metrics` and fault injection use the same names.
pub mod names {
    /// The root supervisor.
    pub const SUPERVISOR: &str = "supervisor";
    /// The OAuth cache.
    pub const OAUTH_CACHE: &str = "oauth_cache";
    /// The HTTP server.
    pub const API_SERVER: &str = "api_server";
    /// The AYS engine (repositories).
    pub const AYS: &str = "ays";
    /// The Telegram bot supervisor.
    pub const TELEGRAM_BOT: &str = "telegram_bot";
    /// The SMTP receiver.
    pub const MAIL_RECEIVER: &str = "mail_receiver";
    /// The webhook notifier (failure notices to `[notify] webhooks`).
    pub const NOTIFIER: &str = "notifier";
}

/// What every actor is started with: configuration and the process-wide handles.
#[derive(Clone)]
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Durable state.
    pub store: Store,
    /// Health and metrics.
    pub telemetry: Arc<Telemetry>,
    /// The sockets the doors serve on, bound once at start.
    pub listeners: Arc<Listeners>,
    /// The REST API's token verifier (a cache before a bounded thread pool), when the API runs
    /// in production mode (started once by `server::run`).
    pub verifier: Option<Arc<crate::auth::pool::Verifier>>,
    /// The identities logged out everywhere, whose older JWTs the REST door refuses (with the
    /// verifier; read from the store, refreshed when its revocation bell rings).
    pub revocations: Option<Arc<crate::auth::revoked::Revocations>>,
    /// The central OAuth2 server's signing key, when `[oauth_proxy]` is configured (read or
    /// generated once at start; read-only after).
    pub proxy_key: Option<Arc<crate::oauth::token::SigningKey>>,
    /// This replica's name (`host:port` of the URL the others reach it at) when the store is
    /// shared by replicas (PostgreSQL); `/metrics` carries it.
    pub replica: Option<Arc<str>>,
    /// The replicas' shared key (from the store): a standby proves with it that it forwarded a
    /// request, and for whom (`api::http::REPLICA_HEADER`).
    pub replica_key: Option<Arc<str>>,
    /// What happens in the core, for the doors that want to know.
    pub notices: notice::Notices,
    /// Fault injection by actor name.
    pub faults: faults::Faults,
    /// Where the HTTP door hands Telegram's webhook updates (set by the bot while it runs in
    /// webhook mode): one door serves another's route without importing it.
    pub telegram_hook: Arc<parking_lot::Mutex<Option<UpdateSink>>>,
}

/// Takes one webhook update (its raw JSON body) and answers once it is handed to its chat.
pub type UpdateSink = Arc<
    dyn Fn(bytes::Bytes) -> futures::future::BoxFuture<'static, Result<(), HookError>>
        + Send
        + Sync,
>;

/// Why a webhook update was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The body is not an update.
    #[error("not a Telegram update: {0}")]
    Malformed(String),
    /// The bot cannot take it now (restarting): the sender tries again.
    #[error("the bot is not ready; try again")]
    Unavailable,
}

/// Aborts a task when dropped: a task tied to an actor's state ends with it, also when the actor
/// fails (its state is then dropped without `post_stop`).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The bound listener addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses {
    /// The HTTP server.
    pub api: Option<SocketAddr>,
    /// The SMTP receiver.
    pub mail: Option<SocketAddr>,
}

/// The sockets the doors serve on. They are bound once, before any actor starts (a taken port
/// is a startup error naming the key), and never released while the process runs: a door
/// actor that restarts serves on a fresh handle of the same socket, so no client ever finds the
/// port closed or taken by another process in between.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The HTTP server's socket (`[api.ays]`), when the API is active.
    pub api: Option<std::net::TcpListener>,
    /// The SMTP receiver's socket (`[mail]`), when mail is active.
    pub mail: Option<std::net::TcpListener>,
}

impl Listeners {
    /// A handle of the HTTP server's socket for the tokio runtime.
    pub fn api(&self) -> std::io::Result<tokio::net::TcpListener> {
        handle(self.api.as_ref())
    }

    /// A handle of the SMTP receiver's socket for the tokio runtime.
    pub fn mail(&self) -> std::io::Result<tokio::net::TcpListener> {
        handle(self.mail.as_ref())
    }

    /// Where they listen.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            api: self.api.as_ref().and_then(|l| l.local_addr().ok()),
            mail: self.mail.as_ref().and_then(|l| l.local_addr().ok()),
        }
    }
}

/// A new handle (a duplicated descriptor) of a bound socket, non-blocking, for tokio.
fn handle(socket: Option<&std::net::TcpListener>) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no socket was bound"))?
        .try_clone()?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket)
}

impl Shared {
    /// Builds the shared handles for a configuration, an open store and the bound sockets.
    pub fn new(config: Config, store: Store, listeners: Listeners) -> Shared {
        Shared {
            config: Arc::new(config),
            store,
            telemetry: Arc::new(Telemetry::default()),
            listeners: Arc::new(listeners),
            verifier: None,
            revocations: None,
            proxy_key: None,
            replica: None,
            replica_key: None,
            notices: notice::Notices::default(),
            faults: faults::Faults::default(),
            telegram_hook: Arc::default(),
        }
    }

    /// Where the doors listen.
    pub fn addresses(&self) -> Addresses {
        self.listeners.addresses()
    }
}
