//! The web console under `/console`: server-rendered pages (maud) for operators, logged in
//! through cockpit's own OAuth2 server as one of its apps (`oauth::client`), and talking to the
//! core only through [`AysClient`], with the REST API's roles.
//!
//! ```text
//! browser ── GET /console ─► no session ─► 303 /console/login?next_url=/console
//!         ── GET /console/login/start?next_url ─► OAuthApp::login ─► 303 /oauth/authorize?…
//!         … proxy and [login] provider …
//!         ── GET /console/callback?jwt&state ─► OAuthApp::callback (rotated session) ─► next_url
//!         ── POST /console/… (form: csrf=…) ─► session? CSRF token of the session? same origin?
//!              role of the identity (auth::access, as REST) ─► AysClient with the Audit entry
//! ```
//!
//! Every state-changing request is a POST that carries the session's CSRF token (a form field,
//! or `X-CSRF-Token` for `fetch`) and comes from this origin (`Origin` or `Sec-Fetch-Site`);
//! a request whose role is below the action's gets 403 and a `denied` audit row, and the page
//! that would offer it does not. With `[mode].prod = false` (every REST caller is an admin
//! then) or `[debug] console_dev_login = true` the login page also offers a development login
//! as `dev:local`, an admin, with no provider.

mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::actors::Shared;
use crate::auth::access::{Access, Action, Principal, Role, refusal};
use crate::auth::approvals;
use crate::auth::audit::{self, Audit, Door, Outcome};
use crate::client::{AysClient, AysError, RunRequest};
use crate::oauth::client::{OAuthApp, ProxyClientConfig, Session, User};
use crate::oauth::sessions::StoreSessions;
use crate::oauth::token;
use crate::store::{Origin, RunState};

/// The largest form accepted (a blueprint is inside it).
const MAX_FORM: u64 = 1024 * 1024;

/// Runs per page of the runs list.
pub const RUNS_PAGE: usize = 50;

/// The console's path prefix.
const BASE: &str = "/console";

/// The setting holding the key the console's CSRF tokens are derived with (made on first start;
/// it lives as long as the sessions it protects, in the same store).
const CSRF_KEY_SETTING: &str = "console_csrf_key";

/// The console's CSRF key, from the store (made there on first use).
fn stored_csrf_key(store: &crate::store::Store) -> Result<[u8; 32], String> {
    let text = store
        .secret_setting(CSRF_KEY_SETTING)
        .map_err(|err| err.to_string())?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&text, &mut key).map_err(|err| err.to_string())?;
    Ok(key)
}

/// The embedded stylesheet.
const CSS: &str = include_str!("console.css");

/// The embedded script (live logs, the blueprint check, confirm dialogs).
const JS: &str = include_str!("console.js");

/// What every console request shares: the app side of the OAuth server, the role rules.
struct Console {
    /// Sessions, logins through the proxy, CSRF tokens.
    app: OAuthApp,
    /// The console's callback URL at the proxy, when the proxy is configured.
    callback: Option<String>,
    /// The provider offered (the `[login]` provider, else the first configured).
    provider: Option<String>,
    /// `[mode].prod = false`: a development login is offered.
    dev: bool,
    /// `[access]`.
    access: Access,
    /// The store, for audit rows and approvals.
    shared: Shared,
    /// The live-log feeds, shared with the REST route.
    feeds: Arc<crate::api::runs::Feeds>,
}

/// The request as the console judges it.
#[derive(Clone)]
struct Req {
    /// The session (anonymous when none).
    session: Session,
    /// Path and query, for `next_url`.
    path: String,
    /// `Origin`.
    origin: Option<String>,
    /// `Host`.
    host: Option<String>,
    /// `Sec-Fetch-Site`.
    fetch_site: Option<String>,
    /// `X-CSRF-Token` (for `fetch`).
    csrf_header: Option<String>,
}

/// A logged-in person with their role, as a page sees them.
#[derive(Clone)]
pub(crate) struct Who {
    /// Identity and groups.
    pub principal: Principal,
    /// Their role, if any.
    pub role: Option<Role>,
    /// The session's CSRF token, put into every form.
    pub csrf: String,
}

impl Who {
    /// Whether the role allows `action` (what the pages offer).
    pub fn may(&self, action: Action) -> bool {
        self.role >= Some(action.role())
    }
}

/// The form fields of a POST.
type Form = HashMap<String, String>;

