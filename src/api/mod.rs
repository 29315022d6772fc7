//! The HTTP surface (warp): health, metrics, the OpenAPI document, and the routes of later
//! resources. Only this module (and the OAuth client middleware) knows warp.
//!
//! Every error leaves as `{"error": "..."}` with a real status code; handlers reach actors through
//! their registered names and never hold an actor reference across a restart.

pub mod auth;
pub mod ays;
pub mod login;
pub mod oauth_proxy;
pub mod openapi;
pub mod runs;
pub mod server;

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Json, WithStatus};
use warp::{Filter, Rejection, Reply};

use crate::actors::Shared;

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
        .map(|shared: Shared| {
            warp::reply::with_header(
                shared.telemetry.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
        });
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&openapi::document()));
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
        openapi.map(Reply::into_response).boxed(),
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

/// `GET /health`: each actor's state; 200 when all are up, 503 otherwise.
fn health(shared: Shared) -> WithStatus<Json> {
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

/// `POST /debug/crash/{actor}`: makes an actor panic inside its handler so that an operator can
/// watch the supervisor restart it. Answers 404 unless `[debug].fault_injection` is on.
fn crash(actor: String, shared: Shared) -> WithStatus<Json> {
    if !shared.config.debug.fault_injection {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    if !shared.faults.crash(&actor) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no running crashable actor {actor:?}"),
        );
    }
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"crashed": actor})),
        StatusCode::ACCEPTED,
    )
}
/// A request body that is not the JSON the route wants.
#[derive(Debug)]
pub(crate) struct BadJson(pub String);

impl warp::reject::Reject for BadJson {}

/// Turns warp's rejections into JSON errors with fitting status codes.
async fn recover(rejection: Rejection) -> Result<WithStatus<Json>, Infallible> {
    let reply = if let Some(auth::Unauthorized(err)) = rejection.find() {
        error(StatusCode::UNAUTHORIZED, err.to_string())
    } else if rejection.find::<auth::AuthUnavailable>().is_some() {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "authentication is restarting; retry",
        )
    } else if rejection.is_not_found() {
        error(StatusCode::NOT_FOUND, "not found")
    } else if let Some(BadJson(err)) = rejection.find() {
        error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
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
        // problem of the route that matched.
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
    Ok(reply)
}
