//! The app side of the central OAuth2 server: what the seed's `j.tools.oauth_proxy` gave bottle
//! apps, as warp filters and plain functions.
//!
//! ```text
//! browser ── GET /test ──────────────► app: login_required() → no user → 303 /test/login?next_url=/test
//!         ── GET /test/login?provider=github&next_url=/test ─► app: login() keeps {state, next_url}
//!                                        in a new server-side session → 303 <proxy>/authorize?…
//!         … proxy and provider …
//!         ── GET /test/callback?jwt&state ─► app: callback() checks the token and the session's
//!                                        state, stores the user under a NEW session id → 303 /test
//! ```
//!
//! What [`OAuthApp::callback`] checks, in order: a pending login exists in this browser's session
//! and its state equals the returned `state` (the pending login is consumed whatever follows);
//! the token's EdDSA signature with `verify_key`, `iss` = the proxy `url`, `aud` = the callback URL
//! the login was started with, `exp` (see [`crate::oauth::token::verify`]); `nonce` = the state;
//! `jti` never seen before. Sessions live where the app says ([`super::sessions`]: in memory by
//! default, so an app restart logs users out; the console's in cockpit's store); the cookie is
//! `HttpOnly; SameSite=Lax; Path=/`, plus `Secure` when the callback URL is https; the session id
//! changes at login so an id planted before login is worthless after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use super::sessions::User;
use super::sessions::{MemorySessions, Pending, SessionData, SessionStore, Unavailable};
use super::token::{self, KeyError, TokenError, VerifyKey};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "oauth_session";

/// How long a started login may take before its state is forgotten.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(10 * 60);

/// How long a session lives by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions are kept; past it the oldest go first (a flood of anonymous
/// `login` calls cannot grow memory or a table without bound).
pub const MAX_SESSIONS: usize = 100_000;

/// The seed's `oauth_proxy` client: which central server to use and how to check what it signs.
#[derive(Debug, Clone)]
pub struct ProxyClientConfig {
    /// The server's OAuth base URL (`https://cockpit.example.com/oauth`); also the tokens' `iss`.
    pub url: String,
    /// The server's Ed25519 public key, 64 hex characters (from `<url>/key`).
    pub verify_key: String,
    /// The provider names this app offers (`github`).
    pub providers: Vec<String>,
}

/// This request's session as the filters see it.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The session id, when the browser sent one the app knows.
    id: Option<String>,
    /// The user, when logged in.
    pub user: Option<User>,
}

/// Everything an [`OAuthApp`] shares between requests.
#[derive(Clone)]
struct Inner {
    /// The proxy settings.
    config: ProxyClientConfig,
    /// The parsed verify key.
    key: VerifyKey,
    /// The app's login route, where anonymous users are sent (`/test/login`).
    login_path: String,
    /// How long a session lives.
    session_ttl: Duration,
    /// Where sessions and used token ids are kept.
    sessions: Arc<dyn SessionStore>,
    /// The random key a session's CSRF token is derived with (in the process, or in the store
    /// beside the sessions it protects; never in a reply or the log).
    csrf_key: [u8; 32],
}

/// A warp app's handle on the central OAuth2 server; clone freely.
#[derive(Clone)]
pub struct OAuthApp {
    /// Shared state.
    inner: Arc<Inner>,
}

/// Why a login callback was refused; shown to the user as a 4xx page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// No login was started in this browser, it was already finished, or it timed out.
    #[error("no login is in progress in this browser (or it expired); start again")]
    NoLogin,
    /// The returned state is not the one this browser's login was started with.
    #[error("the login does not belong to this browser; start again")]
    StateMismatch,
    /// The provider or the proxy reported an error (`access_denied` when the user said no).
    #[error("the login was not completed: {0}")]
    Provider(String),
    /// The token failed a check.
    #[error("{0}")]
    Token(TokenError),
    /// The token was already used.
    #[error("this login token was already used")]
    Replayed,
    /// The sessions could not be read or written; the browser may try again.
    #[error("logins are unavailable for a moment; try again")]
    Unavailable,
}

