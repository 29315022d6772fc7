//! Authentication rules without IO.
//!
//! `jwt` holds the rules that decide whether a JWT from ItsYou.online (or any issuer signing with
//! a P-384 key) grants access to the REST API: where the token is taken from, how it is verified
//! (algorithm pinned to ES384) and which claims make its bearer a member of the organization.
//! `pool` runs those rules on a bounded pool of threads behind a cache of accepted tokens (the
//! REST filter asks it); `jwt` itself touches neither the network, the disk nor the clock (the
//! caller passes the current time). `access` maps a principal to a role and every command to the
//! role it needs (no IO either); `audit` writes the audit trail and `tokens` issues and checks the
//! API tokens cockpit itself issues (both through the store); `revoked` holds the identities
//! logged out everywhere, whose older JWTs are refused.

pub mod access;
pub mod approvals;
pub mod audit;
pub mod jwt;
pub mod pool;
pub mod revoked;
pub mod tokens;

pub use jwt::{
    AuthError, JwtRules, KeyError, MAX_TOKEN_BYTES, Verified, mint_token, token_from_parts,
};
