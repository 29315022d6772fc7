//! Durable state: one SQLite file `<storage>/cockpit.db`, with versioned migrations.
//!
//! Everything outside this module sees [`Store`] and domain types only, never SQL or rusqlite, so
//! that a PostgreSQL backend can later serve several cockpit replicas behind the same methods.
//!
//! Durability: WAL journal with `synchronous = FULL`, every write in one transaction, so a `kill -9`
//! at any moment leaves the file consistent and every acknowledged write present.

mod access;
mod ays;
mod chat;
pub(crate) mod db;
mod files;
mod mail;
mod notify;
mod oauth;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use db::{Conn, DbError, params};

pub use access::{
    ApiTokenRecord, ApprovalRecord, AuditQuery, AuditRecord, AuditRow, JWT_IDENTITY_PREFIX,
    Revocation, UserRevoked,
};
pub use ays::{
    EventRecord, Interrupted, JobRecord, JobState, LogRecord, MAX_ATTEMPTS, Origin, RecurringSlot,
    RepoRecord, RetryRecord, RunPage, RunRecord, RunState, StepRecord,
};
pub use files::RepoFile;
pub use mail::{MailFile, MailRecord};
pub use notify::{DurableNotice, OutboxRow};
pub use oauth::{AppSessionRow, AuthorizedUser, CleanReport, Credential, PendingState};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command that acts on existing data found none (it never creates a database).
    #[error(
        "no cockpit database at {path}: is [storage].path right (relative paths start from the working directory)?"
    )]
    Missing {
        /// The database file looked for.
        path: PathBuf,
    },
    /// The database file could not be created with private permissions.
    #[error("cannot create the database file {path}: {source}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The revocation bell next to the database could not be opened or written.
    #[error(
        "cannot write the revocation bell {path} (a running server may not see the change until it restarts): {source}"
    )]
    Bell {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database refused an operation, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] DbError),
    /// A stored row did not decode (written by a newer version, or damaged).
    #[error("stored data is not readable: {0}")]
    Decode(String),
    /// Another server holds the database ([`Store::claim`]).
    #[error(
        "the database is in use by another cockpit ({holder}): stop it, or give this one another \
         [storage].schema"
    )]
    Claimed {
        /// Who holds it, as that server wrote it.
        holder: String,
    },
    /// The database is newer than this binary.
    #[error(
        "the database has schema version {found}, newer than this cockpit knows ({known}); upgrade cockpit"
    )]
    TooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
}

