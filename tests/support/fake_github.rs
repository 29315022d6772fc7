//! A strict GitHub stand-in over real HTTP: the OAuth web flow and the REST endpoints the login
//! reads, shaped like github.com's.
//!
//! - `GET /login/oauth/authorize`: logs in the user set with [`FakeGithub::log_in_as`] (as if
//!   they typed their password) and sends the browser back with `code` and `state`; checks the
//!   client id, `redirect_uri` and the S256 PKCE challenge.
//! - `POST /login/oauth/access_token`: takes the client credentials only the way it is told
//!   ([`Auth`]); a wrong way is `incorrect_client_credentials`. Like GitHub it answers errors
//!   with 200, and form-encoded unless the client asks for JSON — or always form-encoded with
//!   [`FakeGithub::start_form_only`] (what a strict old provider does).
//! - `GET /user`, `/user/orgs`, `/user/teams`: need `Authorization: Bearer|token` and a
//!   `User-Agent` (GitHub answers 403 without); a revoked token is 401 `Bad credentials`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Reply;

/// The client id cockpit must use.
pub const CLIENT_ID: &str = "gh-login-client";
/// The client secret cockpit must use (tests grep the logs for it).
pub const CLIENT_SECRET: &str = "GH-LOGIN-SECRET-77aa21";

/// How the token endpoint insists on client credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// HTTP Basic only.
    Basic,
    /// In the form body only.
    Post,
}

struct Grant {
    login: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    next_login: Option<String>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    /// login → organizations.
    orgs: HashMap<String, Vec<String>>,
    /// login → (org, team slug).
    teams: HashMap<String, Vec<(String, String)>>,
    revoked: HashSet<String>,
    token_calls: Vec<(bool, HashMap<String, String>, Option<String>)>,
    next: u64,
}

