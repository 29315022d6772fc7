//! The JWT guard of `/ays/*`: takes the token from `Authorization: bearer …` (any case) or the
//! `jwt` cookie and asks the [`Verifier`](crate::auth::pool::Verifier). Refusals become 401 with
//! the rules' message; an overloaded verifier 429 or 503 with `Retry-After`.
//!
//! A browser sends the cookie with requests other sites make it send (a form POST), so a
//! state-changing request authenticated by the cookie must prove it comes from this site: see
//! [`same_site_proof`]. Requests with a bearer token are not affected (a browser never adds one
//! on its own).

use std::net::IpAddr;
use std::sync::Arc;

use warp::http::Method;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::http::Peer;
use crate::actors::Shared;
use crate::auth::access::{Action, Principal, Role, refusal};
use crate::auth::audit::{self, Audit, Door, Outcome};
use crate::auth::pool::{Overload, VerifyError, now_secs};
use crate::auth::{AuthError, token_from_parts};
use crate::auth::{approvals, tokens};
use crate::store::Store;
use futures::future::BoxFuture;

/// A refused request: 401 with the message of the [`AuthError`].
#[derive(Debug)]
pub struct Unauthorized(pub AuthError);

impl warp::reject::Reject for Unauthorized {}

/// The verifier did not look at the token now: 429 or 503 with `Retry-After`.
#[derive(Debug)]
pub struct Overloaded(pub Overload);

impl warp::reject::Reject for Overloaded {}

