//! `GET /oauth/callback`: where ItsYou.online sends the browser back after a Telegram user logged
//! in (and, with the central OAuth server, where providers send it back: the state decides).
//!
//! The state is taken out of the OAuth cache (single use, expiring); the code is exchanged at
//! `{itsyouonlinehost}/v1/oauth/access_token` with the oauth2 crate; membership is checked in the
//! granted scopes (a list, not string equality); the user is recorded and the chat is told.
//! Browser-facing answers are small HTML pages.

use std::collections::HashMap;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    ExtraTokenFields, RedirectUrl, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use ractor::{ActorRef, call_t};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::with;
use crate::actors::notice::{LoginOutcome, Notice};
use crate::actors::oauth_cache::OAuthCacheMsg;
use crate::actors::{Shared, names};
use crate::config::OAuthConfig;
use crate::store::AuthorizedUser;

/// What ItsYou.online adds to its token response: `info` with the username.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ItsYouFields {
    /// `{"username": ...}`.
    #[serde(default)]
    pub info: Option<Value>,
}

impl ExtraTokenFields for ItsYouFields {}

type ItsYouToken = StandardTokenResponse<ItsYouFields, BasicTokenType>;

type ItsYouClient = oauth2::Client<
    BasicErrorResponse,
    ItsYouToken,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The outcome of a Telegram login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A member: their ItsYou.online username and token expiry.
    Member {
        /// The ItsYou.online username.
        username: String,
        /// When the token expires (Unix seconds), if said.
        expires_at: Option<i64>,
    },
    /// Not a member of the organization.
    NotMember,
}

/// Exchanges an authorization code at ItsYou.online and checks organization membership.
pub async fn exchange(oauth: &OAuthConfig, code: &str) -> Result<Login, String> {
    let host = &oauth.itsyouonlinehost;
    let client: ItsYouClient = oauth2::Client::new(ClientId::new(oauth.client_id.clone()))
        .set_auth_uri(
            AuthUrl::new(format!("{host}/v1/oauth/authorize")).map_err(|e| e.to_string())?,
        )
        .set_token_uri(
            TokenUrl::new(format!("{host}/v1/oauth/access_token")).map_err(|e| e.to_string())?,
        )
        .set_redirect_uri(RedirectUrl::new(oauth.redirect_uri.clone()).map_err(|e| e.to_string())?);
    let client = match &oauth.client_secret {
        Some(secret) => client.set_client_secret(ClientSecret::new(secret.expose().to_string())),
        None => client,
    };
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .request_async(&http)
        .await
        .map_err(|err| match err {
            oauth2::RequestTokenError::ServerResponse(resp) => {
                format!("ItsYou.online refused the code: {}", resp.error())
            }
            oauth2::RequestTokenError::Request(_) => "ItsYou.online is unreachable".to_string(),
            other => format!("unexpected answer from ItsYou.online: {other}"),
        })?;
    let wanted = format!("user:memberof:{}", oauth.organization);
    // ItsYou.online may join scopes with commas instead of spaces: accept both.
    let member = token
        .scopes()
        .into_iter()
        .flatten()
        .flat_map(|scope| {
            scope
                .split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .any(|scope| scope == wanted);
    if !member {
        return Ok(Login::NotMember);
    }
    let username = token
        .extra_fields()
        .info
        .as_ref()
        .and_then(|info| info["username"].as_str())
        .unwrap_or_default()
        .to_string();
    let expires_at = token
        .expires_in()
        .map(|d| crate::clock::now_secs() + d.as_secs() as i64);
    Ok(Login::Member {
        username,
        expires_at,
    })
}

/// `GET /oauth/callback`.
pub fn routes(shared: Shared) -> warp::filters::BoxedFilter<(Response,)> {
    // Each call may send a code to a provider with our client secret: a peer gets 20 at once,
    // then one every 2 seconds.
    let limiter = std::sync::Arc::new(super::rate::RateLimiter::new("/oauth/callback", 20, 30));
    warp::path!("oauth" / "callback")
        .and(warp::get())
        .and(super::rate::limit(limiter))
        .and(warp::query::<HashMap<String, String>>())
        .and(with(shared))
        .then(
            |query: HashMap<String, String>, shared: Shared| async move {
                callback(query, shared).await
            },
        )
        .boxed()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1><p>{b}</p></body></html>",
        t = escape(title),
        b = escape(body)
    );
    warp::reply::with_status(warp::reply::html(html), status).into_response()
}

/// Tells whoever listens (the chat door) how the login of `chat_id` ended.
fn notify(shared: &Shared, chat_id: i64, outcome: LoginOutcome) {
    shared
        .notices
        .publish(Notice::LoginFinished { chat_id, outcome });
}

/// Where providers send the browser back: a Telegram login (ItsYou.online) or a central OAuth
/// server login (the state decides). Answers are HTML pages for people, or a redirect to the app.
#[utoipa::path(get, path = "/oauth/callback", tag = "login",
    params(
        ("state" = String, Query, min_length = 1, description = "The state the login was started with"),
        ("code" = Option<String>, Query, description = "The provider's authorization code"),
        ("error" = Option<String>, Query, description = "The provider's refusal"),
    ),
    responses(
        (status = 200, description = "Logged in (Telegram)", content_type = "text/html", body = String),
        (status = 302, description = "Back to the app with `jwt` and `state`, or `error` and `state`", headers(("location" = String))),
        (status = 400, description = "No, an unknown, a used or an expired state; or no code", content_type = "text/html", body = String),
        (status = 403, description = "Not a member of the organization (Telegram)", content_type = "text/html", body = String),
        (status = 500, description = "The login could not be recorded", content_type = "text/html", body = String),
        (status = 502, description = "ItsYou.online failed (Telegram)", content_type = "text/html", body = String),
        (status = 503, description = "Login is restarting", content_type = "text/html", body = String),
        super::schemas::RateFailures))]
