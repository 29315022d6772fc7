//! Events from outside: `POST /ays/event/{channel}` (an operator's token) and
//! `POST /webhooks/github` (GitHub's signature is the credential). Both record the event in the
//! store first (the same `events` table and path as an accepted mail), answer `2xx` only once it
//! is committed, then hand it to the engine through the AYS client, which runs every subscribed
//! action with the payload as args and marks it processed once every repository recorded its
//! runs. A crash after the answer loses nothing: `Ays` delivers pending events when it starts.
//!
//! GitHub deliveries are verified before anything else is read: `X-Hub-Signature-256` must be
//! `sha256=` and the HMAC-SHA256 of the raw body under `[webhooks] github_secret`, compared in
//! constant time (`hmac`'s `verify_slice`). A missing, malformed or wrong signature, or no
//! secret configured, is `401` and nothing is recorded. Each `X-GitHub-Delivery` id is taken
//! once, in the transaction that records the event: a replay of an id already taken is answered
//! `200` with `{"duplicate": true}` and runs nothing. Not `409`: GitHub's "Redeliver" button and
//! a retry after a lost answer send the same id, and a success tells GitHub the delivery is done
//! (it is: it was recorded the first time), where an error would mark it failed in GitHub's log
//! for an event that did run. Ids are remembered 30 days (at most 100 000 of them).

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Guarded, audited, guarded};
use super::error;
use super::schemas::{AuthFailures, Error};
use crate::actors::Shared;
use crate::auth::audit::Outcome;
use crate::client::{Audit, AysClient};
use crate::clock;
use crate::telemetry::Count;

/// How long a GitHub delivery id is remembered (replays within it are refused).
const KEEP_DELIVERIES_MS: i64 = 30 * 86_400 * 1000;

/// How many GitHub delivery ids are remembered at most.
const MAX_DELIVERIES: u32 = 100_000;

/// An event as recorded.
#[derive(Serialize, ToSchema)]
pub(crate) struct Recorded {
    /// Its id (in arrival order).
    id: i64,
    /// The channel it was raised on.
    channel: String,
}

/// `POST /webhooks/github`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct GithubRecorded {
    /// The event's id, when it was recorded now.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// The channel (`github.<X-GitHub-Event>`).
    channel: String,
    /// True when this delivery id was taken before: nothing was recorded or run.
    duplicate: bool,
}

/// The two routes.
pub fn routes(shared: Shared) -> Vec<BoxedFilter<(Response,)>> {
    let max = shared.config.webhooks.max_body_bytes;
    let store = shared.store.clone();
    let event = warp::path!("ays" / "event" / String)
        .and(warp::post())
        .and(guarded(shared.clone()))
        .and(bounded_body(max))
        .and(super::with(shared.clone()))
        .then(raise_event)
        .map(move |(guarded, response): (Guarded, Response)| audited(&store, &guarded, response))
        .boxed();
    let header = |name: &'static str| warp::header::optional::<String>(name);
    let github = warp::path!("webhooks" / "github")
        .and(warp::post())
        .and(header("x-hub-signature-256"))
        .and(header("x-github-event"))
        .and(header("x-github-delivery"))
        .and(bounded_body(max))
        .and(super::with(shared))
        .then(github_webhook)
        .boxed();
    vec![event, github]
}

/// The raw body, at most `max` bytes (by `Content-Length`, and as it streams in): `413` beyond.
pub(crate) fn bounded_body(
    max: u64,
) -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |length: Option<u64>| async move {
            match length {
                Some(n) if n > max => Err(warp::reject::custom(super::TooLarge)),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |body| read_bounded(body, max))
}

/// Reads a streamed body of at most `max` bytes.
pub(crate) async fn read_bounded<S, B>(body: S, max: u64) -> Result<Vec<u8>, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut read = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))?;
        if (read.len() + chunk.remaining()) as u64 > max {
            return Err(warp::reject::custom(super::TooLarge));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            read.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(read)
}

