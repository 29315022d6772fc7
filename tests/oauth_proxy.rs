//! The central OAuth2 server end to end: the real `cockpit` binary as the proxy, a fake
//! GitHub-shaped provider, and the example app (`examples/protected_app.rs`, served in-process),
//! driven by a small browser over real HTTP that follows each redirect by hand.

mod support;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[allow(dead_code)]
#[path = "../examples/protected_app.rs"]
mod protected_app;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cockpit::oauth::client::{OAuthApp, ProxyClientConfig};
use cockpit::oauth::token::{LoginClaims, SigningKey};
use fake_provider::{CLIENT_ID, CLIENT_SECRET, FakeProvider};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use support::Cockpit;

/// One answer as a browser sees it.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Vec<String>,
    body: String,
}

/// A browser: no automatic redirects, a cookie jar per origin.
struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: HashMap::new(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let parsed = Url::parse(url).expect("url");
        let origin = parsed.origin().ascii_serialization();
        let mut request = self.http.get(url);
        if let Some(cookies) = self.jar.get(&origin).filter(|c| !c.is_empty()) {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", header.join("; "));
        }
        let resp = request.send().await.expect("request");
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| parsed.join(l).expect("location").to_string());
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for cookie in &set_cookie {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let jar = self.jar.entry(origin.clone()).or_default();
                if value.is_empty() {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_string(), value.to_string());
                }
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page {
            status,
            location,
            set_cookie,
            body,
        }
    }

    /// Follows a redirect: asserts `page` is one and fetches its target.
    async fn follow(&mut self, page: &Page) -> Page {
        let location = page
            .location
            .clone()
            .unwrap_or_else(|| panic!("expected a redirect, got {page:?}"));
        self.get(&location).await
    }
}

fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_string()
}

/// The payload of a JWT, unverified.
fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

/// A cockpit proxy, the fake provider and the example app, wired together.
struct World {
    cockpit: Cockpit,
    provider: FakeProvider,
    /// `http://127.0.0.1:PORT/oauth`.
    proxy: String,
    /// `http://127.0.0.1:PORT` of the example app.
    app: String,
    /// The app's callback URL (allowed at the proxy).
    callback: String,
    /// Another app's callback URL, also allowed at the proxy.
    other_callback: String,
}

impl World {
    async fn start() -> World {
        let provider = FakeProvider::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind app");
        let app = format!("http://{}", listener.local_addr().expect("addr"));
        let callback = format!("{app}/test/callback");
        let other_callback = "http://127.0.0.1:9/other/callback".to_string();

        // The proxy's public URL names its port, so the port is chosen before the start; another
        // process could take it in between, so a failed start is retried on a new port.
        let mut started = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let dir = tempfile::tempdir().expect("tempdir");
            let text = format!(
                "{}[oauth_proxy]\nurl = \"http://127.0.0.1:{port}/oauth\"\n\
                 signing_key = \"{key}\"\n\
                 allowed_redirects = [\"{callback}\", \"{other_callback}\"]\n\n\
                 [[oauth_provider]]\nname = \"github\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = \"{CLIENT_SECRET}\"\n\
                 authorize_url = \"{p}/login/oauth/authorize\"\n\
                 access_token_url = \"{p}/login/oauth/access_token\"\n\
                 user_info_url = \"{p}/user\"\nscope = \"read:user user:email\"\n\
                 user_info_fields = [\"login\", \"email\"]\n",
                support::base_config(dir.path()).replace("port = 0", &format!("port = {port}")),
                key = dir.path().join("data/oauth_proxy.key").display(),
                p = provider.url,
            );
            let config = dir.path().join("config.toml");
            std::fs::write(&config, text).expect("config");
            let mut cockpit = Cockpit::spawn(dir, config);
            if cockpit
                .wait_for_log("cockpit ready", Duration::from_secs(30))
                .is_some()
            {
                cockpit.api = format!("http://127.0.0.1:{port}");
                started = Some((cockpit, port));
                break;
            }
        }
        let (cockpit, port) = started.expect("cockpit started");
        let proxy = format!("http://127.0.0.1:{port}/oauth");

