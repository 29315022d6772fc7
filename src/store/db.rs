//! The one place that speaks to a database engine: SQLite (embedded, the default) or
//! PostgreSQL (`[storage] url`, for replicas sharing one database).
//!
//! The store's queries are written once, in the SQL both engines take (`?N` placeholders,
//! `ON CONFLICT`, `RETURNING`, `COALESCE`), against [`Conn`], whose methods have the shape of
//! rusqlite's (`execute`, `query_row`, `prepare_cached`, `query_map`, `transaction`). For
//! PostgreSQL, placeholders become `$N` and statements are prepared once per connection.
//!
//! PostgreSQL is reached through `tokio-postgres`: its connection (the socket) runs on a thread
//! of its own with its own small runtime, and the store's calls wait on the client's futures with
//! `futures::executor::block_on`. A store call thus blocks its caller exactly as a SQLite call
//! does, from any thread, inside a tokio runtime or not (the blocking `postgres` crate panics
//! when called from a runtime's worker).

use std::cell::RefCell;
use std::collections::HashMap;

/// A value bound to a placeholder or read from a column, borrowed where it can be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// What a database call failed with.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused an operation.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused an operation, or its connection failed.
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The connection to PostgreSQL could not be set up.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// A query that must return a row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// A transaction was begun inside another (a bug: PostgreSQL would only warn, and the
    /// inner commit would commit the outer one).
    #[error("a transaction was begun inside another")]
    Nested,
    /// A column's value is not what the code reads it as.
    #[error("column {index}: {message}")]
    Column {
        /// The column's position.
        index: usize,
        /// What was found.
        message: String,
    },
}

/// What PostgreSQL said (its code and message; `tokio_postgres::Error` alone prints "db error").
/// The detail, which may quote row values, is left out.
fn postgres_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // "error connecting to server: Connection refused (os error 111)".
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            text
        }
    }
}

/// `Result<T, DbError>` for queries.
pub(crate) type Result<T> = std::result::Result<T, DbError>;

/// Turns "no rows" into `None`, as rusqlite's extension of the same name.
pub(crate) trait OptionalExtension<T> {
    /// `Ok(None)` for [`DbError::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(DbError::NoRows) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// Something that can be bound to a placeholder.
pub(crate) trait Param {
    /// The value to bind.
    fn value(&self) -> Value<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8);

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

/// The placeholders' values of one statement: `params![a, b]`.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::db::Param]
    };
    ($($value:expr),+ $(,)?) => {
        &[$(&$value as &dyn $crate::store::db::Param),+] as &[&dyn $crate::store::db::Param]
    };
}
pub(crate) use params;

/// Something a column can be read as.
pub(crate) trait Column: Sized {
    /// Reads the column's value, or says what it is instead.
    fn column(value: Value<'_>) -> std::result::Result<Self, String>;
}

fn wrong(value: Value<'_>, wanted: &str) -> String {
    let found = match value {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("{found} where {wanted} was expected")
}

macro_rules! int_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn column(value: Value<'_>) -> std::result::Result<Self, String> {
                match value {
                    Value::Int(v) => <$t>::try_from(v).map_err(|e| format!("{v}: {e}")),
                    other => Err(wrong(other, "an integer")),
                }
            }
        }
    )*};
}
int_column!(i64, i32, u32, u64, usize, u16, u8);

impl Column for bool {
    fn column(value: Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Int(v) => Ok(v != 0),
            other => Err(wrong(other, "a boolean")),
        }
    }
}

impl Column for f64 {
    fn column(value: Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Real(v) => Ok(v),
            Value::Int(v) => Ok(v as f64),
            other => Err(wrong(other, "a number")),
        }
    }
}

impl Column for String {
    fn column(value: Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Text(v) => Ok(v.to_owned()),
            other => Err(wrong(other, "text")),
        }
    }
}