/// A channel name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
fn valid_channel(channel: &str) -> bool {
    (1..=64).contains(&channel.len())
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Records an event (its own transaction, synced, with the audit row of the request that
/// raised it) and hands it to the engine; the answer only once it is committed.
async fn record(
    shared: &Shared,
    channel: String,
    payload: Value,
    audit: Option<Audit>,
) -> Response {
    let store = shared.store.clone();
    let (name, body) = (channel.clone(), payload.clone());
    let rows: Vec<_> = audit.iter().map(|a| a.row(&Outcome::Ok)).collect();
    let recorded = tokio::task::spawn_blocking(move || {
        store.insert_events_audited(&[(name.as_str(), &body)], &rows, clock::now_ms())
    })
    .await;
    match recorded {
        Ok(Ok(ids)) => match ids.first() {
            Some(&id) => {
                // Not running now is fine: the event waits in the store for the next start.
                AysClient.event(Some(id), &channel, payload);
                warp::reply::with_status(
                    warp::reply::json(&Recorded { id, channel }),
                    StatusCode::ACCEPTED,
                )
                .into_response()
            }
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the event was not recorded",
            )
            .into_response(),
        },
        Ok(Err(err)) => {
            tracing::error!(%err, "cannot record an event");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be recorded; retry",
            )
            .into_response()
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the event was not recorded",
        )
        .into_response(),
    }
}

/// Raise an event: every action subscribed to `channel` (blueprint `eventfilters:`, template
/// `events:`) runs once with the JSON body as its args. `202` means the event is recorded
/// durably; its runs follow.
#[utoipa::path(post, path = "/ays/event/{channel}", tag = "events",
    params(("channel" = String, Path, description = "The channel (1-64 of A-Z a-z 0-9 _ . -)")),
    request_body(content = Object, description = "The payload: a JSON object, at most `[webhooks] max_body_bytes`", content_type = "application/json"),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 202, description = "Recorded; the subscribed actions will run", body = Recorded),
        (status = 400, description = "Not a valid channel name, or the body is not a JSON object", body = Error),
        (status = 413, description = "The body is over `[webhooks] max_body_bytes`", body = Error),
        AuthFailures))]
pub(crate) async fn raise_event(
    channel: String,
    guarded: Guarded,
    body: Vec<u8>,
    shared: Shared,
) -> (Guarded, Response) {
    // The role (operator) was checked by `guarded` against `paths::ROUTES`.
    let audit = guarded.audit();
    (guarded, event_reply(channel, body, shared, audit).await)
}

