//! `cockpit start`: opens the store, starts the root supervisor, reports `cockpit ready`, and
//! shuts down gracefully on SIGINT/SIGTERM.

use std::sync::{Arc, Mutex};

use ractor::{Actor, call};
use tracing::{error, info, warn};

use crate::actors::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::actors::{Shared, names};
use crate::config::Config;
use crate::store::Store;

/// Why the server stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The actor tree did not start (a port taken, a key unreadable...).
    #[error("cockpit did not start: {0}")]
    Start(String),
    /// The supervisor gave up on a child that kept failing.
    #[error("cockpit stopped: {0}")]
    Escalated(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the server until a signal (Ok) or an escalation (Err).
pub async fn run(config: Config) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;

    if !config.mode.prod {
        warn!(
            "[mode].prod = false: the REST API does NOT check JWTs; never run this way in production"
        );
    }
    // Every connection is a file: take the whole budget the system grants.
    if let Some(limit) = crate::api::http::raise_fd_limit() {
        info!(open_files = limit, "open-file limit");
        let wanted = config.api.max_connections as u64 + 256;
        if config.api.active && limit < wanted {
            warn!(
                open_files = limit,
                max_connections = config.api.max_connections,
                "the open-file limit is below [api.ays].max_connections + 256; lower it"
            );
        }
    }
    let store = Store::open(&config.storage.path)?;
    let proxy_key = match &config.oauth_proxy {
        Some(proxy) => {
            let (key, origin) = crate::oauth::key::load_or_generate(&proxy.signing_key)
                .map_err(|err| ServerError::Start(err.to_string()))?;
            info!(
                path = %proxy.signing_key.display(),
                public_key = %key.public_hex(),
                generated = origin == crate::oauth::key::Origin::Generated,
                "oauth proxy signing key ready"
            );
            Some(Arc::new(key))
        }
        None => None,
    };
    let verifier = if config.api.active && config.mode.prod {
        let oauth = &config.oauth;
        let key = oauth.jwt_key.as_deref().unwrap_or_default();
        let rules = crate::auth::JwtRules::new(key, &oauth.jwt_issuer, &oauth.organization)
            .map_err(|err| ServerError::Start(format!("[oauth].jwt_key: {err}")))?;
        let verifier = crate::auth::pool::Verifier::start(rules, Default::default())
            .map_err(|err| ServerError::Start(format!("cannot start the JWT verifier: {err}")))?;
        Some(verifier)
    } else {
        None
    };
    let mut shared = Shared::new(config, store);
    shared.proxy_key = proxy_key;
    shared.verifier = verifier;
    let escalation = Arc::new(Mutex::new(None));
    let args = SupervisorArgs {
        shared: shared.clone(),
        escalation: escalation.clone(),
    };
    let (root, handle) = Actor::spawn(Some(names::SUPERVISOR.into()), Supervisor, args)
        .await
        .map_err(|err| ServerError::Start(root_cause(&err)))?;

    let addresses = shared.addresses();
    let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    info!(
        api = %show(addresses.api),
        mail = %show(addresses.mail),
        "cockpit ready"
    );

    let mut handle = handle;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        _ = sigint.recv() => info!("SIGINT: shutting down"),
        _ = &mut handle => {}
    }
    if !handle.is_finished() {
        let _ = call!(root, SupervisorMsg::Shutdown);
        let _ = handle.await;
    }
    let why = escalation
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    match why {
        Some(why) => {
            error!("{why}");
            Err(ServerError::Escalated(why))
        }
        None => {
            info!("cockpit stopped");
            Ok(())
        }
    }
}

/// The innermost message of a spawn error (the failing child's own words).
fn root_cause(err: &ractor::SpawnErr) -> String {
    match err {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