        let verify_key = reqwest::get(format!("{proxy}/key"))
            .await
            .expect("key")
            .text()
            .await
            .expect("key text");
        let client = OAuthApp::new(
            ProxyClientConfig {
                url: proxy.clone(),
                verify_key,
                providers: vec!["github".into()],
            },
            "/test/login",
        )
        .expect("client");
        let routes = protected_app::routes(client, callback.clone());
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        World {
            cockpit,
            provider,
            proxy,
            app,
            callback,
            other_callback,
        }
    }

    /// The proxy's signing key, as an attacker who stole it (or a test) would hold it.
    fn signing_key(&self) -> SigningKey {
        let pem = std::fs::read_to_string(self.cockpit.data_dir().join("oauth_proxy.key"))
            .expect("key file");
        SigningKey::from_pem(&pem).expect("key")
    }

    /// Starts a login at the app in `browser`; returns the app's redirect to the proxy and the
    /// state the app keeps in the browser's session.
    async fn start_login(&self, browser: &mut Browser, next: &str) -> (Page, String) {
        let url = format!("{}/test/login?provider=github&next_url={next}", self.app);
        let to_proxy = browser.get(&url).await;
        assert_eq!(to_proxy.status, StatusCode::SEE_OTHER, "{to_proxy:?}");
        let location = to_proxy.location.clone().expect("location");
        assert_eq!(
            without_query(&location),
            format!("{}/authorize", self.proxy)
        );
        let state = query_of(&location)["state"].clone();
        (to_proxy, state)
    }

    /// Runs a whole login up to the proxy's redirect back to the app; returns that redirect.
    async fn login_until_app_callback(&self, browser: &mut Browser) -> (Page, String) {
        let (to_proxy, state) = self.start_login(browser, "/test").await;
        let to_provider = browser.follow(&to_proxy).await;
        let back_to_proxy = browser.follow(&to_provider).await;
        let to_app = browser.follow(&back_to_proxy).await;
        (to_app, state)
    }

    /// Delivers a token to the app's callback with `state`.
    async fn deliver(&self, browser: &mut Browser, jwt: &str, state: &str) -> Page {
        let url = format!(
            "{}?{}",
            self.callback,
            serde_urlencoded(&[("jwt", jwt), ("state", state)])
        );
        browser.get(&url).await
    }
}

fn serde_urlencoded(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .expect("url")
        .query()
        .unwrap_or_default()
        .to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test]
