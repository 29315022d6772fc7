//! Where an [`OAuthApp`](super::client::OAuthApp) keeps its server-side sessions and the login
//! token ids it has accepted.
//!
//! - [`MemorySessions`]: in the process (an app of its own, as the seed's `oauth_proxy` tool kept
//!   them in files of its own): a restart logs everyone out.
//! - [`StoreSessions`]: in cockpit's store (the web console): a session outlives a restart, and on
//!   PostgreSQL the replica that takes over knows it. The row's key is the SHA-256 of the
//!   cookie's id, so a copy of the database opens no session.
//!
//! Both bound what anyone can make them hold: at most `cap` sessions, expired ones first out,
//! then the oldest; a used token id is kept only until its token would be refused as expired.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{AppSessionRow, Store};

/// A logged-in user as the proxy vouched for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The provider that logged them in.
    pub provider: String,
    /// Their info, reduced to the proxy's `user_info_fields`.
    pub info: Map<String, Value>,
    /// Who they are (`github:alice`), when the proxy could tell.
    pub identity: Option<String>,
    /// Their groups at the provider, for role rules.
    pub groups: Vec<String>,
    /// When they logged in (Unix seconds): a revocation after it ends the session.
    pub logged_in: i64,
}

/// A login started in a session and not finished yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The state sent to the proxy; must come back as `state` and as the token's `nonce`.
    pub state: String,
    /// The callback URL given to the proxy: the token's expected `aud`.
    pub callback_url: String,
    /// Where to send the user after login (a local path).
    pub next_url: String,
    /// When the login can no longer be finished (Unix milliseconds).
    pub expires_ms: i64,
}

/// One server-side session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionData {
    /// When the session ends (Unix milliseconds).
    pub expires_ms: i64,
    /// The login in progress, if any.
    pub pending: Option<Pending>,
    /// The logged-in user, if any.
    pub user: Option<User>,
}

/// The session store could not be read or written (the database is down). The detail is for
/// the log; the browser is told to try again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<crate::store::StoreError> for Unavailable {
    fn from(err: crate::store::StoreError) -> Unavailable {
        Unavailable(err.to_string())
    }
}

/// What an [`OAuthApp`](super::client::OAuthApp) needs of the place its sessions live. `id` is
/// the cookie's value.
pub trait SessionStore: Send + Sync {
    /// The session `id`, unless it is unknown or ended at `now_ms` (an ended one is forgotten).
    fn get(&self, id: &str, now_ms: i64) -> Result<Option<SessionData>, Unavailable>;

    /// Keeps a new session under `id`. Past `cap` sessions, the ended ones go, then the oldest.
    fn insert(
        &self,
        id: &str,
        data: &SessionData,
        cap: usize,
        now_ms: i64,
    ) -> Result<(), Unavailable>;

    /// Sets the login in progress of session `id`; `false` when there is no such session.
    fn set_pending(&self, id: &str, pending: &Pending) -> Result<bool, Unavailable>;

    /// Takes the login in progress out of session `id` (it is gone whatever the caller does next).
    fn take_pending(&self, id: &str) -> Result<Option<Pending>, Unavailable>;

    /// Ends session `id`.
    fn remove(&self, id: &str) -> Result<(), Unavailable>;

    /// Records that the token `jti` was used, unless it was before: `true` the first time. It is
    /// remembered until `until_s` (Unix seconds); what ended by `now_s` is forgotten.
    fn first_use(&self, jti: &str, until_s: i64, now_s: i64) -> Result<bool, Unavailable>;
}

/// Sessions in the process's memory.
#[derive(Default)]
pub struct MemorySessions {
    /// Sessions and used token ids.
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// Sessions by id.
    sessions: HashMap<String, SessionData>,
    /// Used token ids, with the Unix second after which they can be forgotten.
    used_jti: HashMap<String, i64>,
}