impl Console {
    /// The console of this configuration; `None` when neither the OAuth server nor the
    /// development mode can log anyone in.
    fn new(shared: Shared, feeds: Arc<crate::api::runs::Feeds>) -> Option<Console> {
        let config = &shared.config;
        let dev = !config.mode.prod || config.debug.console_dev_login;
        let proxy = config
            .oauth_proxy
            .as_ref()
            .zip(shared.proxy_key.as_ref())
            .and_then(|(proxy, key)| Some((proxy, key, proxy.console_callback()?)));
        let names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let provider = config
            .login
            .provider
            .clone()
            .filter(|p| names.contains(p))
            .or_else(|| names.first().cloned());
        let (app, callback) = match proxy {
            Some((proxy, key, callback)) => {
                let app = OAuthApp::new(
                    ProxyClientConfig {
                        url: proxy.url.clone(),
                        verify_key: key.public_hex(),
                        providers: provider.iter().cloned().collect(),
                    },
                    "/console/login",
                )
                .ok()?;
                (app, Some(callback))
            }
            None if dev => {
                // Sessions only: no proxy, so no login token can ever verify.
                let app = OAuthApp::new(
                    ProxyClientConfig {
                        url: String::new(),
                        verify_key: token::SigningKey::generate().public_hex(),
                        providers: Vec::new(),
                    },
                    "/console/login",
                )
                .ok()?;
                (app, None)
            }
            None => return None,
        };
        // Sessions in the store: a restart, or the replica that takes over, logs nobody out.
        let app = match stored_csrf_key(&shared.store) {
            Ok(csrf_key) => app.with_sessions(
                Arc::new(StoreSessions::new(shared.store.clone(), "console")),
                csrf_key,
            ),
            Err(err) => {
                tracing::warn!(%err, "the console's CSRF key could not be read; sessions in memory");
                app
            }
        };
        Some(Console {
            app,
            provider: callback.as_ref().and(provider),
            callback,
            dev,
            access: config.access_rules(),
            shared,
            feeds,
        })
    }

    /// The logged-in person of `req`, or the reply that sends them to log in (a revoked
    /// identity's session ends).
    fn who(&self, req: &Req) -> Result<Who, Box<Response>> {
        let login = || {
            see_other(&format!(
                "{BASE}/login?{}",
                encode(&[("next_url", req.path.as_str())])
            ))
        };
        let Some(user) = &req.session.user else {
            return Err(Box::new(login()));
        };
        let Some(identity) = user.identity.clone() else {
            return Err(Box::new(self.app.logout(&req.session, "/console/login")));
        };
        let revoked = self
            .shared
            .revocations
            .as_ref()
            .is_some_and(|r| r.refuses(&identity, u64::try_from(user.logged_in).ok()));
        if revoked {
            return Err(Box::new(self.app.logout(&req.session, "/console/login")));
        }
        let principal = Principal::new(identity, user.groups.clone());
        let role = if user.provider == DEV_PROVIDER {
            Some(Role::Admin)
        } else {
            self.access.role(&principal)
        };
        Ok(Who {
            principal,
            role,
            csrf: self.app.csrf_token(&req.session).unwrap_or_default(),
        })
    }

    /// [`Console::who`], and for a state change: the session's CSRF token (the `csrf` field or
    /// `X-CSRF-Token`) and a request from this origin; 403 otherwise.
    fn poster(&self, req: &Req, form: &Form) -> Result<Who, Box<Response>> {
        if let Err(why) = same_origin(req) {
            return Err(Box::new(forbidden(why)));
        }
        let token = form
            .get("csrf")
            .or(req.csrf_header.as_ref())
            .map(String::as_str)
            .unwrap_or_default();
        if req.session.user.is_some() && !self.app.csrf_ok(&req.session, token) {
            return Err(Box::new(forbidden(
                "the form's CSRF token is not this session's: reload the page and try again",
            )));
        }
        self.who(req)
    }

    /// Whether `who` may do what the REST request `method rest_path` does (its action and role
    /// from the REST API's own table, [`crate::api::paths::ROUTES`], so the console can never
    /// allow what REST refuses to the same identity) on `target`: the audit entry of the change
    /// with its action, or the reply (403 with a `denied` audit row; 202 when
    /// `[access].two_person` holds it; 404 for no such REST route).
    fn allow(
        &self,
        who: &Who,
        method: &str,
        rest_path: &str,
        target: &str,
    ) -> Result<(Option<Audit>, Action), Box<Response>> {
        let Some(rule) = crate::api::paths::route(method, rest_path) else {
            return Err(Box::new(pages::message(
                StatusCode::NOT_FOUND,
                Some(who),
                "Not found",
                "no such page",
            )));
        };
        let action = rule.action;
        let identity = &who.principal.identity;
        if who.role < Some(rule.role) {
            let why = refusal(rule.role, who.role);
            let row = audit::record(
                Door::Console,
                identity,
                action,
                target,
                &Outcome::Denied(why.clone()),
            );
            audit::write(&self.shared.store, &row);
            return Err(Box::new(pages::message(
                StatusCode::FORBIDDEN,
                Some(who),
                "Not allowed",
                &why,
            )));
        }
        if self.access.two_person(action) {
            return Err(Box::new(
                match approvals::request(
                    &self.shared.store,
                    Door::Console,
                    identity,
                    action,
                    target,
                ) {
                    Ok(id) => pages::message(
                        StatusCode::ACCEPTED,
                        Some(who),
                        "Held for a second admin",
                        &format!(
                            "{} of {target} needs a second admin: POST /auth/approvals/{id} (or /approve {id} in Telegram)",
                            action.as_str()
                        ),
                    ),
                    Err(_) => pages::message(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some(who),
                        "Try again",
                        "the approval could not be recorded",
                    ),
                },
            ));
        }
        let audit = action
            .changes()
            .then(|| Audit::new(Door::Console, identity, action, target));
        Ok((audit, action))
    }

