//! The central OAuth2 server (SPEC §8) and the client side any warp app uses to log users in
//! through it.
//!
//! - [`token`]: the login token the proxy signs for an app — claims, EdDSA signing and
//!   verification, the redirect allowlist and the `next_url` rule. No IO; the caller passes the time.
//! - [`key`]: the proxy's Ed25519 signing key: a PKCS#8 PEM file generated on first start (0600).
//! - [`client`]: the app side, warp filters and functions mirroring the seed's `oauth_proxy` tool:
//!   `login_required`, `login`, `callback`, server-side sessions and `logout`.
//!
//! The proxy's HTTP endpoints live in `api::oauth_proxy`; the pending logins in the `OAuthCache`.

pub mod client;
pub mod key;
pub mod token;