impl SessionStore for MemorySessions {
    fn get(&self, id: &str, now_ms: i64) -> Result<Option<SessionData>, Unavailable> {
        let mut memory = self.memory.lock();
        match memory.sessions.get(id) {
            Some(data) if data.expires_ms > now_ms => Ok(Some(data.clone())),
            Some(_) => {
                memory.sessions.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn insert(
        &self,
        id: &str,
        data: &SessionData,
        cap: usize,
        now_ms: i64,
    ) -> Result<(), Unavailable> {
        let mut memory = self.memory.lock();
        if memory.sessions.len() >= cap {
            memory.sessions.retain(|_, s| s.expires_ms > now_ms);
        }
        while memory.sessions.len() >= cap.max(1) {
            let oldest = memory
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => memory.sessions.remove(&id),
                None => break,
            };
        }
        memory.sessions.insert(id.to_string(), data.clone());
        Ok(())
    }

    fn set_pending(&self, id: &str, pending: &Pending) -> Result<bool, Unavailable> {
        let mut memory = self.memory.lock();
        Ok(match memory.sessions.get_mut(id) {
            Some(data) => {
                data.pending = Some(pending.clone());
                true
            }
            None => false,
        })
    }

    fn take_pending(&self, id: &str) -> Result<Option<Pending>, Unavailable> {
        let mut memory = self.memory.lock();
        Ok(memory
            .sessions
            .get_mut(id)
            .and_then(|data| data.pending.take()))
    }

    fn remove(&self, id: &str) -> Result<(), Unavailable> {
        self.memory.lock().sessions.remove(id);
        Ok(())
    }

    fn first_use(&self, jti: &str, until_s: i64, now_s: i64) -> Result<bool, Unavailable> {
        let mut memory = self.memory.lock();
        memory.used_jti.retain(|_, until| *until > now_s);
        if memory.used_jti.contains_key(jti) {
            return Ok(false);
        }
        memory.used_jti.insert(jti.to_string(), until_s);
        Ok(true)
    }
}

/// Sessions in cockpit's store, under one app's name (`console`).
pub struct StoreSessions {
    /// The store.
    store: Store,
    /// Whose sessions these are: one store can hold the sessions of several apps.
    app: String,
}

impl StoreSessions {
    /// The sessions of `app` in `store`.
    pub fn new(store: Store, app: &str) -> StoreSessions {
        StoreSessions {
            store,
            app: app.to_string(),
        }
    }
}

/// The row key of a cookie's id: its SHA-256, hex.
fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The stored form of a session's user and pending login (JSON).
fn encode<T: Serialize>(value: Option<&T>) -> Result<Option<String>, Unavailable> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Unavailable(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(text: Option<&str>) -> Result<Option<T>, Unavailable> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| Unavailable(format!("a stored session does not read: {e}")))
}

impl SessionStore for StoreSessions {
    fn get(&self, id: &str, now_ms: i64) -> Result<Option<SessionData>, Unavailable> {
        let Some(row) = self.store.app_session(&self.app, &key(id), now_ms)? else {
            return Ok(None);
        };
        Ok(Some(SessionData {
            expires_ms: row.expires_ms,
            pending: decode(row.pending.as_deref())?,
            user: decode(row.user.as_deref())?,
        }))
    }

    fn insert(
        &self,
        id: &str,
        data: &SessionData,
        cap: usize,
        now_ms: i64,
    ) -> Result<(), Unavailable> {
        let row = AppSessionRow {
            expires_ms: data.expires_ms,
            user: encode(data.user.as_ref())?,
            pending: encode(data.pending.as_ref())?,
        };
        self.store
            .insert_app_session(&self.app, &key(id), &row, cap, now_ms)?;
        Ok(())
    }

    fn set_pending(&self, id: &str, pending: &Pending) -> Result<bool, Unavailable> {
        let text = encode(Some(pending))?;
        Ok(self
            .store
            .set_app_session_pending(&self.app, &key(id), text.as_deref())?)
    }

    fn take_pending(&self, id: &str) -> Result<Option<Pending>, Unavailable> {
        let text = self.store.take_app_session_pending(&self.app, &key(id))?;
        decode(text.as_deref())
    }

    fn remove(&self, id: &str) -> Result<(), Unavailable> {
        self.store.remove_app_session(&self.app, &key(id))?;
        Ok(())
    }

