//! The JWT guard of `/ays/*`: takes the token from `Authorization: bearer …` (any case) or the
//! `jwt` cookie and asks the `JwtAuth` actor. Refusals become 401 with the actor's message.

use ractor::{ActorRef, call_t};
use warp::{Filter, Rejection};

use crate::actors::jwt_auth::{JwtAuthMsg, now_secs};
use crate::actors::{Shared, names};
use crate::auth::{AuthError, token_from_parts};

/// A refused request: 401 with the message of the [`AuthError`].
#[derive(Debug)]
pub struct Unauthorized(pub AuthError);

impl warp::reject::Reject for Unauthorized {}

/// The verifier could not be asked (restarting): 503, the client may retry.
#[derive(Debug)]
pub struct AuthUnavailable;

impl warp::reject::Reject for AuthUnavailable {}

/// Passes requests with an accepted token (every request when `[mode].prod = false`).
pub fn authenticated(shared: Shared) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let prod = shared.config.mode.prod;
    let tokens = shared.tokens.clone();
    warp::header::optional::<String>("authorization")
        .and(warp::cookie::optional::<String>("jwt"))
        .and(warp::addr::remote())
        .and(warp::path::full())
        .and_then(
            move |header: Option<String>,
                  cookie: Option<String>,
                  peer: Option<std::net::SocketAddr>,
                  path: warp::path::FullPath| {
                let tokens = tokens.clone();
                async move {
                    if !prod {
                        return Ok(());
                    }
                    // Every refusal leaves a WARN line with its reason and where it came from; the
                    // token itself is never logged.
                    let refuse = |err: AuthError| {
                        tracing::warn!(
                            target: "cockpit::http",
                            reason = %err,
                            route = %super::openapi::template(path.as_str()),
                            peer = %peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
                            "authentication failed"
                        );
                        warp::reject::custom(Unauthorized(err))
                    };
                    let token =
                        token_from_parts(header.as_deref(), cookie.as_deref()).map_err(refuse)?;
                    // A token the actor already accepted, still before its `exp`: no message needed.
                    if tokens.fresh(token, now_secs()).is_some() {
                        return Ok(());
                    }
                    let token = token.to_string();
                    let actor = ActorRef::<JwtAuthMsg>::where_is(names::JWT_AUTH)
                        .ok_or_else(|| warp::reject::custom(AuthUnavailable))?;
                    match call_t!(actor, |reply| JwtAuthMsg::Verify { token, reply }, 10_000) {
                        Ok(Ok(_who)) => Ok(()),
                        Ok(Err(err)) => Err(refuse(err)),
                        Err(_) => Err(warp::reject::custom(AuthUnavailable)),
                    }
                }
            },
        )
        .untuple_one()
}
