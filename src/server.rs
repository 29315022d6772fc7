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
use crate::config::StorageConfig;
use crate::store::{Store, StoreError};
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
    /// Another process holds the data directory.
    #[error(
        "the data directory {dir} is in use by another cockpit (pid {pid}; lock file {lock}): stop it, or give this one another [storage].path"
    )]
    Locked {
        /// The data directory.
        dir: String,
        /// The holder's pid as its lock file says.
        pid: String,
        /// The lock file.
        lock: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock the data directory with {path}: {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
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
    // The lock first: a second start of the same config must hear that the data directory is
    // taken, not that its port is.
    let lock = lock_data_dir(&config.storage.path)?;
    let listeners = bind(&config)?;
    let signalled = async move {
        tokio::select! {
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            _ = sigint.recv() => info!("SIGINT: shutting down"),
        }
    };
    serve(config, lock, listeners, signalled).await
}

/// Runs the server on already-bound sockets until `shutdown` completes (Ok) or the supervisor
/// gives up (Err).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let lock = lock_data_dir(&config.storage.path)?;
    serve(config, lock, listeners, shutdown).await
}

/// Runs the server while holding the data directory's `lock` (released when this returns, or by
/// the OS if the process dies).
async fn serve(
    config: Config,
    _lock: std::fs::File,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
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
    tokio::pin!(shutdown);
    let store = open_store(&config.storage)?;
    // The database's own lock (PostgreSQL; the data directory's lock is SQLite's): a second
    // server on the same database and schema stands by until this one is gone.
    let holder = format!(
        "pid {} on {}, since {}",
        std::process::id(),
        hostname().unwrap_or_else(|| "an unknown host".into()),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _claim = match store.claim(&holder, claim_lost) {
        Ok(claim) => claim,
        Err(StoreError::Claimed { holder: other }) => {
            match stand_by(
                &config,
                &store,
                &listeners,
                &holder,
                &other,
                shutdown.as_mut(),
            )
            .await?
            {
                Some(claim) => claim,
                None => {
                    info!("cockpit stopped");
                    return Ok(());
                }
            }
        }
        Err(err) => return Err(err.into()),
    };
    let (replica, replica_key) = if store.shared() {
        let url = replica_url(&config, &listeners);
        let key = store.secret_setting(crate::api::standby::REPLICA_KEY_SETTING)?;
        store.set_setting(crate::api::standby::HOLDER_URL_SETTING, url.as_str())?;
        info!(%url, "this replica holds the database");
        (Some(replica_name(&url)), Some(key))
    } else {
        (None, None)
    };
    if config.mail.active {
        // Before any actor: the engine hands pending mail events to actions as soon as it starts,
        // and their files must be there (a system crash can lose them; the store keeps a copy).
        let root = crate::mail::message::mail_root(
            &std::path::absolute(&config.storage.path)
                .unwrap_or_else(|_| config.storage.path.clone()),
        );
        match crate::mail::message::restore(&store, &root) {
            Ok(0) => {}
            Ok(restored) => warn!(
                restored,
                "mail files lost in a crash written again from the store"
            ),
            Err(err) => {
                return Err(ServerError::Start(format!(
                    "cannot restore the mail files: {err}"
                )));
            }
        }
    }
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
    let (verifier, revocations) = if config.api.active && config.mode.prod {
        let oauth = &config.oauth;
        let key = oauth.jwt_key.as_deref().unwrap_or_default();
        let rules = crate::auth::JwtRules::new(key, &oauth.jwt_issuer, &oauth.organization)
            .map_err(|err| ServerError::Start(format!("[oauth].jwt_key: {err}")))?;
        let verifier = crate::auth::pool::Verifier::start(rules, Default::default())
            .map_err(|err| ServerError::Start(format!("cannot start the JWT verifier: {err}")))?;
        let revocations = crate::auth::revoked::Revocations::open(store.clone())
            .map_err(|err| ServerError::Start(format!("cannot read the revoked users: {err}")))?;
        (Some(verifier), Some(Arc::new(revocations)))
    } else {
        (None, None)
    };
    let mut shared = Shared::new(config, store, listeners);
    shared.proxy_key = proxy_key;
    shared.replica = replica.map(Arc::from);
    shared.replica_key = replica_key.map(Arc::from);
    shared.verifier = verifier;
    shared.revocations = revocations;
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
    let data = std::path::absolute(&shared.config.storage.path)
        .unwrap_or_else(|_| shared.config.storage.path.clone());
    info!(
        api = %show(addresses.api),
        mail = %show(addresses.mail),
        data = %data.display(),
        "cockpit ready"
    );
    if shared.config.api.active {
        // The OpenAPI document takes milliseconds to build: built now, off the start's path,
        // the first `/openapi.json` does not wait for it.
        std::thread::spawn(crate::api::openapi::document);
    }

    // The audit trail keeps `[audit] keep_days`: swept now and every hour while running, with
    // the held actions too old to be approved.
    let sweeper = {
        let store = shared.store.clone();
        let keep_ms = (shared.config.audit.keep_days as i64).saturating_mul(86_400_000);
        crate::actors::AbortOnDrop(tokio::spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                hourly.tick().await;
                let before = crate::clock::now_ms().saturating_sub(keep_ms);
                if let Err(err) = store.sweep_audit(before) {
                    warn!(%err, "cannot sweep the audit trail");
                }
                let expired = crate::clock::now_ms() - crate::auth::approvals::EXPIRES_AFTER_MS;
                if let Err(err) = store.sweep_approvals(expired) {
                    warn!(%err, "cannot sweep expired approvals");
                }
            }
        }))
    };
    let mut handle = handle;
    tokio::select! {
        _ = &mut shutdown => {}
        _ = &mut handle => {}
    }
    if !handle.is_finished() {
        let _ = call!(root, SupervisorMsg::Shutdown);
        let _ = handle.await;
    }
    drop(sweeper);
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

