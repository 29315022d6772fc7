//! The `JwtAuth` actor: verifies REST API tokens with the rules of `auth::jwt` (ES384 pinned) and
//! caches accepted tokens until their `exp`. A refused token is never cached, so a token that was
//! invalid once can never be served from the cache as valid.

use std::collections::HashMap;

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

/// The verifier's state.
pub struct JwtAuthState {
    /// The rules from `[oauth]`.
    rules: JwtRules,
    /// Accepted tokens until their `exp`.
    cache: HashMap<String, Verified>,
}

/// Seconds since the Unix epoch now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtAuthState {
    /// Verifies through the cache.
    fn verify(&mut self, token: &str, now: u64) -> Result<Verified, AuthError> {
        if let Some(hit) = self.cache.get(token) {
            if now < hit.exp {
                return Ok(hit.clone());
            }
            self.cache.remove(token);
            return Err(AuthError::Expired);
        }
        let verified = self.rules.verify(token, now)?;
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.retain(|_, v| now < v.exp);
            if self.cache.len() >= CACHE_CAPACITY {
                self.cache.clear();
            }
        }
        self.cache.insert(token.to_string(), verified.clone());
        Ok(verified)
    }
}

impl Actor for JwtAuth {
    type Msg = JwtAuthMsg;
    type State = JwtAuthState;
    type Arguments = JwtRules;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        rules: JwtRules,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(JwtAuthState {
            rules,
            cache: HashMap::new(),
        })
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
            cache: HashMap::new(),
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
