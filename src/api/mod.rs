//! The HTTP surface (warp): health, metrics, the OpenAPI document, and the routes of later
//! resources. Only this module (and the OAuth client middleware) knows warp.
//!
//! Every error leaves as `{"error": "..."}` with a real status code; handlers reach actors through
//! their registered names and never hold an actor reference across a restart.

pub mod access;
pub mod auth;
pub mod ays;
pub mod console;
pub mod events;
pub mod http;
pub mod login;
pub mod oauth_proxy;
pub mod openapi;
pub mod paths;
pub mod rate;
pub mod reply;
pub mod runs;
pub mod schemas;
pub mod server;
pub mod standby;
pub mod telegram;

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Json, Response, WithStatus};
use warp::{Filter, Rejection, Reply};

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
    let verifier = shared.verifier.clone();
    let health = warp::path!("health")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(health);
    let ready = warp::path!("ready")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(ready);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with(shared.clone()))
        .map(metrics);
    let crash = warp::path!("debug" / "crash" / String)
        .and(warp::post())
        .and(with(shared.clone()))
        .map(crash);

    // The live-log feeds: one per followed run, whichever route (REST or console) follows it.
    let feeds = std::sync::Arc::new(runs::Feeds::default());
    let mut all = vec![
        health.map(Reply::into_response).boxed(),
        ready.map(Reply::into_response).boxed(),
        ays::routes(shared.clone(), feeds.clone()),
        access::routes(shared.clone()),
        login::routes(shared.clone()),
        oauth_proxy::routes(shared.clone()),
        console::routes(shared.clone(), feeds),
        metrics.map(Reply::into_response).boxed(),
        openapi::routes(),
        crash.map(Reply::into_response).boxed(),
    ];
    all.extend(events::routes(shared.clone()));
    all.push(telegram::routes(shared.clone()));
    reply::one_of(all)
        .recover(recover)
        .with(warp::log::custom(move |info| {
            telemetry.request(
                info.method().as_str(),
                info.status().as_u16(),
                info.elapsed(),
            );
            log_request(&info, verifier.as_deref());
        }))
}

/// One INFO line per request: method, route template (never the raw path, which may hold
/// anything), status, duration, the identity of an accepted token, and the peer.
fn log_request(info: &warp::log::Info<'_>, verifier: Option<&crate::auth::pool::Verifier>) {
    // Under load with logging at `warn`, a request costs no lookup and no formatting here.
    if !tracing::enabled!(target: "cockpit::http", tracing::Level::INFO) {
        return;
    }
    let method = crate::telemetry::Method::of(info.method().as_str());
    let route = paths::template(info.path());
    let headers = info.request_headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cookie = header("cookie").and_then(auth::jwt_cookie);
    let identity = crate::auth::token_from_parts(header("authorization"), cookie)
        .ok()
        .and_then(|token| {
            verifier?
                .cache()
                .fresh(token, crate::clock::since_epoch().as_secs())
        })
        .map(|verified| verified.user);
    // The peer is a field of the `http` span the connection loop opens around each request.
    tracing::info!(
        target: "cockpit::http",
        method = %method.as_str(),
        %route,
        status = info.status().as_u16(),
        duration_ms = %format_args!("{:.3}", info.elapsed().as_secs_f64() * 1000.0),
        user = %identity.as_deref().unwrap_or("-"),
        "request"
    );
}

/// Hands a clone of `value` to each request.
pub(crate) fn with<T: Clone + Send + Sync + 'static>(
    value: T,
) -> impl Filter<Extract = (T,), Error = Infallible> + Clone {
    warp::any().map(move || value.clone())
}

/// `GET /health`: each component `up`, `degraded` (with its last error and since when) or
/// `down`, and on PostgreSQL whether the database answers; 200 unless a component is down or
/// the database does not answer, 503 then.
#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "Every component is up or degraded", body = schemas::Health),
        (status = 503, description = "A component is down", body = schemas::Health)))]
pub(crate) fn health(shared: Shared) -> WithStatus<Json> {
    use crate::telemetry::ActorStatus;
    let (mut status, mut code) = match shared.telemetry.overall() {
        ActorStatus::Up => ("ok", StatusCode::OK),
        ActorStatus::Degraded => ("degraded", StatusCode::OK),
        ActorStatus::Down => ("down", StatusCode::SERVICE_UNAVAILABLE),
    };
    let mut body = serde_json::json!({"actors": shared.telemetry.actors()});
    // A PostgreSQL store is another machine that can be away: a replica that cannot reach it
    // cannot serve. (A SQLite file is this process's own.)
    if shared.store.shared() {
        let database = match shared.store.ping() {
            Ok(()) => "up".to_string(),
            Err(err) => {
                (status, code) = ("down", StatusCode::SERVICE_UNAVAILABLE);
                err.to_string()
            }
        };
        body["database"] = database.into();
        body["role"] = "active".into();
    }
    body["status"] = status.into();
    warp::reply::with_status(warp::reply::json(&body), code)
}

/// `GET /ready`: can this process serve? The database answers a query and every enabled
/// listener is bound. 200, or 503 with what is not ready. Outside services (the Bot API) do
/// not count: they show in `/health`.
#[utoipa::path(get, path = "/ready", tag = "server",
    responses((status = 200, description = "The database answers and every enabled listener is bound", body = Object),
        (status = 503, description = "Something is not ready: what", body = Object)))]
pub(crate) fn ready(shared: Shared) -> WithStatus<Json> {
    let mut checks = serde_json::Map::new();
    let database = match shared.store.ping() {
        Ok(()) => "up".to_string(),
        Err(err) => err.to_string(),
    };
    checks.insert("database".into(), database.into());
    let addresses = shared.addresses();
    let config = &shared.config;
    let actors = shared.telemetry.actors();
    let listening = |name: &str, bound: bool| {
        let up = actors
            .get(name)
            .is_some_and(|a| a.status != crate::telemetry::ActorStatus::Down);
        if bound && up { "up" } else { "not listening" }
    };
    checks.insert(
        "api".into(),
        listening(names::API_SERVER, addresses.api.is_some()).into(),
    );
    if config.mail.active {
        checks.insert(
            "mail".into(),
            listening(names::MAIL_RECEIVER, addresses.mail.is_some()).into(),
        );
    }
    let ready = checks.values().all(|v| v == "up");
    let body = serde_json::json!({"ready": ready, "checks": checks});
    let code = if ready {
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
    let mut text = shared.telemetry.render();
    if let Some(replica) = &shared.replica {
        text.push_str(&standby::replica_metric(replica, "active"));
    }
    warp::reply::with_header(
        text,
        "content-type",
        crate::telemetry::Telemetry::CONTENT_TYPE,
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
    } else if let Some(auth::Forbidden(why)) = rejection.find() {
        error(StatusCode::FORBIDDEN, why.clone())
    } else if let Some(held) = rejection.find::<auth::Held>() {
        // The shape of `schemas::Held`.
        let body = serde_json::json!({
            "approval": held.id,
            "action": held.action.as_str(),
            "target": held.target,
            "error": format!(
                "{} needs a second admin: POST /auth/approvals/{} (or /approve {} in Telegram)",
                held.action.as_str(), held.id, held.id
            ),
        });
        return Ok(
            warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED)
                .into_response(),
        );
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
