//! The central OAuth2 server's endpoints (SPEC §8): `/oauth/providers`, `/oauth/key`,
//! `/oauth/jwks.json`, `/oauth/authorize`, and the `proxy` half of the shared `/oauth/callback`.
//!
//! ```text
//! app ──► /oauth/authorize?provider&redirect_url&state
//!           redirect_url exactly in allowed_redirects, else 400 (no redirect)
//!           OAuthCache.NewState("proxy", {redirect_url, app_state, provider, pkce_verifier})
//!       ◄── 302 provider authorize URL (client_id, redirect_uri=<url>/callback, our state, S256;
//!           for OIDC the endpoints come from discovery)
//! provider ──► /oauth/callback?code&state       (login.rs takes the state: purpose "proxy")
//!           code + PKCE verifier → token (oauth::provider: client_secret_basic or _post, JSON
//!           or form-encoded answers); GET the user info endpoint; keep user_info_fields
//!       ◄── 302 redirect_url?jwt=<EdDSA token>&state=<app_state>
//!           or  redirect_url?error=access_denied&state=<app_state> when the provider said no
//! ```
//!
//! Nothing here logs a code, a token, the client secret or the signing key.

use std::collections::HashMap;

use ractor::{ActorRef, call_t};
use serde_json::{Value, json};
use tracing::{info, warn};
use url::Url;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{error, with};
use crate::actors::oauth_cache::OAuthCacheMsg;
use crate::actors::{Shared, names};
use crate::config::OAuthProxyConfig;
use crate::oauth::provider::{self, LoginSecrets, ProviderError};
use crate::oauth::token::{LoginClaims, SigningKey, filter_fields};

/// The purpose of the proxy's pending logins in the OAuth cache.
pub const PURPOSE: &str = "proxy";

/// The longest app `state` accepted (it travels in URLs and the token).
const MAX_APP_STATE: usize = 512;

/// The largest user info document read from a provider.
const MAX_USER_INFO_BYTES: usize = 256 * 1024;

/// The proxy's routes other than the shared callback.
pub fn routes(shared: Shared) -> BoxedFilter<(Response,)> {
    let providers = warp::path!("oauth" / "providers")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(providers)
        .boxed();
    let key = warp::path!("oauth" / "key")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(key)
        .boxed();
    let jwks = warp::path!("oauth" / "jwks.json")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(jwks)
        .boxed();
    // Each call writes a pending login: a peer gets 20 at once, then one every 2 seconds.
    let limiter = std::sync::Arc::new(super::rate::RateLimiter::new("/oauth/authorize", 20, 30));
    let authorize = warp::path!("oauth" / "authorize")
        .and(warp::get())
        .and(super::rate::limit(limiter))
        .and(warp::query::<HashMap<String, String>>())
        .and(with(shared))
        .then(
            |query: HashMap<String, String>, shared: Shared| async move {
                authorize(query, shared).await
            },
        )
        .boxed();
    super::reply::one_of(vec![providers, key, jwks, authorize])
}

/// Central OAuth server: the provider names.
#[utoipa::path(get, path = "/oauth/providers", tag = "login",
    responses((status = 200, description = "The configured providers", body = Vec<String>),
        (status = 404, description = "`[oauth_proxy]` is not configured", body = super::schemas::Error)))]
pub(crate) fn providers(shared: Shared) -> Response {
    match proxy(&shared) {
        Ok(_) => {
            let names: Vec<&str> = shared
                .config
                .providers
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            warp::reply::json(&names).into_response()
        }
        Err(off) => *off,
    }
}

/// Central OAuth server: the Ed25519 key that verifies its login tokens, as 64 hex characters.
#[utoipa::path(get, path = "/oauth/key", tag = "login",
    responses((status = 200, description = "The verify key", content_type = "text/plain", body = String),
        (status = 404, description = "`[oauth_proxy]` is not configured", body = super::schemas::Error)))]
pub(crate) fn key(shared: Shared) -> Response {
    match proxy(&shared) {
        Ok((_, key)) => key.public_hex().into_response(),
        Err(off) => *off,
    }
}

/// Central OAuth server: the verify key as a JWKS (OKP, Ed25519).
#[utoipa::path(get, path = "/oauth/jwks.json", tag = "login",
    responses((status = 200, description = "The JWKS", body = Object),
        (status = 404, description = "`[oauth_proxy]` is not configured", body = super::schemas::Error)))]
pub(crate) fn jwks(shared: Shared) -> Response {
    match proxy(&shared) {
        Ok((_, key)) => warp::reply::json(&key.jwks()).into_response(),
        Err(off) => *off,
    }
}