    /// The `error` audit row of a change that failed (the core wrote the `ok` row of one that
    /// succeeded).
    fn failed(&self, who: &Who, action: Action, target: &str, err: &AysError) {
        let outcome = Outcome::Error(err.to_string());
        let row = audit::record(
            Door::Console,
            &who.principal.identity,
            action,
            target,
            &outcome,
        );
        audit::write(&self.shared.store, &row);
    }
}

/// The provider name of the development login's users.
const DEV_PROVIDER: &str = "development";

/// The identity of the development login (an admin, as every caller of a development server).
const DEV_IDENTITY: &str = "dev:local";

/// A state change must come from this origin: `Sec-Fetch-Site: same-origin`, else an `Origin`
/// naming this `Host`.
fn same_origin(req: &Req) -> Result<(), &'static str> {
    let ok = crate::api::auth::same_origin(
        req.fetch_site.as_deref(),
        req.origin.as_deref(),
        req.host.as_deref(),
    );
    if ok {
        Ok(())
    } else {
        Err("a console change must come from the console's own pages (Origin or Sec-Fetch-Site)")
    }
}

/// `a=b&c=d`.
fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A 303 to `location`.
fn see_other(location: &str) -> Response {
    let mut reply = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = warp::http::HeaderValue::from_str(location) {
        reply
            .headers_mut()
            .insert(warp::http::header::LOCATION, value);
    }
    reply
}

/// A 403 page.
fn forbidden(why: &str) -> Response {
    pages::message(StatusCode::FORBIDDEN, None, "Refused", why)
}

/// The page for a failed core call.
fn failure(who: &Who, err: &AysError) -> Response {
    let status = crate::api::reply::status_of(err);
    pages::message(status, Some(who), "That did not work", &err.to_string())
}

/// The request filter: session and the headers the checks read.
fn request(app: OAuthApp) -> BoxedFilter<(Req,)> {
    let header = |name: &'static str| warp::header::optional::<String>(name);
    app.session()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(header("origin"))
        .and(header("host"))
        .and(header("sec-fetch-site"))
        .and(header("x-csrf-token"))
        .map(
            |session: Session,
             path: warp::path::FullPath,
             query: String,
             origin,
             host,
             fetch_site,
             csrf_header| {
                let mut path = path.as_str().to_string();
                if !query.is_empty() {
                    path = format!("{path}?{query}");
                }
                Req {
                    session,
                    path,
                    origin,
                    host,
                    fetch_site,
                    csrf_header,
                }
            },
        )
        .boxed()
}

/// A form body (at most [`MAX_FORM`]).
fn form() -> BoxedFilter<(Form,)> {
    warp::body::content_length_limit(MAX_FORM)
        .and(warp::body::form::<Vec<(String, String)>>())
        .map(|pairs: Vec<(String, String)>| pairs.into_iter().collect::<Form>())
        .boxed()
}

