//! The access tables: the audit trail, API tokens issued by cockpit (only their SHA-256 hash),
//! and users (who holds a Telegram link or a token).

use super::db::{OptionalExtension, Transaction, params};

use super::{Store, StoreError};

/// One row of the audit trail, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// `rest`, `telegram`, `mail`, `cli`.
    pub door: String,
    /// Who: `itsyouonline:bob`, `mail:ops@example.com`, `cli:root`.
    pub identity: String,
    /// What (`repo.create`...; a closed set).
    pub action: String,
    /// On what: a repository, `repo/blueprint.yaml`, a token id...
    pub target: String,
    /// `ok`, `denied`, `error`.
    pub outcome: String,
    /// Why it was denied or failed; empty when it went well.
    pub message: String,
}

/// One stored row, with its id (the cursor of `GET /audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Increasing with time of writing.
    pub id: i64,
    /// The record.
    pub record: AuditRecord,
}

/// A filter of the audit trail, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this identity.
    pub identity: Option<String>,
    /// Only this door.
    pub door: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// From this time (ms, inclusive).
    pub since_ms: Option<i64>,
    /// Before this time (ms, exclusive).
    pub until_ms: Option<i64>,
    /// Only rows older than this id (the previous page's last id).
    pub before_id: Option<i64>,
    /// At most this many rows.
    pub limit: usize,
}

/// An API token as stored: never the token, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// The public id (`tok_…`), for listing and revoking.
    pub id: String,
    /// Whose token it is.
    pub identity: String,
    /// The owner's name for it.
    pub name: String,
    /// The role it carries (never more than its owner's).
    pub role: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// When it was made (ms).
    pub created_ms: i64,
    /// When it stops working (ms).
    pub expires_ms: i64,
}

pub(super) fn insert_audit_tx(
    tx: &Transaction<'_>,
    record: &AuditRecord,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit (at_ms, door, identity, action, target, outcome, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        record.at_ms,
        record.door,
        record.identity,
        record.action,
        record.target,
        record.outcome,
        record.message
    ])?;
    Ok(())
}

/// `audit` as an `error` row with `why`.
fn failed(audit: &AuditRecord, why: &str) -> AuditRecord {
    AuditRecord {
        outcome: "error".into(),
        message: why.into(),
        ..audit.clone()
    }
}

fn token_row(row: &super::db::Row<'_>) -> super::db::Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: row.get(0)?,
        identity: row.get(1)?,
        name: row.get(2)?,
        role: row.get(3)?,
        hash: row.get(4)?,
        created_ms: row.get(5)?,
        expires_ms: row.get(6)?,
    })
}

/// An action held until a second admin approves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr_…`.
    pub id: String,
    /// The held action (`repo.delete`...).
    pub action: String,
    /// What it acts on.
    pub target: String,
    /// Who asked.
    pub requested_by: String,
    /// Through which door.
    pub door: String,
    /// When (ms).
    pub created_ms: i64,
    /// The second admin, once approved.
    pub approved_by: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, identity, name, role, hash, created_ms, expires_ms";

