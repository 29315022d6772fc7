//! The JWT guard of `/ays/*`: takes the token from `Authorization: bearer …` (any case) or the
//! `jwt` cookie and asks the [`Verifier`](crate::auth::pool::Verifier). Refusals become 401 with
//! the rules' message; an overloaded verifier 429 or 503 with `Retry-After`.
//!
//! A browser sends the cookie with requests other sites make it send (a form POST), so a
//! state-changing request authenticated by the cookie must prove it comes from this site: see
//! [`same_site_proof`]. Requests with a bearer token are not affected (a browser never adds one
//! on its own).

use std::net::IpAddr;

use warp::http::Method;
use warp::{Filter, Rejection};

use super::http::Peer;
use crate::actors::Shared;
use crate::auth::pool::{Overload, VerifyError, now_secs};
use crate::auth::{AuthError, token_from_parts};

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

/// Whether a request that authenticates with the cookie may do what it asks: reads (`GET`,
/// `HEAD`, `OPTIONS`) always; anything else only with `Sec-Fetch-Site: same-origin`, or an
/// `Origin` naming this `Host`, and no body type but JSON (a cross-site HTML form can send
/// neither).
pub fn same_site_proof(request: &Credentials) -> Result<(), &'static str> {
    if matches!(request.method, "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    let same_origin = match (request.sec_fetch_site, request.origin) {
        (Some(site), _) => site.trim().eq_ignore_ascii_case("same-origin"),
        (None, Some(origin)) => {
            let authority = origin
                .trim()
                .strip_prefix("https://")
                .or_else(|| origin.trim().strip_prefix("http://"));
            matches!((authority, request.host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
        }
        (None, None) => false,
    };
    if !same_origin {
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

/// Passes requests with an accepted token (every request when `[mode].prod = false`).
pub fn authenticated(shared: Shared) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let verifier = shared.verifier.clone();
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
                async move {
                    let Some(verifier) = verifier else {
                        return Ok(());
                    };
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
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    let request = Credentials {
                        method: method.as_str(),
                        authorization: header("authorization"),
                        cookie: header("cookie").and_then(jwt_cookie),
                        origin: header("origin"),
                        sec_fetch_site: header("sec-fetch-site"),
                        host: header("host"),
                        content_type: header("content-type"),
                    };
                    let token = match request_token(&request) {
                        Ok(token) => token,
                        Err(Rejected::Token(err)) => {
                            refused(&err);
                            return Err(warp::reject::custom(Unauthorized(err)));
                        }
                        Err(Rejected::CrossSite(why)) => {
                            refused(&why);
                            return Err(warp::reject::custom(CrossSite(why)));
                        }
                    };
                    let peer: Option<IpAddr> = peer.map(|Peer(addr)| addr.ip());
                    match verifier.verify(token, peer, now_secs()).await {
                        Ok(_who) => Ok(()),
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
        .untuple_one()
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