impl Column for Vec<u8> {
    fn column(value: Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(v) => Ok(v.to_vec()),
            Value::Text(v) => Ok(v.as_bytes().to_vec()),
            other => Err(wrong(other, "bytes")),
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn column(value: Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::column(other).map(Some),
        }
    }
}

/// A column's position (the second type parameter of [`Row::get`] is the one callers name).
pub(crate) trait ColumnIndex {
    /// The position.
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
pub(crate) enum Row<'r> {
    /// A SQLite row.
    Sqlite(&'r rusqlite::Row<'r>),
    /// A PostgreSQL row.
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `index`, read as `T`.
    pub(crate) fn get<I: ColumnIndex, T: Column>(&self, index: I) -> Result<T> {
        let index = index.index();
        let column = |message: String| DbError::Column { index, message };
        match self {
            Row::Sqlite(row) => {
                use rusqlite::types::ValueRef;
                let value = match row.get_ref(index)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(v) => {
                        Value::Text(std::str::from_utf8(v).map_err(|e| column(e.to_string()))?)
                    }
                    ValueRef::Blob(v) => Value::Blob(v),
                };
                T::column(value).map_err(column)
            }
            Row::Postgres(row) => T::column(postgres_value(row, index)?).map_err(column),
        }
    }
}

/// Column `index` of a PostgreSQL row as a [`Value`], by the column's type.
fn postgres_value(row: &tokio_postgres::Row, index: usize) -> Result<Value<'_>> {
    use tokio_postgres::types::Type;
    let ty = row
        .columns()
        .get(index)
        .ok_or_else(|| DbError::Column {
            index,
            message: "no such column".into(),
        })?
        .type_()
        .clone();
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)?
            .map(|v| Value::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<&str>>(index)?.map(Value::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(index)?.map(Value::Blob),
        other => {
            return Err(DbError::Column {
                index,
                message: format!("type {other} is not read by the store (cast it in the query)"),
            });
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl tokio_postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use tokio_postgres::types::{IsNull, Type};
        match (*self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (v != 0).to_sql(ty, out),
            (Value::Int(v), &Type::FLOAT8) => (v as f64).to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT4) => (v as f32).to_sql(ty, out),
            (Value::Text(v), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                v.to_sql(ty, out)
            }
            (Value::Blob(v), &Type::BYTEA) => v.to_sql(ty, out),
            (value, ty) => Err(wrong(value, &format!("a {ty} parameter")).into()),
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// An open connection to one of the two engines.
pub(crate) enum Conn {
    /// The embedded SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server.
    Postgres(Postgres),
}

/// A PostgreSQL connection: the client, its statements, and the thread that drives its socket.
pub(crate) struct Postgres {
    /// Where to connect again when the connection is lost.
    url: String,
    /// What every new connection runs first (its settings).
    setup: String,
    client: RefCell<tokio_postgres::Client>,
    /// Whether a transaction is open: a connection lost inside one is not replaced until it
    /// ends (its statements fail; a new connection would run the rest outside it).
    in_transaction: std::cell::Cell<bool>,
    /// Whether the last call found the connection gone (closed, or ended by the server).
    lost: std::cell::Cell<bool>,
    /// Statements prepared on this connection, by the store's SQL (a closed set of strings,
    /// bounded anyway: a full cache starts again).
    prepared: RefCell<HashMap<String, tokio_postgres::Statement>>,
}

/// How many statements a PostgreSQL connection keeps prepared.
const PREPARED_MAX: usize = 512;

impl Postgres {
    /// Connects to `url` (TLS when its `sslmode` asks: [`transport_of`]),
    /// driving the connection on a thread of its own.
    pub(crate) fn connect(url: &str, schema: Option<&str>) -> Result<Postgres> {
        Postgres::connect_with(url, schema, "")
    }

    /// [`Postgres::connect`], with `extra` statements run on every connection made (its
    /// session's settings).
    pub(crate) fn connect_with(url: &str, schema: Option<&str>, extra: &str) -> Result<Postgres> {
        // Whatever the server's default: an acknowledged write waits for the disk.
        let mut setup = format!("SET synchronous_commit = on;{extra}");
        if let Some(schema) = schema {
            let admin = Postgres::client_for(url, &setup)?;
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            if let Err(err) = futures::executor::block_on(admin.batch_execute(&create)) {
                // Two processes may race to create it; the loser finds it there.
                let find = "SELECT 1 FROM pg_namespace WHERE nspname = $1";
                if futures::executor::block_on(admin.query_opt(find, &[&schema]))?.is_none() {
                    return Err(err.into());
                }
            }
            setup.push_str(&format!("SET search_path TO {schema};"));
        }
        Ok(Postgres {
            url: url.to_owned(),
            client: RefCell::new(Postgres::client_for(url, &setup)?),
            setup,
            in_transaction: std::cell::Cell::new(false),
            lost: std::cell::Cell::new(false),
            prepared: RefCell::default(),
        })
    }

    /// The client, connected again first if the server closed the connection (a restart, a
    /// failover) and no transaction is open.
    fn client(&self) -> Result<std::cell::Ref<'_, tokio_postgres::Client>> {
        if (self.lost.get() || self.client.borrow().is_closed()) && !self.in_transaction.get() {
            let client = Postgres::client_for(&self.url, &self.setup)?;
            self.prepared.borrow_mut().clear();
            *self.client.borrow_mut() = client;
            self.lost.set(false);
            tracing::info!("connected to PostgreSQL again");
        }
        Ok(self.client.borrow())
    }

    /// Connects to `url` on a thread of its own that then drives the connection.
    fn client_for(url: &str, setup: &str) -> Result<tokio_postgres::Client> {
        let (config, transport) = connection_config(url)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = tx.send(Err(format!("cannot start its runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match transport {
                        Transport::Plain => {
                            drive(config.connect(tokio_postgres::NoTls).await, tx).await;
                        }
                        Transport::Tls(tls) => drive(config.connect(tls).await, tx).await,
                    }
                });
            });
        let failed = |message: String| DbError::Connect(message);
        thread.map_err(|e| failed(format!("cannot start its thread: {e}")))?;
        let client = rx
            .recv()
            .map_err(|_| failed("its thread ended".into()))?
            .map_err(failed)??;
        futures::executor::block_on(client.batch_execute(setup))?;
        Ok(client)
    }

    /// Waits for a call on the client; notes a lost connection, to make a new one next time.
    fn wait<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        futures::executor::block_on(call).map_err(|err| {
            let fatal = err
                .as_db_error()
                .is_some_and(|db| db.severity() == "FATAL" || db.severity() == "PANIC");
            if err.is_closed() || fatal {
                self.lost.set(true);
            }
            DbError::Postgres(err)
        })
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        // Connected again first, if need be: that empties the statements of the lost connection.
        drop(self.client()?);
        if let Some(statement) = self.prepared.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.wait(self.client()?.prepare(&dollar_placeholders(sql)))?;
        let mut prepared = self.prepared.borrow_mut();
        if prepared.len() >= PREPARED_MAX {
            prepared.clear();
        }
        prepared.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn Param],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let values = values(params);
        self.wait(self.client()?.query(statement, &postgres_refs(&values)))
    }

    fn execute(&self, statement: &tokio_postgres::Statement, params: &[&dyn Param]) -> Result<u64> {
        let values = values(params);
        self.wait(self.client()?.execute(statement, &postgres_refs(&values)))
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.wait(self.client()?.batch_execute(sql))
    }

    /// Runs `BEGIN`, `COMMIT` or `ROLLBACK`, and remembers whether a transaction is open.
    fn transaction_control(&self, sql: &str) -> Result<()> {
        let result = self.batch(sql);
        self.in_transaction.set(sql == "BEGIN" && result.is_ok());
        result
    }
}

