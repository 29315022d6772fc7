//! The OAuth cache tables: pending login states and authorized Telegram users.

use super::db::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// A login waiting for its OAuth callback.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingState {
    /// The random state parameter (≥128 bits, hex).
    pub state: String,
    /// What the login is for (`telegram`, `proxy`); a state is only ever taken for its purpose.
    pub purpose: String,
    /// What the login is bound to (the Telegram user and chat, or the app's redirect).
    pub data: serde_json::Value,
    /// When it stops being valid, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// What a membership check presents to the provider: its access and refresh tokens, as JSON.
/// A secret: it never prints.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Credential(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(***)")
    }
}

/// A Telegram user who logged in through the login provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthorizedUser {
    /// Telegram user id: the identity (usernames change).
    pub user_id: i64,
    /// The private chat with the bot.
    pub chat_id: i64,
    /// The ItsYou.online username, for display.
    pub username: String,
    /// The repository the user's commands work on.
    pub current_repo: Option<String>,
    /// When the provider's access token expires (Unix seconds), if it said.
    pub token_expires_at: Option<i64>,
    /// Who they are: `itsyouonline:<username>`, `github:<login>`, `<provider>:<sub>`. Empty for
    /// a login recorded before identities existed (an ItsYou.online one).
    pub identity: String,
    /// The groups the provider put them in (`myorg`, `myorg/ops`) at the last check.
    pub groups: Vec<String>,
    /// The provider they logged in with (`itsyouonline` for `[oauth]`).
    pub provider: String,
    /// When the login ends (Unix milliseconds); `None`: `authorized_at` plus `session_days`.
    pub login_expires_at_ms: Option<i64>,
    /// When membership was last confirmed by the provider (Unix milliseconds); `None`: at login.
    pub checked_at_ms: Option<i64>,
    /// What the next membership check presents to the provider, if anything.
    pub credential: Option<Credential>,
}

/// What `clean_cache` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanReport {
    /// Authorized users removed.
    pub users: usize,
    /// Pending login states removed.
    pub states: usize,
}

/// A server-side session of an `oauth::client` app, as stored (its user and pending login as
/// JSON; the key is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSessionRow {
    /// When it ends (Unix milliseconds).
    pub expires_ms: i64,
    /// The logged-in user, if any.
    pub user: Option<String>,
    /// The login in progress, if any.
    pub pending: Option<String>,
}