impl Store {
    /// Appends one audit row.
    pub fn insert_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        insert_audit_tx(&tx, record)?;
        tx.commit()?;
        Ok(())
    }

    /// The audit rows matching `query`, newest first.
    pub fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at_ms, door, identity, action, target, outcome, message FROM audit
             WHERE (CAST(?1 AS TEXT) IS NULL OR identity = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR door = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR action = ?3)
               AND (CAST(?4 AS BIGINT) IS NULL OR at_ms >= ?4)
               AND (CAST(?5 AS BIGINT) IS NULL OR at_ms < ?5)
               AND (CAST(?6 AS BIGINT) IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7",
        )?;
        let rows = stmt
            .query_map(
                params![
                    query.identity,
                    query.door,
                    query.action,
                    query.since_ms,
                    query.until_ms,
                    query.before_id,
                    query.limit as i64
                ],
                |row| {
                    Ok(AuditRow {
                        id: row.get(0)?,
                        record: AuditRecord {
                            at_ms: row.get(1)?,
                            door: row.get(2)?,
                            identity: row.get(3)?,
                            action: row.get(4)?,
                            target: row.get(5)?,
                            outcome: row.get(6)?,
                            message: row.get(7)?,
                        },
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes audit rows written before `before_ms`; returns how many.
    pub fn sweep_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute("DELETE FROM audit WHERE at_ms < ?1", params![before_ms])?)
    }

    /// Stores a new token and its audit row in one transaction.
    pub fn insert_token(
        &self,
        token: &ApiTokenRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                token.id,
                token.identity,
                token.name,
                token.role,
                token.hash,
                token.created_ms,
                token.expires_ms
            ],
        )?;
        insert_audit_tx(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The token whose hash this is.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1"),
                params![hash],
                token_row,
            )
            .optional()?)
    }

    /// The tokens of one identity, or every token; oldest first.
    pub fn list_tokens(&self, identity: Option<&str>) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE (CAST(?1 AS TEXT) IS NULL OR identity = ?1)
             ORDER BY created_ms, id"
        ))?;
        let rows = stmt
            .query_map(params![identity], token_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The token of this id.
    pub fn token(&self, id: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                params![id],
                token_row,
            )
            .optional()?)
    }

    /// Deletes a token and writes its audit row in one transaction; whether it existed.
    pub fn revoke_token(&self, id: &str, audit: &AuditRecord) -> Result<bool, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let removed = tx.execute("DELETE FROM api_tokens WHERE id = ?1", params![id])?;
        if removed == 0 {
            insert_audit_tx(&tx, &failed(audit, "no such token"))?;
        } else {
            insert_audit_tx(&tx, audit)?;
        }
        tx.commit()?;
        Ok(removed > 0)
    }

    /// Records a held action and its audit row in one transaction.
    pub fn insert_approval(
        &self,
        approval: &ApprovalRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO approvals (id, action, target, requested_by, door, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                approval.id,
                approval.action,
                approval.target,
                approval.requested_by,
                approval.door,
                approval.created_ms
            ],
        )?;
        insert_audit_tx(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The held action of this id.
    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT id, action, target, requested_by, door, created_ms, approved_by
                 FROM approvals WHERE id = ?1",
                params![id],
                |row| {
                    Ok(ApprovalRecord {
                        id: row.get(0)?,
                        action: row.get(1)?,
                        target: row.get(2)?,
                        requested_by: row.get(3)?,
                        door: row.get(4)?,
                        created_ms: row.get(5)?,
                        approved_by: row.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Marks a held action approved by `approver` (once: `false` when it already was) with its
    /// audit row, in one transaction.
    pub fn approve(
        &self,
        id: &str,
        approver: &str,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE approvals SET approved_by = ?2 WHERE id = ?1 AND approved_by IS NULL",
            params![id, approver],
        )?;
        if changed == 1 {
            insert_audit_tx(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Removes held actions recorded before `before_ms` (expired or used: none can be approved
    /// any more); returns how many. This bounds the table by what admins ask for in a day.
    pub fn sweep_approvals(&self, before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM approvals WHERE created_ms < ?1",
            params![before_ms],
        )?)
    }

    /// Everyone who holds access: `(identity, telegram links, tokens)`, by identity. A Telegram
    /// link is the identity its login provider gave (`github:alice`), or for a login recorded
    /// before providers existed, `itsyouonline:<username>`.
    pub fn list_users(&self) -> Result<Vec<(String, usize, usize)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT identity, SUM(links), SUM(tokens) FROM (
                SELECT COALESCE(NULLIF(identity, ''), 'itsyouonline:' || username) AS identity,
                       1 AS links, 0 AS tokens
                  FROM telegram_users
                UNION ALL
                SELECT identity, 0, 1 FROM api_tokens) AS links
             GROUP BY identity ORDER BY identity",
        )?;
        let rows = stmt
            .query_map(params![], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)? as usize,
                    row.get::<_, i64>(2)? as usize,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Logs an identity out everywhere and writes the audit row, in one transaction: its
    /// Telegram links and its tokens are removed, and for an identity that REST JWTs speak for
    /// (`itsyouonline:<user>`) the revocation is recorded, so that the JWTs it holds are refused
    /// (see [`Revocation`]). Then rings the revocation bell for a running server.
    pub fn revoke_user(
        &self,
        identity: &str,
        audit: &AuditRecord,
    ) -> Result<UserRevoked, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        // The link's identity, or for a login from before providers: ItsYou.online's username.
        let links = tx.execute(
            "DELETE FROM telegram_users
              WHERE COALESCE(NULLIF(identity, ''), 'itsyouonline:' || username) = ?1",
            params![identity],
        )?;
        let tokens = tx.execute(
            "DELETE FROM api_tokens WHERE identity = ?1",
            params![identity],
        )?;
        // Only ItsYou.online's JWTs reach the REST API; but any identity may hold web console
        // sessions (logged in through the OAuth server), which end when the identity's
        // revocation is newer than their login: so every revocation is recorded.
        let jwts = identity.starts_with(JWT_IDENTITY_PREFIX);
        tx.execute(
            "INSERT INTO revoked_identities (identity, revoked_at_ms, lifted_at_ms)
             VALUES (?1, ?2, NULL)
             ON CONFLICT (identity) DO UPDATE SET
                revoked_at_ms = excluded.revoked_at_ms, lifted_at_ms = NULL",
            params![identity, audit.at_ms],
        )?;
        if links + tokens == 0 && !jwts {
            insert_audit_tx(&tx, &failed(audit, "nobody of that identity holds access"))?;
        } else {
            insert_audit_tx(&tx, audit)?;
        }
        tx.commit()?;
        drop(conn);
        self.ring_revocation_bell();
        Ok(UserRevoked {
            links,
            tokens,
            jwts,
        })
    }

    /// Every recorded revocation.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT identity, revoked_at_ms, lifted_at_ms FROM revoked_identities")?;
        let rows = stmt
            .query_map(params![], |row| {
                Ok(Revocation {
                    identity: row.get(0)?,
                    revoked_at_ms: row.get(1)?,
                    lifted_at_ms: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Where writers of `revoked_identities` ring: one byte is appended after each commit, so
    /// a running server (another process than the CLI) sees the file grow and reads the table
    /// again, without a query per request.
    pub fn revocation_bell_path(&self) -> std::path::PathBuf {
        self.path.with_file_name(REVOCATION_BELL)
    }

    /// How many times this process rang the revocation bell (through any handle of this store).
    pub fn revocation_rings(&self) -> u64 {
        self.rings.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Opens the revocation bell (created `0600` if missing) for reading its length.
    pub fn open_revocation_bell(&self) -> Result<std::fs::File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.revocation_bell_path();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Bell { path, source })
    }

    /// Tells a running server that `revoked_identities` changed. The change is committed
    /// already, so a failure is logged, not returned: a server started later reads the table.
    pub(super) fn ring_revocation_bell(&self) {
        use std::io::Write as _;
        self.rings.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let path = self.revocation_bell_path();
        let rung = self.open_revocation_bell().and_then(|mut bell| {
            bell.write_all(b".")
                .map_err(|source| StoreError::Bell { path, source })
        });
        if let Err(err) = rung {
            tracing::error!(%err, "revocation recorded, but the bell did not ring");
        }
    }
}

/// What the bell file next to the database is called.
const REVOCATION_BELL: &str = "revocations.bell";

/// The identities REST JWTs speak for (ItsYou.online's, as `api::auth::jwt_principal` names
/// them).
pub const JWT_IDENTITY_PREFIX: &str = "itsyouonline:";

/// What `revoke_user` removed or recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRevoked {
    /// Telegram links removed.
    pub links: usize,
    /// Cockpit API tokens removed.
    pub tokens: usize,
    /// Whether the identity's JWTs are now refused (an `itsyouonline:` identity).
    pub jwts: bool,
}

impl UserRevoked {
    /// Whether the revocation did anything.
    pub fn any(&self) -> bool {
        self.links + self.tokens > 0 || self.jwts
    }
}

/// A revoked identity: its JWTs issued at or before `revoked_at_ms` are refused, and those
/// without `iat` until `lifted_at_ms` is set (the identity logged in through cockpit again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// `itsyouonline:bob`.
    pub identity: String,
    /// When it was revoked (Unix milliseconds).
    pub revoked_at_ms: i64,
    /// When it logged in through cockpit after that, if it did.
    pub lifted_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(action: &str, at_ms: i64) -> AuditRecord {
        AuditRecord {
            at_ms,
            door: "rest".into(),
            identity: "github:alice".into(),
            action: action.into(),
            target: "demo".into(),
            outcome: "ok".into(),
            message: String::new(),
        }
    }

    #[test]
    fn old_approvals_are_swept_and_recent_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for (id, created_ms) in [("apr_old", 10), ("apr_new", 20)] {
            let held = ApprovalRecord {
                id: id.into(),
                action: "repo.delete".into(),
                target: "demo".into(),
                requested_by: "github:alice".into(),
                door: "rest".into(),
                created_ms,
                approved_by: None,
            };
            store
                .insert_approval(&held, &audit("repo.delete", created_ms))
                .expect("held");
        }
        assert_eq!(store.sweep_approvals(15).expect("sweep"), 1);
        assert_eq!(store.approval("apr_old").expect("read"), None);
        assert!(store.approval("apr_new").expect("read").is_some());
    }

    #[test]
    fn audit_rows_filter_page_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for i in 0..5 {
            store
                .insert_audit(&audit(
                    if i % 2 == 0 {
                        "repo.create"
                    } else {
                        "run.cancel"
                    },
                    i,
                ))
                .expect("insert");
        }
        let all = |q: AuditQuery| {
            store
                .list_audit(&AuditQuery { limit: 10, ..q })
                .expect("list")
        };
        assert_eq!(all(AuditQuery::default()).len(), 5);
        let creates = all(AuditQuery {
            action: Some("repo.create".into()),
            ..AuditQuery::default()
        });
        assert_eq!(
            creates.iter().map(|r| r.record.at_ms).collect::<Vec<_>>(),
            [4, 2, 0]
        );
        let page = store
            .list_audit(&AuditQuery {
                limit: 2,
                ..AuditQuery::default()
            })
            .expect("page");
        let next = all(AuditQuery {
            before_id: Some(page[1].id),
            since_ms: Some(1),
            ..AuditQuery::default()
        });
        assert_eq!(
            next.iter().map(|r| r.record.at_ms).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(store.sweep_audit(3).expect("sweep"), 3);
        assert_eq!(all(AuditQuery::default()).len(), 2);
    }
}
