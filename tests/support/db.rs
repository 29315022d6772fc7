//! The database a test's cockpit uses, read and written directly: its SQLite file, or its
//! PostgreSQL schema when `COCKPIT_TEST_POSTGRES` is set (`super::postgres_storage`).

use std::path::Path;

use cockpit::config::{Secret, StorageConfig};
use cockpit::store::Store;

/// The `[storage]` of the cockpit whose data directory is `data_dir` (`<test dir>/data`).
pub fn storage(data_dir: &Path) -> StorageConfig {
    let test_dir = data_dir
        .parent()
        .expect("the data directory is in the test's directory");
    let keys = super::postgres_storage(test_dir);
    let value = |key: &str| {
        keys.lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
            .map(|rest| rest.trim_end_matches('"').to_owned())
    };
    StorageConfig {
        path: data_dir.to_path_buf(),
        url: value("url").map(Secret::new),
        schema: value("schema"),
        replica_url: None,
    }
}

/// A second handle on that store, as another process would open it.
pub fn store(data_dir: &Path) -> Store {
    cockpit::server::open_store(&storage(data_dir)).expect("the store beside the server")
}

/// The rows of `sql`, every value as text (`None` for NULL); no rows when the database is not
/// there yet.
pub fn rows(data_dir: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let storage = storage(data_dir);
    match storage.url {
        Some(url) => on_postgres(url.expose(), storage.schema, sql.to_owned(), true),
        None => {
            let Ok(conn) = rusqlite::Connection::open_with_flags(
                data_dir.join("cockpit.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            ) else {
                return Vec::new();
            };
            let Ok(mut statement) = conn.prepare(sql) else {
                return Vec::new();
            };
            let columns = statement.column_count();
            statement
                .query_map([], |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(v)
                                | rusqlite::types::ValueRef::Blob(v) => {
                                    Some(String::from_utf8_lossy(v).into_owned())
                                }
                            })
                        })
                        .collect()
                })
                .expect("query")
                .map(|row| row.expect("row"))
                .collect()
        }
    }
}

/// Runs `sql` (statements without parameters) in one transaction.
pub fn execute(data_dir: &Path, sql: &str) {
    let storage = storage(data_dir);
    match storage.url {
        Some(url) => {
            on_postgres(url.expose(), storage.schema, sql.to_owned(), false);
        }
        None => {
            let conn = rusqlite::Connection::open(data_dir.join("cockpit.db")).expect("db");
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .expect("busy timeout");
            conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
                .expect("statements");
        }
    }
}

/// Runs `sql` on PostgreSQL from a thread of its own (the tests are async; this waits).
fn on_postgres(
    url: &str,
    schema: Option<String>,
    sql: String,
    query: bool,
) -> Vec<Vec<Option<String>>> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            if let Some(schema) = schema {
                client
                    .batch_execute(&format!("SET search_path TO {schema}"))
                    .await
                    .expect("schema");
            }
            if !query {
                client
                    .batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
                    .await
                    .expect("statements");
                return Vec::new();
            }
            let Ok(rows) = client.simple_query(&sql).await else {
                return Vec::new();
            };
            rows.iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .expect("the query's thread")
}
