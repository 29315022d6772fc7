//! A strict OpenID Connect provider over real HTTP, with real ES256 signatures: discovery,
//! JWKS, the authorization code flow with PKCE and `nonce`, refresh tokens, user info.
//!
//! - `GET /.well-known/openid-configuration`: issuer and endpoints;
//! - `GET /jwks`: the public key (kid `k1`) of `tests/support/keys/oidc_es256.pem`;
//! - `GET /authorize`: needs `response_type=code`, the client id, the `openid` scope, a `nonce`
//!   and an S256 challenge; logs in the user set with [`FakeOidc::log_in_as`];
//! - `POST /token`: `client_secret_post` only (HTTP Basic is `invalid_client`, 401); checks the
//!   code, `redirect_uri` and PKCE verifier; answers JSON with an ID token (`iss`, `aud`, `sub`,
//!   `exp`, `iat`, `nonce`, `preferred_username`, `groups`) and a refresh token. A refresh
//!   answers a new ID token without `nonce`, or `invalid_grant` once revoked;
//! - `GET /userinfo`: `sub`, `preferred_username`, `groups` for a bearer token.
//!
//! [`FakeOidc::sign_with_wrong_nonce`] makes the next ID token carry another nonce.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Reply;

/// The client id cockpit must use.
pub const CLIENT_ID: &str = "cockpit-oidc-client";
/// The client secret cockpit must use (tests grep the logs for it).
pub const CLIENT_SECRET: &str = "OIDC-SECRET-90f3b1";

struct Grant {
    sub: String,
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    next_login: Option<String>,
    /// sub → groups.
    groups: HashMap<String, Vec<String>>,
    codes: HashMap<String, Grant>,
    access: HashMap<String, String>,
    refresh: HashMap<String, String>,
    revoked: HashSet<String>,
    wrong_nonce: bool,
    next: u64,
}

/// The fake; clone freely.
#[derive(Clone)]
pub struct FakeOidc {
    state: Arc<Mutex<State>>,
    key: Arc<EncodingKey>,
    /// `http://127.0.0.1:PORT`: the issuer.
    pub url: String,
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

impl FakeOidc {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeOidc {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/oidc_es256.pem"),
        )
        .expect("oidc key");
        // PKCS#8 PEM → DER (jsonwebtoken's PEM readers need its `use_pem` feature).
        let body: String = String::from_utf8(pem)
            .expect("pem")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("der");
        let key = EncodingKey::from_ec_der(&der);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake oidc");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = FakeOidc {
            state: Arc::default(),
            key: Arc::new(key),
            url,
        };
        let f = fake.clone();
        let discovery = warp::path!(".well-known" / "openid-configuration")
            .and(warp::get())
            .map(move || {
                let u = &f.url;
                reply(
                    StatusCode::OK,
                    json!({
                        "issuer": u,
                        "authorization_endpoint": format!("{u}/authorize"),
                        "token_endpoint": format!("{u}/token"),
                        "userinfo_endpoint": format!("{u}/userinfo"),
                        "jwks_uri": format!("{u}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                        "token_endpoint_auth_methods_supported": ["client_secret_post"],
                        "code_challenge_methods_supported": ["S256"],
                    }),
                )
            });
        let f = fake.clone();
        let jwks = warp::path!("jwks").and(warp::get()).map(move || {
            let mut jwk =
                jsonwebtoken::jwk::Jwk::from_encoding_key(&f.key, Algorithm::ES256).expect("jwk");
            jwk.common.key_id = Some("k1".into());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            reply(StatusCode::OK, json!({"keys": [jwk]}))
        });
        let f = fake.clone();
        let authorize = warp::path!("authorize")
            .and(warp::get())
            .and(warp::query::<HashMap<String, String>>())
            .map(move |q| f.authorize(q));
        let f = fake.clone();
        let token = warp::path!("token")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(move |auth, form| f.token(auth, form));
        let f = fake.clone();
        let userinfo = warp::path!("userinfo")
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .map(move |auth: Option<String>| f.userinfo(auth));
        let routes = discovery
            .or(jwks)
            .unify()
            .or(authorize)
            .unify()
            .or(token)
            .unify()
            .or(userinfo)
            .unify();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        fake
    }

