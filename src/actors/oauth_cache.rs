//! The `OAuthCache` actor: pending login states (random, single use, bound to a purpose and its
//! data, expiring) and authorized Telegram users.
//!
//! Nothing authoritative is kept in memory: every fact is in the store, so `cockpit clean_cache`
//! run from another process takes effect at once, and a restart of this actor loses nothing.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::RngCore;
use tracing::{debug, warn};

use crate::store::{AuthorizedUser, CleanReport, PendingState, Store, StoreError};

/// Messages of the OAuth cache.
pub enum OAuthCacheMsg {
    /// Creates a pending login state for `purpose`, bound to `data`; replies with the state.
    NewState {
        /// What the login is for (`telegram`, `proxy`).
        purpose: String,
        /// What it is bound to (the Telegram user and chat, the app's redirect...).
        data: serde_json::Value,
        /// How long it lives, when not the cache's usual lifetime (`[oauth].state_ttl_secs`).
        ttl: Option<Duration>,
        /// Gets the new state string.
        reply: RpcReplyPort<Result<String, StoreError>>,
    },
    /// Takes a state out, single use: replies with its data when it exists, is for `purpose`
    /// and has not expired.
    TakeState {
        /// The state from the callback.
        state: String,
        /// The purpose the caller expects.
        purpose: String,
        /// Gets the bound data, or `None`.
        reply: RpcReplyPort<Result<Option<serde_json::Value>, StoreError>>,
    },
    /// Takes a state out whatever its purpose (the shared OAuth callback: the state decides).
    TakeAnyState {
        /// The state from the callback.
        state: String,
        /// Gets `(purpose, data)`, or `None`.
        reply: RpcReplyPort<Result<Option<(String, serde_json::Value)>, StoreError>>,
    },
    /// Sets an authorized user's current repository.
    SetCurrentRepo {
        /// The Telegram user id.
        user_id: i64,
        /// The repository, or none.
        repo: Option<String>,
        /// Acknowledges.
        reply: RpcReplyPort<Result<(), StoreError>>,
    },
    /// Records an authorized Telegram user.
    Authorize {
        /// The user.
        user: AuthorizedUser,
        /// Acknowledges the durable write.
        reply: RpcReplyPort<Result<(), StoreError>>,
    },
    /// Looks up an authorized user by Telegram user id.
    User {
        /// The Telegram user id.
        user_id: i64,
        /// Gets the user, or `None` when not (or no longer) authorized.
        reply: RpcReplyPort<Result<Option<AuthorizedUser>, StoreError>>,
    },
    /// Empties the cache (what `cockpit clean_cache` does on a running server).
    Clean {
        /// Gets what was removed.
        reply: RpcReplyPort<Result<CleanReport, StoreError>>,
    },
    /// Deletes expired states (sent to itself periodically).
    Sweep,
    /// Fault injection: panics inside the handler (only sent when `[debug].fault_injection`).
    Crash,
}

/// How the cache is started.
pub struct OAuthCacheArgs {
    /// Durable state.
    pub store: Store,
    /// How long a pending state lives.
    pub ttl: Duration,
    /// Where it registers for fault injection.
    pub faults: super::faults::Faults,
}

/// The OAuth cache actor.
pub struct OAuthCache;

/// The actor's state: the store handle, its clock and the state lifetime.
pub struct OAuthCacheState {
    /// Durable state.
    store: Store,
    /// How long a pending state lives.
    ttl: Duration,
}

/// Pending login states kept at most (anyone may start a login): the oldest make room.
pub const MAX_PENDING_STATES: usize = 10_000;