/// Hands the connected client over (or the error), then drives its connection until it ends.
async fn drive<S, T>(
    connected: std::result::Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
    tx: std::sync::mpsc::SyncSender<
        std::result::Result<
            std::result::Result<tokio_postgres::Client, tokio_postgres::Error>,
            String,
        >,
    >,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match connected {
        Ok((client, connection)) => {
            let _ = tx.send(Ok(Ok(client)));
            if let Err(err) = connection.await {
                let err = postgres_message(&err);
                tracing::error!(%err, "the PostgreSQL connection ended");
            }
        }
        Err(err) => {
            let _ = tx.send(Ok(Err(err)));
        }
    }
}

/// How a connection to PostgreSQL travels.
enum Transport {
    /// In the clear (a local socket, a private network, a tunnel): `sslmode` absent,
    /// `disable`, `allow` or `prefer`.
    Plain,
    /// TLS, the server's certificate verified (its chain and its name) against `sslrootcert`,
    /// or Mozilla's roots without it: `sslmode` `require`, `verify-ca` or `verify-full`.
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// The URL without the parameters `tokio-postgres` does not know (`sslrootcert`) and with
/// libpq's `verify-ca`/`verify-full` as its `require`; the transport they ask for.
fn transport_of(url: &str) -> Result<(String, Transport)> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL (a key=value string): tokio-postgres says what is wrong with it.
        return Ok((url.to_owned(), Transport::Plain));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" => root = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    // What tokio-postgres takes: `prefer` for libpq's `allow`, `require` for its `verify-*`
    // (which this connection always does).
    let mode = match mode.as_deref() {
        None => None,
        Some("disable") => Some("disable"),
        Some("allow" | "prefer") => Some("prefer"),
        Some("require" | "verify-ca" | "verify-full") => Some("require"),
        Some(other) => {
            return Err(DbError::Connect(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )));
        }
    };
    let tls = mode == Some("require");
    if root.is_some() && !tls {
        return Err(DbError::Connect(
            "sslrootcert is set but sslmode does not ask for TLS: add sslmode=verify-full".into(),
        ));
    }
    if let Some(mode) = mode {
        kept.push(("sslmode".into(), mode.into()));
    }
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(&kept);
    }
    if !tls {
        // Without a TLS connector, `prefer` never starts TLS: the clear, as asked.
        return Ok((parsed.to_string(), Transport::Plain));
    }
    let mut roots = rustls::RootCertStore::empty();
    match &root {
        Some(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|err| DbError::Connect(format!("sslrootcert {path}: {err}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Connect(format!(
                    "sslrootcert {path}: no certificate in it"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| DbError::Connect(format!("TLS: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((
        parsed.to_string(),
        Transport::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
    ))
}

/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long sent data may stay unacknowledged before the connection is given up (a server or
/// network gone silent), unless the URL says (`tcp_user_timeout`): a call then fails instead of
/// waiting for ever, and the next one connects again.
const SILENT_PEER: std::time::Duration = std::time::Duration::from_secs(30);

/// The connection settings of `url`, with cockpit's timeouts where the URL sets none.
fn connection_config(url: &str) -> Result<(tokio_postgres::Config, Transport)> {
    let (url, transport) = transport_of(url)?;
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(SILENT_PEER);
    }
    config.keepalives(true);
    if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(SILENT_PEER);
    }
    if config.get_application_name().is_none() {
        config.application_name("cockpit");
    }
    Ok((config, transport))
}

/// `?N` placeholders as PostgreSQL's `$N` (outside quoted strings and identifiers).
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                out.push('$');
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    out
}

/// The values bound to a statement's placeholders.
fn values<'p>(params: &'p [&'p dyn Param]) -> Vec<Value<'p>> {
    params.iter().map(|p| p.value()).collect()
}

/// `values` as tokio-postgres takes them.
fn postgres_refs<'v>(
    values: &'v [Value<'_>],
) -> Vec<&'v (dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