    /// The next login is `sub`'s, in these groups.
    pub fn log_in_as(&self, sub: &str, groups: &[&str]) {
        let mut state = self.state.lock().expect("state");
        state.next_login = Some(sub.to_string());
        state.groups.insert(
            sub.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// Changes `sub`'s groups.
    pub fn set_groups(&self, sub: &str, groups: &[&str]) {
        self.state.lock().expect("state").groups.insert(
            sub.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// Ends `sub`'s sessions: refresh tokens are refused from now on.
    pub fn revoke(&self, sub: &str) {
        self.state
            .lock()
            .expect("state")
            .revoked
            .insert(sub.to_string());
    }

    /// The next ID token carries another nonce than the login's.
    pub fn sign_with_wrong_nonce(&self) {
        self.state.lock().expect("state").wrong_nonce = true;
    }

    fn authorize(&self, q: HashMap<String, String>) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let scopes: Vec<String> = get("scope").split(' ').map(str::to_string).collect();
        if get("response_type") != "code"
            || get("client_id") != CLIENT_ID
            || !scopes.iter().any(|s| s == "openid")
            || get("nonce").is_empty()
            || get("code_challenge_method") != "S256"
            || get("state").is_empty()
        {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
        }
        let Some(sub) = state.next_login.clone() else {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "login_required"}));
        };
        state.next += 1;
        let code = format!("oidc-code-{}", state.next);
        state.codes.insert(
            code.clone(),
            Grant {
                sub,
                nonce: get("nonce"),
                challenge: get("code_challenge"),
                redirect_uri: get("redirect_uri"),
            },
        );
        let mut url = reqwest::Url::parse(&get("redirect_uri")).expect("redirect_uri");
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &get("state"));
        warp::reply::with_header(StatusCode::FOUND, "location", url.to_string()).into_response()
    }

    fn id_token(&self, state: &mut State, sub: &str, nonce: Option<&str>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let mut claims = json!({
            "iss": self.url, "aud": CLIENT_ID, "sub": sub, "iat": now, "exp": now + 300,
            "preferred_username": format!("{sub}-name"),
            "groups": state.groups.get(sub).cloned().unwrap_or_default(),
        });
        if let Some(nonce) = nonce {
            let nonce = if std::mem::take(&mut state.wrong_nonce) {
                "not-the-login-nonce"
            } else {
                nonce
            };
            claims["nonce"] = json!(nonce);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }

    fn token(
        &self,
        authorization: Option<String>,
        form: HashMap<String, String>,
    ) -> warp::reply::Response {
        let mut state = self.state.lock().expect("state");
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        if authorization.is_some()
            || get("client_id") != CLIENT_ID
            || get("client_secret") != CLIENT_SECRET
        {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client",
                       "error_description": "client authentication must be client_secret_post"}),
            );
        }
        let (sub, nonce) = match get("grant_type").as_str() {
            "authorization_code" => {
                let Some(grant) = state.codes.remove(&get("code")) else {
                    return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                };
                let verifier_ok = URL_SAFE_NO_PAD
                    .encode(Sha256::digest(get("code_verifier").as_bytes()))
                    == grant.challenge;
                if grant.redirect_uri != get("redirect_uri") || !verifier_ok {
                    return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                }
                (grant.sub, Some(grant.nonce))
            }
            "refresh_token" => match state.refresh.get(&get("refresh_token")).cloned() {
                Some(sub) if !state.revoked.contains(&sub) => (sub, None),
                _ => return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"})),
            },
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported_grant_type"}),
                );
            }
        };
        state.next += 1;
        let access = format!("oidc-at-{}", state.next);
        let refresh = format!("oidc-rt-{}", state.next);
        state.access.insert(access.clone(), sub.clone());
        state.refresh.insert(refresh.clone(), sub.clone());
        let id_token = self.id_token(&mut state, &sub, nonce.as_deref());
        reply(
            StatusCode::OK,
            json!({"access_token": access, "token_type": "Bearer", "expires_in": 300,
                   "refresh_token": refresh, "id_token": id_token}),
        )
    }

    fn userinfo(&self, authorization: Option<String>) -> warp::reply::Response {
        let state = self.state.lock().expect("state");
        let sub = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| state.access.get(t))
            .filter(|s| !state.revoked.contains(*s));
        match sub {
            Some(sub) => reply(
                StatusCode::OK,
                json!({"sub": sub, "preferred_username": format!("{sub}-name"),
                       "groups": state.groups.get(sub).cloned().unwrap_or_default()}),
            ),
            None => reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"})),
        }
    }
}