    fn first_use(&self, jti: &str, until_s: i64, now_s: i64) -> Result<bool, Unavailable> {
        Ok(self.store.use_login_token(jti, until_s, now_s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_ms: i64, who: Option<&str>) -> SessionData {
        SessionData {
            expires_ms,
            pending: None,
            user: who.map(|who| User {
                provider: "github".into(),
                info: serde_json::Map::new(),
                identity: Some(who.into()),
                groups: vec!["ops".into()],
                logged_in: 1,
            }),
        }
    }

    fn pending(state: &str) -> Pending {
        Pending {
            state: state.into(),
            callback_url: "https://c.example.com/console/callback".into(),
            next_url: "/console".into(),
            expires_ms: 5_000,
        }
    }

    /// The rules every implementation keeps, checked on each.
    fn keeps_the_rules(sessions: &dyn SessionStore) {
        let now = 1_000;
        assert_eq!(sessions.get("a", now).expect("get"), None);
        sessions
            .insert("a", &session(10_000, Some("github:alice")), 3, now)
            .expect("insert");
        let found = sessions.get("a", now).expect("get").expect("a");
        assert_eq!(found, session(10_000, Some("github:alice")));
        assert_eq!(sessions.get("a", 10_000).expect("get"), None, "ended");
        assert_eq!(sessions.get("a", now).expect("get"), None, "and forgotten");

        // A pending login is taken once.
        assert!(!sessions.set_pending("b", &pending("s1")).expect("set"));
        sessions
            .insert("b", &session(10_000, None), 3, now)
            .expect("insert");
        assert!(sessions.set_pending("b", &pending("s1")).expect("set"));
        let got = sessions.get("b", now).expect("get").expect("b");
        assert_eq!(got.pending, Some(pending("s1")));
        assert_eq!(
            sessions.take_pending("b").expect("take"),
            Some(pending("s1"))
        );
        assert_eq!(sessions.take_pending("b").expect("take"), None);
        assert_eq!(sessions.take_pending("nope").expect("take"), None);

        // The cap: the ended session goes first, then the oldest.
        sessions
            .insert("c", &session(2_000, None), 3, now)
            .expect("insert");
        sessions
            .insert("d", &session(20_000, None), 3, now)
            .expect("insert");
        sessions
            .insert("e", &session(30_000, None), 3, 2_500)
            .expect("insert");
        assert!(sessions.get("b", 2_500).expect("get").is_some());
        sessions
            .insert("f", &session(40_000, None), 3, 2_500)
            .expect("insert");
        assert!(
            sessions.get("b", 2_500).expect("get").is_none(),
            "oldest out"
        );
        for id in ["d", "e", "f"] {
            assert!(sessions.get(id, 2_500).expect("get").is_some(), "{id}");
        }
        sessions.remove("d").expect("remove");
        assert!(sessions.get("d", 2_500).expect("get").is_none());

        // A token id is used once, and forgotten when its token has expired.
        assert!(sessions.first_use("j1", 100, 10).expect("use"));
        assert!(!sessions.first_use("j1", 100, 50).expect("use"));
        assert!(sessions.first_use("j2", 300, 150).expect("use"));
        assert!(sessions.first_use("j1", 400, 150).expect("forgotten"));
    }

    #[test]
    fn memory_sessions_keep_the_rules() {
        keeps_the_rules(&MemorySessions::default());
    }

    #[test]
    fn store_sessions_keep_the_rules_and_outlive_the_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("open");
        keeps_the_rules(&StoreSessions::new(store.clone(), "console"));
        // Another app's sessions are its own; the same store opened again has them.
        let other = StoreSessions::new(store.clone(), "other");
        assert!(other.get("e", 2_500).expect("get").is_none());
        drop(store);
        let again = StoreSessions::new(
            crate::store::Store::open(dir.path()).expect("open"),
            "console",
        );
        assert!(again.get("e", 2_500).expect("get").is_some());
    }

    #[test]
    fn the_row_key_is_not_the_cookie() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("open");
        let sessions = StoreSessions::new(store.clone(), "console");
        sessions
            .insert("the-cookie-id", &session(10_000, None), 3, 1_000)
            .expect("insert");
        assert!(
            store
                .app_session("console", "the-cookie-id", 1_000)
                .expect("read")
                .is_none()
        );
        assert!(
            store
                .app_session("console", &key("the-cookie-id"), 1_000)
                .expect("read")
                .is_some()
        );
    }
}