impl Conn {
    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, through `f`; [`DbError::NoRows`] if there is none.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, prepared once per connection.
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(match self {
            Conn::Sqlite(conn) => Statement::Sqlite(conn.prepare_cached(sql)?),
            Conn::Postgres(pg) => Statement::Postgres(pg, pg.statement(sql)?),
        })
    }

    /// The same as [`Conn::prepare_cached`] (every statement is cached).
    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// Runs statements separated by `;`, without parameters.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(pg) => pg.batch(sql),
        }
    }

    /// Begins a transaction, rolled back unless [`Transaction::commit`] is called.
    pub(crate) fn transaction(&self) -> Result<Transaction<'_>> {
        let open = match self {
            Conn::Sqlite(conn) => !conn.is_autocommit(),
            Conn::Postgres(pg) => pg.in_transaction.get(),
        };
        if open {
            return Err(DbError::Nested);
        }
        self.control("BEGIN")?;
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    /// `BEGIN`, `COMMIT` or `ROLLBACK`.
    fn control(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(pg) => pg.transaction_control(sql),
        }
    }

    /// Whether this is PostgreSQL (for the few statements the engines spell differently).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }

    /// Commits from now on wait for the disk (`true`, the default) or not.
    pub(crate) fn set_synced(&self, synced: bool) -> Result<()> {
        match self {
            Conn::Sqlite(conn) => {
                conn.pragma_update(None, "synchronous", if synced { "FULL" } else { "NORMAL" })?;
                Ok(())
            }
            Conn::Postgres(pg) => pg.batch(if synced {
                "SET synchronous_commit = on"
            } else {
                "SET synchronous_commit = off"
            }),
        }
    }
}