impl CallbackError {
    /// The page to answer with: 400 for a refused login, with the reason.
    pub fn into_response(self) -> Response {
        let status = match self {
            CallbackError::Token(_) | CallbackError::Replayed => StatusCode::UNAUTHORIZED,
            CallbackError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        page(status, "Login failed", &self.to_string())
    }
}

/// A finished login: the user, where to go next, and the new session cookie.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The user.
    pub user: User,
    /// The local path the user wanted before logging in.
    pub next_url: String,
    /// `Set-Cookie` value of the new (rotated) session.
    cookie: String,
}

impl LoggedIn {
    /// 303 to `next_url` with the new session cookie: what the seed's `redirect(next_url)` did.
    pub fn redirect(self) -> Response {
        with_cookie(see_other(&self.next_url), &self.cookie)
    }
}

/// The rejection [`OAuthApp::login_required`] raises for anonymous users; [`recover`] turns it
/// into the redirect.
#[derive(Debug)]
pub struct LoginRequired {
    /// The login route with `next_url`.
    location: String,
}

impl warp::reject::Reject for LoginRequired {}

/// Turns a [`LoginRequired`] rejection into a 303 to the login route; other rejections pass on.
/// Use as `routes.recover(oauth::client::recover)`.
pub async fn recover(rejection: Rejection) -> Result<Response, Rejection> {
    match rejection.find::<LoginRequired>() {
        Some(login) => Ok(see_other(&login.location)),
        None => Err(rejection),
    }
}

impl OAuthApp {
    /// A client for the proxy in `config`; anonymous users of protected routes are sent to
    /// `login_path` (a local path of the app).
    pub fn new(config: ProxyClientConfig, login_path: &str) -> Result<OAuthApp, KeyError> {
        let key = VerifyKey::from_hex(&config.verify_key)?;
        let config = ProxyClientConfig {
            url: config.url.trim_end_matches('/').to_string(),
            ..config
        };
        Ok(OAuthApp {
            inner: Arc::new(Inner {
                config,
                key,
                login_path: login_path.to_string(),
                session_ttl: DEFAULT_SESSION_TTL,
                sessions: Arc::new(MemorySessions::default()),
                csrf_key: random_key(),
            }),
        })
    }

    /// The same client with another session lifetime (default 12 hours). Call before cloning.
    pub fn with_session_ttl(self, ttl: Duration) -> OAuthApp {
        self.changed(|inner| inner.session_ttl = ttl)
    }

    /// The same client keeping its sessions in `sessions`, its CSRF tokens derived with
    /// `csrf_key` (which must live as long as the sessions do: a key that changes at restart
    /// refuses every form of a session that outlived it). Call before cloning.
    pub fn with_sessions(self, sessions: Arc<dyn SessionStore>, csrf_key: [u8; 32]) -> OAuthApp {
        self.changed(|inner| {
            inner.sessions = sessions;
            inner.csrf_key = csrf_key;
        })
    }

    /// A copy of this client's settings, changed by `change`.
    fn changed(self, change: impl FnOnce(&mut Inner)) -> OAuthApp {
        let mut inner = Inner::clone(&self.inner);
        change(&mut inner);
        OAuthApp {
            inner: Arc::new(inner),
        }
    }

    /// The providers the app offers.
    pub fn providers(&self) -> &[String] {
        &self.inner.config.providers
    }

    /// The session of the request (anonymous when the cookie is missing, unknown or expired).
    pub fn session(&self) -> BoxedFilter<(Session,)> {
        let app = self.clone();
        warp::cookie::optional::<String>(SESSION_COOKIE)
            .map(move |id: Option<String>| app.lookup(id))
            .boxed()
    }

