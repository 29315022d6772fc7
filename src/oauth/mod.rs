//! The central OAuth2 server (SPEC §8) and the client side any warp app uses to log users in
//! through it.
//!
//! - [`token`]: the login token the proxy signs for an app — claims, EdDSA signing and
//!   verification, the redirect allowlist and the `next_url` rule. No IO; the caller passes the time.
//! - [`key`]: the proxy's Ed25519 signing key: a PKCS#8 PEM file generated on first start (0600).
//! - [`provider`]: one `[[oauth_provider]]` (github, oidc, oauth2): discovery, the authorize
//!   URL, the token endpoint (client_secret_basic or _post; JSON or form answers), identity
//!   and groups, ID token verification.
//! - [`login`]: the bot's login through `[login].provider` (ItsYou.online by default): start,
//!   completion, the one-time code that binds it to the person, expiry and membership checks.
//! - [`client`]: the app side, warp filters and functions mirroring the seed's `oauth_proxy` tool:
//!   `login_required`, `login`, `callback`, server-side sessions and `logout`.
//! - [`sessions`]: where a client keeps its sessions and used token ids: memory, or the store.
//!
//! The proxy's HTTP endpoints live in `api::oauth_proxy`; the pending logins in the `OAuthCache`.

pub mod client;
pub mod key;
pub mod login;
pub mod provider;
pub mod sessions;
pub mod token;