/// The schema, one entry per version. Never edit an entry that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the OAuth cache.
    "CREATE TABLE oauth_states (
        state TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX oauth_states_expiry ON oauth_states (expires_at_ms);
    CREATE TABLE telegram_users (
        user_id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        username TEXT NOT NULL,
        current_repo TEXT,
        token_expires_at INTEGER,
        authorized_at_ms INTEGER NOT NULL
    );",
    // 2: the AYS engine: repositories, services, runs, jobs, logs; inbound events.
    "CREATE TABLE repos (
        name TEXT PRIMARY KEY,
        git_url TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE services (
        repo TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (repo, key)
    );
    CREATE TABLE runs (
        key TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        state TEXT NOT NULL,
        created INTEGER NOT NULL,
        ended INTEGER,
        error TEXT,
        callback_url TEXT,
        origin TEXT NOT NULL
    );
    CREATE INDEX runs_repo ON runs (repo, created);
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        run_key TEXT NOT NULL,
        step INTEGER NOT NULL,
        action_name TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        service_name TEXT NOT NULL,
        service_key TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX jobs_run ON jobs (run_key, step);
    CREATE TABLE job_logs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_key TEXT NOT NULL,
        epoch REAL NOT NULL,
        level TEXT NOT NULL,
        log TEXT NOT NULL
    );
    CREATE INDEX job_logs_job ON job_logs (job_key, seq);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        processed INTEGER NOT NULL
    );",
    // 3: Telegram chat sessions and small settings (the bot's update offset).
    "CREATE TABLE chat_sessions (
        chat_id INTEGER PRIMARY KEY,
        pending TEXT NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 4: durable run queue and run control: the args a queued run's jobs get, the process group
    // of a running job (killed if it outlives a crash), and when each recurring action was due.
    "ALTER TABLE runs ADD COLUMN args TEXT;
    ALTER TABLE jobs ADD COLUMN pgid INTEGER;
    CREATE INDEX runs_state ON runs (repo, state);
    CREATE TABLE recurring (
        repo TEXT NOT NULL,
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        last_due_ms INTEGER NOT NULL,
        PRIMARY KEY (repo, service, action)
    );",
    // h-mail: each received mail's bytes, committed with its `email` event (the durable copy of
    // the mail's file), and indexes for counting the work waiting (the SMTP door's 452).
    "CREATE TABLE mail_messages (
        event_id INTEGER PRIMARY KEY,
        file TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX events_pending ON events (id) WHERE processed = 0;
    CREATE INDEX runs_new ON runs (created) WHERE state = 'new';",
    // h-runs-a: failure notices: the outbox of notices for HTTP webhooks (written with the run's
    // end), the chats that asked for a repository's notices, the GitHub delivery ids taken.
    "CREATE TABLE notify_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        next_ms INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX notify_outbox_due ON notify_outbox (next_ms);
    CREATE TABLE notify_chats (
        chat_id INTEGER NOT NULL,
        repo TEXT NOT NULL,
        PRIMARY KEY (chat_id, repo)
    );
    CREATE INDEX notify_chats_repo ON notify_chats (repo);
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        received_ms INTEGER NOT NULL
    );
    CREATE INDEX webhook_deliveries_age ON webhook_deliveries (received_ms);",
    // h-id-a: who a Telegram user is at their login provider (identity, groups), until when the
    // login lasts, when membership was last checked, and what the check uses (provider tokens).
    "ALTER TABLE telegram_users ADD COLUMN identity TEXT;
    ALTER TABLE telegram_users ADD COLUMN groups TEXT;
    ALTER TABLE telegram_users ADD COLUMN provider TEXT;
    ALTER TABLE telegram_users ADD COLUMN login_expires_at_ms INTEGER;
    ALTER TABLE telegram_users ADD COLUMN checked_at_ms INTEGER;
    ALTER TABLE telegram_users ADD COLUMN credential TEXT;",
    // h-id-b: the audit trail, API tokens issued by cockpit (only their SHA-256 hash), and
    // approvals waiting for a second admin.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        door TEXT NOT NULL,
        identity TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit (at_ms);
    CREATE INDEX audit_identity ON audit (identity, id);
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX api_tokens_identity ON api_tokens (identity);
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        door TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        approved_by TEXT
    );",
    // h-runs-b: schedules, retries, retention, job args. The next due time of each recurring
    // action and the schedule it was computed from (a changed schedule starts afresh); the
    // pending retry of each failed action (failures so far, when it is due, the args and origin
    // it reruns with); runs by end time, for pruning; the args a job was scheduled with.
    "ALTER TABLE recurring ADD COLUMN next_due_ms INTEGER;
    ALTER TABLE recurring ADD COLUMN spec TEXT;
    CREATE TABLE retries (
        repo TEXT NOT NULL,
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_ms INTEGER,
        args TEXT NOT NULL,
        origin TEXT NOT NULL,
        PRIMARY KEY (repo, service, action)
    );
    CREATE INDEX runs_ended ON runs (repo, ended);
    ALTER TABLE jobs ADD COLUMN args TEXT;",
    // lead: a run a crash cut short is queued again (at least once, whoever started it): the
    // new run's attempt number and the run it repeats.
    "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE runs ADD COLUMN again_of TEXT;",
    // h-oidc: identities logged out everywhere (`users revoke`): the REST door refuses their
    // JWTs issued (`iat`) at or before `revoked_at_ms`, and those without `iat` until a later
    // login through cockpit sets `lifted_at_ms`.
    "CREATE TABLE revoked_identities (
        identity TEXT PRIMARY KEY,
        revoked_at_ms INTEGER NOT NULL,
        lifted_at_ms INTEGER
    );",
    // lead: a log line names its run, so following a run's log reads that run's lines after a
    // place through one index (instead of visiting every job of the run).
    "ALTER TABLE job_logs ADD COLUMN run_key TEXT;
    UPDATE job_logs SET run_key = (SELECT run_key FROM jobs WHERE jobs.key = job_logs.job_key);
    CREATE INDEX job_logs_run ON job_logs (run_key, seq);",
    // lead: when a job started and ended (the console's run timeline, the run's JSON).
    "ALTER TABLE jobs ADD COLUMN started_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN ended_ms INTEGER;",
    // lead: a mail's file is written only once an action is to get the mail; the mark says it
    // was, so the start writes again only those files (and those of pending events). Mails kept
    // from before had their files written.
    "ALTER TABLE mail_messages ADD COLUMN written INTEGER NOT NULL DEFAULT 1;",
    // replicas: a repository's files (blueprints, templates, actions) in the database, so the
    // server that takes a PostgreSQL store over has them (kept on PostgreSQL only; a SQLite
    // store's files are its data directory's).
    "CREATE TABLE repo_files (
        repo TEXT NOT NULL,
        path TEXT NOT NULL,
        content BLOB NOT NULL,
        mode INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (repo, path)
    );",
    // replicas: a mail a sender delivers again (it never saw the first `250`, the server that
    // gave it died) is recognised by its Message-ID and envelope, and starts nothing twice.
    "ALTER TABLE mail_messages ADD COLUMN dedup TEXT;
    CREATE UNIQUE INDEX mail_messages_dedup ON mail_messages (dedup);",
    // replicas: the server-side sessions of `oauth::client` apps (the web console's), keyed by
    // the SHA-256 of the cookie's id, and the login token ids they accepted, so a restart or a
    // takeover logs nobody out and a token is still used once.
    "CREATE TABLE app_sessions (
        app TEXT NOT NULL,
        id TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        user_json TEXT,
        pending TEXT,
        PRIMARY KEY (app, id)
    );
    CREATE INDEX app_sessions_expiry ON app_sessions (expires_ms);
    CREATE TABLE app_used_tokens (
        jti TEXT PRIMARY KEY,
        until_s INTEGER NOT NULL
    );
    CREATE INDEX app_used_tokens_expiry ON app_used_tokens (until_s);",
];

