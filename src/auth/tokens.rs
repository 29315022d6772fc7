//! API tokens issued by cockpit: 256 random bits, shown once, stored only as their SHA-256 hash.
//! A token is checked against the store on every request (no cache), so a revocation — by the
//! REST API, the bot or the CLI in another process — takes effect at the next request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use super::access::{Action, Role};
use super::audit::{self, Door, Outcome};
use crate::store::{ApiTokenRecord, Store, StoreError};

/// What every cockpit token starts with (JWTs start with `ey`).
pub const PREFIX: &str = "ck_";

/// Longest lifetime a token may be given.
pub const MAX_TTL_DAYS: u64 = 3650;

/// Why a token was not issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The owner asked for more than their own role.
    #[error("a token cannot carry more than its owner's role ({owner}); asked for {asked}")]
    AboveOwner {
        /// The owner's role.
        owner: Role,
        /// The role asked for.
        asked: Role,
    },
    /// A bad name or lifetime.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token's identity and role, when it is valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    /// Whose token it is.
    pub identity: String,
    /// The role it carries.
    pub role: Role,
    /// The token's id.
    pub id: String,
}

/// The hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Issues a token for `identity` (whose role is `owner_role`) and writes its audit row in the
/// same transaction. Returns the token (shown once) and its record.
#[allow(clippy::too_many_arguments)]
pub fn issue(
    store: &Store,
    door: Door,
    actor: &str,
    identity: &str,
    owner_role: Role,
    name: &str,
    role: Role,
    ttl_days: u64,
) -> Result<(String, ApiTokenRecord), TokenError> {
    if role > owner_role {
        return Err(TokenError::AboveOwner {
            owner: owner_role,
            asked: role,
        });
    }
    if !(1..=MAX_TTL_DAYS).contains(&ttl_days) {
        return Err(TokenError::Invalid(format!(
            "ttl_days: expected 1 to {MAX_TTL_DAYS}, got {ttl_days}"
        )));
    }
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(TokenError::Invalid(
            "name: expected 1 to 100 printable characters".into(),
        ));
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let mut id_bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut id_bytes);
    let now = crate::clock::now_ms();
    let record = ApiTokenRecord {
        id: format!("tok_{}", hex::encode(id_bytes)),
        identity: identity.to_string(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        hash: hash(&token),
        created_ms: now,
        expires_ms: now.saturating_add((ttl_days as i64).saturating_mul(86_400_000)),
    };
    let row = audit::record(door, actor, Action::TokenCreate, &record.id, &Outcome::Ok);
    store.insert_token(&record, &row)?;
    Ok((token, record))
}

/// The holder of `token` if it is one of ours, not revoked and not expired at `now_ms`.
pub fn check(store: &Store, token: &str, now_ms: i64) -> Result<Option<TokenHolder>, StoreError> {
    let Some(record) = store.token_by_hash(&hash(token))? else {
        return Ok(None);
    };
    if now_ms >= record.expires_ms {
        return Ok(None);
    }
    let Some(role) = Role::parse(&record.role) else {
        return Ok(None);
    };
    Ok(Some(TokenHolder {
        identity: record.identity,
        role,
        id: record.id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_as_its_hash_and_never_exceeds_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let too_much = issue(
            &store,
            Door::Cli,
            "cli:root",
            "github:bob",
            Role::Operator,
            "ci",
            Role::Admin,
            30,
        );
        assert!(matches!(too_much, Err(TokenError::AboveOwner { .. })));
        let (token, record) = issue(
            &store,
            Door::Rest,
            "github:bob",
            "github:bob",
            Role::Operator,
            "ci",
            Role::Viewer,
            30,
        )
        .expect("issued");
        assert!(token.starts_with(PREFIX) && token.len() >= PREFIX.len() + 43);
        let stored = store.list_tokens(None).expect("list");
        assert_eq!(stored, vec![record.clone()]);
        assert_ne!(stored[0].hash, token);
        assert!(!format!("{stored:?}").contains(&token[PREFIX.len()..]));
        let now = crate::clock::now_ms();
        let holder = check(&store, &token, now).expect("check").expect("valid");
        assert_eq!(
            (holder.identity.as_str(), holder.role),
            ("github:bob", Role::Viewer)
        );
        assert_eq!(
            check(&store, &format!("{token}x"), now).expect("check"),
            None
        );
        assert_eq!(
            check(&store, &token, record.expires_ms).expect("check"),
            None
        );
        let row = audit::record(
            Door::Rest,
            "github:bob",
            Action::TokenRevoke,
            &record.id,
            &Outcome::Ok,
        );
        assert!(store.revoke_token(&record.id, &row).expect("revoke"));
        assert_eq!(check(&store, &token, now).expect("check"), None);
    }
}