    fn lookup(&self, id: Option<String>) -> Session {
        let Some(id) = id else {
            return Session::default();
        };
        match self.inner.sessions.get(&id, now_ms()) {
            Ok(Some(data)) => Session {
                user: data.user,
                id: Some(id),
            },
            Ok(None) => Session::default(),
            Err(err) => {
                // Anonymous for this request: a protected page sends to the login, which says
                // the sessions are unavailable.
                tracing::warn!(%err, "reading a session failed");
                Session::default()
            }
        }
    }

    /// Extracts the logged-in user; an anonymous request is rejected with [`LoginRequired`],
    /// which [`recover`] turns into a 303 to the login route with `next_url` = this path and query.
    pub fn login_required(&self) -> BoxedFilter<(User,)> {
        let login_path = self.inner.login_path.clone();
        let query = warp::query::raw().or(warp::any().map(String::new)).unify();
        self.session()
            .and(warp::path::full())
            .and(query)
            .and_then(
                move |session: Session, path: warp::path::FullPath, query: String| {
                    let login_path = login_path.clone();
                    async move {
                        if let Some(user) = session.user {
                            return Ok(user);
                        }
                        let mut next = path.as_str().to_string();
                        if !query.is_empty() {
                            next = format!("{next}?{query}");
                        }
                        let location = format!(
                            "{login_path}?{}",
                            encode_query(&[("next_url", next.as_str())])
                        );
                        Err(warp::reject::custom(LoginRequired { location }))
                    }
                },
            )
            .boxed()
    }

