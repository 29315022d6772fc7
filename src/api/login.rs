//! `GET /oauth/callback`: where the login provider (ItsYou.online or `[login].provider`) sends
//! the browser back after a Telegram user logged in (and, with the central OAuth server, where
//! providers send it back: the state decides).
//!
//! The state is taken out of the OAuth cache (single use, expiring); `oauth::login::complete`
//! exchanges the code and finds who logged in and their groups; a member gets a one-time code
//! and a `https://t.me/<bot>?start=<code>` link: only that Telegram user, sending it in the chat
//! that started the login, is authorized (the chat session checks). Browser-facing answers are
//! small HTML pages.

use std::collections::HashMap;

use ractor::{ActorRef, call_t};
use serde_json::Value;
use tracing::{info, warn};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::with;
use crate::actors::notice::{LoginOutcome, Notice};
use crate::actors::oauth_cache::OAuthCacheMsg;
use crate::actors::{Shared, names};
use crate::oauth::login::{self, ITSYOUONLINE};
use crate::oauth::provider::LoginSecrets;

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_html(status, title, &escape(body))
}

/// A page whose body is HTML already (escaped by the caller).
fn page_html(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1><p>{body}</p></body></html>",
        t = escape(title),
    );
    let mut reply = warp::reply::with_status(warp::reply::html(html), status).into_response();
    // The page may carry a one-time code: not for caches or other sites.
    reply.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    reply.headers_mut().insert(
        warp::http::header::REFERRER_POLICY,
        warp::http::HeaderValue::from_static("no-referrer"),
    );
    reply
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
        ("iss" = Option<String>, Query, description = "The issuer that answers (RFC 9207); for an OpenID Connect login it must be the provider's issuer"),
    ),
    responses(
        (status = 200, description = "Logged in (Telegram): the page links `https://t.me/<bot>?start=<one-time code>`", content_type = "text/html", body = String),
        (status = 302, description = "Back to the app with `jwt` and `state`, or `error` and `state`", headers(("location" = String))),
        (status = 400, description = "No, an unknown, a used or an expired state; no code; or another issuer's answer", content_type = "text/html", body = String),
        (status = 403, description = "Not a member of the organization (Telegram)", content_type = "text/html", body = String),
        (status = 500, description = "The login could not be recorded", content_type = "text/html", body = String),
        (status = 502, description = "The login provider failed (Telegram)", content_type = "text/html", body = String),
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
        login::PURPOSE => telegram(query, data, shared, &cache).await,
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
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return page(
            StatusCode::BAD_REQUEST,
            "Login cancelled",
            &format!("The login provider said: {error}"),
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The link has no code.",
        );
    };
    let config = &shared.config;
    // The provider the login started with (a state from before providers existed: ItsYou.online).
    let name = data["provider"].as_str().unwrap_or(ITSYOUONLINE);
    let Some(provider) = login::by_name(config, name) else {
        notify(&shared, chat_id, LoginOutcome::Failed);
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The login provider is no longer configured; send /start to the bot again.",
        );
    };
    if login::other_issuer(provider, query.get("iss").map(String::as_str)) {
        warn!(
            user_id,
            provider = name,
            "telegram login refused: another issuer's answer"
        );
        notify(&shared, chat_id, LoginOutcome::Failed);
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The answer names another issuer than the login provider's (iss); send /start to the bot again.",
        );
    }
    let field = |key: &str| data[key].as_str().unwrap_or_default().to_string();
    let secrets = LoginSecrets {
        verifier: field("verifier"),
        nonce: field("nonce"),
    };
    let done = match login::complete(config, provider, code, &secrets).await {
        Ok(done) => done,
        Err(why) => {
            warn!(user_id, provider = name, "telegram login failed: {why}");
            notify(&shared, chat_id, LoginOutcome::Failed);
            return page(StatusCode::BAD_GATEWAY, "Login failed", &why.to_string());
        }
    };
    if !login::allowed(config, &done.identity.groups) {
        info!(
            user_id,
            provider = name,
            "telegram login refused: not a member"
        );
        let organization = login::allowed_in_words(config);
        notify(
            &shared,
            chat_id,
            LoginOutcome::NotMember {
                organization: organization.clone(),
            },
        );
        return page(
            StatusCode::FORBIDDEN,
            "Not a member",
            &format!("You are not a member of the organization {organization}."),
        );
    }
    // The person who logged in gets the one-time code; the chat that sent /start does not.
    let created = call_t!(
        cache,
        |reply| OAuthCacheMsg::NewState {
            purpose: login::CONFIRM.into(),
            data: login::confirm_data(chat_id, user_id, &done),
            ttl: Some(login::CONFIRM_TTL),
            reply
        },
        10_000
    );
    let Ok(Ok(code)) = created else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "Could not record the login; try /start again.",
        );
    };
    info!(
        user_id,
        provider = name,
        "telegram login completed, waiting for its code"
    );
    notify(&shared, chat_id, LoginOutcome::Completed);
    let command = format!("/start {code}");
    let bot = shared
        .store
        .setting(login::BOT_USERNAME_SETTING)
        .ok()
        .flatten()
        .filter(|b| b.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let link = match bot {
        Some(bot) => {
            let url = format!("https://t.me/{bot}?start={code}");
            format!(
                "<a id=\"finish\" href=\"{u}\">{u}</a><br>or send <code>{c}</code> to the bot.",
                u = escape(&url),
                c = escape(&command)
            )
        }
        None => format!("Send <code>{}</code> to the bot.", escape(&command)),
    };
    page_html(
        StatusCode::OK,
        "Logged in",
        &format!(
            "You logged in as {}. To finish, open this link in Telegram with the account that \
             sent /start (it works once, within {} minutes):<br>{link}",
            escape(&done.identity.username),
            login::CONFIRM_TTL.as_secs() / 60
        ),
    )
}