/// How often expired states are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A new random state: 256 bits, hex.
fn random_state() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Actor for OAuthCache {
    type Msg = OAuthCacheMsg;
    type State = OAuthCacheState;
    type Arguments = OAuthCacheArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: OAuthCacheArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(SWEEP_EVERY, || OAuthCacheMsg::Sweep);
        args.faults
            .join(super::names::OAUTH_CACHE, myself.clone(), || {
                OAuthCacheMsg::Crash
            });
        Ok(OAuthCacheState {
            store: args.store,
            ttl: args.ttl,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = crate::clock::now_ms();
        match message {
            OAuthCacheMsg::NewState {
                purpose,
                data,
                ttl,
                reply,
            } => {
                let pending = PendingState {
                    state: random_state(),
                    purpose,
                    data,
                    expires_at_ms: now + ttl.unwrap_or(state.ttl).as_millis() as i64,
                };
                let result = state
                    .store
                    .insert_state_capped(&pending, MAX_PENDING_STATES)
                    .map(|evicted| {
                        if evicted > 0 {
                            debug!(
                                evicted,
                                "pending login states at their cap: the oldest went"
                            );
                        }
                        pending.state
                    });
                let _ = reply.send(result);
            }
            OAuthCacheMsg::TakeState {
                state: key,
                purpose,
                reply,
            } => {
                let result = state
                    .store
                    .take_state(&key, &purpose, now)
                    .map(|found| found.map(|p| p.data));
                let _ = reply.send(result);
            }
            OAuthCacheMsg::TakeAnyState { state: key, reply } => {
                let _ = reply.send(state.store.take_any_state(&key, now));
            }
            OAuthCacheMsg::SetCurrentRepo {
                user_id,
                repo,
                reply,
            } => {
                let _ = reply.send(state.store.set_current_repo(user_id, repo.as_deref()));
            }
            OAuthCacheMsg::Authorize { user, reply } => {
                let _ = reply.send(state.store.upsert_user(&user, now));
            }
            OAuthCacheMsg::User { user_id, reply } => {
                let _ = reply.send(state.store.user(user_id));
            }
            OAuthCacheMsg::Clean { reply } => {
                let _ = reply.send(state.store.clean_oauth_cache());
            }
            OAuthCacheMsg::Sweep => match state.store.sweep_states(now) {
                Ok(0) => {}
                Ok(n) => debug!(expired = n, "swept expired login states"),
                Err(err) => warn!(%err, "sweeping login states failed"),
            },
            OAuthCacheMsg::Crash => panic!("fault injection: oauth_cache crashed on request"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::call;
    use serde_json::json;

    async fn spawn(store: &Store) -> ActorRef<OAuthCacheMsg> {
        let (actor, _handle) = Actor::spawn(
            None,
            OAuthCache,
            OAuthCacheArgs {
                store: store.clone(),
                ttl: Duration::from_secs(600),
                faults: Default::default(),
            },
        )
        .await
        .expect("spawn");
        actor
    }

    async fn new_state(cache: &ActorRef<OAuthCacheMsg>, purpose: &str) -> String {
        call!(cache, |reply| OAuthCacheMsg::NewState {
            purpose: purpose.into(),
            data: json!({"chat_id": 1, "user_id": 2}),
            ttl: None,
            reply
        })
        .expect("call")
        .expect("store")
    }

    async fn take(
        cache: &ActorRef<OAuthCacheMsg>,
        state: &str,
        purpose: &str,
    ) -> Option<serde_json::Value> {
        call!(cache, |reply| OAuthCacheMsg::TakeState {
            state: state.into(),
            purpose: purpose.into(),
            reply
        })
        .expect("call")
        .expect("store")
    }

    #[tokio::test]
    async fn a_state_is_random_single_use_and_bound_to_its_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cache = spawn(&store).await;
        let a = new_state(&cache, "telegram").await;
        let b = new_state(&cache, "telegram").await;
        assert_ne!(a, b);
        assert!(a.len() >= 32, "at least 128 bits: {a}");
        assert_eq!(take(&cache, &b, "proxy").await, None, "wrong purpose");
        assert_eq!(
            take(&cache, &b, "telegram").await,
            None,
            "burnt by the wrong try"
        );
        assert_eq!(
            take(&cache, &a, "telegram").await,
            Some(json!({"chat_id": 1, "user_id": 2}))
        );
        assert_eq!(take(&cache, &a, "telegram").await, None, "single use");
        assert_eq!(take(&cache, "unknown", "telegram").await, None);
        cache.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_expires_after_its_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cache = spawn(&store).await;
        let early = new_state(&cache, "telegram").await;
        let late = new_state(&cache, "telegram").await;
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(
            take(&cache, &early, "telegram").await.is_some(),
            "still valid at 9m59s"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            take(&cache, &late, "telegram").await,
            None,
            "expired at 10m01s"
        );
        // The periodic sweep removes expired rows without anyone asking for them.
        let _ = new_state(&cache, "telegram").await;
        tokio::time::advance(Duration::from_secs(700)).await;
        let _ = call!(cache, |reply| OAuthCacheMsg::User { user_id: 0, reply });
        assert_eq!(store.count_states().expect("count"), 0);
        cache.stop(None);
    }

    #[tokio::test]
    async fn users_survive_a_restart_and_clean_cache_from_outside_is_seen_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cache = spawn(&store).await;
        let user = AuthorizedUser {
            user_id: 77,
            chat_id: 770,
            username: "alice".into(),
            current_repo: None,
            token_expires_at: Some(1_900_000_000),
            identity: "itsyouonline:alice".into(),
            groups: vec!["myorg".into()],
            provider: "itsyouonline".into(),
            checked_at_ms: Some(5),
            ..Default::default()
        };
        call!(cache, |reply| OAuthCacheMsg::Authorize {
            user: user.clone(),
            reply
        })
        .expect("call")
        .expect("store");
        cache.stop_and_wait(None, None).await.expect("stop");

        // A new process's actor over the same file still knows the user.
        let reopened = Store::open(dir.path()).expect("reopen");
        let cache = spawn(&reopened).await;
        let found = call!(cache, |reply| OAuthCacheMsg::User { user_id: 77, reply })
            .expect("call")
            .expect("store");
        assert_eq!(found, Some(user));

        // `cockpit clean_cache` in another process: its own connection to the file.
        let other_process = Store::open(dir.path()).expect("third handle");
        let report = other_process.clean_oauth_cache().expect("clean");
        assert_eq!(report.users, 1);
        let found = call!(cache, |reply| OAuthCacheMsg::User { user_id: 77, reply })
            .expect("call")
            .expect("store");
        assert_eq!(found, None, "the running actor honours clean_cache at once");
        cache.stop(None);
    }
}