    /// Starts a login through `provider`: keeps a fresh state and `next_url` (a local path, else
    /// `/`) in the session and answers 303 to the proxy's `/authorize`. The proxy comes back to
    /// `callback_url`, which must be in its `allowed_redirects`.
    pub fn login(
        &self,
        session: &Session,
        provider: &str,
        callback_url: &str,
        next_url: Option<&str>,
    ) -> Response {
        if !self.providers().iter().any(|p| p == provider) {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown provider",
                &format!("This app does not offer login through {provider:?}."),
            );
        }
        let state = token::random_id();
        let now = now_ms();
        let pending = Pending {
            state: state.clone(),
            callback_url: callback_url.to_string(),
            next_url: next_url
                .and_then(token::local_path)
                .unwrap_or("/")
                .to_string(),
            expires_ms: now.saturating_add(millis(PENDING_LOGIN_TTL)),
        };
        let kept = match &session.id {
            Some(id) => self.inner.sessions.set_pending(id, &pending),
            None => Ok(false),
        };
        let started = kept.and_then(|kept| match (kept, &session.id) {
            (true, Some(id)) => Ok((id.clone(), false)),
            _ => self
                .insert(SessionData {
                    expires_ms: self.expiry(now),
                    pending: Some(pending),
                    user: None,
                })
                .map(|id| (id, true)),
        });
        let (id, created) = match started {
            Ok(started) => started,
            Err(err) => return unavailable(&err),
        };
        let location = format!(
            "{}/authorize?{}",
            self.inner.config.url,
            encode_query(&[
                ("provider", provider),
                ("redirect_url", callback_url),
                ("state", &state),
            ])
        );
        let reply = see_other(&location);
        if created {
            with_cookie(reply, &self.cookie(&id, callback_url))
        } else {
            reply
        }
    }

    /// Finishes a login from the callback's query (`jwt` and `state`, or `error` and `state`):
    /// checks everything listed in the module documentation, then moves the user into a new
    /// session. The pending login is consumed even when the check fails.
    pub fn callback(
        &self,
        session: &Session,
        query: &HashMap<String, String>,
    ) -> Result<LoggedIn, CallbackError> {
        let now = unix_now();
        let sessions = &self.inner.sessions;
        let id = session.id.as_ref().ok_or(CallbackError::NoLogin)?;
        let pending = sessions
            .take_pending(id)
            .map_err(|err| refused(&err))?
            .filter(|p| p.expires_ms > now_ms())
            .ok_or(CallbackError::NoLogin)?;
        let state = query.get("state").map(String::as_str).unwrap_or_default();
        if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(CallbackError::StateMismatch);
        }
        if let Some(error) = query.get("error") {
            return Err(CallbackError::Provider(error.chars().take(100).collect()));
        }
        let jwt = query.get("jwt").map(String::as_str).unwrap_or_default();
        let claims = token::verify(
            jwt,
            &self.inner.key,
            &self.inner.config.url,
            &pending.callback_url,
            now,
        )
        .map_err(CallbackError::Token)?;
        if !constant_time_eq(claims.nonce.as_bytes(), pending.state.as_bytes()) {
            return Err(CallbackError::Token(TokenError::Invalid));
        }
        let first = sessions
            .first_use(&claims.jti, claims.exp + token::LEEWAY_SECS, now)
            .map_err(|err| refused(&err))?;
        if !first {
            return Err(CallbackError::Replayed);
        }
        let user = User {
            provider: claims.provider,
            info: claims.user_info,
            identity: claims.identity,
            groups: claims.groups,
            logged_in: now,
        };
        // Rotate: the pre-login id dies, the user lives under a new one.
        sessions.remove(id).map_err(|err| refused(&err))?;
        let new_id = self
            .insert(SessionData {
                expires_ms: self.expiry(now_ms()),
                pending: None,
                user: Some(user.clone()),
            })
            .map_err(|err| refused(&err))?;
        Ok(LoggedIn {
            user,
            next_url: pending.next_url,
            cookie: self.cookie(&new_id, &pending.callback_url),
        })
    }

    /// Ends the session and clears the cookie; 303 to `to` (a local path, else `/`).
    pub fn logout(&self, session: &Session, to: &str) -> Response {
        if let Some(id) = &session.id
            && let Err(err) = self.inner.sessions.remove(id)
        {
            // The cookie is cleared all the same; the row ends with its time.
            tracing::warn!(%err, "ending a session failed");
        }
        let to = token::local_path(to).unwrap_or("/");
        with_cookie(
            see_other(to),
            &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
        )
    }

    /// Opens a logged-in session for `user` without the proxy (a development login that the
    /// app offers only when it trusts every caller anyway); the `Set-Cookie` value.
    pub fn open_session(&self, user: User, secure: bool) -> Result<String, Unavailable> {
        let id = self.insert(SessionData {
            expires_ms: self.expiry(now_ms()),
            pending: None,
            user: Some(user),
        })?;
        let scheme = if secure { "https://" } else { "http://" };
        Ok(self.cookie(&id, scheme))
    }

    /// The CSRF token of a session: HMAC-SHA256 of its id under a key of this process, so it
    /// is bound to the session (a new session after login has a new one) and needs no storage.
    /// `None` for a request without a known session.
    pub fn csrf_token(&self, session: &Session) -> Option<String> {
        use hmac::Mac;
        let id = session.id.as_ref()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.inner.csrf_key).ok()?;
        mac.update(b"csrf:");
        mac.update(id.as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `token` is the CSRF token of `session` (compared in constant time).
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        self.csrf_token(session)
            .is_some_and(|want| constant_time_eq(want.as_bytes(), token.as_bytes()))
    }

    /// Stores a session under a new random id (the store makes room first); returns the id.
    fn insert(&self, data: SessionData) -> Result<String, Unavailable> {
        let id = format!("{}{}", token::random_id(), token::random_id());
        self.inner
            .sessions
            .insert(&id, &data, MAX_SESSIONS, now_ms())?;
        Ok(id)
    }

    /// When a session made at `now` (Unix milliseconds) ends.
    fn expiry(&self, now: i64) -> i64 {
        now.saturating_add(millis(self.inner.session_ttl))
    }

    /// The `Set-Cookie` value for a session id; `Secure` when the app is served over https.
    fn cookie(&self, id: &str, callback_url: &str) -> String {
        let secure = if callback_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            self.inner.session_ttl.as_secs()
        )
    }
}