/// Every `/console` route (a 404 page for all of them when the console is off).
pub fn routes(shared: Shared, feeds: Arc<crate::api::runs::Feeds>) -> BoxedFilter<(Response,)> {
    let Some(console) = Console::new(shared, feeds) else {
        return warp::path("console")
            .map(|| {
                pages::message(
                    StatusCode::NOT_FOUND,
                    None,
                    "The console is off",
                    "configure [oauth_proxy] (and a [[oauth_provider]]) to log in to the console",
                )
            })
            .boxed();
    };
    let req = request(console.app.clone());
    let console = Arc::new(console);
    let c = move || {
        let console = console.clone();
        warp::any().map(move || console.clone())
    };
    let get = || warp::get().and(c()).and(req.clone());
    let post = || warp::post().and(c()).and(req.clone());

    let assets = vec![
        warp::path!("console" / "assets" / "console.css")
            .and(warp::get())
            .map(|| asset(CSS, "text/css; charset=utf-8"))
            .boxed(),
        warp::path!("console" / "assets" / "console.js")
            .and(warp::get())
            .map(|| asset(JS, "text/javascript; charset=utf-8"))
            .boxed(),
    ];
    let mut all = assets;
    all.extend(vec![
        warp::path!("console" / "login")
            .and(get())
            .then(login_page)
            .boxed(),
        warp::path!("console" / "login" / "start")
            .and(get())
            .then(login_start)
            .boxed(),
        warp::path!("console" / "login" / "dev")
            .and(post())
            .and(form())
            .then(login_dev)
            .boxed(),
        warp::path!("console" / "callback")
            .and(get())
            .and(warp::query::<HashMap<String, String>>())
            .then(callback)
            .boxed(),
        warp::path!("console" / "logout")
            .and(post())
            .and(form())
            .then(logout)
            .boxed(),
        warp::path!("console").and(get()).then(repos_page).boxed(),
        warp::path!("console" / "repos")
            .and(post())
            .and(form())
            .then(create_repo)
            .boxed(),
        warp::path!("console" / "repos" / String)
            .and(get())
            .then(repo_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "delete")
            .and(post())
            .and(form())
            .then(delete_repo)
            .boxed(),
        warp::path!("console" / "repos" / String / "check")
            .and(post())
            .and(form())
            .then(check_blueprint)
            .boxed(),
        warp::path!("console" / "repos" / String / "blueprints")
            .and(post())
            .and(form())
            .then(new_blueprint)
            .boxed(),
        warp::path!("console" / "repos" / String / "blueprints" / String)
            .and(get())
            .then(blueprint_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "blueprints" / String)
            .and(post())
            .and(form())
            .then(save_blueprint)
            .boxed(),
        warp::path!("console" / "repos" / String / "blueprints" / String / String)
            .and(post())
            .and(form())
            .then(blueprint_command)
            .boxed(),
        warp::path!("console" / "tokens")
            .and(get())
            .then(access::tokens_page)
            .boxed(),
        warp::path!("console" / "tokens")
            .and(post())
            .and(form())
            .then(access::create_token)
            .boxed(),
        warp::path!("console" / "tokens" / String / "revoke")
            .and(post())
            .and(form())
            .then(access::revoke_token)
            .boxed(),
        warp::path!("console" / "users")
            .and(get())
            .then(access::users_page)
            .boxed(),
        warp::path!("console" / "users" / "revoke")
            .and(post())
            .and(form())
            .then(access::revoke_user)
            .boxed(),
        warp::path!("console" / "audit")
            .and(get())
            .and(warp::query::<HashMap<String, String>>())
            .then(access::audit_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "templates")
            .and(get())
            .then(templates_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "templates" / String)
            .and(get())
            .then(template_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "services")
            .and(get())
            .and(warp::query::<HashMap<String, String>>())
            .then(services_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "graph")
            .and(get())
            .then(graph_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "services" / String / String)
            .and(get())
            .then(service_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "services" / String / String / String)
            .and(post())
            .and(form())
            .then(run_action)
            .boxed(),
        warp::path!("console" / "repos" / String / "runs")
            .and(get())
            .and(warp::query::<HashMap<String, String>>())
            .then(runs_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "runs")
            .and(post())
            .and(form())
            .then(start_run)
            .boxed(),
        warp::path!("console" / "repos" / String / "runs" / String)
            .and(get())
            .then(run_page)
            .boxed(),
        warp::path!("console" / "repos" / String / "runs" / String / "logs")
            .and(get())
            .and(warp::header::optional::<String>("last-event-id"))
            .then(run_logs)
            .boxed(),
        warp::path!("console" / "repos" / String / "runs" / String / String)
            .and(post())
            .and(form())
            .then(run_command)
            .boxed(),
    ]);
    let routes = crate::api::reply::one_of(all);
    // Anything else under /console: a page, not the API's JSON.
    let missing = warp::path("console")
        .map(|| pages::message(StatusCode::NOT_FOUND, None, "Not found", "no such page"))
        .boxed();
    routes
        .or(missing)
        .unify()
        .map(|mut response: Response| {
            security_headers(&mut response);
            response
        })
        .boxed()
}

/// Headers every console page carries: no framing by other sites, no sniffing, scripts and
/// styles only from this origin (the pages have no inline script).
fn security_headers(response: &mut Response) {
    let headers = response.headers_mut();
    let pairs = [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    ];
    for (name, value) in pairs {
        headers.insert(name, warp::http::HeaderValue::from_static(value));
    }
}

/// An embedded asset, cacheable for an hour.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        warp::http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// The shared console, as handlers get it.
type C = Arc<Console>;

/// Unwraps a `Result<T, Box<Response>>` or answers with its `Response`.
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return *response,
        }
    };
}

mod access;

/// A 500 page for a store failure (logged; its details stay in the log).
fn internal(who: &Who, err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, "console: store failure");
    pages::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(who),
        "That did not work",
        "internal error; see the server log",
    )
}

/// A 400 page.
fn bad_request(who: &Who, why: &str) -> Response {
    pages::message(StatusCode::BAD_REQUEST, Some(who), "That did not work", why)
}

/// `GET /console/login`: the provider's button, and the development login when offered.
async fn login_page(c: C, req: Req) -> Response {
    let next = next_of(&req.path);
    pages::login(c.provider.as_deref(), c.dev, &next)
}