impl Store {
    /// The session `id` of `app`, unless it is unknown or ended at `now_ms` (an ended one is
    /// deleted).
    pub fn app_session(
        &self,
        app: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<AppSessionRow>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT expires_ms, user_json, pending FROM app_sessions WHERE app = ?1 AND id = ?2",
                params![app, id],
                |row| {
                    Ok(AppSessionRow {
                        expires_ms: row.get(0)?,
                        user: row.get(1)?,
                        pending: row.get(2)?,
                    })
                },
            )
            .optional()?;
        match row {
            Some(row) if row.expires_ms <= now_ms => {
                conn.execute(
                    "DELETE FROM app_sessions WHERE app = ?1 AND id = ?2",
                    params![app, id],
                )?;
                Ok(None)
            }
            row => Ok(row),
        }
    }

    /// Keeps a new session of `app`. Past `cap` sessions of the app, the ended ones (at
    /// `now_ms`) are deleted, then the oldest: anyone can start a login, so a flood makes room
    /// rather than growing the table.
    pub fn insert_app_session(
        &self,
        app: &str,
        id: &str,
        row: &AppSessionRow,
        cap: usize,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM app_sessions WHERE expires_ms <= ?1",
            params![now_ms],
        )?;
        tx.execute(
            "INSERT INTO app_sessions (app, id, expires_ms, user_json, pending)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (app, id) DO UPDATE SET expires_ms = excluded.expires_ms,
                 user_json = excluded.user_json, pending = excluded.pending",
            params![app, id, row.expires_ms, row.user, row.pending],
        )?;
        let cap = i64::try_from(cap.max(1)).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM app_sessions WHERE app = ?1 AND rowid <=
                (SELECT rowid FROM app_sessions WHERE app = ?1 ORDER BY rowid DESC LIMIT 1 OFFSET ?2)",
            params![app, cap],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the login in progress of a session; `false` when there is no such session.
    pub fn set_app_session_pending(
        &self,
        app: &str,
        id: &str,
        pending: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE app_sessions SET pending = ?3 WHERE app = ?1 AND id = ?2",
            params![app, id, pending],
        )?;
        Ok(changed > 0)
    }

    /// Takes the login in progress out of a session (single use).
    pub fn take_app_session_pending(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let pending: Option<String> = tx
            .query_row(
                "SELECT pending FROM app_sessions WHERE app = ?1 AND id = ?2",
                params![app, id],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if pending.is_some() {
            tx.execute(
                "UPDATE app_sessions SET pending = NULL WHERE app = ?1 AND id = ?2",
                params![app, id],
            )?;
        }
        tx.commit()?;
        Ok(pending)
    }

    /// Ends a session.
    pub fn remove_app_session(&self, app: &str, id: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM app_sessions WHERE app = ?1 AND id = ?2",
            params![app, id],
        )?;
        Ok(())
    }

    /// Records that the login token `jti` was used, unless it was before: `true` the first time.
    /// It is kept until `until_s`; the ids whose time ended by `now_s` are deleted first.
    pub fn use_login_token(&self, jti: &str, until_s: i64, now_s: i64) -> Result<bool, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM app_used_tokens WHERE until_s <= ?1",
            params![now_s],
        )?;
        let added = tx.execute(
            "INSERT INTO app_used_tokens (jti, until_s) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING",
            params![jti, until_s],
        )?;
        tx.commit()?;
        Ok(added > 0)
    }

    /// Records a pending login state.
    pub fn insert_state(&self, state: &PendingState) -> Result<(), StoreError> {
        self.insert_state_capped(state, usize::MAX).map(|_| ())
    }

    /// Records a pending login state and keeps only the `cap` newest ones: anyone can start a
    /// login, so the oldest pending logins make room rather than the table growing without end.
    /// Returns how many were evicted.
    pub fn insert_state_capped(
        &self,
        state: &PendingState,
        cap: usize,
    ) -> Result<usize, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO oauth_states (state, purpose, data, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                state.state,
                state.purpose,
                state.data.to_string(),
                state.expires_at_ms
            ],
        )?;
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let evicted = tx.execute(
            "DELETE FROM oauth_states WHERE rowid <=
                (SELECT rowid FROM oauth_states ORDER BY rowid DESC LIMIT 1 OFFSET ?1)",
            params![cap],
        )?;
        tx.commit()?;
        Ok(evicted)
    }

    /// Takes a state out (single use): it is deleted whether or not it matched, and returned only
    /// when it exists, has this purpose and has not expired at `now_ms`.
    pub fn take_state(
        &self,
        state: &str,
        purpose: &str,
        now_ms: i64,
    ) -> Result<Option<PendingState>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "DELETE FROM oauth_states WHERE state = ?1 RETURNING purpose, data, expires_at_ms",
                params![state],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((found_purpose, data, expires_at_ms)) = row else {
            return Ok(None);
        };
        if found_purpose != purpose || expires_at_ms <= now_ms {
            return Ok(None);
        }
        let data = serde_json::from_str(&data).map_err(|e| StoreError::Decode(e.to_string()))?;
        Ok(Some(PendingState {
            state: state.to_string(),
            purpose: found_purpose,
            data,
            expires_at_ms,
        }))
    }

    /// Takes a state out whatever its purpose (single use): `(purpose, data)` when it exists and
    /// has not expired at `now_ms`. The shared OAuth callback uses it: the state decides.
    pub fn take_any_state(
        &self,
        state: &str,
        now_ms: i64,
    ) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "DELETE FROM oauth_states WHERE state = ?1 RETURNING purpose, data, expires_at_ms",
                params![state],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        match row {
            Some((purpose, data, expires_at_ms)) if expires_at_ms > now_ms => {
                let data =
                    serde_json::from_str(&data).map_err(|e| StoreError::Decode(e.to_string()))?;
                Ok(Some((purpose, data)))
            }
            _ => Ok(None),
        }
    }

    /// Sets (or clears) an authorized user's current repository.
    pub fn set_current_repo(&self, user_id: i64, repo: Option<&str>) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE telegram_users SET current_repo = ?2 WHERE user_id = ?1",
            params![user_id, repo],
        )?;
        Ok(())
    }

    /// Deletes every state that expired at `now_ms`; returns how many.
    pub fn sweep_states(&self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM oauth_states WHERE expires_at_ms <= ?1",
            params![now_ms],
        )?)
    }

    /// How many states are pending (expired or not).
    pub fn count_states(&self) -> Result<usize, StoreError> {
        let n: i64 =
            self.lock()
                .query_row("SELECT count(*) FROM oauth_states", params![], |row| {
                    row.get(0)
                })?;
        Ok(n as usize)
    }

    /// Records (or refreshes) an authorized user. A login through cockpit also lifts the
    /// revocation of the identity's JWTs without `iat` (see `revoke_user`): the person has
    /// just shown the provider still lets them in.
    pub fn upsert_user(&self, user: &AuthorizedUser, now_ms: i64) -> Result<(), StoreError> {
        let groups =
            serde_json::to_string(&user.groups).map_err(|e| StoreError::Decode(e.to_string()))?;
        let identity = if user.identity.is_empty() {
            format!("{}{}", super::access::JWT_IDENTITY_PREFIX, user.username)
        } else {
            user.identity.clone()
        };
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO telegram_users
                (user_id, chat_id, username, current_repo, token_expires_at, authorized_at_ms,
                 identity, groups, provider, login_expires_at_ms, checked_at_ms, credential)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (user_id) DO UPDATE SET
                chat_id = excluded.chat_id, username = excluded.username,
                current_repo = excluded.current_repo,
                token_expires_at = excluded.token_expires_at,
                authorized_at_ms = excluded.authorized_at_ms,
                identity = excluded.identity, groups = excluded.groups,
                provider = excluded.provider,
                login_expires_at_ms = excluded.login_expires_at_ms,
                checked_at_ms = excluded.checked_at_ms, credential = excluded.credential",
            params![
                user.user_id,
                user.chat_id,
                user.username,
                user.current_repo,
                user.token_expires_at,
                now_ms,
                user.identity,
                groups,
                user.provider,
                user.login_expires_at_ms,
                user.checked_at_ms,
                user.credential.as_ref().map(|c| c.0.as_str()),
            ],
        )?;
        let lifted = tx.execute(
            "UPDATE revoked_identities SET lifted_at_ms = ?2
              WHERE identity = ?1 AND lifted_at_ms IS NULL",
            params![identity, now_ms],
        )?;
        tx.commit()?;
        drop(conn);
        if lifted > 0 {
            self.ring_revocation_bell();
        }
        Ok(())
    }

    /// The authorized user with this Telegram id, if any. A login recorded before identities
    /// existed reads as an ItsYou.online one, expiring `session` after it was made.
    pub fn user(&self, user_id: i64) -> Result<Option<AuthorizedUser>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "SELECT user_id, chat_id, username, current_repo, token_expires_at,
                        identity, groups, provider, login_expires_at_ms, checked_at_ms,
                        credential, authorized_at_ms
                 FROM telegram_users WHERE user_id = ?1",
                params![user_id],
                |row| {
                    Ok((
                        AuthorizedUser {
                            user_id: row.get(0)?,
                            chat_id: row.get(1)?,
                            username: row.get(2)?,
                            current_repo: row.get(3)?,
                            token_expires_at: row.get(4)?,
                            identity: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            groups: Vec::new(),
                            provider: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
                            login_expires_at_ms: row.get(8)?,
                            checked_at_ms: row.get(9)?,
                            credential: row.get::<_, Option<String>>(10)?.map(Credential),
                        },
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, i64>(11)?,
                    ))
                },
            )
            .optional()?;
        let Some((mut user, groups, authorized_at_ms)) = row else {
            return Ok(None);
        };
        if let Some(groups) = groups {
            user.groups =
                serde_json::from_str(&groups).map_err(|e| StoreError::Decode(e.to_string()))?;
        }
        if user.provider.is_empty() {
            user.provider = "itsyouonline".into();
        }
        if user.checked_at_ms.is_none() {
            user.checked_at_ms = Some(authorized_at_ms);
        }
        Ok(Some(user))
    }

    /// Who a logged-in Telegram user is: their identity (`github:alice`) and groups (`myorg`,
    /// `myorg/ops`), as of their last membership check. `None` when they are not logged in.
    /// Whether the login is still valid is [`crate::oauth::login::check`]'s question.
    pub fn telegram_identity(
        &self,
        user_id: i64,
    ) -> Result<Option<(String, Vec<String>)>, StoreError> {
        Ok(self
            .user(user_id)?
            .and_then(|user| (!user.identity.is_empty()).then_some((user.identity, user.groups))))
    }

    /// Records a successful membership check: the groups now, when, and the provider's new tokens.
    pub fn record_check(
        &self,
        user_id: i64,
        groups: &[String],
        credential: Option<&Credential>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let groups =
            serde_json::to_string(groups).map_err(|e| StoreError::Decode(e.to_string()))?;
        self.lock().execute(
            "UPDATE telegram_users SET groups = ?2, checked_at_ms = ?3,
                credential = coalesce(?4, credential)
             WHERE user_id = ?1",
            params![user_id, groups, now_ms, credential.map(|c| c.0.as_str())],
        )?;
        Ok(())
    }

    /// Logs a Telegram user out; `true` when they were logged in.
    pub fn end_login(&self, user_id: i64) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM telegram_users WHERE user_id = ?1",
            params![user_id],
        )? > 0)
    }

    /// Empties the OAuth cache: every user must log in again, every pending login is void.
    pub fn clean_oauth_cache(&self) -> Result<CleanReport, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let users = tx.execute("DELETE FROM telegram_users", params![])?;
        let states = tx.execute("DELETE FROM oauth_states", params![])?;
        tx.commit()?;
        Ok(CleanReport { users, states })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    fn pending(state: &str, purpose: &str, expires_at_ms: i64) -> PendingState {
        PendingState {
            state: state.into(),
            purpose: purpose.into(),
            data: json!({"chat_id": 7, "user_id": 9}),
            expires_at_ms,
        }
    }

    #[test]
    fn a_state_is_taken_once_for_its_purpose_before_expiry() {
        let (_dir, store) = store();
        store
            .insert_state(&pending("a", "telegram", 1000))
            .expect("insert");
        store
            .insert_state(&pending("b", "telegram", 1000))
            .expect("insert");
        store
            .insert_state(&pending("c", "telegram", 1000))
            .expect("insert");
        let taken = store.take_state("a", "telegram", 999).expect("take");
        assert_eq!(
            taken.map(|s| s.data),
            Some(json!({"chat_id": 7, "user_id": 9}))
        );
        assert_eq!(store.take_state("a", "telegram", 999).expect("again"), None);
        assert_eq!(
            store.take_state("b", "proxy", 999).expect("wrong purpose"),
            None
        );
        assert_eq!(store.take_state("b", "telegram", 999).expect("burnt"), None);
        assert_eq!(
            store.take_state("c", "telegram", 1000).expect("expired"),
            None
        );
        assert_eq!(store.count_states().expect("count"), 0);
    }

    #[test]
    fn pending_states_are_capped_and_the_oldest_go_first() {
        let (_dir, store) = store();
        let mut evicted = 0;
        for n in 0..25 {
            evicted += store
                .insert_state_capped(&pending(&format!("s{n}"), "proxy", 1000), 10)
                .expect("insert");
        }
        assert_eq!(evicted, 15);
        assert_eq!(store.count_states().expect("count"), 10);
        assert_eq!(
            store.take_state("s14", "proxy", 0).expect("take"),
            None,
            "evicted"
        );
        assert!(
            store.take_state("s15", "proxy", 0).expect("take").is_some(),
            "kept"
        );
        assert!(
            store.take_state("s24", "proxy", 0).expect("take").is_some(),
            "newest"
        );
    }

    #[test]
    fn users_persist_and_clean_removes_everything() {
        let (dir, store) = store();
        let user = AuthorizedUser {
            user_id: 42,
            chat_id: 4242,
            username: "ops".into(),
            current_repo: Some("demo".into()),
            token_expires_at: None,
            identity: "github:ops".into(),
            groups: vec!["myorg".into(), "myorg/ops".into()],
            provider: "github".into(),
            login_expires_at_ms: Some(99),
            checked_at_ms: Some(1),
            credential: Some(Credential("{\"access_token\":\"t\"}".into())),
        };
        store.upsert_user(&user, 1).expect("upsert");
        store
            .insert_state(&pending("s", "telegram", 10))
            .expect("state");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.user(42).expect("user"), Some(user));
        assert_eq!(
            store.telegram_identity(42).expect("identity"),
            Some((
                "github:ops".into(),
                vec!["myorg".into(), "myorg/ops".into()]
            ))
        );
        store
            .record_check(42, &["myorg".into()], None, 5)
            .expect("check");
        let checked = store.user(42).expect("user").expect("still there");
        assert_eq!(
            (checked.groups, checked.checked_at_ms),
            (vec!["myorg".to_string()], Some(5))
        );
        assert!(
            checked.credential.is_some(),
            "kept when the check brought none"
        );
        let report = store.clean_oauth_cache().expect("clean");
        assert_eq!(
            report,
            CleanReport {
                users: 1,
                states: 1
            }
        );
        assert_eq!(store.user(42).expect("user"), None);
    }
}
