//! Authentication rules without IO.
//!
//! `jwt` holds the rules that decide whether a JWT from ItsYou.online (or any issuer signing with
//! a P-384 key) grants access to the REST API: where the token is taken from, how it is verified
//! (algorithm pinned to ES384) and which claims make its bearer a member of the organization.
//! The `JwtAuth` actor owns a [`JwtRules`] and caches what it accepts; nothing here touches the
//! network, the disk or the clock (the caller passes the current time).

pub mod jwt;

pub use jwt::{
    AuthError, JwtRules, KeyError, MAX_TOKEN_BYTES, Verified, mint_token, token_from_parts,
};