/// A query parameter of a path with its query.
fn query_value(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `next_url` of a console path's query: a local path, else `/console`.
fn next_of(path: &str) -> String {
    query_value(path, "next_url")
        .filter(|v| token::local_path(v).is_some())
        .unwrap_or_else(|| BASE.to_string())
}

/// `GET /console/login/start`: to the OAuth server with the `[login]` provider.
async fn login_start(c: C, req: Req) -> Response {
    let (Some(provider), Some(callback)) = (&c.provider, &c.callback) else {
        return pages::message(
            StatusCode::NOT_FOUND,
            None,
            "No login provider",
            "configure [oauth_proxy] and a [[oauth_provider]] to log in",
        );
    };
    let next = next_of(&req.path);
    c.app.login(&req.session, provider, callback, Some(&next))
}

/// `POST /console/login/dev`: the development login (only with `[mode].prod = false`).
async fn login_dev(c: C, req: Req, form: Form) -> Response {
    if !c.dev {
        return pages::message(StatusCode::NOT_FOUND, None, "Not found", "no such page");
    }
    if let Err(why) = same_origin(&req) {
        return forbidden(why);
    }
    let next = form
        .get("next_url")
        .map(String::as_str)
        .and_then(token::local_path)
        .unwrap_or(BASE)
        .to_string();
    let user = User {
        provider: DEV_PROVIDER.into(),
        info: serde_json::Map::new(),
        identity: Some(DEV_IDENTITY.into()),
        groups: Vec::new(),
        logged_in: crate::clock::now_secs(),
    };
    let cookie = match c.app.open_session(user, false) {
        Ok(cookie) => cookie,
        Err(err) => {
            tracing::warn!(%err, "the development login could not open a session");
            return pages::message(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Try again",
                "Logins are unavailable for a moment; try again shortly.",
            );
        }
    };
    let mut reply = see_other(&next);
    if let Ok(value) = warp::http::HeaderValue::from_str(&cookie) {
        reply
            .headers_mut()
            .append(warp::http::header::SET_COOKIE, value);
    }
    reply
}

/// `GET /console/callback`: the OAuth server's answer; a login without an identity is refused.
async fn callback(c: C, req: Req, query: HashMap<String, String>) -> Response {
    match c.app.callback(&req.session, &query) {
        Ok(done) if done.user.identity.is_none() => pages::message(
            StatusCode::FORBIDDEN,
            None,
            "Login failed",
            "the login provider did not say who you are; ask an admin to check [[oauth_provider]] (identity_claim)",
        ),
        // As the bot's login: only members of `[login].allowed_groups` (when set) log in. The
        // new session's cookie is never sent, so nobody holds it.
        Ok(done) if !crate::oauth::login::allowed(&c.shared.config, &done.user.groups) => {
            pages::message(
                StatusCode::FORBIDDEN,
                None,
                "Login refused",
                &format!(
                    "only members of {} may log in",
                    crate::oauth::login::allowed_in_words(&c.shared.config)
                ),
            )
        }
        Ok(done) => done.redirect(),
        Err(err) => err.into_response(),
    }
}

/// `POST /console/logout`.
async fn logout(c: C, req: Req, form: Form) -> Response {
    or_reply!(c.poster(&req, &form));
    c.app.logout(&req.session, "/console/login")
}

/// `GET /console`: the repositories.
async fn repos_page(c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[]), ""));
    match AysClient.list_repos().await {
        Ok(repos) => pages::repos(&who, &repos),
        Err(err) => failure(&who, &err),
    }
}

/// `POST /console/repos`: create a repository (from a git URL when given).
async fn create_repo(c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let name = form.get("name").cloned().unwrap_or_default();
    let (audit, action) = or_reply!(c.allow(&who, "POST", &ays(&[]), &name));
    let git_url = form
        .get("git_url")
        .filter(|u| !u.trim().is_empty())
        .cloned();
    match AysClient.create_repo(name.clone(), git_url, audit).await {
        Ok(repo) => see_other(&format!("{BASE}/repos/{}", path_part(&repo.name))),
        Err(err) => {
            c.failed(&who, action, &name, &err);
            failure(&who, &err)
        }
    }
}

/// `GET /console/repos/{repo}`: blueprints, the new blueprint form, runs.
async fn repo_page(repo: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "blueprint"]), &repo));
    let blueprints = match AysClient.list_blueprints(&repo, true).await {
        Ok(list) => list,
        Err(err) => return failure(&who, &err),
    };
    let runs = AysClient
        .list_runs_page(&repo, None, None, 10)
        .await
        .map(|(runs, _)| runs)
        .unwrap_or_default();
    pages::repo(&who, &repo, &blueprints, &runs)
}

/// `POST /console/repos/{repo}/delete` (admin).
async fn delete_repo(repo: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let (audit, action) = or_reply!(c.allow(&who, "DELETE", &ays(&[&repo]), &repo));
    match AysClient.delete_repo(repo.clone(), audit).await {
        Ok(()) => see_other(BASE),
        Err(err) => {
            c.failed(&who, action, &repo, &err);
            failure(&who, &err)
        }
    }
}

/// One problem of a blueprint with its line, when it can be told.
#[derive(serde::Serialize, Clone)]
pub(crate) struct LinedProblem {
    /// 1-based line.
    pub line: Option<usize>,
    /// `location: message`.
    pub text: String,
}