/// What `POST /ays/event/{channel}` answers.
async fn event_reply(
    channel: String,
    body: Vec<u8>,
    shared: Shared,
    audit: Option<Audit>,
) -> Response {
    if !valid_channel(&channel) {
        return error(
            StatusCode::BAD_REQUEST,
            "a channel is 1 to 64 of A-Z a-z 0-9 _ . -",
        )
        .into_response();
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload @ Value::Object(_)) => payload,
        Ok(_) => {
            return error(StatusCode::BAD_REQUEST, "the body must be a JSON object")
                .into_response();
        }
        Err(err) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}"))
                .into_response();
        }
    };
    record(&shared, channel, payload, audit).await
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`; the compare
/// is constant time.
fn signed(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex_mac) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(claimed) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

/// A GitHub event or delivery header value: 1 to 100 of `A-Z a-z 0-9 _ -`.
fn valid_github_name(value: &str) -> bool {
    (1..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// GitHub's webhook: the delivery, verified by its signature, raises an event on channel
/// `github.<X-GitHub-Event>` (e.g. `github.push`) with payload `{event, delivery, payload}`.
/// No JWT: `X-Hub-Signature-256` (HMAC-SHA256 of the body under `[webhooks] github_secret`) is the
/// credential. A delivery id seen before is answered `200` with `duplicate: true` and runs nothing.
#[utoipa::path(post, path = "/webhooks/github", tag = "events",
    params(("X-Hub-Signature-256" = Option<String>, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body"),
        ("X-GitHub-Event" = Option<String>, Header, description = "The event name (`push`, `ping`, ...)"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "The delivery's unique id")),
    request_body(content = Object, description = "GitHub's JSON payload", content_type = "application/json"),
    responses((status = 202, description = "Recorded; the subscribed actions will run", body = Recorded),
        (status = 200, description = "This delivery id was taken before: nothing recorded or run", body = GithubRecorded),
        (status = 400, description = "Signed, but the event or delivery header is missing or malformed, or the body is not JSON", body = Error),
        (status = 401, description = "No signature, a wrong one, or no `[webhooks] github_secret` configured: nothing recorded", body = Error),
        (status = 413, description = "The body is over `[webhooks] max_body_bytes`", body = Error),
        (status = 503, description = "The event could not be recorded; GitHub retries", body = Error)))]
pub(crate) async fn github_webhook(
    signature: Option<String>,
    event: Option<String>,
    delivery: Option<String>,
    body: Vec<u8>,
    shared: Shared,
) -> Response {
    let verified = match (&shared.config.webhooks.github_secret, signature.as_deref()) {
        (Some(secret), Some(signature)) => signed(secret.expose(), signature, &body),
        _ => false,
    };
    if !verified {
        shared.telemetry.count(Count::WebhooksRefusedSignature, 1);
        tracing::warn!(target: "cockpit::http", "GitHub webhook refused: missing or wrong signature");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Hub-Signature-256 (or no [webhooks] github_secret configured)",
        )
        .into_response();
    }
    let (Some(event), Some(delivery)) = (event, delivery) else {
        return error(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Event and X-GitHub-Delivery are required",
        )
        .into_response();
    };
    if !valid_github_name(&event) || !valid_github_name(&delivery) {
        return error(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Event and X-GitHub-Delivery are 1 to 100 of A-Z a-z 0-9 _ -",
        )
        .into_response();
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(err) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}"))
                .into_response();
        }
    };
    let channel = format!("github.{event}");
    let payload = serde_json::json!({"event": event, "delivery": delivery, "payload": payload});
    let store = shared.store.clone();
    let (name, body) = (channel.clone(), payload.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        store.insert_event_once(
            &delivery,
            &name,
            &body,
            clock::now_ms(),
            KEEP_DELIVERIES_MS,
            MAX_DELIVERIES,
        )
    })
    .await;
    match recorded {
        Ok(Ok(Some(id))) => {
            AysClient.event(Some(id), &channel, payload);
            warp::reply::with_status(
                warp::reply::json(&Recorded { id, channel }),
                StatusCode::ACCEPTED,
            )
            .into_response()
        }
        Ok(Ok(None)) => {
            shared.telemetry.count(Count::WebhooksReplayed, 1);
            tracing::warn!(target: "cockpit::http", %channel, "GitHub delivery seen before: nothing run");
            warp::reply::json(&GithubRecorded {
                id: None,
                channel,
                duplicate: true,
            })
            .into_response()
        }
        Ok(Err(err)) => {
            tracing::error!(%err, "cannot record a GitHub event");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be recorded; retry",
            )
            .into_response()
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the event was not recorded",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_as_github_documents_them() {
        // GitHub's documented example.
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = "It's a Secret to Everybody";
        assert!(signed(secret, good, b"Hello, World!"));
        assert!(!signed(secret, good, b"Hello, World?"));
        assert!(!signed("another secret", good, b"Hello, World!"));
        assert!(!signed(
            secret,
            &good.replace("sha256=", "sha1="),
            b"Hello, World!"
        ));
        assert!(!signed(secret, "sha256=zz", b"Hello, World!"));
        assert!(!signed(secret, "sha256=", b"Hello, World!"));
        assert!(!signed(secret, &good[..20], b"Hello, World!"));
    }

    #[test]
    fn channel_and_header_names_are_bounded() {
        assert!(valid_channel("github.push"));
        assert!(valid_channel("deploy-done_2"));
        assert!(!valid_channel(""));
        assert!(!valid_channel(&"x".repeat(65)));
        assert!(!valid_channel("a/b"));
        assert!(!valid_channel("é"));
        assert!(valid_github_name("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_github_name("a b"));
    }
}