/// This machine's name.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
}

/// The URL other replicas forward requests to this one at: `[storage] replica_url`, else the
/// HTTP door's address (the host name when it listens on every address).
fn replica_url(config: &Config, listeners: &Listeners) -> url::Url {
    if let Some(url) = &config.storage.replica_url {
        return url.clone();
    }
    let port = listeners
        .addresses()
        .api
        .map_or(config.api.port, |addr| addr.port());
    let host = match config.api.host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => hostname().unwrap_or_else(|| "localhost".into()),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => config.api.host.clone(),
    };
    url::Url::parse(&format!("http://{host}:{port}"))
        .unwrap_or_else(|_| url::Url::parse("http://localhost").expect("a valid URL"))
}

/// A replica's name: the `host:port` of its URL (no quote, backslash or newline: a label value
/// as it is).
fn replica_name(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => "unknown".into(),
    }
}

/// What a holder does when it lost its claim on a PostgreSQL store (another server runs
/// everything from now on): kill the actions it runs (their runs are run again there), then end
/// at once. A supervisor (systemd) starts it again; it then stands by.
fn claim_lost(why: crate::store::ClaimLost) {
    let killed = crate::runner::kill_every_action();
    match why {
        crate::store::ClaimLost::TakenByAnother => tracing::error!(
            killed,
            "the database connection was lost and another cockpit claimed the database \
             meanwhile: actions killed, stopping, not to run beside it"
        ),
        crate::store::ClaimLost::Unconfirmed => tracing::error!(
            killed,
            lease_secs = crate::store::CLAIM_LEASE.as_secs(),
            "the database has not confirmed this server's claim for its lease: another cockpit \
             may take it over, so actions are killed and this server stops"
        ),
    }
    std::process::exit(1);
}