/// The problems of a blueprint text, with their lines (what saving refuses): YAML syntax and
/// the blueprint's format, by the engine's own parser.
fn problems_of(name: &str, content: &str) -> Vec<LinedProblem> {
    match crate::engine::blueprint::Blueprint::parse(name, content) {
        Ok(_) => Vec::new(),
        Err(problems) => with_lines(
            name,
            content,
            problems.into_iter().map(|p| p.to_string()).collect(),
        ),
    }
}

/// Problem texts with their lines in `content`.
fn with_lines(name: &str, content: &str, problems: Vec<String>) -> Vec<LinedProblem> {
    problems
        .into_iter()
        .map(|text| LinedProblem {
            line: crate::engine::lines::problem_line(name, content, &text),
            text,
        })
        .collect()
}

/// `POST /console/repos/{repo}/check` (`fetch`): `{"problems": [{line, text}]}`.
async fn check_blueprint(repo: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "blueprint"]), &repo));
    let name = form
        .get("name")
        .filter(|n| !n.is_empty())
        .map_or("blueprint.yaml", String::as_str);
    let content = form.get("content").map_or("", String::as_str);
    // Its format first; then, when it reads, everything executing it would meet (the
    // templates' fields and types, links, a consumer loop), against the repository as it is.
    let mut problems = problems_of(name, content);
    if problems.is_empty() {
        match AysClient
            .check_blueprint(&repo, name.to_string(), content.to_string())
            .await
        {
            Ok(found) => problems = with_lines(name, content, found),
            Err(err) => return failure(&who, &err),
        }
    }
    warp::reply::json(&serde_json::json!({ "problems": problems })).into_response()
}

/// `POST /console/repos/{repo}/blueprints`: a new blueprint, refused with its problems shown.
async fn new_blueprint(repo: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let name = form.get("name").cloned().unwrap_or_default();
    let target = format!("{repo}/{name}");
    let (audit, _) = or_reply!(c.allow(&who, "POST", &ays(&[&repo, "blueprint"]), &target));
    let content = form.get("content").cloned().unwrap_or_default();
    put_blueprint(&c, &who, &repo, name, content, true, audit).await
}

/// `POST /console/repos/{repo}/blueprints/{bp}`: save, refused with its problems shown.
async fn save_blueprint(repo: String, name: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let target = format!("{repo}/{name}");
    let rest = ays(&[&repo, "blueprint", &name]);
    let (audit, _) = or_reply!(c.allow(&who, "PUT", &rest, &target));
    let content = form.get("content").cloned().unwrap_or_default();
    put_blueprint(&c, &who, &repo, name, content, false, audit).await
}

/// Saves a blueprint unless it has problems (then the editor again, 422, nothing saved).
async fn put_blueprint(
    c: &Console,
    who: &Who,
    repo: &str,
    name: String,
    content: String,
    create: bool,
    audit: Option<Audit>,
) -> Response {
    let target = format!("{repo}/{name}");
    let problems = problems_of(&name, &content);
    if !problems.is_empty() {
        let err = AysError::Invalid(problems.iter().map(|p| p.text.clone()).collect());
        c.failed(who, Action::BlueprintAdd, &target, &err);
        return pages::editor(
            StatusCode::UNPROCESSABLE_ENTITY,
            who,
            repo,
            &name,
            &content,
            create,
            false,
            &problems,
            None,
        );
    }
    match AysClient
        .put_blueprint(repo, name.clone(), content.clone(), create, audit)
        .await
    {
        Ok(bp) => see_other(&format!(
            "{BASE}/repos/{}/blueprints/{}",
            path_part(repo),
            path_part(&bp.name)
        )),
        Err(err) => {
            c.failed(who, Action::BlueprintAdd, &target, &err);
            let problems = match &err {
                AysError::Invalid(list) => with_lines(&name, &content, list.clone()),
                other => vec![LinedProblem {
                    line: None,
                    text: other.to_string(),
                }],
            };
            pages::editor(
                crate::api::reply::status_of(&err),
                who,
                repo,
                &name,
                &content,
                create,
                false,
                &problems,
                None,
            )
        }
    }
}

/// `GET /console/repos/{repo}/blueprints/{bp}`: the editor (`_new` for a new one).
async fn blueprint_page(repo: String, name: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    let rest = ays(&[&repo, "blueprint", &name]);
    or_reply!(c.allow(&who, "GET", &rest, &repo));
    if name == "_new" {
        return pages::editor(StatusCode::OK, &who, &repo, "", "", true, false, &[], None);
    }
    let executed = query_value(&req.path, "executed").and_then(|n| n.parse::<usize>().ok());
    let note = executed.map(|n| format!("Executed: {n} service(s) created or changed."));
    match AysClient.get_blueprint(&repo, name.clone()).await {
        Ok(bp) => pages::editor(
            StatusCode::OK,
            &who,
            &repo,
            &bp.name,
            &bp.content,
            false,
            bp.archived,
            &[],
            note.as_deref(),
        ),
        Err(err) => failure(&who, &err),
    }
}