/// The setting that names the server holding a PostgreSQL store's claim.
const CLAIM_SETTING: &str = "claimed_by";
/// How often a held claim is looked at.
const CLAIM_LOOK_EVERY: Duration = Duration::from_secs(2);
/// How long a holder may go without confirming its claim before it stops (its actions killed,
/// the process ended): well under the ~25 s of silence after which the database drops the
/// claim's session ([`CLAIM_SESSION`]), so no standby takes over while it still runs.
pub const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// The claim's session asks the database to drop it after about 25 s of silence from this
/// server (10 s idle, then 3 keepalive probes 5 s apart; 25 s for unacknowledged data), so a
/// holder whose machine or network is gone loses the claim in under half a minute, not after
/// the server's default TCP timeouts (hours), and never before [`CLAIM_LEASE`].
const CLAIM_SESSION: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000;";

/// A server's hold on its store ([`Store::claim`]); released when dropped.
#[must_use = "the claim is released when this is dropped"]
pub struct Claim {
    /// Set when the claim is dropped (PostgreSQL only).
    released: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(released) = &self.released {
            released.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Takes the schema's advisory lock on `conn` unless another session holds it.
fn take_claim(conn: &Conn) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT pg_try_advisory_lock(7283002, hashtext(current_schema()))",
        params![],
        |row| row.get(0),
    )?)
}

/// Why a server lost its claim on a PostgreSQL store: it must stop at once, and first kill
/// what it runs, since another server runs it all again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimLost {
    /// Its connection was lost and another server took the claim meanwhile.
    TakenByAnother,
    /// It could not confirm the claim for [`CLAIM_LEASE`]: the database may drop its session
    /// (and the claim with it) soon, and a standby take over.
    Unconfirmed,
}

/// What one look at the claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Held (or taken again on a new connection).
    Held,
    /// Another session holds it.
    Other,
    /// The database did not answer.
    Failed,
}

/// Looks at the claim on `conn`, taking it again on a connection made again.
fn look_at_claim(conn: &Conn) -> Look {
    let held = conn.query_row(
        "SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted",
        params![],
        |row| row.get::<_, i64>(0),
    );
    match held {
        Ok(0) => match take_claim(conn) {
            Ok(true) => {
                tracing::warn!("the database connection was lost; claim taken again");
                Look::Held
            }
            Ok(false) => Look::Other,
            Err(err) => {
                tracing::warn!(%err, "cannot take the claim again yet");
                Look::Failed
            }
        },
        Ok(_) => Look::Held,
        Err(err) => {
            tracing::warn!(%err, "cannot look at the claim (will connect again)");
            Look::Failed
        }
    }
}

/// The claim's guard, run on two threads until the claim is released: one looks every
/// `every`; the other (which a look stuck on a silent network cannot hold up) fires `lost` with
/// [`ClaimLost::Unconfirmed`] when no look has confirmed the claim for `lease`. A look that
/// finds another holder fires it with [`ClaimLost::TakenByAnother`]. `lost` runs once.
fn keep_claim(
    mut look: impl FnMut() -> Look + Send + 'static,
    released: Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
    lease: Duration,
    lost: impl FnOnce(ClaimLost) + Send + 'static,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    type Lost = Box<dyn FnOnce(ClaimLost) + Send>;
    let lost: Arc<Mutex<Option<Lost>>> = Arc::new(Mutex::new(Some(Box::new(lost))));
    let fire = move |why: ClaimLost| {
        if let Some(lost) = lost.lock().take() {
            lost(why);
        }
    };
    let confirmed = Arc::new(Mutex::new(std::time::Instant::now()));
    let (watched, stop, alarm) = (confirmed.clone(), released.clone(), fire.clone());
    std::thread::Builder::new()
        .name("store-claim-lease".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every.min(lease / 4));
                if watched.lock().elapsed() > lease && !stop.load(Ordering::Relaxed) {
                    alarm(ClaimLost::Unconfirmed);
                    return;
                }
            }
        })?;
    std::thread::Builder::new()
        .name("store-claim".into())
        .spawn(move || {
            while !released.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                match look() {
                    Look::Held => *confirmed.lock() = std::time::Instant::now(),
                    Look::Other => {
                        fire(ClaimLost::TakenByAnother);
                        return;
                    }
                    Look::Failed => {}
                }
            }
        })?;
    Ok(())
}