async fn an_anonymous_user_logs_in_through_the_proxy_and_comes_back_to_next_url() {
    let world = World::start().await;
    let mut browser = Browser::new();

    // Anonymous /test → the app's login route with next_url.
    let page = browser.get(&format!("{}/test?tab=2", world.app)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let to_login = page.location.clone().expect("location");
    assert_eq!(
        without_query(&to_login),
        format!("{}/test/login", world.app)
    );
    assert_eq!(query_of(&to_login)["next_url"], "/test?tab=2");
    let links = browser.follow(&page).await;
    assert_eq!(links.status, StatusCode::OK);
    assert!(
        links
            .body
            .contains("provider=github&amp;next_url=%2Ftest%3Ftab%3D2"),
        "{}",
        links.body
    );

    // The app → the proxy, with a session cookie set for the login in progress.
    let (to_proxy, app_state) = world.start_login(&mut browser, "%2Ftest%3Ftab%3D2").await;
    let pre_login_cookie = to_proxy
        .set_cookie
        .first()
        .cloned()
        .expect("session cookie");
    assert!(pre_login_cookie.contains("HttpOnly"), "{pre_login_cookie}");
    assert!(
        pre_login_cookie.contains("SameSite=Lax"),
        "{pre_login_cookie}"
    );
    assert!(
        !pre_login_cookie.contains("Secure"),
        "plain http: {pre_login_cookie}"
    );

    // The proxy → the provider: its own state, PKCE S256, its own callback.
    let to_provider = browser.follow(&to_proxy).await;
    assert_eq!(to_provider.status, StatusCode::FOUND, "{to_provider:?}");
    let authorize = to_provider.location.clone().expect("location");
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", world.provider.url)));
    let params = query_of(&authorize);
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["redirect_uri"], format!("{}/callback", world.proxy));
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["scope"], "read:user user:email");
    assert_ne!(params["state"], app_state, "the proxy uses its own state");
    assert!(!authorize.contains(CLIENT_SECRET));

    // The provider → the proxy's callback → the app's callback with a signed token.
    let back_to_proxy = browser.follow(&to_provider).await;
    let provider_callback = back_to_proxy.location.clone().expect("location");
    let to_app = browser.follow(&back_to_proxy).await;
    assert_eq!(to_app.status, StatusCode::FOUND, "{to_app:?}");
    let app_callback = to_app.location.clone().expect("location");
    assert_eq!(without_query(&app_callback), world.callback);
    let params = query_of(&app_callback);
    assert_eq!(params["state"], app_state);
    let claims = claims_of(&params["jwt"]);
    assert_eq!(claims["iss"], world.proxy);
    assert_eq!(claims["aud"], world.callback);
    assert_eq!(claims["nonce"], app_state);
    assert_eq!(claims["provider"], "github");
    assert_eq!(
        claims["user_info"],
        json!({"login": "octocat", "email": "octocat@example.com"}),
        "only user_info_fields are passed on"
    );
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    assert!(
        exp.unwrap_or(i64::MAX) - iat.unwrap_or(0) <= 300,
        "{claims}"
    );
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(params["jwt"].split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("header json");
    assert_eq!(header["alg"], "EdDSA");

    // The app's callback → back to next_url with a new session id.
    let to_next = browser.follow(&to_app).await;
    assert_eq!(to_next.status, StatusCode::SEE_OTHER, "{to_next:?}");
    assert_eq!(
        to_next.location.as_deref(),
        Some(format!("{}/test?tab=2", world.app).as_str())
    );
    let session_cookie = to_next.set_cookie.first().cloned().expect("rotated cookie");
    assert_ne!(
        session_cookie.split(';').next(),
        pre_login_cookie.split(';').next(),
        "the session id changes at login"
    );
    let protected = browser.follow(&to_next).await;
    assert_eq!(protected.status, StatusCode::OK, "{protected:?}");
    assert!(
        protected.body.contains("octocat@example.com"),
        "{}",
        protected.body
    );

    // Replays: the provider's callback (its state is single use) and the app's callback.
    let replay = browser.get(&provider_callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{replay:?}");
    assert_eq!(replay.location, None);
    let replay = browser.get(&app_callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{replay:?}");
    assert_eq!(replay.location, None);
    let mut thief = Browser::new();
    let stolen = thief.get(&app_callback).await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{stolen:?}");
    let still = browser.get(&format!("{}/test", world.app)).await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "a refused replay leaves the session alone"
    );

    // Logout ends the session.
    let out = browser.get(&format!("{}/test/logout", world.app)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let again = browser.get(&format!("{}/test", world.app)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "logged out");

    // The code was exchanged once with a PKCE verifier; the provider saw the secret only there.
    let calls = world.provider.token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, reqwest::StatusCode::OK);
    assert!(calls[0].1.contains_key("code_verifier"));

    // Neither the provider's secret nor the signing key (nor the token) reached the logs.
    let logs = world.cockpit.log_text();
    assert!(logs.contains("oauth proxy: login token issued"), "{logs}");
    let pem = std::fs::read_to_string(world.cockpit.data_dir().join("oauth_proxy.key"))
        .expect("key file");
    let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!logs.contains(CLIENT_SECRET), "secret in logs");
    assert!(!logs.contains(&key_body), "signing key in logs");
    assert!(!logs.contains(&params["jwt"]), "token in logs");
}