/// Serves as a standby while another server holds the shared store: HTTP requests are forwarded
/// to it, SMTP senders are told to try later (`421`), and the claim is tried every second.
/// Returns the claim once taken, or `None` if `shutdown` came first.
async fn stand_by(
    config: &Config,
    store: &Store,
    listeners: &Listeners,
    holder: &str,
    other: &str,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<crate::store::Claim>, ServerError> {
    let name = replica_name(&replica_url(config, listeners));
    let addresses = listeners.addresses();
    let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    warn!(holder = %other, replica = %name, api = %show(addresses.api), mail = %show(addresses.mail), "standby: another cockpit holds the database; requests are forwarded to it, and this one takes over when it stops");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let start_error = |what: &str, err: &dyn std::fmt::Display| {
        ServerError::Start(format!("{what} cannot listen: {err}"))
    };
    let mut tasks = Vec::new();
    if config.api.active {
        let listener = listeners
            .api()
            .map_err(|err| start_error("[api.ays]", &err))?;
        // Below the holder's cap on one address's connections (the same configuration).
        let max_forwards = config.api.max_connections_per_ip.saturating_sub(8);
        let standby = crate::api::standby::Standby::new(store.clone(), name.clone(), max_forwards)
            .map_err(|err| {
                ServerError::Start(format!("cannot start the forwarding client: {err}"))
            })?;
        let limits = crate::api::http::Limits {
            max_connections: config.api.max_connections,
            max_connections_per_ip: config.api.max_connections_per_ip,
            header_timeout: std::time::Duration::from_millis(config.api.header_timeout_ms),
            replica_key: None,
            // The client the balancer names is the one the holder counts (and is told of).
            trusted_proxies: config.api.trusted_proxies.clone().into(),
        };
        tasks.push(tokio::spawn(crate::api::http::serve(
            listener,
            warp::service(crate::api::standby::routes(standby)),
            limits,
            stopped(),
        )));
    }
    if config.mail.active {
        let listener = listeners
            .mail()
            .map_err(|err| start_error("[mail]", &err))?;
        let hostname = config
            .mail
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| "cockpit".into());
        let stop = stopped();
        tasks.push(tokio::spawn(async move {
            crate::mail::standby::refuse(listener, &hostname, stop).await;
        }));
    }
    let claim = loop {
        tokio::select! {
            () = shutdown.as_mut() => break None,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let (store, holder) = (store.clone(), holder.to_owned());
        match tokio::task::spawn_blocking(move || store.claim(&holder, claim_lost)).await {
            Ok(Ok(claim)) => break Some(claim),
            Ok(Err(StoreError::Claimed { .. })) => {}
            Ok(Err(err)) => warn!(%err, "standby: cannot look at the database's claim"),
            Err(err) => {
                return Err(ServerError::Start(format!(
                    "the claim's look failed: {err}"
                )));
            }
        }
    };
    let _ = stop_tx.send(true);
    for task in tasks {
        // Requests forwarded to a holder that is gone are already failing: not waited for long.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    if claim.is_some() {
        warn!(replica = %name, "standby: the database's holder is gone; this replica takes over");
    }
    Ok(claim)
}

/// Takes the exclusive lock of the data directory (`<dir>/cockpit.lock`, holding our pid), so
/// two processes never share one database: a second start names the first one's pid.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    crate::store::create_private_dir(dir)?;
    let path = dir.join("cockpit.lock");
    let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    let lock_error = |source| ServerError::Lock {
        path: shown.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ServerError::Locked {
                dir: std::path::absolute(dir)
                    .unwrap_or_else(|_| dir.to_path_buf())
                    .display()
                    .to_string(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
                lock: shown.display().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(lock_error(err)),
    }
    file.set_len(0).map_err(lock_error)?;
    file.rewind().map_err(lock_error)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
    Ok(file)
}

/// The innermost message of a spawn error (the failing child's own words).
fn root_cause(err: &ractor::SpawnErr) -> String {
    match err {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Opens the store `[storage]` names: PostgreSQL at `url` when given (tables in `schema`,
/// created if missing), else `<path>/cockpit.db`.
pub fn open_store(storage: &StorageConfig) -> Result<Store, StoreError> {
    match &storage.url {
        Some(url) => Store::open_postgres(&storage.path, url.expose(), storage.schema.as_deref()),
        None => Store::open(&storage.path),
    }
}

/// Like [`open_store`], for commands that act on existing data: with SQLite, a missing file is
/// [`StoreError::Missing`] (never a new empty database); a PostgreSQL database is there by
/// definition, and a command needs one connection to it.
pub fn open_existing_store(storage: &StorageConfig) -> Result<Store, StoreError> {
    match &storage.url {
        Some(url) => {
            Store::open_postgres_with(&storage.path, url.expose(), storage.schema.as_deref(), 1)
        }
        None => Store::open_existing(&storage.path),
    }
}
