//! A fake GitHub-shaped OAuth2 provider: a small warp server standing in for github.com.
//!
//! - `GET /login/oauth/authorize` approves at once (or, after [`FakeProvider::deny`], answers
//!   `error=access_denied`) and sends the browser back to `redirect_uri` with `code` and `state`;
//! - `POST /login/oauth/access_token` checks the client credentials (HTTP Basic), that the code
//!   is known and unused, that `redirect_uri` is the one the code was issued for, and the PKCE
//!   verifier against the S256 challenge; then issues an access token;
//! - `GET /user` answers the user for `Authorization: Bearer <token>`, with more fields than the
//!   proxy passes on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Reply;

/// The client id the proxy must use.
pub const CLIENT_ID: &str = "gh-client-id";
/// The client secret the proxy must use (tests grep the logs for it).
pub const CLIENT_SECRET: &str = "PROVIDER-SECRET-4f1c9e";

struct Grant {
    challenge: String,
    method: String,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    deny: bool,
    /// The user logged in from now on (octocat when `None`).
    user: Option<Value>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, Value>,
    authorize_calls: Vec<HashMap<String, String>>,
    token_calls: Vec<(StatusCode, HashMap<String, String>)>,
    next: u64,
}

/// The fake provider; clone freely.
#[derive(Clone)]
pub struct FakeProvider {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// The user the provider logs in.
pub fn octocat() -> Value {
    json!({
        "login": "octocat",
        "id": 583231,
        "email": "octocat@example.com",
        "name": "The Octocat",
        "site_admin": false
    })
}

impl FakeProvider {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = FakeProvider {
            state: Arc::new(Mutex::new(State::default())),
            url,
        };
        let a = fake.clone();
        let authorize = warp::path!("login" / "oauth" / "authorize")
            .and(warp::get())
            .and(warp::query::<HashMap<String, String>>())
            .map(move |q: HashMap<String, String>| a.authorize(q));
        let t = fake.clone();
        let token = warp::path!("login" / "oauth" / "access_token")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(move |auth: Option<String>, form: HashMap<String, String>| t.token(auth, form));
        let u = fake.clone();
        let user = warp::path!("user")
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .map(move |auth: Option<String>| u.user(auth));
        let routes = authorize.or(token).unify().or(user).unify();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        fake
    }

    /// From now on, the user refuses: the authorize step answers `error=access_denied`.
    pub fn deny(&self) {
        self.state.lock().expect("state").deny = true;
    }

    /// From now on, logins are of `user` (a `/user` document: `login`...).
    pub fn set_user(&self, user: Value) {
        self.state.lock().expect("state").user = Some(user);
    }

    /// The query strings of every authorize request.
    pub fn authorize_calls(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().expect("state").authorize_calls.clone()
    }

    /// Every token request's answer status and form.
    pub fn token_calls(&self) -> Vec<(StatusCode, HashMap<String, String>)> {
        self.state.lock().expect("state").token_calls.clone()
    }

    fn authorize(&self, q: HashMap<String, String>) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        state.authorize_calls.push(q.clone());
        let (Some(redirect_uri), Some(st)) = (q.get("redirect_uri"), q.get("state")) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let mut url = url_of(redirect_uri);
        if state.deny {
            url.query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair(
                    "error_description",
                    "The user has denied your application access.",
                )
                .append_pair("state", st);
        } else {
            state.next += 1;
            let code = format!("code-{}", state.next);
            state.codes.insert(
                code.clone(),
                Grant {
                    challenge: q.get("code_challenge").cloned().unwrap_or_default(),
                    method: q.get("code_challenge_method").cloned().unwrap_or_default(),
                    redirect_uri: redirect_uri.clone(),
                },
            );
            url.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", st);
        }
        warp::reply::with_header(StatusCode::FOUND, "location", url.to_string()).into_response()
    }

    fn token(&self, auth: Option<String>, form: HashMap<String, String>) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        let expected_basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        let grant = form.get("code").and_then(|c| state.codes.remove(c));
        let verifier_ok = |g: &Grant| {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            g.method == "S256"
                && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == g.challenge
        };
        let error = if auth.as_deref() != Some(expected_basic.as_str()) {
            Some("invalid_client")
        } else if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
            Some("unsupported_grant_type")
        } else {
            match &grant {
                None => Some("invalid_grant"),
                Some(g) if form.get("redirect_uri") != Some(&g.redirect_uri) => {
                    Some("invalid_grant")
                }
                Some(g) if !verifier_ok(g) => Some("invalid_grant"),
                Some(_) => None,
            }
        };
        if let Some(error) = error {
            state.token_calls.push((StatusCode::BAD_REQUEST, form));
            return warp::reply::with_status(
                warp::reply::json(&json!({"error": error})),
                StatusCode::BAD_REQUEST,
            )
            .into_response();
        }
        state.next += 1;
        let token = format!("gho_token{}", state.next);
        let user = state.user.clone().unwrap_or_else(octocat);
        state.tokens.insert(token.clone(), user);
        state.token_calls.push((StatusCode::OK, form));
        warp::reply::json(&json!({"access_token": token, "token_type": "bearer", "scope": ""}))
            .into_response()
    }

    fn user(&self, auth: Option<String>) -> warp::reply::Response {
        let state = self.state.lock().expect("state");
        let token = auth.as_deref().and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("token "))
        });
        match token.and_then(|t| state.tokens.get(t)) {
            Some(user) => warp::reply::json(user).into_response(),
            None => warp::reply::with_status(
                warp::reply::json(&json!({"message": "Bad credentials"})),
                StatusCode::UNAUTHORIZED,
            )
            .into_response(),
        }
    }
}

fn url_of(s: &str) -> reqwest::Url {
    reqwest::Url::parse(s).expect("redirect_uri is a URL")
}