/// A cookie-authenticated request that does not prove it comes from this site: 403.
#[derive(Debug)]
pub struct CrossSite(pub &'static str);

impl warp::reject::Reject for CrossSite {}

/// The headers a request's credentials are judged on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The method.
    pub method: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// The `jwt` cookie's value.
    pub cookie: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Sec-Fetch-Site`.
    pub sec_fetch_site: Option<&'a str>,
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
}

/// Why a request's credentials were not even verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No token, or an unusable one (401).
    Token(AuthError),
    /// A cookie-authenticated state change without proof it comes from this site (403).
    CrossSite(&'static str),
}

/// The token of a request, after the cross-site check: the bearer token when there is one,
/// else the `jwt` cookie if the request may use it.
pub fn request_token<'a>(request: &Credentials<'a>) -> Result<&'a str, Rejected> {
    match token_from_parts(request.authorization, None) {
        Ok(bearer) => return Ok(bearer),
        Err(AuthError::NotJwt) => {}
        Err(err) => return Err(Rejected::Token(err)),
    }
    let token = token_from_parts(None, request.cookie).map_err(Rejected::Token)?;
    same_site_proof(request).map_err(Rejected::CrossSite)?;
    Ok(token)
}

/// Whether a request comes from this site: `Sec-Fetch-Site: same-origin`, else an `Origin`
/// naming this `Host` (the REST door's cookie rule and the console's check).
pub(crate) fn same_origin(
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
) -> bool {
    match (sec_fetch_site, origin) {
        (Some(site), _) => site.trim().eq_ignore_ascii_case("same-origin"),
        (None, Some(origin)) => {
            let authority = origin
                .trim()
                .strip_prefix("https://")
                .or_else(|| origin.trim().strip_prefix("http://"));
            matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
        }
        (None, None) => false,
    }
}

/// Whether a request that authenticates with the cookie may do what it asks: reads (`GET`,
/// `HEAD`, `OPTIONS`) always; anything else only with `Sec-Fetch-Site: same-origin`, or an
/// `Origin` naming this `Host`, and no body type but JSON (a cross-site HTML form can send
/// neither).
pub fn same_site_proof(request: &Credentials) -> Result<(), &'static str> {
    if matches!(request.method, "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    if !same_origin(request.sec_fetch_site, request.origin, request.host) {
        return Err(
            "a request that changes state with the jwt cookie must come from this site (Origin or Sec-Fetch-Site); other clients send Authorization: bearer <jwt>",
        );
    }
    let json = request.content_type.is_none_or(|value| {
        let media = value.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/json")
    });
    if !json {
        return Err("a request that changes state with the jwt cookie must send application/json");
    }
    Ok(())
}

/// The value of the `jwt` cookie in a `Cookie` header (`a=1; jwt=…; b=2`).
pub fn jwt_cookie(cookies: &str) -> Option<&str> {
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find_map(|(name, value)| (name == "jwt").then_some(value))
}

/// Who made a request and the role `[access]` gives them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity and its groups.
    pub principal: Principal,
    /// Their role, or `None`: then only routes that need no role are open to them.
    pub role: Option<Role>,
}

/// A request the role table refuses: 403 naming the role needed.
#[derive(Debug)]
pub struct Forbidden(pub String);

impl warp::reject::Reject for Forbidden {}

/// A request `[access].two_person` holds until a second admin approves it: 202 with the
/// approval's id.
#[derive(Debug)]
pub struct Held {
    /// The approval's id, for `POST /auth/approvals/{id}`.
    pub id: String,
    /// The held action.
    pub action: Action,
    /// What it acts on.
    pub target: String,
}

impl warp::reject::Reject for Held {}

/// A request that passed the role table, with what the audit trail will say about it.
#[derive(Debug, Clone)]
pub struct Guarded {
    /// Who.
    pub caller: Caller,
    /// The route's action, when it changes something (reads are not audited when allowed).
    pub action: Option<Action>,
    /// The names in the path (`demo/web.yaml`).
    pub target: String,
}

/// The principal of an accepted ItsYou.online JWT: `itsyouonline:<user>` with the organizations
/// of its `user:memberof:` scopes as groups.
pub fn jwt_principal(verified: &crate::auth::Verified) -> Principal {
    Principal::new(
        format!("{}{}", crate::store::JWT_IDENTITY_PREFIX, verified.user),
        verified.groups.clone(),
    )
}

/// The caller of every request when `[mode].prod = false` and no cockpit token is shown.
fn development_caller() -> Caller {
    Caller {
        principal: Principal::new("dev:anonymous", Vec::new()),
        role: Some(Role::Admin),
    }
}

/// Passes requests with an accepted token (every request when `[mode].prod = false`) and names
/// the caller: a cockpit API token (`ck_…`, looked up by its hash on every request, so a revoked
/// one fails at once), else a JWT through the verifier.
pub fn authenticated(
    shared: Shared,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    let verifier = shared.verifier.clone();
    let revocations = shared.revocations.clone();
    let store = shared.store.clone();
    let access = Arc::new(shared.config.access_rules());
    // One copy of the header map (its values are shared, not copied) rather than a String per
    // header: this runs on every `/ays` request.
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>())
        .and(warp::path::full())
        .and_then(
            move |method: Method,
                  headers: warp::http::HeaderMap,
                  peer: Option<Peer>,
                  path: warp::path::FullPath| {
                let verifier = verifier.clone();
                let revocations = revocations.clone();
                let store = store.clone();
                let access = access.clone();
                async move {
                    // Every refusal leaves a WARN line with its reason and where it came from;
                    // the token itself is never logged.
                    let refused = |reason: &dyn std::fmt::Display| {
                        tracing::warn!(
                            target: "cockpit::http",
                            reason = %reason,
                            route = %super::paths::template(path.as_str()),
                            peer = %peer.map_or_else(|| "-".to_string(), |Peer(p)| p.to_string()),
                            "authentication failed"
                        );
                    };
                    // Names as constants: a lookup by `&str` parses the name each time.
                    use warp::http::header::{
                        AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderName, ORIGIN,
                    };
                    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
                    let header =
                        |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
                    let request = Credentials {
                        method: method.as_str(),
                        authorization: header(&AUTHORIZATION),
                        cookie: header(&COOKIE).and_then(jwt_cookie),
                        origin: header(&ORIGIN),
                        sec_fetch_site: header(&SEC_FETCH_SITE),
                        host: header(&HOST),
                        content_type: header(&CONTENT_TYPE),
                    };
                    let token = match request_token(&request) {
                        Ok(token) => token,
                        Err(_) if verifier.is_none() => return Ok(development_caller()),
                        Err(Rejected::Token(err)) => {
                            refused(&err);
                            return Err(warp::reject::custom(Unauthorized(err)));
                        }
                        Err(Rejected::CrossSite(why)) => {
                            refused(&why);
                            return Err(warp::reject::custom(CrossSite(why)));
                        }
                    };
                    if token.starts_with(tokens::PREFIX) {
                        return match tokens::check(&store, token, crate::clock::now_ms()) {
                            Ok(Some(holder)) => Ok(Caller {
                                principal: Principal::new(holder.identity, Vec::new()),
                                role: Some(holder.role),
                            }),
                            Ok(None) => {
                                refused(&"unknown, revoked or expired API token");
                                Err(warp::reject::custom(Unauthorized(AuthError::Invalid)))
                            }
                            Err(err) => {
                                tracing::error!(%err, "cannot check an API token");
                                Err(warp::reject::custom(Overloaded(Overload::Busy)))
                            }
                        };
                    }
                    let Some(verifier) = verifier else {
                        return Ok(development_caller());
                    };
                    let peer: Option<IpAddr> = peer.map(|Peer(addr)| addr.ip());
                    match verifier.verify(token, peer, now_secs()).await {
                        Ok(verified) => {
                            let principal = jwt_principal(&verified);
                            // After the cache too: a token accepted before its holder was
                            // revoked stays in the verifier's cache.
                            if revocations
                                .as_ref()
                                .is_some_and(|r| r.refuses(&principal.identity, verified.iat))
                            {
                                refused(&"the JWT's holder was revoked after it was issued");
                                return Err(warp::reject::custom(Unauthorized(AuthError::Revoked)));
                            }
                            let role = access.role(&principal);
                            Ok(Caller { principal, role })
                        }
                        Err(VerifyError::Refused(err)) => {
                            refused(&err);
                            Err(warp::reject::custom(Unauthorized(err)))
                        }
                        Err(VerifyError::Overloaded(why)) => {
                            Err(warp::reject::custom(Overloaded(why)))
                        }
                    }
                }
            },
        )
}

/// [`authenticated`], then the role the route table ([`super::paths::ROUTES`]) asks for: a
/// caller below it gets 403 naming the role, and an audit row `denied`.
pub fn guarded(shared: Shared) -> impl Filter<Extract = (Guarded,), Error = Rejection> + Clone {
    let store = shared.store.clone();
    let access = Arc::new(shared.config.access_rules());
    warp::method()
        .and(warp::path::full())
        .and(authenticated(shared))
        .and_then(
            move |method: Method, path: warp::path::FullPath, caller: Caller| {
                let store = store.clone();
                let access = access.clone();
                async move {
                    let Some(route) = super::paths::route(method.as_str(), path.as_str()) else {
                        // Not a route: the routes answer 404 or 405.
                        return Ok(Guarded {
                            caller,
                            action: None,
                            target: String::new(),
                        });
                    };
                    // Only a change, a refusal or a hold names its target (the audit's).
                    let target = || super::paths::target(route.template, path.as_str());
                    if caller.role < Some(route.role) {
                        let why = refusal(route.role, caller.role);
                        let row = audit::record(
                            Door::Rest,
                            &caller.principal.identity,
                            route.action,
                            &target(),
                            &Outcome::Denied(why.clone()),
                        );
                        audit::write(&store, &row);
                        return Err(warp::reject::custom(Forbidden(why)));
                    }
                    if access.two_person(route.action) {
                        let held = approvals::request(
                            &store,
                            Door::Rest,
                            &caller.principal.identity,
                            route.action,
                            &target(),
                        );
                        return match held {
                            Ok(id) => Err(warp::reject::custom(Held {
                                id,
                                action: route.action,
                                target: target(),
                            })),
                            Err(err) => {
                                tracing::error!(%err, "cannot hold an action for approval");
                                Err(warp::reject::custom(Overloaded(Overload::Busy)))
                            }
                        };
                    }
                    let action = route.action.changes().then_some(route.action);
                    Ok(Guarded {
                        caller,
                        action,
                        target: action.map(|_| target()).unwrap_or_default(),
                    })
                }
            },
        )
}

/// What a handler's reply is about when the path does not say (a new repository's name), for
/// the audit trail.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The error message a handler put on its reply, for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

/// A matched route's work: a reply already made (a read), or a change waiting for the caller's
/// audit entry, which the core writes in the transaction of the change. (The guard runs once,
/// before any route is matched, so routes cannot take the [`Guarded`] as an argument: they hand
/// back what to do with it.)
pub enum Job {
    /// The reply.
    Done(Response),
    /// What the handler does given the audit entry (`None` when the route changes nothing).
    Change(Box<dyn FnOnce(Option<Audit>) -> BoxFuture<'static, Response> + Send>),
}

impl Job {
    /// A change: `handler` calls the core with the audit entry.
    pub fn change<F, Fut>(handler: F) -> Job
    where
        F: FnOnce(Option<Audit>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Response> + Send + 'static,
    {
        Job::Change(Box::new(move |audit| Box::pin(handler(audit))))
    }

    /// Carries the job out for `guarded`.
    pub async fn run(self, guarded: &Guarded) -> Response {
        match self {
            Job::Done(response) => response,
            Job::Change(handler) => handler(guarded.audit()).await,
        }
    }
}

impl Guarded {
    /// The audit entry of a request that changes something.
    pub fn audit(&self) -> Option<Audit> {
        let action = self.action?;
        Some(Audit::new(
            Door::Rest,
            &self.caller.principal.identity,
            action,
            &self.target,
        ))
    }
}

/// Writes the audit row of a request that changes something and failed, from its reply's status
/// (and the error message a handler left in [`AuditNote`]), and passes the reply on. A request
/// that succeeded had its row written by the core (or the store) with the change.
pub fn audited(store: &Store, guarded: &Guarded, response: Response) -> Response {
    let Some(action) = guarded.action else {
        return response;
    };
    let status = response.status();
    let outcome = if status.is_success() {
        return response;
    } else {
        let note = response
            .extensions()
            .get::<AuditNote>()
            .map(|n| n.0.clone());
        let why = note.unwrap_or_else(|| status.to_string());
        if status == warp::http::StatusCode::FORBIDDEN {
            Outcome::Denied(why)
        } else {
            Outcome::Error(why)
        }
    };
    let target = response
        .extensions()
        .get::<AuditTarget>()
        .map_or(guarded.target.as_str(), |t| t.0.as_str());
    let row = audit::record(
        Door::Rest,
        &guarded.caller.principal.identity,
        action,
        target,
        &outcome,
    );
    audit::write(store, &row);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwt_cookie_is_found_among_others_and_only_by_its_exact_name() {
        assert_eq!(jwt_cookie("jwt=abc"), Some("abc"));
        assert_eq!(jwt_cookie("a=1; jwt=abc; b=2"), Some("abc"));
        assert_eq!(jwt_cookie("a=1;jwt=x=y"), Some("x=y"));
        assert_eq!(jwt_cookie("xjwt=abc; jwtx=def"), None);
        assert_eq!(jwt_cookie(""), None);
    }

    fn cookie_post() -> Credentials<'static> {
        Credentials {
            method: "POST",
            cookie: Some("tok"),
            host: Some("cockpit.example:5000"),
            ..Credentials::default()
        }
    }

    #[test]
    fn a_cookie_only_changes_state_from_this_site_with_json() {
        let check = |request: Credentials<'static>| {
            request_token(&request).map_err(|e| match e {
                Rejected::Token(err) => err.to_string(),
                Rejected::CrossSite(_) => "cross-site".to_string(),
            })
        };
        let cases: Vec<(&str, Credentials<'static>, Result<&str, &str>)> = vec![
            (
                "form post from elsewhere",
                Credentials {
                    origin: Some("https://evil.example"),
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..cookie_post()
                },
                Err("cross-site"),
            ),
            ("no origin at all", cookie_post(), Err("cross-site")),
            (
                "fetch metadata says cross-site",
                Credentials {
                    sec_fetch_site: Some("cross-site"),
                    origin: Some("http://cockpit.example:5000"),
                    ..cookie_post()
                },
                Err("cross-site"),
            ),
            (
                "same origin, text/plain",
                Credentials {
                    origin: Some("http://cockpit.example:5000"),
                    content_type: Some("text/plain"),
                    ..cookie_post()
                },
                Err("cross-site"),
            ),
            (
                "same origin, JSON",
                Credentials {
                    origin: Some("http://cockpit.example:5000"),
                    content_type: Some("application/json; charset=utf-8"),
                    ..cookie_post()
                },
                Ok("tok"),
            ),
            (
                "fetch metadata same-origin, no body",
                Credentials {
                    sec_fetch_site: Some("same-origin"),
                    ..cookie_post()
                },
                Ok("tok"),
            ),
            (
                "origin null",
                Credentials {
                    origin: Some("null"),
                    ..cookie_post()
                },
                Err("cross-site"),
            ),
            (
                "a read",
                Credentials {
                    method: "GET",
                    ..cookie_post()
                },
                Ok("tok"),
            ),
            (
                "bearer from anywhere with form encoding",
                Credentials {
                    authorization: Some("Bearer bt"),
                    origin: Some("https://evil.example"),
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..cookie_post()
                },
                Ok("bt"),
            ),
            (
                "nothing",
                Credentials {
                    method: "POST",
                    ..Credentials::default()
                },
                Err(
                    "missing token: send the JWT as `Authorization: Bearer <token>` (or as the `jwt` cookie)",
                ),
            ),
        ];
        for (what, request, expected) in cases {
            let expected = expected.map_err(str::to_string);
            assert_eq!(check(request), expected, "{what}");
        }
    }
}
