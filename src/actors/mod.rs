//! The supervised actors: one module per actor. Each owns its state and a mailbox and delegates
//! the actual work to the pure modules (`engine`, `auth`, `store`, `api`).
//!
//! Actors find each other by their registered names ([`names`]), so a restarted actor is reached
//! by everyone without handing new references around.

pub mod api_server;
pub mod ays;
pub mod chat_session;
pub mod mail_receiver;
pub mod oauth_cache;
pub mod repo;
pub mod restart;
pub mod supervisor;
pub mod telegram;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
    /// Where the listeners are bound, once they are (reported in the `cockpit ready` line).
    pub addresses: Arc<Mutex<Addresses>>,
    /// The REST API's token verifier (a cache before a bounded thread pool), when the API runs
    /// in production mode (started once by `server::run`).
    pub verifier: Option<Arc<crate::auth::pool::Verifier>>,
    /// The central OAuth2 server's signing key, when `[oauth_proxy]` is configured (read or
    /// generated once at start; read-only after).
    pub proxy_key: Option<Arc<crate::oauth::token::SigningKey>>,
}

/// The bound listener addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses {
    /// The HTTP server.
    pub api: Option<SocketAddr>,
    /// The SMTP receiver.
    pub mail: Option<SocketAddr>,
}

impl Shared {
    /// Builds the shared handles for a configuration and an open store.
    pub fn new(config: Config, store: Store) -> Shared {
        Shared {
            config: Arc::new(config),
            store,
            telemetry: Arc::new(Telemetry::default()),
            addresses: Arc::new(Mutex::new(Addresses::default())),
            verifier: None,
            proxy_key: None,
        }
    }

    /// The bound addresses now.
    pub fn addresses(&self) -> Addresses {
        *self
            .addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a bound address.
    pub fn set_address(&self, update: impl FnOnce(&mut Addresses)) {
        update(
            &mut self
                .addresses
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
}