/// A transaction on a [`Conn`]: every call on it goes through the connection it derefs to
/// (whose `transaction` then refuses: [`DbError::Nested`]).
pub(crate) struct Transaction<'c> {
    conn: &'c Conn,
    done: bool,
}

impl Transaction<'_> {
    /// Commits.
    pub(crate) fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.control("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(err) = self.conn.control("ROLLBACK")
        {
            tracing::error!(%err, "cannot roll a transaction back");
        }
    }
}

/// A prepared statement.
pub(crate) enum Statement<'c> {
    /// SQLite's, from its connection's cache.
    Sqlite(rusqlite::CachedStatement<'c>),
    /// PostgreSQL's, with its connection.
    Postgres(&'c Postgres, tokio_postgres::Statement),
}

impl Statement<'_> {
    /// Runs it; the number of rows changed.
    pub(crate) fn execute(&mut self, params: &[&dyn Param]) -> Result<usize> {
        match self {
            Statement::Sqlite(stmt) => {
                Ok(stmt.execute(rusqlite::params_from_iter(values(params)))?)
            }
            Statement::Postgres(pg, stmt) => Ok(pg.execute(stmt, params)? as usize),
        }
    }

    /// Its first row, through `f`; [`DbError::NoRows`] if there is none.
    pub(crate) fn query_row<T>(
        &mut self,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Statement::Sqlite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(values(params)))?;
                match rows.next()? {
                    Some(row) => f(&Row::Sqlite(row)),
                    None => Err(DbError::NoRows),
                }
            }
            Statement::Postgres(pg, stmt) => match pg.query(stmt, params)?.first() {
                Some(row) => f(&Row::Postgres(row)),
                None => Err(DbError::NoRows),
            },
        }
    }

    /// Every row, each through `f` (read whole before returning).
    pub(crate) fn query_map<T>(
        &mut self,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut out = Vec::new();
        match self {
            Statement::Sqlite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(values(params)))?;
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Sqlite(row)));
                }
            }
            Statement::Postgres(pg, stmt) => {
                for row in pg.query(stmt, params)? {
                    out.push(f(&Row::Postgres(&row)));
                }
            }
        }
        Ok(out.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_has_timeouts_unless_the_url_sets_its_own() {
        let (config, _) = connection_config("postgres://u:p@db.example/cockpit").expect("url");
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(config.get_tcp_user_timeout(), Some(&SILENT_PEER));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), SILENT_PEER);
        assert_eq!(config.get_application_name(), Some("cockpit"));
        let (config, _) = connection_config(
            "postgres://u:p@db.example/cockpit?connect_timeout=2&tcp_user_timeout=9&application_name=x",
        )
        .expect("url");
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(2))
        );
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&std::time::Duration::from_secs(9))
        );
        assert_eq!(config.get_application_name(), Some("x"));
        assert!(connection_config("not a url").is_err());
        let err = match connection_config("postgres://u:hunter2@db:port/x") {
            Err(err) => err.to_string(),
            Ok(_) => panic!("a bad port accepted"),
        };
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn tls_is_spoken_when_the_url_asks_and_libpqs_parameters_are_understood() {
        let plain = |url: &str| match transport_of(url) {
            Ok((url, Transport::Plain)) => url,
            Ok((_, Transport::Tls(_))) => panic!("TLS for {url}"),
            Err(err) => panic!("{url}: {err}"),
        };
        let tls = |url: &str| match transport_of(url) {
            Ok((url, Transport::Tls(_))) => url,
            Ok((_, Transport::Plain)) => panic!("the clear for {url}"),
            Err(err) => panic!("{url}: {err}"),
        };
        let error = |url: &str| match transport_of(url) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("accepted: {url}"),
        };
        assert_eq!(plain("postgres://u:p@db/x"), "postgres://u:p@db/x");
        assert_eq!(
            plain("postgres://u:p@db/x?sslmode=allow&application_name=a"),
            "postgres://u:p@db/x?application_name=a&sslmode=prefer"
        );
        assert_eq!(
            tls("postgres://u:p@db/x?sslmode=verify-full"),
            "postgres://u:p@db/x?sslmode=require"
        );
        assert_eq!(
            tls("postgres://u:p@db/x?sslmode=require&connect_timeout=3"),
            "postgres://u:p@db/x?connect_timeout=3&sslmode=require"
        );
        assert!(error("postgres://u:p@db/x?sslmode=bogus").contains("sslmode=bogus"));
        assert!(error("postgres://u:p@db/x?sslrootcert=/a.pem").contains("sslmode=verify-full"));
        let missing = error("postgres://u:hunter2@db/x?sslmode=verify-full&sslrootcert=/nope.pem");
        assert!(
            missing.contains("/nope.pem") && !missing.contains("hunter2"),
            "{missing}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let url = format!(
            "postgres://u:p@db/x?sslmode=verify-full&sslrootcert={}",
            empty.display()
        );
        assert!(error(&url).contains("no certificate"), "{}", error(&url));
    }

    #[test]
    fn a_tls_connection_verifies_the_servers_certificate() {
        let (Ok(url), Ok(ca)) = (
            std::env::var("COCKPIT_TEST_POSTGRES"),
            std::env::var("COCKPIT_TEST_POSTGRES_CA"),
        ) else {
            eprintln!("needs COCKPIT_TEST_POSTGRES and COCKPIT_TEST_POSTGRES_CA");
            return;
        };
        let ssl = |url: &str| -> Result<bool> {
            let conn = Conn::Postgres(Postgres::connect(url, None)?);
            conn.query_row(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                params![],
                |row| row.get(0),
            )
        };
        assert!(!ssl(&url).expect("in the clear"), "no TLS unless asked");
        let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
        assert!(ssl(&verified).expect("TLS"), "TLS when asked");
        // Without the CA that signed it, the server's certificate is refused.
        let err = ssl(&format!("{url}?sslmode=require"))
            .expect_err("an unknown issuer")
            .to_string();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?' AND \"d?\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND \"d?\" = $12"
        );
    }
}
