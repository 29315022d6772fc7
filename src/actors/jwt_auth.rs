//! The `JwtAuth` actor: verifies REST API tokens with the rules of `auth::jwt` (ES384 pinned) and
//! caches accepted tokens until their `exp`. A refused token is never cached, so a token that was
//! invalid once can never be served from the cache as valid.
//!
//! The cache ([`TokenCache`]) is shared: the HTTP filter reads it directly, so a request with a
//! known token costs a hash lookup, not a message to this actor; only this actor writes it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockWriteGuard};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::auth::{AuthError, JwtRules, Verified};

/// Messages of the JWT verifier.
pub enum JwtAuthMsg {
    /// Verifies a token (already taken out of the request).
    Verify {
        /// The raw token.
        token: String,
        /// Gets who the token speaks for, or why it is refused.
        reply: RpcReplyPort<Result<Verified, AuthError>>,
    },
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The JWT verifier actor.
pub struct JwtAuth;

/// How many accepted tokens are remembered at most.
const CACHE_CAPACITY: usize = 10_000;

/// Accepted tokens until their `exp`: read by anyone, written by the `JwtAuth` actor only.
#[derive(Default)]
pub struct TokenCache {
    tokens: RwLock<HashMap<String, Verified>>,
}

impl TokenCache {
    /// The cached verification of `token`, if it is still valid at `now`.
    pub fn fresh(&self, token: &str, now: u64) -> Option<Verified> {
        let tokens = self.tokens.read();
        tokens.get(token).filter(|hit| now < hit.exp).cloned()
    }

    fn get(&self, token: &str) -> Option<Verified> {
        let tokens = self.tokens.read();
        tokens.get(token).cloned()
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Verified>> {
        self.tokens.write()
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.tokens.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The verifier's state.
pub struct JwtAuthState {
    /// The rules from `[oauth]`.
    rules: JwtRules,
    /// Accepted tokens until their `exp` (shared with the HTTP filter).
    cache: Arc<TokenCache>,
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    crate::clock::since_epoch().as_secs()
}

impl JwtAuthState {
    /// Verifies through the cache.
    fn verify(&mut self, token: &str, now: u64) -> Result<Verified, AuthError> {
        if let Some(hit) = self.cache.get(token) {
            if now < hit.exp {
                return Ok(hit);
            }
            self.cache.write().remove(token);
            return Err(AuthError::Expired);
        }
        let verified = self.rules.verify(token, now)?;
        let mut cache = self.cache.write();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, v| now < v.exp);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), verified.clone());
        Ok(verified)
    }
}

impl Actor for JwtAuth {
    type Msg = JwtAuthMsg;
    type State = JwtAuthState;
    type Arguments = (JwtRules, Arc<TokenCache>, super::faults::Faults);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (rules, cache, faults): (JwtRules, Arc<TokenCache>, super::faults::Faults),
    ) -> Result<Self::State, ActorProcessingErr> {
        faults.join(super::names::JWT_AUTH, myself, || JwtAuthMsg::Crash);
        Ok(JwtAuthState { rules, cache })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JwtAuthMsg::Verify { token, reply } => {
                let _ = reply.send(state.verify(&token, now_secs()));
            }
            JwtAuthMsg::Crash => panic!("fault injection: jwt_auth crashed on request"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PRIVATE: &str = include_str!("../../tests/support/keys/test_p384.pem");
    const PUBLIC: &str = include_str!("../../tests/support/keys/test_p384.pub.pem");

    fn state() -> JwtAuthState {
        JwtAuthState {
            rules: JwtRules::new(PUBLIC, "itsyouonline", "org").expect("rules"),
            cache: Arc::default(),
        }
    }

    fn token(exp: u64, scope: &str) -> String {
        crate::auth::mint_token(
            PRIVATE,
            &json!({"iss": "itsyouonline", "exp": exp, "scope": [scope], "username": "ann"}),
        )
        .expect("mint")
    }

    #[test]
    fn accepted_tokens_are_cached_until_exp_and_refusals_never_are() {
        let mut s = state();
        let good = token(1_000, "user:memberof:org");
        assert_eq!(s.verify(&good, 10).map(|v| v.user), Ok("ann".to_string()));
        assert_eq!(s.cache.len(), 1);
        assert!(s.verify(&good, 999).is_ok(), "served from the cache");
        assert_eq!(
            s.verify(&good, 1_000),
            Err(AuthError::Expired),
            "cache ends at exp"
        );
        assert!(s.cache.is_empty());

        let outsider = token(1_000, "user:memberof:other");
        assert_eq!(s.verify(&outsider, 10), Err(AuthError::Unauthorized));
        assert_eq!(s.verify(&outsider, 10), Err(AuthError::Unauthorized));
        assert!(s.cache.is_empty(), "a refused token is never cached");
    }
}