/// `POST /console/repos/{repo}/blueprints/{bp}/{execute|archive|restore}`.
async fn blueprint_command(
    repo: String,
    name: String,
    command: String,
    c: C,
    req: Req,
    form: Form,
) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let target = format!("{repo}/{name}");
    // The REST request that does the same.
    let (method, rest) = match command.as_str() {
        "execute" => ("POST", ays(&[&repo, "blueprint", &name])),
        other => ("PUT", ays(&[&repo, "blueprint", &name, other])),
    };
    let (audit, action) = or_reply!(c.allow(&who, method, &rest, &target));
    let back = |bp: &str| {
        see_other(&format!(
            "{BASE}/repos/{}/blueprints/{}",
            path_part(&repo),
            path_part(bp)
        ))
    };
    let result = match action {
        Action::BlueprintExecute => AysClient
            .execute_blueprint(&repo, name.clone(), audit)
            .await
            .map(|done| pages::executed(&repo, &name, &done.services)),
        other => AysClient
            .archive_blueprint(
                &repo,
                name.clone(),
                other == Action::BlueprintArchive,
                audit,
            )
            .await
            .map(|bp| back(&bp.name)),
    };
    match result {
        Ok(page) => page,
        Err(err) => {
            c.failed(&who, action, &target, &err);
            let content = AysClient
                .get_blueprint(&repo, name.clone())
                .await
                .map(|bp| bp.content)
                .unwrap_or_default();
            let problems = match &err {
                AysError::Invalid(list) => with_lines(&name, &content, list.clone()),
                other => vec![LinedProblem {
                    line: None,
                    text: other.to_string(),
                }],
            };
            pages::editor(
                crate::api::reply::status_of(&err),
                &who,
                &repo,
                &name,
                &content,
                false,
                false,
                &problems,
                None,
            )
        }
    }
}

/// `GET /console/repos/{repo}/templates`: each template's schema, actions and config.
async fn templates_page(repo: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "template"]), &repo));
    match AysClient.list_templates(&repo).await {
        Ok(templates) => pages::templates(&who, &repo, &templates),
        Err(err) => failure(&who, &err),
    }
}

/// `GET /console/repos/{repo}/templates/{name}`: one template with its actions' code.
async fn template_page(repo: String, name: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "template", &name]), &repo));
    match AysClient.get_template(&repo, &name).await {
        Ok(template) => pages::template(&who, &repo, &template),
        Err(err) => failure(&who, &err),
    }
}

/// The most services the graph page draws (it reads each one).
pub const GRAPH_MAX: usize = 200;

/// `GET /console/repos/{repo}/graph`: the service graph (parents and producers), as SVG.
async fn graph_page(repo: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "service"]), &repo));
    let all = match AysClient.list_services(&repo, None).await {
        Ok(all) => all,
        Err(err) => return failure(&who, &err),
    };
    if all.len() > GRAPH_MAX {
        return pages::message(
            StatusCode::OK,
            Some(&who),
            "Too many services to draw",
            &format!(
                "{repo} has {} services; the graph is drawn up to {GRAPH_MAX}. Each service's page links its parent, producers and consumers.",
                all.len()
            ),
        );
    }
    let mut services = Vec::with_capacity(all.len());
    for s in all {
        match AysClient.get_service(&repo, s.role, s.name).await {
            Ok(view) => services.push(view),
            Err(AysError::NotFound(_)) => {}
            Err(err) => return failure(&who, &err),
        }
    }
    pages::graph(&who, &repo, &services)
}

/// Services per page of the services list.
pub const SERVICES_PAGE: usize = 100;

/// `GET /console/repos/{repo}/services?page=`: a page of services.
async fn services_page(repo: String, c: C, req: Req, query: HashMap<String, String>) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "service"]), &repo));
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0);
    match AysClient.list_services(&repo, None).await {
        Ok(all) => {
            let from = page.saturating_mul(SERVICES_PAGE).min(all.len());
            let to = (from + SERVICES_PAGE).min(all.len());
            let more = to < all.len();
            pages::services(&who, &repo, &all[from..to], page, more, all.len())
        }
        Err(err) => failure(&who, &err),
    }
}

/// `GET /console/repos/{repo}/services/{role}/{name}`: state, data, links, actions.
async fn service_page(repo: String, role: String, name: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    let rest = ays(&[&repo, "service", &role, &name]);
    or_reply!(c.allow(&who, "GET", &rest, &repo));
    match AysClient.get_service(&repo, role, name).await {
        Ok(service) => pages::service(&who, &repo, &service),
        Err(err) => failure(&who, &err),
    }
}