#[tokio::test]
async fn the_proxy_publishes_its_providers_and_key_and_keeps_the_key_file_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut world = World::start().await;
    let http = reqwest::Client::new();
    let providers: Value = http
        .get(format!("{}/providers", world.proxy))
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("json");
    assert_eq!(providers, json!(["github"]));
    let key = http
        .get(format!("{}/key", world.proxy))
        .send()
        .await
        .expect("key")
        .text()
        .await
        .expect("text");
    assert_eq!(key, world.signing_key().public_hex());
    assert!(key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()));
    let jwks: Value = http
        .get(format!("{}/jwks.json", world.proxy))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let x = jwks["keys"][0]["x"].as_str().expect("x");
    assert_eq!(hex_of(&URL_SAFE_NO_PAD.decode(x).expect("b64")), key);
    let doc: Value = http
        .get(format!("{}/openapi.json", world.cockpit.api))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in [
        "/oauth/authorize",
        "/oauth/key",
        "/oauth/jwks.json",
        "/oauth/providers",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }

    let path = world.cockpit.data_dir().join("oauth_proxy.key");
    let mode = std::fs::metadata(&path)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Restarted on the same data, the proxy keeps its key.
    world.cockpit.signal(libc::SIGTERM);
    assert!(world.cockpit.wait_exit(Duration::from_secs(20)).is_some());
    let dir = std::mem::replace(&mut world.cockpit.dir, tempfile::tempdir().expect("tmp"));
    let config = world.cockpit.config.clone();
    let mut again = Cockpit::spawn(dir, config);
    assert!(
        again
            .wait_for_log("cockpit ready", Duration::from_secs(30))
            .is_some(),
        "{}",
        again.log_text()
    );
    // A new client: the old one's pooled connection died with the first process.
    let key_again = reqwest::Client::new()
        .get(format!("{}/key", world.proxy))
        .send()
        .await
        .expect("key")
        .text()
        .await
        .expect("text");
    assert_eq!(key_again, key);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn authorize_refuses_redirects_outside_the_allowlist_without_redirecting() {
    let world = World::start().await;
    let mut browser = Browser::new();
    let authorize = |redirect: &str, provider: &str, state: &str| {
        format!(
            "{}/authorize?{}",
            world.proxy,
            serde_urlencoded(&[
                ("provider", provider),
                ("redirect_url", redirect),
                ("state", state)
            ])
        )
    };
    let app_host = world.app.trim_start_matches("http://").to_string();
    let evil = [
        format!("http://{app_host}.evil.net/test/callback"),
        format!("http://{app_host}/test/callback.evil.net"),
        format!("{}x", world.callback),
        format!("{}/", world.callback),
        format!("{}?next=http://evil.net", world.callback),
        format!("http://evil.net/?{}", world.callback),
        format!("http://user@{app_host}/test/callback"),
        world.callback.to_uppercase(),
        "http://evil.net/test/callback".to_string(),
        String::new(),
    ];
    for redirect in &evil {
        let page = browser.get(&authorize(redirect, "github", "s1")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{redirect}: {page:?}");
        assert_eq!(page.location, None, "{redirect}");
    }
    let missing = browser
        .get(&format!(
            "{}/authorize?provider=github&state=s1",
            world.proxy
        ))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let unknown = browser
        .get(&authorize(&world.callback, "gitlab", "s1"))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{unknown:?}");
    assert_eq!(unknown.location, None);
    let stateless = browser.get(&authorize(&world.callback, "github", "")).await;
    assert_eq!(stateless.status, StatusCode::BAD_REQUEST, "{stateless:?}");
    assert!(world.provider.authorize_calls().is_empty());

    // The exact URL passes (so the refusals above are about the URL).
    let ok = browser
        .get(&authorize(&world.callback, "github", "s1"))
        .await;
    assert_eq!(ok.status, StatusCode::FOUND, "{ok:?}");
}

#[tokio::test]
async fn the_app_refuses_foreign_expired_forged_and_replayed_tokens() {
    let world = World::start().await;
    let key = world.signing_key();

    // A genuine token for ANOTHER app (its redirect URL is allowed at the same proxy), delivered
    // to this app with this browser's own state.
    let mut browser = Browser::new();
    let (_, state) = world.start_login(&mut browser, "/test").await;
    let mut other = Browser::new();
    let url = format!(
        "{}/authorize?{}",
        world.proxy,
        serde_urlencoded(&[
            ("provider", "github"),
            ("redirect_url", &world.other_callback),
            ("state", &state)
        ])
    );
    let to_provider = other.get(&url).await;
    let back = other.follow(&to_provider).await;
    let to_other_app = other.follow(&back).await;
    let foreign = query_of(to_other_app.location.as_deref().expect("location"))["jwt"].clone();
    assert_eq!(claims_of(&foreign)["aud"], world.other_callback);
    let page = world.deliver(&mut browser, &foreign, &state).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{page:?}");

    // Tokens made with the proxy's own key, each with one thing wrong.
    let claims_for = |state: &str| {
        let mut info = serde_json::Map::new();
        info.insert("login".into(), json!("mallory"));
        LoginClaims::new(&world.proxy, &world.callback, state, "github", info, now())
    };
    let expired = |state: &str| {
        let mut c = claims_for(state);
        c.iat = now() - 1000;
        c.exp = now() - 700;
        key.sign(&c).expect("sign")
    };
    let other_key = |state: &str| {
        SigningKey::generate()
            .sign(&claims_for(state))
            .expect("sign")
    };
    let changed_field = |state: &str| {
        let jwt = key.sign(&claims_for(state)).expect("sign");
        let parts: Vec<&str> = jwt.split('.').collect();
        let mut payload = claims_of(&jwt);
        payload["user_info"]["login"] = json!("admin");
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("json"));
        format!("{}.{}.{}", parts[0], payload, parts[2])
    };
    let wrong_nonce = |_state: &str| key.sign(&claims_for("not-the-state")).expect("sign");
    type MakeToken<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, MakeToken)> = vec![
        ("expired", Box::new(expired)),
        ("signed by another key", Box::new(other_key)),
        ("a changed field", Box::new(changed_field)),
        ("nonce is not the session's state", Box::new(wrong_nonce)),
    ];
    for (what, make) in cases {
        let mut browser = Browser::new();
        let (_, state) = world.start_login(&mut browser, "/test").await;
        let page = world.deliver(&mut browser, &make(&state), &state).await;
        assert!(page.status.is_client_error(), "{what}: {page:?}");
        assert_ne!(page.status, StatusCode::SEE_OTHER, "{what}");
        let test = browser.get(&format!("{}/test", world.app)).await;
        assert_eq!(
            test.status,
            StatusCode::SEE_OTHER,
            "{what}: still anonymous"
        );
    }

    // A real login, then its jti again in a fresh browser whose state the token carries.
    let mut alice = Browser::new();
    let (to_app, _) = world.login_until_app_callback(&mut alice).await;
    let used = claims_of(&query_of(to_app.location.as_deref().expect("location"))["jwt"]);
    let done = alice.follow(&to_app).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    let mut mallory = Browser::new();
    let (_, state) = world.start_login(&mut mallory, "/test").await;
    let mut replay = claims_for(&state);
    replay.jti = used["jti"].as_str().expect("jti").to_string();
    let page = world
        .deliver(&mut mallory, &key.sign(&replay).expect("sign"), &state)
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{page:?}");
    assert!(page.body.contains("already used"), "{}", page.body);
    // The same token with a fresh jti would have passed: the jti alone made the difference.
    let mut fresh = Browser::new();
    let (_, state) = world.start_login(&mut fresh, "/test").await;
    let page = world
        .deliver(
            &mut fresh,
            &key.sign(&claims_for(&state)).expect("sign"),
            &state,
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
}

#[tokio::test]
async fn a_refusal_at_the_provider_reaches_the_app_as_an_error() {
    let world = World::start().await;
    world.provider.deny();
    let mut browser = Browser::new();
    let (to_app, state) = world.login_until_app_callback(&mut browser).await;
    assert_eq!(to_app.status, StatusCode::FOUND, "{to_app:?}");
    let location = to_app.location.clone().expect("location");
    assert_eq!(without_query(&location), world.callback);
    let params = query_of(&location);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], state);
    assert!(!params.contains_key("jwt"));
    let page = browser.follow(&to_app).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{page:?}");
    assert!(page.body.contains("access_denied"), "{}", page.body);
    assert!(world.provider.token_calls().is_empty());
    let test = browser.get(&format!("{}/test", world.app)).await;
    assert_eq!(test.status, StatusCode::SEE_OTHER, "still anonymous");
}