pub(crate) async fn callback(query: HashMap<String, String>, shared: Shared) -> Response {
    let Some(state) = query.get("state").filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The link has no state.",
        );
    };
    let Some(cache) = ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "Login is restarting; reload this page in a moment.",
        );
    };
    let taken = call_t!(
        cache,
        |reply| OAuthCacheMsg::TakeAnyState {
            state: state.clone(),
            reply
        },
        10_000
    );
    let Ok(Ok(Some((purpose, data)))) = taken else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login link expired",
            "This login link is unknown, already used or expired. Start the login again (for Telegram: send /start to the bot).",
        );
    };
    match purpose.as_str() {
        "telegram" => telegram(query, data, shared, &cache).await,
        super::oauth_proxy::PURPOSE => super::oauth_proxy::callback(query, data, shared).await,
        _ => page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "Unknown login kind.",
        ),
    }
}

async fn telegram(
    query: HashMap<String, String>,
    data: Value,
    shared: Shared,
    cache: &ActorRef<OAuthCacheMsg>,
) -> Response {
    let (Some(chat_id), Some(user_id)) = (data["chat_id"].as_i64(), data["user_id"].as_i64())
    else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The login state is damaged.",
        );
    };
    if let Some(error) = query.get("error") {
        notify(&shared, chat_id, LoginOutcome::Cancelled);
        return page(
            StatusCode::BAD_REQUEST,
            "Login cancelled",
            &format!("ItsYou.online said: {error}"),
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The link has no code.",
        );
    };
    let oauth = &shared.config.oauth;
    match exchange(oauth, code).await {
        Ok(Login::Member {
            username,
            expires_at,
        }) => {
            let username = if username.is_empty() {
                data["username"].as_str().unwrap_or_default().to_string()
            } else {
                username
            };
            let user = AuthorizedUser {
                user_id,
                chat_id,
                username: username.clone(),
                current_repo: None,
                token_expires_at: expires_at,
            };
            let stored = call_t!(
                cache,
                |reply| OAuthCacheMsg::Authorize { user, reply },
                10_000
            );
            if !matches!(stored, Ok(Ok(()))) {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Login failed",
                    "Could not record the login; try /start again.",
                );
            }
            info!(user_id, "telegram user authorized");
            notify(&shared, chat_id, LoginOutcome::Authorized { username });
            page(
                StatusCode::OK,
                "Logged in",
                "You have been authorized. Go back to Telegram.",
            )
        }
        Ok(Login::NotMember) => {
            info!(user_id, "telegram login refused: not a member");
            let organization = oauth.organization.clone();
            notify(&shared, chat_id, LoginOutcome::NotMember { organization });
            page(
                StatusCode::FORBIDDEN,
                "Not a member",
                &format!(
                    "You are not a member of the organization {}.",
                    oauth.organization
                ),
            )
        }
        Err(why) => {
            warn!(user_id, "telegram login failed: {why}");
            notify(&shared, chat_id, LoginOutcome::Failed);
            page(StatusCode::BAD_GATEWAY, "Login failed", &why)
        }
    }
}