/// `POST /console/repos/{repo}/services/{role}/{name}/{action}` (form: `args`, a JSON object):
/// what REST does in two requests, each checked as REST checks it: schedule the action with
/// its args (`POST …/service/{role}/{name}/action/{action}`), then start a run (`POST
/// …/aysrun`); to the run's page.
async fn run_action(
    repo: String,
    role: String,
    name: String,
    action_name: String,
    c: C,
    req: Req,
    form: Form,
) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let target = format!("{repo}/{role}/{name}");
    let rest = ays(&[&repo, "service", &role, &name, "action", &action_name]);
    let (audit, action) = or_reply!(c.allow(&who, "POST", &rest, &target));
    let (run_audit, run_action) = or_reply!(c.allow(&who, "POST", &ays(&[&repo, "aysrun"]), &repo));
    let args = match form.get("args").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => Some(value),
            Err(err) => {
                let err = AysError::Invalid(vec![format!("args are not JSON: {err}")]);
                c.failed(&who, action, &target, &err);
                return failure(&who, &err);
            }
        },
    };
    if let Err(err) = AysClient
        .schedule_action(&repo, role, name, action_name, args, audit)
        .await
    {
        c.failed(&who, action, &target, &err);
        return failure(&who, &err);
    }
    let request = RunRequest {
        simulate: false,
        callback_url: None,
        origin: Origin::Api,
        audit: run_audit,
    };
    match AysClient.create_run(&repo, request).await {
        Ok(run) => see_other(&run_path(&repo, &run.key)),
        Err(err) => {
            c.failed(&who, run_action, &repo, &err);
            failure(&who, &err)
        }
    }
}

/// `GET /console/repos/{repo}/runs?state=&cursor=`: a page of runs.
async fn runs_page(repo: String, c: C, req: Req, query: HashMap<String, String>) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "aysrun"]), &repo));
    let state = query
        .get("state")
        .filter(|s| !s.is_empty())
        .and_then(|s| RunState::parse(s));
    let cursor = query.get("cursor").filter(|s| !s.is_empty());
    match AysClient
        .list_runs_page(&repo, state, cursor.map(String::as_str), RUNS_PAGE)
        .await
    {
        Ok((runs, next)) => pages::runs(&who, &repo, &runs, state, next.as_deref()),
        Err(err) => failure(&who, &err),
    }
}

/// `POST /console/repos/{repo}/runs`: start a run of everything due.
async fn start_run(repo: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let (audit, action) = or_reply!(c.allow(&who, "POST", &ays(&[&repo, "aysrun"]), &repo));
    let request = RunRequest {
        simulate: false,
        callback_url: None,
        origin: Origin::Api,
        audit,
    };
    match AysClient.create_run(&repo, request).await {
        Ok(run) => see_other(&run_path(&repo, &run.key)),
        Err(err) => {
            c.failed(&who, action, &repo, &err);
            failure(&who, &err)
        }
    }
}

/// The console path of a run.
fn run_path(repo: &str, key: &str) -> String {
    format!("{BASE}/repos/{}/runs/{}", path_part(repo), path_part(key))
}

/// `GET /console/repos/{repo}/runs/{key}`: steps, jobs, the log (live while it runs).
async fn run_page(repo: String, key: String, c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", &ays(&[&repo, "aysrun", &key]), &repo));
    match AysClient.get_run(&repo, key).await {
        Ok(run) => pages::run(&who, &repo, &run),
        Err(err) => failure(&who, &err),
    }
}

/// `GET /console/repos/{repo}/runs/{key}/logs`: the REST API's log stream (SSE), for the page.
async fn run_logs(repo: String, key: String, c: C, req: Req, last: Option<String>) -> Response {
    let who = or_reply!(c.who(&req));
    let rest = ays(&[&repo, "aysrun", &key, "logs"]);
    or_reply!(c.allow(&who, "GET", &rest, &repo));
    let query = HashMap::from([("follow".to_string(), "true".to_string())]);
    crate::api::runs::run_logs(repo, key, query, last, c.shared.clone(), c.feeds.clone()).await
}

/// `POST /console/repos/{repo}/runs/{key}/{cancel|rerun}`.
async fn run_command(
    repo: String,
    key: String,
    command: String,
    c: C,
    req: Req,
    form: Form,
) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let target = format!("{repo}/{key}");
    let rest = ays(&[&repo, "aysrun", &key, &command]);
    let (audit, action) = or_reply!(c.allow(&who, "POST", &rest, &target));
    let result = if action == Action::RunCancel {
        let by = format!("the console ({})", who.principal.identity);
        AysClient.cancel_run(&repo, key, &by, audit).await
    } else {
        AysClient.rerun(&repo, key, Origin::Api, audit).await
    };
    match result {
        Ok(run) => see_other(&run_path(&repo, &run.key)),
        Err(err) => {
            c.failed(&who, action, &target, &err);
            failure(&who, &err)
        }
    }
}

/// The REST path of the same resource: `/ays/repository/<part>/<part>…` (each part encoded).
fn ays(parts: &[&str]) -> String {
    let mut path = "/ays/repository".to_string();
    for part in parts {
        path.push('/');
        path.push_str(&path_part(part));
    }
    path
}

/// A name as one percent-encoded path segment.
pub(crate) fn path_part(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