/// How many connections a store keeps to PostgreSQL.
pub const POSTGRES_CONNECTIONS: usize = 8;

/// The handle to durable state; cheap to clone, safe to share between actors and threads.
#[derive(Clone)]
pub struct Store {
    /// The connections: SQLite's one (it serialises writers anyway, and queries here are
    /// short), or [`POSTGRES_CONNECTIONS`] to PostgreSQL, whose commits then wait for the disk
    /// together (one WAL flush for the transactions committing at once) instead of in turn.
    conns: Arc<[Mutex<Conn>]>,
    /// Where the next call starts looking for a free connection.
    next: Arc<std::sync::atomic::AtomicUsize>,
    /// PostgreSQL's URL and schema, for a connection of its own ([`Store::claim`]).
    postgres: Option<Arc<(String, Option<String>)>>,
    /// The database file, for messages.
    path: PathBuf,
    /// How many times this process rang the revocation bell (`auth::revoked` hears its own
    /// process's revocations at once, without looking at the file).
    rings: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/cockpit.db` and brings its schema up to date. A new
    /// data directory is created `0700` and a new database file `0600` (SQLite gives its `-wal`
    /// and `-shm` files the database file's mode).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        #[cfg(test)]
        if let Some(store) = test_postgres::open(dir) {
            return store;
        }
        create_private_dir(dir)?;
        let path = dir.join("cockpit.db");
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| StoreError::CreateFile {
                    path: path.clone(),
                    source,
                })?;
        }
        Store::connect(Connection::open(&path)?, path)
    }

    /// Opens an existing `<dir>/cockpit.db`, for commands that act on existing data: a missing
    /// file is [`StoreError::Missing`], never a new empty database.
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        use rusqlite::OpenFlags;
        let path = dir.join("cockpit.db");
        if !path.is_file() {
            return Err(StoreError::Missing { path });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|err| match err {
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::CannotOpen => {
                StoreError::Missing { path: path.clone() }
            }
            other => other.into(),
        })?;
        Store::connect(conn, path)
    }

    fn connect(conn: Connection, path: PathBuf) -> Result<Store, StoreError> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(256);
        Store::start(vec![Conn::Sqlite(conn)], path)
    }

    /// Connects to the PostgreSQL database at `url` (tables in `schema`, created if missing)
    /// and brings its schema up to date; `dir` is the data directory, for the files beside the
    /// database (the revocation bell).
    pub fn open_postgres(dir: &Path, url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        Store::open_postgres_with(dir, url, schema, POSTGRES_CONNECTIONS)
    }

    /// [`Store::open_postgres`] with `connections` connections (at least one): a command that
    /// makes a few calls and ends needs one, not a server's share of the database's limit.
    pub fn open_postgres_with(
        dir: &Path,
        url: &str,
        schema: Option<&str>,
        connections: usize,
    ) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        let conns = (0..connections.max(1))
            .map(|_| db::Postgres::connect(url, schema).map(Conn::Postgres))
            .collect::<Result<Vec<_>, _>>()?;
        let mut store = Store::start(conns, dir.join("cockpit.db"))?;
        store.postgres = Some(Arc::new((url.to_owned(), schema.map(str::to_owned))));
        Ok(store)
    }

    /// Claims the store for the server `holder` describes (its pid and host), for as long as
    /// the returned [`Claim`] lives. On PostgreSQL, a session advisory lock on a connection of
    /// its own, keyed by the schema: the database releases it when that connection ends (the
    /// process died), so a second server on the same database and schema gets
    /// [`StoreError::Claimed`] naming the holder, until the first is gone. Should the connection
    /// be lost while the server runs, the claim is taken again on a new one; if another server
    /// took it in between, this process stops at once rather than run beside it. On SQLite
    /// there is nothing to do: the data directory's lock file is the claim.
    ///
    /// A holder must also stop when it cannot confirm its claim for [`CLAIM_LEASE`] (a network
    /// that went silent): the claim's connection asks the database to drop its session after
    /// [`CLAIM_SESSION`]'s keepalives (about 25 s of silence), so the holder has stopped before
    /// a standby can take the claim. `lost` runs (once, on a thread of the claim) in both
    /// cases; it must stop what the server runs and end the process.
    pub fn claim(
        &self,
        holder: &str,
        lost: impl FnOnce(ClaimLost) + Send + 'static,
    ) -> Result<Claim, StoreError> {
        self.claim_watched(holder, CLAIM_LOOK_EVERY, CLAIM_LEASE, lost)
    }

    /// [`Store::claim`], looked at every `every`, with a lease of `lease`.
    fn claim_watched(
        &self,
        holder: &str,
        every: Duration,
        lease: Duration,
        lost: impl FnOnce(ClaimLost) + Send + 'static,
    ) -> Result<Claim, StoreError> {
        let Some(postgres) = &self.postgres else {
            return Ok(Claim { released: None });
        };
        let (url, schema) = postgres.as_ref();
        let conn = Conn::Postgres(db::Postgres::connect_with(
            url,
            schema.as_deref(),
            CLAIM_SESSION,
        )?);
        if !take_claim(&conn)? {
            let holder = self
                .setting(CLAIM_SETTING)?
                .unwrap_or_else(|| "unknown".into());
            return Err(StoreError::Claimed { holder });
        }
        self.set_setting(CLAIM_SETTING, holder)?;
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        keep_claim(
            move || look_at_claim(&conn),
            released.clone(),
            every,
            lease,
            lost,
        )
        .map_err(|e| DbError::Connect(format!("cannot start the claim's threads: {e}")))?;
        Ok(Claim {
            released: Some(released),
        })
    }

    /// Brings the schema up to date through the first connection; the store of `conns`.
    fn start(conns: Vec<Conn>, path: PathBuf) -> Result<Store, StoreError> {
        migrate(conns.first().expect("at least one connection"))?;
        Ok(Store {
            conns: conns.into_iter().map(Mutex::new).collect(),
            next: Arc::default(),
            postgres: None,
            path,
            rings: Arc::default(),
        })
    }

    /// Whether several servers may share this store (PostgreSQL): then what a server keeps on
    /// its own disk (a repository's files) is kept in the store too.
    pub fn shared(&self) -> bool {
        self.postgres.is_some()
    }

    /// Whether the database answers a query (`/ready`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock().query_row("SELECT 1", params![], |_| Ok(()))?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many connections to the database this store holds.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema_version(&self.lock())
    }

    /// The engine's own consistency check: `ok`, or what is damaged. SQLite checks the whole
    /// file; PostgreSQL checks its own pages as it reads them, so its answer is `ok` once the
    /// server answers.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.lock();
        if conn.is_postgres() {
            conn.query_row("SELECT 1", params![], |_| Ok(()))?;
            return Ok("ok".into());
        }
        Ok(conn.query_row("PRAGMA integrity_check", params![], |row| row.get(0))?)
    }

    /// The connection for a write that must outlive a crash of this process but not of the
    /// machine: its commit is not synced to the disk (SQLite: `synchronous = NORMAL` in WAL
    /// mode, the write is in the WAL, in the OS's cache, the moment it commits; the next synced
    /// commit or checkpoint makes it durable. PostgreSQL: `synchronous_commit = off`). For what
    /// only matters while this process's children live (a running job's state, process group
    /// and live log lines: a machine crash ends the job too, and its run is queued again
    /// anyway). Synced commits are back when the guard goes, for every other write.
    pub(crate) fn lock_unsynced(&self) -> Result<Unsynced<'_>, StoreError> {
        let conn = self.lock();
        conn.set_synced(false)?;
        Ok(Unsynced(conn))
    }

    /// The connection (a panic elsewhere while holding it does not make the data unusable:
    /// every write is a transaction that rolled back, and `parking_lot` locks do not poison).
    fn lock(&self) -> MutexGuard<'_, Conn> {
        let count = self.conns.len();
        if count == 1 {
            return self.conns[0].lock();
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..count)
            .find_map(|i| self.conns[(start + i) % count].try_lock())
            .unwrap_or_else(|| self.conns[start % count].lock())
    }
}

/// The connection while its commits are not synced ([`Store::lock_unsynced`]).
pub(crate) struct Unsynced<'a>(MutexGuard<'a, Conn>);

impl std::ops::Deref for Unsynced<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl Drop for Unsynced<'_> {
    fn drop(&mut self) {
        // Setting a pragma does no IO; should it fail, the connection is closed rather than
        // left writing unsynced.
        if let Err(err) = self.0.set_synced(true) {
            tracing::error!(%err, "cannot restore synchronous writes");
            std::process::abort();
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::Database(err.into())
    }
}

/// Creates `dir` (and missing parents) readable by cockpit's user only; an existing directory
/// keeps the mode its owner gave it.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// The schema version: SQLite's `user_version`; PostgreSQL's `cockpit_schema` table.
fn schema_version(conn: &Conn) -> Result<i64, StoreError> {
    if conn.is_postgres() {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS cockpit_schema (version BIGINT NOT NULL)")?;
        let found: Option<i64> = conn.query_row(
            "SELECT MAX(version) FROM cockpit_schema",
            params![],
            |row| row.get(0),
        )?;
        return Ok(found.unwrap_or(0));
    }
    Ok(conn.query_row("PRAGMA user_version", params![], |row| row.get(0))?)
}

/// Brings the schema up to date, one transaction per version. On PostgreSQL, replicas starting
/// together take turns (an advisory lock held until each version commits).
fn migrate(conn: &Conn) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if conn.is_postgres() {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS cockpit_schema (version BIGINT NOT NULL)")?;
    }
    loop {
        let tx = conn.transaction()?;
        if tx.is_postgres() {
            tx.execute_batch("SELECT pg_advisory_xact_lock(7283001)")?;
        }
        let found = schema_version(&tx)?;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        if tx.is_postgres() {
            tx.execute_batch(&postgres_ddl(sql))?;
            tx.execute(
                "INSERT INTO cockpit_schema (version) VALUES (?1)",
                params![found + 1],
            )?;
        } else {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", found + 1))?;
        }
        tx.commit()?;
    }
}

/// A migration's SQLite DDL in PostgreSQL's types: 64-bit integers, identity keys, `bytea`, and
/// SQLite's implicit `rowid` (the order rows were inserted in, which queries sort by) made an
/// identity column of every new table.
fn postgres_ddl(sql: &str) -> String {
    let mut tables = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("CREATE TABLE ") {
        let open = at + rest[at..].find('(').expect("a CREATE TABLE has columns") + 1;
        tables.push_str(&rest[..open]);
        tables.push_str("\n        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY,");
        rest = &rest[open..];
    }
    tables.push_str(rest);
    tables
        .replace(
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace("INTEGER", "BIGINT")
        .replace("REAL", "DOUBLE PRECISION")
        .replace("BLOB", "BYTEA")
}

/// The unit tests on PostgreSQL: with `COCKPIT_TEST_POSTGRES=<url>` set, [`Store::open`] of a
/// test's directory opens a schema of that database named after the directory (so that a test
/// reopening its directory finds its data again, and tests running together do not meet).
#[cfg(test)]
mod test_postgres {
    use super::*;

    pub(super) fn open(dir: &Path) -> Option<Result<Store, StoreError>> {
        let base = std::env::var("COCKPIT_TEST_POSTGRES").ok()?;
        Some(open_schema(dir, &base))
    }

    fn open_schema(dir: &Path, base: &str) -> Result<Store, StoreError> {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        let schema = format!("t_{}", hex::encode(&digest[..12]));
        Store::open_postgres(dir, base, Some(&schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use db::OptionalExtension as _;

    #[test]
    fn migrations_run_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        drop(store);
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            again.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
    }

    #[test]
    fn a_transaction_inside_another_is_refused_and_the_outer_one_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let conn = store.lock();
        let outer = conn.transaction().expect("outer");
        outer
            .execute(
                "INSERT INTO settings (key, value) VALUES ('nested', 'outer')",
                params![],
            )
            .expect("write");
        assert!(matches!(outer.transaction(), Err(DbError::Nested)));
        drop(outer); // rolled back: nothing was committed by the refused inner one
        let after = conn.transaction().expect("a new one after");
        after.commit().expect("commit");
        drop(conn);
        assert_eq!(store.setting("nested").expect("read"), None);
    }

    #[test]
    fn unsynced_writes_leave_every_other_write_synced_even_when_they_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let synced = |conn: &Conn| -> bool {
            if conn.is_postgres() {
                let level: String = conn
                    .query_row("SHOW synchronous_commit", params![], |row| row.get(0))
                    .expect("setting");
                level == "on"
            } else {
                let level: i64 = conn
                    .query_row("PRAGMA synchronous", params![], |row| row.get(0))
                    .expect("pragma");
                level == 2 // FULL (NORMAL is 1)
            }
        };
        let level = |store: &Store| synced(&store.lock());
        assert!(level(&store));
        {
            let conn = store.lock_unsynced().expect("unsynced");
            assert!(!synced(&conn));
        }
        assert!(level(&store));
        // A write that fails inside its transaction: rolled back, then synced again.
        {
            let conn = store.lock_unsynced().expect("unsynced");
            let tx = conn.transaction().expect("tx");
            assert!(
                tx.execute("INSERT INTO no_such_table VALUES (1)", params![])
                    .is_err()
            );
        }
        assert!(level(&store));
        store
            .set_job_group("nothing", 7)
            .expect("a job that is not there");
        store
            .start_job("nothing", 1)
            .expect("a job that is not there");
        assert!(level(&store));
    }

    /// The store of `dir` if the tests run on PostgreSQL (`COCKPIT_TEST_POSTGRES`), else `None`
    /// (what the test checks is PostgreSQL's alone).
    fn postgres_store(dir: &Path) -> Option<Store> {
        let store = Store::open(dir).expect("open");
        let postgres = store.lock().is_postgres();
        if !postgres {
            eprintln!("on SQLite: this test runs with COCKPIT_TEST_POSTGRES");
        }
        postgres.then_some(store)
    }

    #[test]
    fn a_lost_postgres_connection_is_made_again_outside_a_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(store) = postgres_store(dir.path()) else {
            return;
        };
        store.set_setting("before", "1").expect("write");
        // Every connection of the store ends (each guard taken while the others are held).
        let kill = |store: &Store| {
            let guards: Vec<_> = (0..store.conns.len()).map(|_| store.lock()).collect();
            for conn in &guards {
                assert!(
                    conn.execute_batch("SELECT pg_terminate_backend(pg_backend_pid())")
                        .is_err()
                );
            }
        };
        kill(&store);
        assert_eq!(store.setting("before").expect("read").as_deref(), Some("1"));
        // Lost inside a transaction: the rest of it fails, nothing runs outside it.
        {
            let conn = store.lock();
            let tx = conn.transaction().expect("begin");
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('half', '1')",
                params![],
            )
            .expect("first half");
            assert!(
                tx.execute_batch("SELECT pg_terminate_backend(pg_backend_pid())")
                    .is_err()
            );
            assert!(
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('other', '1')",
                    params![],
                )
                .is_err()
            );
        }
        assert_eq!(store.setting("half").expect("read"), None);
        assert_eq!(store.setting("other").expect("read"), None);
        store.set_setting("after", "1").expect("write again");
        let synced: String = store
            .lock()
            .query_row("SHOW synchronous_commit", params![], |row| row.get(0))
            .expect("setting");
        assert_eq!(synced, "on", "a new connection waits for the disk too");
    }

    #[test]
    fn postgres_transactions_of_different_callers_run_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(store) = postgres_store(dir.path()) else {
            return;
        };
        assert_eq!(store.conns.len(), POSTGRES_CONNECTIONS);
        // A transaction left open by one caller does not hold the others up.
        let conn = store.lock();
        let open = conn.transaction().expect("begin");
        open.execute(
            "INSERT INTO settings (key, value) VALUES ('open', '1')",
            params![],
        )
        .expect("insert");
        let (done, wait) = std::sync::mpsc::channel();
        let other = store.clone();
        std::thread::spawn(move || {
            let _ = done.send(other.set_setting("other", "1"));
        });
        wait.recv_timeout(Duration::from_secs(10))
            .expect("another caller's write does not wait for the open transaction")
            .expect("write");
        drop(open);
        drop(conn);
        assert_eq!(store.setting("open").expect("read"), None, "rolled back");
        assert_eq!(store.setting("other").expect("read").as_deref(), Some("1"));
    }

    #[test]
    fn a_claim_is_refused_to_a_second_holder_and_taken_again_after_its_connection_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(store) = postgres_store(dir.path()) else {
            return;
        };
        let claim = store.claim("pid 1 on a", |_| {}).expect("claim");
        let second = Store::open(dir.path()).expect("a second store on the same schema");
        match second.claim("pid 2 on b", |_| {}) {
            Err(StoreError::Claimed { holder }) => assert_eq!(holder, "pid 1 on a"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // The server ends the claim's session: the claim is taken again on a new connection.
        let holder = |store: &Store| -> Option<i64> {
            store
                .lock()
                .query_row(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7283002
                       AND objid::bigint = (hashtext(current_schema())::bigint & 4294967295)
                       AND granted",
                    params![],
                    |row| row.get::<_, i32>(0),
                )
                .optional()
                .expect("pg_locks")
                .map(i64::from)
        };
        let before = holder(&store).expect("held");
        store
            .lock()
            .execute_batch(&format!("SELECT pg_terminate_backend({before})"))
            .expect("terminate");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let again = loop {
            match holder(&store) {
                Some(pid) if pid != before => break pid,
                _ => {
                    assert!(std::time::Instant::now() < deadline, "not taken again");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        assert_ne!(again, before);
        drop(claim);
    }

    #[test]
    fn a_claim_another_server_took_while_its_connection_was_lost_stops_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(store) = postgres_store(dir.path()) else {
            return;
        };
        let (lost, heard) = std::sync::mpsc::channel();
        // Looked at every 3 s: the other server takes the claim well before.
        let claim = store
            .claim_watched(
                "pid 1 on a",
                Duration::from_secs(3),
                Duration::from_secs(60),
                move |why| {
                    let _ = lost.send(why);
                },
            )
            .expect("claim");
        let pid: i32 = store
            .lock()
            .query_row(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7283002
                   AND objid::bigint = (hashtext(current_schema())::bigint & 4294967295)
                   AND granted",
                params![],
                |row| row.get(0),
            )
            .expect("held");
        store
            .lock()
            .execute_batch(&format!("SELECT pg_terminate_backend({pid})"))
            .expect("terminate");
        let other = Store::open(dir.path()).expect("another server's store");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let _taken = loop {
            match other.claim("pid 2 on b", |_| {}) {
                Ok(claim) => break claim,
                Err(StoreError::Claimed { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("the other server cannot claim: {err}"),
            }
        };
        let why = heard
            .recv_timeout(Duration::from_secs(10))
            .expect("the first holder hears that it lost the claim");
        assert_eq!(why, ClaimLost::TakenByAnother);
        drop(claim);
    }

    #[test]
    fn the_claims_session_asks_the_database_to_drop_it_after_25_s_of_silence() {
        let Ok(url) = std::env::var("COCKPIT_TEST_POSTGRES") else {
            eprintln!("on SQLite: this test runs with COCKPIT_TEST_POSTGRES");
            return;
        };
        let conn =
            Conn::Postgres(db::Postgres::connect_with(&url, None, CLAIM_SESSION).expect("connect"));
        let show = |name: &str| -> String {
            conn.query_row(&format!("SHOW {name}"), params![], |row| row.get(0))
                .expect("show")
        };
        assert_eq!(show("tcp_keepalives_idle"), "10");
        assert_eq!(show("tcp_keepalives_interval"), "5");
        assert_eq!(show("tcp_keepalives_count"), "3");
        assert_eq!(show("tcp_user_timeout"), "25000");
        assert!(Duration::from_secs(10 + 3 * 5) > CLAIM_LEASE + Duration::from_secs(5));
    }

    /// Runs the claim's guard on `look`; what it fires, in order.
    fn guard(
        look: impl FnMut() -> Look + Send + 'static,
        lease: Duration,
    ) -> (
        Arc<std::sync::atomic::AtomicBool>,
        std::sync::mpsc::Receiver<ClaimLost>,
    ) {
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        keep_claim(
            look,
            released.clone(),
            Duration::from_millis(10),
            lease,
            move |why| {
                let _ = tx.send(why);
            },
        )
        .expect("threads");
        (released, rx)
    }

    #[test]
    fn a_claim_nobody_can_confirm_for_its_lease_is_lost_once() {
        let lease = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let (_released, lost) = guard(|| Look::Failed, lease);
        let why = lost
            .recv_timeout(Duration::from_secs(10))
            .expect("the lease ends");
        assert_eq!(why, ClaimLost::Unconfirmed);
        assert!(started.elapsed() >= lease, "not before the lease");
        assert!(
            lost.recv_timeout(Duration::from_millis(500)).is_err(),
            "lost runs once"
        );
    }

    #[test]
    fn a_confirmed_claim_is_kept_and_a_taken_one_is_lost_at_once() {
        let lease = Duration::from_millis(100);
        let (released, kept) = guard(|| Look::Held, lease);
        assert!(
            kept.recv_timeout(lease * 8).is_err(),
            "confirmed every 10 ms: kept"
        );
        released.store(true, std::sync::atomic::Ordering::Relaxed);

        let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = looks.clone();
        let (_released, taken) = guard(
            move || match counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0..3 => Look::Held,
                _ => Look::Other,
            },
            Duration::from_secs(60),
        );
        let why = taken
            .recv_timeout(Duration::from_secs(10))
            .expect("another holder is seen");
        assert_eq!(why, ClaimLost::TakenByAnother);

        // A released claim fires nothing, whatever its looks would say.
        let (released, rx) = guard(|| Look::Failed, lease);
        released.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            rx.recv_timeout(lease * 5).is_err(),
            "released: nothing fires"
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let conn = store.lock();
        if conn.is_postgres() {
            conn.execute_batch("INSERT INTO cockpit_schema (version) VALUES (999)")
        } else {
            conn.execute_batch("PRAGMA user_version = 999")
        }
        .expect("bump");
        drop(conn);
        drop(store);
        let err = Store::open(dir.path()).expect_err("too new");
        assert!(err.to_string().contains("schema version 999"), "{err}");
    }
}
