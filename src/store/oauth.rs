//! The OAuth cache tables: pending login states and authorized Telegram users.

use rusqlite::{OptionalExtension, params};
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

/// A Telegram user who proved membership of the organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedUser {
    /// Telegram user id: the identity (usernames change).
    pub user_id: i64,
    /// The private chat with the bot.
    pub chat_id: i64,
    /// The ItsYou.online username, for display.
    pub username: String,
    /// The repository the user's commands work on.
    pub current_repo: Option<String>,
    /// When the ItsYou.online token expires (Unix seconds), if it said.
    pub token_expires_at: Option<i64>,
}

/// What `clean_cache` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanReport {
    /// Authorized users removed.
    pub users: usize,
    /// Pending login states removed.
    pub states: usize,
}

impl Store {
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
        let mut conn = self.lock();
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
            "DELETE FROM oauth_states WHERE rowid IN
                (SELECT rowid FROM oauth_states ORDER BY rowid DESC LIMIT -1 OFFSET ?1)",
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
        let n: i64 = self
            .lock()
            .query_row("SELECT count(*) FROM oauth_states", [], |row| row.get(0))?;
        Ok(n as usize)
    }

    /// Records (or refreshes) an authorized user.
    pub fn upsert_user(&self, user: &AuthorizedUser, now_ms: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO telegram_users
                (user_id, chat_id, username, current_repo, token_expires_at, authorized_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (user_id) DO UPDATE SET
                chat_id = excluded.chat_id, username = excluded.username,
                current_repo = excluded.current_repo,
                token_expires_at = excluded.token_expires_at,
                authorized_at_ms = excluded.authorized_at_ms",
            params![
                user.user_id,
                user.chat_id,
                user.username,
                user.current_repo,
                user.token_expires_at,
                now_ms
            ],
        )?;
        Ok(())
    }

    /// The authorized user with this Telegram id, if any.
    pub fn user(&self, user_id: i64) -> Result<Option<AuthorizedUser>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT user_id, chat_id, username, current_repo, token_expires_at
                 FROM telegram_users WHERE user_id = ?1",
                params![user_id],
                |row| {
                    Ok(AuthorizedUser {
                        user_id: row.get(0)?,
                        chat_id: row.get(1)?,
                        username: row.get(2)?,
                        current_repo: row.get(3)?,
                        token_expires_at: row.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Empties the OAuth cache: every user must log in again, every pending login is void.
    pub fn clean_oauth_cache(&self) -> Result<CleanReport, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let users = tx.execute("DELETE FROM telegram_users", [])?;
        let states = tx.execute("DELETE FROM oauth_states", [])?;
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
        };
        store.upsert_user(&user, 1).expect("upsert");
        store
            .insert_state(&pending("s", "telegram", 10))
            .expect("state");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.user(42).expect("user"), Some(user));
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
