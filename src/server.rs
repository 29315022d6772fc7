//! Running cockpit, in the shape of mini-redis: [`bind`] takes the configured ports (a taken
//! port is a startup error naming its key), and [`run`] takes those already-bound sockets and a
//! shutdown future, opens the store, starts the root supervisor, reports `cockpit ready`, and
//! stops gracefully when the future completes. `cockpit start` passes SIGINT/SIGTERM as the
//! future; tests bind `127.0.0.1:0` and pass a channel.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, call};
use tracing::{error, info, warn};

use crate::actors::{Listeners, Shared, names};
use crate::config::Config;
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};

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

/// Binds the sockets of the enabled doors (`[api.ays]`, `[mail]`).
pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
    let listen = |key: &str, host: &str, port: u16| {
        std::net::TcpListener::bind((host, port)).map_err(|err| {
            ServerError::Start(format!("{key} cannot listen on {host}:{port}: {err}"))
        })
    };
    let mut listeners = Listeners::default();
    if config.api.active {
        listeners.api = Some(listen("[api.ays]", &config.api.host, config.api.port)?);
    }
    if config.mail.active {
        listeners.mail = Some(listen("[mail]", &config.mail.host, config.mail.port)?);
    }
    Ok(listeners)
}

/// Runs the server on the configured ports until SIGINT or SIGTERM (Ok) or an escalation (Err).
pub async fn start(config: Config) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let listeners = bind(&config)?;
    let signalled = async move {
        tokio::select! {
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            _ = sigint.recv() => info!("SIGINT: shutting down"),
        }
    };
    run(config, listeners, signalled).await
}

/// Runs the server on already-bound sockets until `shutdown` completes (Ok) or the supervisor
/// gives up (Err).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if !config.mode.prod {
        warn!(
            "[mode].prod = false: the REST API does NOT check JWTs; never run this way in production"
        );
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
    let mut shared = Shared::new(config, store, listeners);
    shared.proxy_key = proxy_key;
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
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = &mut handle => {}
    }
    if !handle.is_finished() {
        let _ = call!(root, SupervisorMsg::Shutdown);
        let _ = handle.await;
    }
    let why = escalation.lock().take();
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