/// The proxy's config and key, or the 404 that says it is off.
fn proxy(shared: &Shared) -> Result<(&OAuthProxyConfig, &SigningKey), Box<Response>> {
    match (&shared.config.oauth_proxy, &shared.proxy_key) {
        (Some(config), Some(key)) => Ok((config, key)),
        _ => Err(Box::new(
            error(
                StatusCode::NOT_FOUND,
                "the central OAuth server is not enabled ([oauth_proxy] is not configured)",
            )
            .into_response(),
        )),
    }
}

/// The URL providers send the browser back to.
fn callback_url(config: &OAuthProxyConfig) -> String {
    format!("{}/callback", config.url.trim_end_matches('/'))
}

/// Central OAuth server: starts a login at a provider for an app.
#[utoipa::path(get, path = "/oauth/authorize", tag = "login",
    params(
        ("provider" = String, Query, description = "A configured provider name"),
        ("redirect_url" = String, Query, description = "The app's callback: exactly one of `[oauth_proxy].allowed_redirects`"),
        ("state" = String, Query, description = "The app's state, 1 to 512 characters, handed back"),
    ),
    responses(
        (status = 302, description = "To the provider's authorize URL", headers(("location" = String))),
        (status = 400, description = "Unknown provider, a redirect_url not allowed, or no state (no redirect)", body = super::schemas::Error),
        (status = 404, description = "`[oauth_proxy]` is not configured", body = super::schemas::Error),
        (status = 500, description = "The provider is misconfigured", body = super::schemas::Error),
        (status = 502, description = "The provider's discovery document cannot be had (OIDC)", body = super::schemas::Error),
        (status = 503, description = "Login is restarting", body = super::schemas::Error),
        super::schemas::RateFailures))]
pub(crate) async fn authorize(query: HashMap<String, String>, shared: Shared) -> Response {
    let (config, _) = match proxy(&shared) {
        Ok(found) => found,
        Err(off) => return *off,
    };
    let redirect_url = query
        .get("redirect_url")
        .map(String::as_str)
        .unwrap_or_default();
    if !config.redirect_allowed(redirect_url) {
        info!(
            redirect_url,
            "oauth proxy: redirect_url not in the allowlist"
        );
        return error(
            StatusCode::BAD_REQUEST,
            "redirect_url is not one of [oauth_proxy].allowed_redirects",
        )
        .into_response();
    }
    let name = query
        .get("provider")
        .map(String::as_str)
        .unwrap_or_default();
    let Some(provider) = shared.config.providers.iter().find(|p| p.name == name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown provider {name:?}"),
        )
        .into_response();
    };
    let app_state = query.get("state").map(String::as_str).unwrap_or_default();
    if app_state.is_empty() || app_state.len() > MAX_APP_STATE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("state is required (1 to {MAX_APP_STATE} characters)"),
        )
        .into_response();
    }
    let endpoints = match provider::http() {
        Ok(http) => provider::endpoints(http, provider).await,
        Err(err) => Err(err),
    };
    let endpoints = match endpoints {
        Ok(endpoints) => endpoints,
        Err(ProviderError::Config(why)) => {
            warn!(provider = name, "oauth proxy: bad provider URLs: {why}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the provider is misconfigured",
            )
            .into_response();
        }
        Err(why) => {
            warn!(provider = name, "oauth proxy: {why}");
            return error(
                StatusCode::BAD_GATEWAY,
                "the provider cannot be reached; retry",
            )
            .into_response();
        }
    };
    let secrets = LoginSecrets::new();
    let Some(cache) = ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "login is restarting; retry",
        )
        .into_response();
    };
    let data = json!({
        "redirect_url": redirect_url,
        "app_state": app_state,
        "provider": name,
        "pkce_verifier": secrets.verifier,
    });
    let created = call_t!(
        cache,
        |reply| OAuthCacheMsg::NewState {
            purpose: PURPOSE.to_string(),
            data,
            ttl: None,
            reply
        },
        10_000
    );
    let Ok(Ok(state)) = created else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot record the login; retry",
        )
        .into_response();
    };
    let url = match provider::authorize_url(
        provider,
        &endpoints,
        &callback_url(config),
        &state,
        &secrets,
    ) {
        Ok(url) => url,
        Err(why) => {
            warn!(provider = name, "oauth proxy: {why}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the provider is misconfigured",
            )
            .into_response();
        }
    };
    info!(provider = name, redirect_url, "oauth proxy: login started");
    found(url.as_str())
}

/// A 302 to `location`.
fn found(location: &str) -> Response {
    let mut reply = warp::reply::with_status(warp::reply(), StatusCode::FOUND).into_response();
    if let Ok(value) = warp::http::HeaderValue::from_str(location) {
        reply
            .headers_mut()
            .insert(warp::http::header::LOCATION, value);
    }
    reply
}