/// The fake; clone freely.
#[derive(Clone)]
pub struct FakeGithub {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:PORT`: github.com and api.github.com in one.
    pub url: String,
    auth: Auth,
    form_only: bool,
}

impl FakeGithub {
    /// Starts on a free port; the token endpoint takes credentials only as `auth` says.
    pub async fn start(auth: Auth) -> FakeGithub {
        FakeGithub::start_with(auth, false).await
    }

    /// As [`FakeGithub::start`], answering the token endpoint form-encoded even when asked for
    /// JSON.
    pub async fn start_form_only(auth: Auth) -> FakeGithub {
        FakeGithub::start_with(auth, true).await
    }

    async fn start_with(auth: Auth, form_only: bool) -> FakeGithub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake github");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = FakeGithub {
            state: Arc::default(),
            url,
            auth,
            form_only,
        };
        let a = fake.clone();
        let authorize = warp::path!("login" / "oauth" / "authorize")
            .and(warp::get())
            .and(warp::query::<HashMap<String, String>>())
            .map(move |q| a.authorize(q));
        let t = fake.clone();
        let token = warp::path!("login" / "oauth" / "access_token")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("accept"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(move |auth, accept, form| t.token(auth, accept, form));
        let api = |path: &'static str, fake: FakeGithub| {
            warp::path("user")
                .and(if path.is_empty() {
                    warp::path::end().boxed()
                } else {
                    warp::path(path).and(warp::path::end()).boxed()
                })
                .and(warp::get())
                .and(warp::header::optional::<String>("authorization"))
                .and(warp::header::optional::<String>("user-agent"))
                .map(move |auth, agent| fake.api(path, auth, agent))
        };
        let routes = authorize
            .or(token)
            .unify()
            .or(api("", fake.clone()))
            .unify()
            .or(api("orgs", fake.clone()))
            .unify()
            .or(api("teams", fake.clone()))
            .unify();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        fake
    }

    /// The next login at the authorize endpoint is `login`'s.
    pub fn log_in_as(&self, login: &str) {
        self.state.lock().expect("state").next_login = Some(login.to_string());
    }

    /// Puts `login` in these organizations and `(org, team)` teams.
    pub fn set_membership(&self, login: &str, orgs: &[&str], teams: &[(&str, &str)]) {
        let mut state = self.state.lock().expect("state");
        state.orgs.insert(
            login.to_string(),
            orgs.iter().map(|o| o.to_string()).collect(),
        );
        state.teams.insert(
            login.to_string(),
            teams
                .iter()
                .map(|(o, t)| (o.to_string(), t.to_string()))
                .collect(),
        );
    }

    /// Revokes every token of `login` (the user revoked the OAuth app).
    pub fn revoke(&self, login: &str) {
        self.state
            .lock()
            .expect("state")
            .revoked
            .insert(login.to_string());
    }

    /// Every token request: whether it was accepted, its form, its `Authorization` header.
    pub fn token_calls(&self) -> Vec<(bool, HashMap<String, String>, Option<String>)> {
        self.state.lock().expect("state").token_calls.clone()
    }

    fn authorize(&self, q: HashMap<String, String>) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        let ok = q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && q.get("response_type").map(String::as_str) == Some("code")
            && q.get("code_challenge_method").map(String::as_str) == Some("S256");
        let (true, Some(redirect_uri), Some(st), Some(login)) = (
            ok,
            q.get("redirect_uri"),
            q.get("state"),
            state.next_login.clone(),
        ) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        state.next += 1;
        let code = format!("ghcode{}", state.next);
        state.codes.insert(
            code.clone(),
            Grant {
                login,
                challenge: q.get("code_challenge").cloned().unwrap_or_default(),
                redirect_uri: redirect_uri.clone(),
            },
        );
        let mut url = reqwest::Url::parse(redirect_uri).expect("redirect_uri");
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", st);
        warp::reply::with_header(StatusCode::FOUND, "location", url.to_string()).into_response()
    }

    fn token(
        &self,
        authorization: Option<String>,
        accept: Option<String>,
        form: HashMap<String, String>,
    ) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        let credentials_ok = match self.auth {
            Auth::Basic => {
                authorization.as_deref() == Some(basic.as_str())
                    && !form.contains_key("client_secret")
            }
            Auth::Post => {
                authorization.is_none()
                    && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                    && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
            }
        };
        let grant = form.get("code").and_then(|c| state.codes.remove(c));
        let error = if !credentials_ok {
            Some("incorrect_client_credentials")
        } else {
            match &grant {
                None => Some("bad_verification_code"),
                Some(g) if form.get("redirect_uri") != Some(&g.redirect_uri) => {
                    Some("redirect_uri_mismatch")
                }
                Some(g)
                    if URL_SAFE_NO_PAD.encode(Sha256::digest(
                        form.get("code_verifier")
                            .cloned()
                            .unwrap_or_default()
                            .as_bytes(),
                    )) != g.challenge =>
                {
                    Some("bad_verification_code")
                }
                Some(_) => None,
            }
        };
        state
            .token_calls
            .push((error.is_none(), form, authorization));
        let mut fields: Vec<(&str, String)> = match (error, grant) {
            (Some(error), _) => vec![("error", error.to_string())],
            (None, Some(grant)) => {
                state.next += 1;
                let token = format!("gho_{}", state.next);
                state.tokens.insert(token.clone(), grant.login);
                vec![
                    ("access_token", token),
                    ("scope", "read:org,read:user".into()),
                    ("token_type", "bearer".into()),
                ]
            }
            (None, None) => vec![("error", "bad_verification_code".into())],
        };
        let json = !self.form_only
            && accept
                .as_deref()
                .is_some_and(|a| a.contains("application/json"));
        // GitHub answers errors with 200 too.
        if json {
            let map: serde_json::Map<String, Value> = fields
                .drain(..)
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
            warp::reply::json(&map).into_response()
        } else {
            let body = reqwest::Url::parse_with_params("http://x/", &fields)
                .expect("form")
                .query()
                .unwrap_or_default()
                .to_string();
            warp::reply::with_header(
                body,
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .into_response()
        }
    }

    fn api(
        &self,
        path: &str,
        authorization: Option<String>,
        agent: Option<String>,
    ) -> warp::reply::Response {
        let state = self.state.lock().expect("state");
        if agent.unwrap_or_default().is_empty() {
            return warp::reply::with_status(
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
                StatusCode::FORBIDDEN,
            )
            .into_response();
        }
        let token = authorization.as_deref().and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("token "))
        });
        let Some(login) = token
            .and_then(|t| state.tokens.get(t))
            .filter(|login| !state.revoked.contains(*login))
        else {
            return warp::reply::with_status(
                warp::reply::json(&json!({"message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest"})),
                StatusCode::UNAUTHORIZED,
            )
            .into_response();
        };
        let body = match path {
            "" => json!({"login": login, "id": 1000 + login.len(), "type": "User",
                         "name": format!("{login} (GitHub)"), "site_admin": false}),
            "orgs" => Value::Array(
                state
                    .orgs
                    .get(login)
                    .into_iter()
                    .flatten()
                    .map(|o| json!({"login": o, "id": o.len(), "url": format!("{}/orgs/{o}", self.url)}))
                    .collect(),
            ),
            _ => Value::Array(
                state
                    .teams
                    .get(login)
                    .into_iter()
                    .flatten()
                    .map(|(o, t)| json!({"name": t, "slug": t, "id": t.len(),
                        "organization": {"login": o, "id": o.len()}}))
                    .collect(),
            ),
        };
        warp::reply::json(&body).into_response()
    }
}
