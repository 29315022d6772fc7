//! The HTTP surface (warp): health, metrics, the OpenAPI document, and the routes of later
//! resources. Only this module (and the OAuth client middleware) knows warp.
//!
//! Every error leaves as `{"error": "..."}` with a real status code; handlers reach actors through
//! their registered names and never hold an actor reference across a restart.

pub mod auth;
pub mod ays;
pub mod http;
pub mod login;
pub mod oauth_proxy;
pub mod openapi;
pub mod rate;
pub mod schemas;

use std::convert::Infallible;

use ractor::ActorRef;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Json, Response, WithStatus};
use warp::{Filter, Rejection, Reply};

use crate::actors::api_server::ApiServerMsg;
use crate::actors::ays::AysMsg;
use crate::actors::mail_receiver::MailReceiverMsg;
use crate::actors::oauth_cache::OAuthCacheMsg;
use crate::actors::repo::RepoMsg;
use crate::actors::{Shared, names};
use crate::auth::pool::Overload;
use rate::RateLimited;

/// A JSON error reply.
pub fn error(status: StatusCode, message: impl Into<String>) -> WithStatus<Json> {
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    warp::reply::with_status(
        warp::reply::json(&Body {
            error: message.into(),
        }),
        status,
    )
}

/// Every route of the server, with request metrics and JSON errors.
pub fn routes(shared: Shared) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let telemetry = shared.telemetry.clone();
    let health = warp::path!("health")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(health);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(metrics);
    let crash = warp::path!("debug" / "crash" / String)
        .and(warp::post())
        .and(with(shared.clone()))
        .map(crash);

    ays::one_of(vec![
        health.map(Reply::into_response).boxed(),
        ays::routes(shared.clone()),
        login::routes(shared.clone()),
        oauth_proxy::routes(shared.clone()),
        metrics.map(Reply::into_response).boxed(),
        openapi::routes(),
        crash.map(Reply::into_response).boxed(),
    ])
    .recover(recover)
    .with(warp::log::custom(move |info| {
        telemetry.request(
            info.method().as_str(),
            info.status().as_u16(),
            info.elapsed(),
        );
    }))
}

/// Hands a clone of `value` to each request.
pub(crate) fn with<T: Clone + Send + Sync + 'static>(
    value: T,
) -> impl Filter<Extract = (T,), Error = Infallible> + Clone {
    warp::any().map(move || value.clone())
}

/// Each actor's state: 200 when all are up, 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "Every actor is up", body = schemas::Health),
        (status = 503, description = "An actor is restarting or down", body = schemas::Health)))]
pub(crate) fn health(shared: Shared) -> WithStatus<Json> {
    let all_up = shared.telemetry.all_up();
    let status = if all_up { "ok" } else { "degraded" };
    let body = serde_json::json!({
        "status": status,
        "actors": shared.telemetry.actors(),
    });
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code)
}

/// Prometheus metrics: requests, latencies, actor restarts.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(crate) fn metrics(shared: Shared) -> Response {
    warp::reply::with_header(
        shared.telemetry.render(),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

/// Fault injection: makes an actor panic inside its handler so that an operator can watch the
/// supervisor restart it. Answers 404 unless `[debug].fault_injection` is on.
#[utoipa::path(post, path = "/debug/crash/{actor}", tag = "server",
    params(("actor" = String, Path, description = "A registered actor name, or `repo:<name>`")),
    responses((status = 202, description = "The actor was told to crash", body = Object),
        (status = 404, description = "Fault injection is off, or no such actor", body = schemas::Error),
        (status = 503, description = "The actor is not running", body = schemas::Error)))]
pub(crate) fn crash(actor: String, shared: Shared) -> WithStatus<Json> {
    if !shared.config.debug.fault_injection {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let sent = match actor.as_str() {
        names::OAUTH_CACHE => ActorRef::<OAuthCacheMsg>::where_is(actor.clone())
            .map(|a| a.cast(OAuthCacheMsg::Crash).is_ok()),
        names::AYS => {
            ActorRef::<AysMsg>::where_is(actor.clone()).map(|a| a.cast(AysMsg::Crash).is_ok())
        }
        names::API_SERVER => ActorRef::<ApiServerMsg>::where_is(actor.clone())
            .map(|a| a.cast(ApiServerMsg::Crash).is_ok()),
        names::MAIL_RECEIVER => ActorRef::<MailReceiverMsg>::where_is(actor.clone())
            .map(|a| a.cast(MailReceiverMsg::Crash).is_ok()),
        // A repository's actor: `repo:<name>`.
        repo if repo.starts_with("repo:") => {
            ActorRef::<RepoMsg>::where_is(actor.clone()).map(|a| a.cast(RepoMsg::Crash).is_ok())
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no crashable actor {actor:?}"),
            );
        }
    };
    match sent {
        Some(true) => warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"crashed": actor})),
            StatusCode::ACCEPTED,
        ),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{actor} is not running"),
        ),
    }
}

/// A request body that is not the JSON the route wants.
#[derive(Debug)]
pub(crate) struct BadJson(pub String);

impl warp::reject::Reject for BadJson {}

/// A request body over the route's limit (by its `Content-Length`, or as it streams in).
#[derive(Debug)]
pub(crate) struct TooLarge;

impl warp::reject::Reject for TooLarge {}

/// Turns warp's rejections into JSON errors with fitting status codes.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let reply = if let Some(auth::Unauthorized(err)) = rejection.find() {
        error(StatusCode::UNAUTHORIZED, err.to_string())
    } else if let Some(auth::Overloaded(why)) = rejection.find() {
        let status = match why {
            Overload::Peer => StatusCode::TOO_MANY_REQUESTS,
            Overload::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        return Ok(retry_later(status, why.to_string()));
    } else if let Some(auth::CrossSite(why)) = rejection.find() {
        error(StatusCode::FORBIDDEN, *why)
    } else if let Some(limited) = rejection.find::<RateLimited>() {
        return Ok(retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many {} requests from this address; retry later",
                limited.0
            ),
        ));
    } else if rejection.is_not_found() {
        error(StatusCode::NOT_FOUND, "not found")
    } else if let Some(BadJson(err)) = rejection.find() {
        error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}"))
    } else if rejection.find::<TooLarge>().is_some()
        || rejection.find::<warp::reject::PayloadTooLarge>().is_some()
    {
        error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if let Some(err) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}"))
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        error(StatusCode::BAD_REQUEST, "expected a JSON body")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Last of the body checks: warp reports the other routes' methods alongside the real
        // problem of the route that matched. The connection layer adds `Allow`.
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if let Some(err) = rejection.find::<warp::reject::InvalidQuery>() {
        error(StatusCode::BAD_REQUEST, format!("invalid query: {err}"))
    } else if let Some(err) = rejection.find::<warp::reject::InvalidHeader>() {
        error(StatusCode::BAD_REQUEST, err.to_string())
    } else if let Some(err) = rejection.find::<warp::reject::MissingHeader>() {
        error(StatusCode::BAD_REQUEST, err.to_string())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    Ok(reply.into_response())
}

/// A JSON error that tells the client to come back in a second.
fn retry_later(status: StatusCode, message: String) -> Response {
    let mut response = error(status, message).into_response();
    response
        .headers_mut()
        .insert("retry-after", warp::http::HeaderValue::from_static("1"));
    response
}