/// A 302 back to the app with these query parameters added.
fn back_to_app(redirect_url: &str, params: &[(&str, &str)]) -> Response {
    match Url::parse(redirect_url) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            found(url.as_str())
        }
        Err(_) => {
            error(StatusCode::BAD_REQUEST, "the app's redirect URL is invalid").into_response()
        }
    }
}

/// The `proxy` arm of `GET /oauth/callback`, after its state was taken from the cache.
pub async fn callback(query: HashMap<String, String>, data: Value, shared: Shared) -> Response {
    let (config, key) = match proxy(&shared) {
        Ok(found) => found,
        Err(off) => return *off,
    };
    let field = |name: &str| data[name].as_str().unwrap_or_default().to_string();
    let (redirect_url, app_state, name, verifier) = (
        field("redirect_url"),
        field("app_state"),
        field("provider"),
        field("pkce_verifier"),
    );
    // Checked again: the allowlist may have changed since the login started (a restart).
    if !config.redirect_allowed(&redirect_url) {
        return error(
            StatusCode::BAD_REQUEST,
            "the app's redirect URL is no longer allowed",
        )
        .into_response();
    }
    if let Some(err) = query.get("error") {
        let err: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        info!(provider = %name, redirect_url = %redirect_url, error = %err, "oauth proxy: provider refused the login");
        return back_to_app(&redirect_url, &[("error", &err), ("state", &app_state)]);
    }
    let fail = |why: &str| {
        warn!(provider = %name, redirect_url = %redirect_url, "oauth proxy: login failed: {why}");
        back_to_app(
            &redirect_url,
            &[("error", "server_error"), ("state", &app_state)],
        )
    };
    let Some(provider) = shared.config.providers.iter().find(|p| p.name == name) else {
        return fail("the provider is no longer configured");
    };
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return fail("the provider sent no code");
    };
    let http = match provider::http() {
        Ok(http) => http,
        Err(why) => return fail(&why.to_string()),
    };
    let endpoints = match provider::endpoints(http, provider).await {
        Ok(endpoints) => endpoints,
        Err(why) => return fail(&why.to_string()),
    };
    let token = match provider::exchange_code(
        http,
        provider,
        &endpoints,
        code,
        &callback_url(config),
        Some(&verifier),
    )
    .await
    {
        Ok(token) => token,
        Err(why) => return fail(&why.to_string()),
    };
    let Some(user_info_url) = &endpoints.userinfo else {
        return fail("the provider has no user info endpoint");
    };
    let info = match user_info(http, user_info_url, &token.access_token).await {
        Ok(info) => info,
        Err(why) => return fail(&why),
    };
    // Who the user is and their groups, by the same rules as the bot's login; a provider that
    // cannot say (a GitHub without the orgs scope) still logs in to apps that need only info.
    let who = match provider.kind {
        crate::config::ProviderKind::OAuth2 => provider::from_claims(provider, &info, None),
        _ => provider::identify(http, provider, &endpoints, &token, None).await,
    };
    let who = match who {
        Ok(who) => Some(who),
        Err(why) => {
            info!(provider = %name, "oauth proxy: no identity for the login token: {why}");
            None
        }
    };
    let now = crate::clock::now_secs();
    let mut claims = LoginClaims::new(
        config.url.trim_end_matches('/'),
        &redirect_url,
        &app_state,
        &name,
        filter_fields(&info, &provider.user_info_fields),
        now,
    );
    if let Some(who) = who {
        claims.identity = Some(who.identity);
        claims.groups = who.groups;
    }
    let jwt = match key.sign(&claims) {
        Ok(jwt) => jwt,
        Err(_) => return fail("cannot sign the login token"),
    };
    info!(provider = %name, redirect_url = %redirect_url, jti = %claims.jti, "oauth proxy: login token issued");
    back_to_app(&redirect_url, &[("jwt", &jwt), ("state", &app_state)])
}

/// Fetches the provider's user info with the access token: a JSON object.
async fn user_info(http: &reqwest::Client, url: &str, access_token: &str) -> Result<Value, String> {
    let resp = http
        .get(url)
        .bearer_auth(access_token)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|_| "the provider's user info endpoint is unreachable".to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "the provider's user info endpoint answered {}",
            resp.status()
        ));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_USER_INFO_BYTES as u64)
    {
        return Err("the provider's user info is too large".into());
    }
    let body = resp
        .bytes()
        .await
        .map_err(|_| "the provider's user info could not be read".to_string())?;
    if body.len() > MAX_USER_INFO_BYTES {
        return Err("the provider's user info is too large".into());
    }
    let info: Value = serde_json::from_slice(&body)
        .map_err(|_| "the provider's user info is not JSON".to_string())?;
    if !info.is_object() {
        return Err("the provider's user info is not a JSON object".into());
    }
    Ok(info)
}
