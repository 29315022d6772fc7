//! `POST /telegram/webhook`: Telegram's updates in webhook mode (`[bot] webhook_url`). The
//! secret Telegram sends with each (`X-Telegram-Bot-Api-Secret-Token`, `[bot] webhook_secret`)
//! is checked in constant time before the body is read; the update is handed to the bot (through
//! [`Shared::telegram_hook`]: this door does not know the bot's) and answered `200` once its chat
//! session has it, as the long poll confirms an update. A `503` makes Telegram deliver it again.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error;
use super::schemas::Error;
use crate::actors::{HookError, Shared};

/// The largest update body taken (Telegram's are a few kilobytes).
const MAX_UPDATE_BYTES: u64 = 1024 * 1024;

/// The route.
pub fn routes(shared: Shared) -> BoxedFilter<(Response,)> {
    warp::path!("telegram" / "webhook")
        .and(warp::post())
        .and(warp::header::optional::<String>(
            "x-telegram-bot-api-secret-token",
        ))
        .and(super::with(shared))
        .and_then(|secret: Option<String>, shared: Shared| async move {
            match check(&shared, secret.as_deref()) {
                Ok(()) => Ok(shared),
                Err((status, why)) => Err(warp::reject::custom(Refused(status, why))),
            }
        })
        .and(super::events::bounded_body(MAX_UPDATE_BYTES))
        .then(telegram_webhook)
        .recover(|rejection: warp::Rejection| async move {
            match rejection.find::<Refused>() {
                Some(Refused(status, why)) => Ok(error(*status, *why).into_response()),
                None => Err(rejection),
            }
        })
        .unify()
        .boxed()
}

/// A refusal decided before the body is read.
#[derive(Debug)]
struct Refused(StatusCode, &'static str);

impl warp::reject::Reject for Refused {}

/// Whether webhook mode is on and `secret` is its secret (a request without one is refused
/// `401` whether the mode is on or not).
fn check(shared: &Shared, secret: Option<&str>) -> Result<(), (StatusCode, &'static str)> {
    const REFUSED: (StatusCode, &str) = (
        StatusCode::UNAUTHORIZED,
        "missing or wrong X-Telegram-Bot-Api-Secret-Token",
    );
    let Some(secret) = secret else {
        return Err(REFUSED);
    };
    let bot = &shared.config.bot;
    let Some(expected) = bot
        .webhook_secret
        .as_ref()
        .filter(|_| bot.webhook_url.is_some())
    else {
        return Err((StatusCode::NOT_FOUND, "not found"));
    };
    if !same(secret.as_bytes(), expected.expose().as_bytes()) {
        return Err(REFUSED);
    }
    Ok(())
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Telegram's webhook: one update, handed to its chat before the answer.
#[utoipa::path(post, path = "/telegram/webhook", tag = "events",
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "`[bot] webhook_secret`, as Telegram sends it")),
    request_body(content = Object, description = "A Telegram `Update`", content_type = "application/json"),
    responses((status = 200, description = "Handed to its chat (or handed over before)", body = Object),
        (status = 400, description = "Not a Telegram update", body = Error),
        (status = 401, description = "Missing or wrong secret token (missing: also when webhook mode is off)", body = Error),
        (status = 404, description = "Webhook mode is off (`[bot] webhook_url` not set)", body = Error),
        (status = 413, description = "The body is over 1 MiB", body = Error),
        (status = 503, description = "The bot is not ready; Telegram delivers the update again", body = Error)))]
pub(crate) async fn telegram_webhook(shared: Shared, body: Vec<u8>) -> Response {
    let sink = shared.telegram_hook.lock().clone();
    let Some(sink) = sink else {
        return super::retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            HookError::Unavailable.to_string(),
        );
    };
    match sink(bytes::Bytes::from(body)).await {
        Ok(()) => warp::reply::json(&serde_json::json!({})).into_response(),
        Err(err @ HookError::Malformed(_)) => {
            error(StatusCode::BAD_REQUEST, err.to_string()).into_response()
        }
        Err(err @ HookError::Unavailable) => {
            super::retry_later(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_secret_compare_is_exact() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
        assert!(!super::same(b"", b"a"));
    }
}