/// 256 random bits.
fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Unix seconds now.
fn unix_now() -> i64 {
    crate::clock::now_secs()
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// A duration in milliseconds, as the stored times count.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The callback's refusal when the sessions are unavailable (the cause goes to the log).
fn refused(err: &Unavailable) -> CallbackError {
    tracing::warn!(%err, "a login callback could not use the sessions");
    CallbackError::Unavailable
}

/// The page when the sessions are unavailable: 503, try again (the cause goes to the log).
fn unavailable(err: &Unavailable) -> Response {
    tracing::warn!(%err, "a login could not use the sessions");
    let mut reply = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "Logins are unavailable for a moment; try again shortly.",
    );
    reply.headers_mut().insert(
        warp::http::header::RETRY_AFTER,
        warp::http::HeaderValue::from_static("5"),
    );
    reply
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// `a=b&c=d`, form-encoded.
fn encode_query(pairs: &[(&str, &str)]) -> String {
    oauth2::url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A 303 See Other to `location`.
fn see_other(location: &str) -> Response {
    let mut reply = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = warp::http::HeaderValue::from_str(location) {
        reply
            .headers_mut()
            .insert(warp::http::header::LOCATION, value);
    }
    reply
}

fn with_cookie(mut reply: Response, cookie: &str) -> Response {
    if let Ok(value) = warp::http::HeaderValue::from_str(cookie) {
        reply
            .headers_mut()
            .append(warp::http::header::SET_COOKIE, value);
    }
    reply
}

/// Escapes text for HTML.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small HTML page.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{b}</p></body></html>",
        t = escape_html(title),
        b = escape_html(body)
    );
    warp::reply::with_status(warp::reply::html(html), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::token::{LoginClaims, SigningKey};
    use oauth2::url::Url;
    use serde_json::{Map, Value};

    const PROXY: &str = "https://proxy.example.com/oauth";
    const CALLBACK: &str = "https://app.example.com/test/callback";

    fn app(key: &SigningKey) -> OAuthApp {
        OAuthApp::new(
            ProxyClientConfig {
                url: format!("{PROXY}/"),
                verify_key: key.public_hex(),
                providers: vec!["github".into()],
            },
            "/test/login",
        )
        .expect("app")
    }

    fn header(reply: &Response, name: &str) -> String {
        reply
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Starts a login; returns the session (as the next request would see it) and the state.
    fn start(app: &OAuthApp, next: Option<&str>) -> (Session, String) {
        let reply = app.login(&Session::default(), "github", CALLBACK, next);
        assert_eq!(reply.status(), StatusCode::SEE_OTHER);
        let location = Url::parse(&header(&reply, "location")).expect("location");
        assert!(
            location
                .as_str()
                .starts_with(&format!("{PROXY}/authorize?"))
        );
        let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query["redirect_url"], CALLBACK);
        let cookie = header(&reply, "set-cookie");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
        assert!(cookie.contains("Secure"), "{cookie}");
        let id = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("oauth_session="))
            .expect("id");
        (app.lookup(Some(id.to_string())), query["state"].clone())
    }

    fn token(key: &SigningKey, state: &str, f: impl Fn(&mut LoginClaims)) -> LoginClaims {
        let mut info = Map::new();
        info.insert("login".into(), Value::from("octocat"));
        let mut claims = LoginClaims::new(PROXY, CALLBACK, state, "github", info, unix_now());
        f(&mut claims);
        let _ = key;
        claims
    }

    fn query(key: &SigningKey, claims: &LoginClaims, state: &str) -> HashMap<String, String> {
        HashMap::from([
            ("jwt".to_string(), key.sign(claims).expect("sign")),
            ("state".to_string(), state.to_string()),
        ])
    }

    #[test]
    fn a_login_rotates_the_session_and_returns_to_next_url() {
        let key = SigningKey::from_seed([1; 32]);
        let app = app(&key);
        let (session, state) = start(&app, Some("/test?x=1"));
        let old_id = session.id.clone();
        let claims = token(&key, &state, |_| {});
        let done = app
            .callback(&session, &query(&key, &claims, &state))
            .expect("login");
        assert_eq!(done.user.info["login"], "octocat");
        assert_eq!(done.next_url, "/test?x=1");
        let reply = done.redirect();
        let cookie = header(&reply, "set-cookie");
        let new_id = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("oauth_session="))
            .map(str::to_string);
        assert_ne!(new_id, old_id);
        assert!(app.lookup(old_id).user.is_none());
        assert_eq!(app.lookup(new_id).user.expect("user").provider, "github");
    }

    #[test]
    fn callbacks_are_refused_for_each_broken_rule() {
        let key = SigningKey::from_seed([2; 32]);
        let other = SigningKey::from_seed([3; 32]);
        let app = app(&key);
        type Case<'a> = (
            &'static str,
            Box<dyn Fn(&str) -> HashMap<String, String> + 'a>,
            CallbackError,
        );
        let cases: Vec<Case> = vec![
            (
                "other state",
                Box::new(|s: &str| query(&key, &token(&key, s, |_| {}), "nope")),
                CallbackError::StateMismatch,
            ),
            (
                "nonce is not the state",
                Box::new(|s: &str| query(&key, &token(&key, s, |c| c.nonce = "x".into()), s)),
                CallbackError::Token(TokenError::Invalid),
            ),
            (
                "other key",
                Box::new(|s: &str| query(&other, &token(&key, s, |_| {}), s)),
                CallbackError::Token(TokenError::Invalid),
            ),
            (
                "other audience",
                Box::new(|s: &str| {
                    query(
                        &key,
                        &token(&key, s, |c| c.aud = "https://b.example.com/cb".into()),
                        s,
                    )
                }),
                CallbackError::Token(TokenError::Invalid),
            ),
            (
                "expired",
                Box::new(|s: &str| {
                    query(
                        &key,
                        &token(&key, s, |c| {
                            c.iat -= 1000;
                            c.exp -= 1000
                        }),
                        s,
                    )
                }),
                CallbackError::Token(TokenError::Expired),
            ),
            (
                "provider error",
                Box::new(|s: &str| {
                    HashMap::from([
                        ("error".to_string(), "access_denied".to_string()),
                        ("state".to_string(), s.to_string()),
                    ])
                }),
                CallbackError::Provider("access_denied".into()),
            ),
        ];
        for (what, make, want) in cases {
            let (session, state) = start(&app, None);
            let got = app.callback(&session, &make(&state)).err();
            assert_eq!(got, Some(want), "{what}");
            // The pending login is gone: even a good token is refused now.
            let good = query(&key, &token(&key, &state, |_| {}), &state);
            assert_eq!(
                app.callback(&session, &good).err(),
                Some(CallbackError::NoLogin),
                "{what}"
            );
        }
        assert_eq!(
            app.callback(&Session::default(), &HashMap::new()).err(),
            Some(CallbackError::NoLogin)
        );
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_session_and_changes_at_login() {
        let key = SigningKey::from_seed([6; 32]);
        let app = app(&key);
        assert_eq!(app.csrf_token(&Session::default()), None);
        assert!(!app.csrf_ok(&Session::default(), ""));
        let (session, state) = start(&app, None);
        let before = app.csrf_token(&session).expect("token");
        assert!(app.csrf_ok(&session, &before));
        assert!(!app.csrf_ok(&session, "x"));
        let done = app
            .callback(&session, &query(&key, &token(&key, &state, |_| {}), &state))
            .expect("login");
        let reply = done.redirect();
        let id = header(&reply, "set-cookie")
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("oauth_session="))
            .map(str::to_string);
        let after = app.lookup(id);
        assert!(app.csrf_ok(&after, &app.csrf_token(&after).expect("token")));
        assert!(!app.csrf_ok(&after, &before), "the pre-login token dies");
    }

    #[test]
    fn a_token_id_is_accepted_once() {
        let key = SigningKey::from_seed([4; 32]);
        let app = app(&key);
        let (session, state) = start(&app, None);
        let first = token(&key, &state, |_| {});
        app.callback(&session, &query(&key, &first, &state))
            .expect("first");
        let (session, state) = start(&app, None);
        let again = token(&key, &state, |c| c.jti = first.jti.clone());
        assert_eq!(
            app.callback(&session, &query(&key, &again, &state)).err(),
            Some(CallbackError::Replayed)
        );
    }

    /// Sessions whose store is down.
    struct Down;

    impl SessionStore for Down {
        fn get(&self, _: &str, _: i64) -> Result<Option<SessionData>, Unavailable> {
            Err(Unavailable("down".into()))
        }
        fn insert(&self, _: &str, _: &SessionData, _: usize, _: i64) -> Result<(), Unavailable> {
            Err(Unavailable("down".into()))
        }
        fn set_pending(&self, _: &str, _: &Pending) -> Result<bool, Unavailable> {
            Err(Unavailable("down".into()))
        }
        fn take_pending(&self, _: &str) -> Result<Option<Pending>, Unavailable> {
            Err(Unavailable("down".into()))
        }
        fn remove(&self, _: &str) -> Result<(), Unavailable> {
            Err(Unavailable("down".into()))
        }
        fn first_use(&self, _: &str, _: i64, _: i64) -> Result<bool, Unavailable> {
            Err(Unavailable("down".into()))
        }
    }

    #[test]
    fn a_session_store_that_is_down_answers_try_again_and_lets_nobody_in() {
        let key = SigningKey::from_seed([7; 32]);
        let app = app(&key).with_sessions(Arc::new(Down), [9; 32]);
        let reply = app.login(&Session::default(), "github", CALLBACK, None);
        assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&reply, "retry-after"), "5");
        assert!(header(&reply, "set-cookie").is_empty());
        let session = app.lookup(Some("some-id".into()));
        assert!(session.user.is_none() && session.id.is_none());
        let with_id = Session {
            id: Some("some-id".into()),
            user: None,
        };
        assert_eq!(
            app.callback(&with_id, &HashMap::new()).err(),
            Some(CallbackError::Unavailable)
        );
        assert!(app.open_session(token_user(), true).is_err());
        let out = app.logout(&with_id, "/");
        assert_eq!(out.status(), StatusCode::SEE_OTHER, "the cookie is cleared");
    }

    fn token_user() -> User {
        User {
            provider: "github".into(),
            info: Map::new(),
            identity: Some("github:octocat".into()),
            groups: Vec::new(),
            logged_in: 1,
        }
    }

    #[test]
    fn a_session_ends_with_its_time() {
        let key = SigningKey::from_seed([8; 32]);
        let app = app(&key).with_session_ttl(Duration::from_secs(60));
        let cookie = app.open_session(token_user(), true).expect("open");
        assert!(
            cookie.contains("Max-Age=60") && cookie.contains("Secure"),
            "{cookie}"
        );
        let id = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("oauth_session="))
            .map(str::to_string);
        assert!(app.lookup(id.clone()).user.is_some());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            // The clock follows tokio's paused time.
            tokio::time::advance(Duration::from_secs(61)).await;
            assert!(app.lookup(id).user.is_none(), "ended");
        });
    }

    #[test]
    fn next_url_and_provider_are_checked_at_login() {
        let key = SigningKey::from_seed([5; 32]);
        let app = app(&key);
        let reply = app.login(&Session::default(), "gitlab", CALLBACK, None);
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
        let (session, state) = start(&app, Some("https://evil.net/"));
        let done = app
            .callback(&session, &query(&key, &token(&key, &state, |_| {}), &state))
            .expect("login");
        assert_eq!(done.next_url, "/");
    }
}
