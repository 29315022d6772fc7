//! Logging in to the bot through `[[oauth_provider]]`s, end to end: the real binary against a
//! fake Bot API, a strict GitHub stand-in (OAuth web flow, `/user`, `/user/orgs`,
//! `/user/teams`) and a strict OpenID Connect provider (discovery, JWKS, ES256 ID tokens with a
//! nonce, refresh tokens), all over real HTTP. Also the central OAuth server against providers
//! that want `client_secret_post` and answer form-encoded.
//!
//! Time rules (login expiry, recheck interval) are driven by moving the stored times back, as
//! if the days had passed, never by sleeping.

mod support;

#[path = "support/fake_github.rs"]
mod fake_github;
#[path = "support/fake_oidc.rs"]
mod fake_oidc;
#[path = "support/real_oidc.rs"]
mod real_oidc;

use std::collections::HashMap;
use std::time::Duration;

use fake_github::{Auth, FakeGithub};
use fake_oidc::FakeOidc;
use real_oidc::RealOidc;
use support::fake_telegram::FakeTelegram;
use support::{Cockpit, base_config};

const BOT_TOKEN: &str = "515151:LOGIN-bot-token-SECRET";
const WAIT: Duration = Duration::from_secs(30);
const HOUR_MS: i64 = 3_600_000;
/// Cockpit's `/oauth/callback` as providers know it (`[oauth].redirect_uri` of the test config);
/// the test's browser takes the provider's redirect there to the real port.
const CALLBACK: &str = "http://127.0.0.1/oauth/callback";

/// The bot's world with one login provider.
struct World {
    telegram: FakeTelegram,
    cockpit: Cockpit,
    http: reqwest::Client,
}

impl World {
    /// Cockpit with its bot logging people in through the provider in `provider_toml`, named
    /// `name`.
    async fn start(provider_toml: &str, name: &str) -> World {
        let telegram = FakeTelegram::start(BOT_TOKEN).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "{}{provider_toml}\n[login]\nprovider = \"{name}\"\nallowed_groups = [\"myorg\"]\n\n\
             [bot]\ntoken = \"{BOT_TOKEN}\"\napi_url = \"{}\"\n",
            base_config(dir.path()),
            telegram.url
        );
        let cockpit = Cockpit::start_in(dir, &text);
        World {
            telegram,
            cockpit,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn say(&self, user: i64, text: &str, needle: &str) -> String {
        let since = self.telegram.texts_to(user).len();
        self.telegram.send_text(user, text);
        self.telegram.wait_new_text(user, since, needle, WAIT).await
    }

    /// `/start` as `user`: the provider's authorize link.
    async fn start_login(&self, user: i64, provider_url: &str) -> String {
        let answer = self.say(user, "/start", provider_url).await;
        answer
            .split_whitespace()
            .find(|w| w.starts_with(provider_url))
            .expect("a link to the provider")
            .to_string()
    }

    /// A browser opening `link`: the provider logs the person in and sends the browser back
    /// to cockpit's `/oauth/callback`. Returns that page's status and HTML.
    async fn browser(&self, link: &str) -> (u16, String) {
        let at_provider = self.http.get(link).send().await.expect("provider");
        assert_eq!(at_provider.status().as_u16(), 302, "the provider logs in");
        let back = at_provider
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location")
            .to_string();
        let back = reqwest::Url::parse(&back).expect("back URL");
        assert_eq!(back.path(), "/oauth/callback");
        let query: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        let page = self
            .http
            .get(format!("{}/oauth/callback", self.cockpit.api))
            .query(&query)
            .send()
            .await
            .expect("callback");
        let status = page.status().as_u16();
        (status, page.text().await.expect("page"))
    }

    /// A whole login of Telegram user `user`; returns the bot's welcome.
    async fn log_in(&self, user: i64, provider_url: &str) -> String {
        let link = self.start_login(user, provider_url).await;
        let (status, page) = self.browser(&link).await;
        assert_eq!(status, 200, "{page}");
        let code = code_in(&page);
        self.say(user, &format!("/start {code}"), "You have been authorized")
            .await
    }

    /// A whole login of Telegram user `user` as `account` at the real OIDC provider, in a
    /// browser of its own; returns the callback page's status and HTML.
    async fn log_in_real(&self, user: i64, provider_url: &str, account: &str) -> (u16, String) {
        self.log_in_real_as_if_from(user, provider_url, account, None)
            .await
    }

    /// [`World::log_in_real`], the callback's `iss` replaced by `iss` when given (as a mix-up
    /// attacker's issuer would answer).
    async fn log_in_real_as_if_from(
        &self,
        user: i64,
        provider_url: &str,
        account: &str,
        iss: Option<&str>,
    ) -> (u16, String) {
        let link = self.start_login(user, provider_url).await;
        let browser = real_oidc::browser(CALLBACK);
        let back = real_oidc::log_in(&browser, &link, account).await;
        assert_eq!(back.path(), "/oauth/callback", "{back}");
        let mut query: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        // RFC 9207: the provider names itself in the authorization response.
        assert!(
            query.iter().any(|(k, v)| k == "iss" && v == provider_url),
            "{back}"
        );
        if let Some(iss) = iss {
            for (k, v) in &mut query {
                if k == "iss" {
                    *v = iss.to_string();
                }
            }
        }
        let page = self
            .http
            .get(format!("{}/oauth/callback", self.cockpit.api))
            .query(&query)
            .send()
            .await
            .expect("callback");
        let status = page.status().as_u16();
        (status, page.text().await.expect("page"))
    }

    /// What the store says about `user`: identity, groups, provider.
    fn identity(&self, user: i64) -> Option<(String, Vec<String>)> {
        let store = support::db::store(&self.cockpit.data_dir());
        store.telegram_identity(user).expect("identity")
    }

    /// Moves `user`'s login and last check back by `hours`, as if that much time had passed.
    fn age(&self, user: i64, hours: i64) {
        let data = self.cockpit.data_dir();
        let there = format!("SELECT user_id FROM telegram_users WHERE user_id = {user}");
        assert_eq!(support::db::rows(&data, &there).len(), 1, "user {user}");
        let back = hours * HOUR_MS;
        support::db::execute(
            &data,
            &format!(
                "UPDATE telegram_users SET login_expires_at_ms = login_expires_at_ms - {back},
                    checked_at_ms = checked_at_ms - {back} WHERE user_id = {user}"
            ),
        );
    }

    fn assert_clean(&self, secrets: &[&str]) {
        let logs = self.cockpit.log_text();
        for secret in secrets.iter().chain(&[BOT_TOKEN]) {
            assert!(!logs.contains(secret), "{secret} leaked into the logs");
        }
        let refused = self.telegram.refusals();
        assert!(refused.is_empty(), "Telegram would refuse: {refused:#?}");
    }
}

/// The one-time code in a login page's `https://t.me/<bot>?start=<code>` link.
fn code_in(page: &str) -> String {
    let at = page
        .find("https://t.me/cockpit_test_bot?start=")
        .unwrap_or_else(|| panic!("no t.me link in {page}"));
    page[at + "https://t.me/cockpit_test_bot?start=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

fn github_toml(github: &FakeGithub, method: &str) -> String {
    format!(
        "[[oauth_provider]]\nname = \"gh\"\nkind = \"github\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\ntoken_endpoint_auth_method = \"{method}\"\n\
         authorize_url = \"{u}/login/oauth/authorize\"\n\
         access_token_url = \"{u}/login/oauth/access_token\"\napi_url = \"{u}\"\n",
        fake_github::CLIENT_ID,
        fake_github::CLIENT_SECRET,
        u = github.url
    )
}

fn oidc_toml(oidc: &FakeOidc) -> String {
    format!(
        "[[oauth_provider]]\nname = \"kc\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n",
        oidc.url,
        fake_oidc::CLIENT_ID,
        fake_oidc::CLIENT_SECRET,
    )
}

#[tokio::test]
async fn github_login_gives_identity_and_groups_and_a_lost_membership_ends_the_session() {
    // GitHub takes the secret in the body here and answers form-encoded whatever is asked.
    let github = FakeGithub::start_form_only(Auth::Post).await;
    github.set_membership("alice", &["myorg", "other"], &[("myorg", "ops")]);
    github.log_in_as("alice");
    let world = World::start(&github_toml(&github, "client_secret_post"), "gh").await;

    world
        .say(1, "/repo list", "I don't know you yet, please use /start")
        .await;
    let link = world.start_login(1, &github.url).await;
    let params: HashMap<String, String> = reqwest::Url::parse(&link)
        .expect("link")
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params["client_id"], fake_github::CLIENT_ID);
    assert_eq!(params["scope"], "read:user read:org");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], "http://127.0.0.1/oauth/callback");

    let (status, page) = world.browser(&link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("alice"), "{page}");
    // The browser alone authorizes nothing: the chat waits for the one-time code.
    world
        .telegram
        .wait_text(1, "open it with this Telegram account", WAIT)
        .await;
    world
        .say(1, "/repo list", "I don't know you yet, please use /start")
        .await;
    let code = code_in(&page);
    assert_eq!(
        code.len(),
        64,
        "Telegram start parameters hold 64 characters"
    );
    world
        .say(
            1,
            &format!("/start {code}"),
            "You have been authorized, alice",
        )
        .await;
    world.say(1, "/repo list", "Repositories").await;
    assert_eq!(
        world.identity(1),
        Some((
            "github:alice".to_string(),
            vec!["myorg".into(), "other".into(), "myorg/ops".into()]
        ))
    );
    // The code is single use.
    world
        .say(
            1,
            &format!("/start {code}"),
            "unknown, already used or expired",
        )
        .await;
    let (ok, form, authorization) = github.token_calls().pop().expect("a token call");
    assert!(ok && authorization.is_none() && form["client_secret"] == fake_github::CLIENT_SECRET);

    // A day later membership is checked again: still a member, new groups are recorded.
    github.set_membership("alice", &["myorg"], &[]);
    world.age(1, 25);
    world.say(1, "/repo list", "Repositories").await;
    assert_eq!(
        world.identity(1).map(|(_, groups)| groups),
        Some(vec!["myorg".to_string()])
    );
    // Removed from the organization: the next check tells the chat and logs out.
    github.set_membership("alice", &["other"], &[]);
    world.age(1, 25);
    world
        .say(1, "/repo list", "no longer a member of a group allowed")
        .await;
    assert_eq!(world.identity(1), None);
    world
        .say(1, "/repo list", "I don't know you yet, please use /start")
        .await;
    // A revoked token (the user removed the OAuth app) ends the session the same way.
    github.set_membership("alice", &["myorg"], &[]);
    world.log_in(1, &github.url).await;
    github.revoke("alice");
    world.age(1, 25);
    world
        .say(1, "/repo list", "no longer confirms your login")
        .await;
    world.assert_clean(&[fake_github::CLIENT_SECRET]);
}

#[tokio::test]
async fn a_login_link_completed_by_a_member_does_not_authorize_the_outsider_who_sent_start() {
    let github = FakeGithub::start(Auth::Basic).await;
    github.set_membership("alice", &["myorg"], &[]);
    let world = World::start(&github_toml(&github, "client_secret_basic"), "gh").await;

    // The outsider (Telegram user 66) sends /start and passes the link to alice, a member.
    let link = world.start_login(66, &github.url).await;
    github.log_in_as("alice");
    let (status, page) = world.browser(&link).await;
    assert_eq!(status, 200, "{page}");
    // The outsider's chat is not authorized by alice's login.
    world
        .telegram
        .wait_text(66, "open it with this Telegram account", WAIT)
        .await;
    world
        .say(
            66,
            "/repo create stolen",
            "I don't know you yet, please use /start",
        )
        .await;
    assert_eq!(world.identity(66), None);
    // Alice, following the page's link in her own Telegram, does not authorize anyone either:
    // the code belongs to the login the outsider started.
    let code = code_in(&page);
    world
        .say(
            7,
            &format!("/start {code}"),
            "belongs to another Telegram account",
        )
        .await;
    assert_eq!(world.identity(7), None);
    // And the code is spent: the outsider cannot use it afterwards.
    world
        .say(
            66,
            &format!("/start {code}"),
            "unknown, already used or expired",
        )
        .await;
    world
        .say(66, "/repo list", "I don't know you yet, please use /start")
        .await;
    // Alice's own login works.
    world.log_in(7, &github.url).await;
    assert_eq!(
        world.identity(7).map(|(id, _)| id),
        Some("github:alice".into())
    );
    world.assert_clean(&[fake_github::CLIENT_SECRET]);
}

#[tokio::test]
async fn oidc_login_verifies_the_id_token_and_expiry_and_rechecks_end_the_session() {
    let oidc = FakeOidc::start().await;
    let world = World::start(&oidc_toml(&oidc), "kc").await;

    oidc.log_in_as("u-123", &["myorg", "/myorg/ops"]);
    let link = world.start_login(3, &oidc.url).await;
    let params: HashMap<String, String> = reqwest::Url::parse(&link)
        .expect("link")
        .query_pairs()
        .into_owned()
        .collect();
    assert!(params["scope"].split(' ').any(|s| s == "openid"));
    assert!(params["nonce"].len() >= 32);
    let (status, page) = world.browser(&link).await;
    assert_eq!(status, 200, "{page}");
    world
        .say(
            3,
            &format!("/start {}", code_in(&page)),
            "You have been authorized, u-123-name",
        )
        .await;
    assert_eq!(
        world.identity(3),
        Some(("kc:u-123".into(), vec!["myorg".into(), "myorg/ops".into()]))
    );

    // A due recheck refreshes the tokens and reads the groups again.
    world.age(3, 25);
    world.say(3, "/repo list", "Repositories").await;
    // Out of the group: logged out at the next check.
    oidc.set_groups("u-123", &["elsewhere"]);
    world.age(3, 25);
    world
        .say(3, "/repo list", "no longer a member of a group allowed")
        .await;
    assert_eq!(world.identity(3), None);

    // Back in, then 30 days pass: the login expires without asking the provider.
    oidc.set_groups("u-123", &["myorg"]);
    world.log_in(3, &oidc.url).await;
    world.age(3, 30 * 24);
    world.say(3, "/repo list", "Your login has expired").await;
    world
        .say(3, "/repo list", "I don't know you yet, please use /start")
        .await;

    // An ID token with another nonce than the login's is refused.
    oidc.sign_with_wrong_nonce();
    let link = world.start_login(3, &oidc.url).await;
    let (status, page) = world.browser(&link).await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("nonce"), "{page}");
    assert!(!page.contains("t.me/"), "{page}");
    world.assert_clean(&[fake_oidc::CLIENT_SECRET]);
}

const REAL_ID: &str = "cockpit-at-real-oidc";
const REAL_SECRET: &str = "REAL-OIDC-SECRET-5d2e8a";

/// `[[oauth_provider]] kc` at the real provider, with this issuer and client secret, and roles
/// from the provider's groups.
fn real_oidc_toml(issuer: &str, secret: &str) -> String {
    format!(
        "[[oauth_provider]]\nname = \"kc\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\n\
         client_id = \"{REAL_ID}\"\nclient_secret = \"{secret}\"\n\
         scope = \"openid profile groups\"\n\n\
         [access]\nviewer = [\"group:myorg\"]\noperator = [\"group:myorg/ops\"]\n\
         admin = [\"group:myorg/admins\"]\n"
    )
}

/// The bot's login through a real OpenID Connect provider (panva's `oidc-provider`, see
/// `tests/oidc/`): discovery, the login and consent forms, the code exchange with HTTP Basic, the
/// RS256 ID token checked against the provider's JWKS with the login's nonce, groups from its
/// `groups` claim mapped to roles by `[access]`, in the bot and on REST with the bot's `/token`.
/// The wrong-nonce and expiry cases, which a real provider does not produce on demand, are in
/// the fake's test above.
#[tokio::test]
async fn oidc_login_through_a_real_provider_maps_its_groups_to_roles() {
    let oidc = RealOidc::start(REAL_ID, REAL_SECRET, CALLBACK, "client_secret_basic");
    let world = World::start(&real_oidc_toml(&oidc.url, REAL_SECRET), "kc").await;

    // alice: groups myorg and /myorg/ops (a Keycloak-style path) → operator.
    let (status, page) = world.log_in_real(5, &oidc.url, "alice").await;
    assert_eq!(status, 200, "{page}\n{}", oidc.stderr_text());
    world
        .say(
            5,
            &format!("/start {}", code_in(&page)),
            "You have been authorized, alice",
        )
        .await;
    assert_eq!(
        world.identity(5),
        Some(("kc:alice".into(), vec!["myorg".into(), "myorg/ops".into()]))
    );
    world.say(5, "/repo list", "Repositories").await;
    world
        .say(
            5,
            "/repo create demo",
            "this needs the admin role; you have operator",
        )
        .await;
    let answer = world.say(5, "/token", "Your API token (operator").await;
    let token = answer
        .split_whitespace()
        .find(|w| w.starts_with("ck_"))
        .expect("a token")
        .to_string();
    let rest = |method: reqwest::Method, token: &str| {
        world
            .http
            .request(method, format!("{}/ays/repository", world.cockpit.api))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "demo"}))
            .send()
    };
    let refused = rest(reqwest::Method::POST, &token).await.expect("REST");
    assert_eq!(refused.status().as_u16(), 403);
    assert!(
        refused
            .text()
            .await
            .expect("body")
            .contains("needs the admin role; you have operator")
    );
    let listed = rest(reqwest::Method::GET, &token).await.expect("REST");
    assert_eq!(listed.status().as_u16(), 200);
    // A day later the membership check asks the provider's user info endpoint with the
    // access token (no refresh token without offline_access) and finds the same groups.
    world.age(5, 25);
    world.say(5, "/repo list", "Repositories").await;
    assert_eq!(
        world.identity(5).map(|(_, groups)| groups),
        Some(vec!["myorg".to_string(), "myorg/ops".to_string()])
    );

    // carol: myorg/admins → admin.
    let (status, page) = world.log_in_real(6, &oidc.url, "carol").await;
    assert_eq!(status, 200, "{page}");
    world
        .say(
            6,
            &format!("/start {}", code_in(&page)),
            "You have been authorized, carol",
        )
        .await;
    world
        .say(6, "/repo create demo", "Repository demo created")
        .await;
    assert_eq!(world.identity(6).map(|(id, _)| id), Some("kc:carol".into()));

    // An answer that names another issuer (a mix-up: a code from elsewhere) is refused before
    // the code is sent anywhere.
    let (status, page) = world
        .log_in_real_as_if_from(8, &oidc.url, "carol", Some("https://elsewhere.example"))
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("another issuer"), "{page}");
    assert_eq!(world.identity(8), None);

    // mallory: known to the provider, in none of [login].allowed_groups.
    let (status, page) = world.log_in_real(7, &oidc.url, "mallory").await;
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains("t.me/"), "{page}");
    assert_eq!(world.identity(7), None);

    // alice's access token revoked at the provider (as a logout there does): the next check
    // ends her chat's login.
    let credential = support::db::rows(
        &world.cockpit.data_dir(),
        "SELECT credential FROM telegram_users WHERE user_id = 5",
    )
    .into_iter()
    .next()
    .and_then(|row| row.into_iter().next().flatten())
    .expect("credential");
    let credential: serde_json::Value = serde_json::from_str(&credential).expect("JSON");
    let access = credential["access_token"].as_str().expect("access token");
    oidc.revoke(REAL_ID, REAL_SECRET, access).await;
    world.age(5, 25);
    world
        .say(5, "/repo list", "no longer confirms your login")
        .await;
    assert_eq!(world.identity(5), None);
    world.assert_clean(&[REAL_SECRET]);
}

/// Misconfigurations a real provider catches: cockpit's client secret is not the one the
/// provider has, or its issuer is not the provider's own name. Both fail with a message saying
/// why, in the chat or on the page, and authorize no one.
#[tokio::test]
async fn a_real_oidc_provider_refuses_a_wrong_client_secret_and_a_wrong_issuer() {
    let oidc = RealOidc::start(REAL_ID, REAL_SECRET, CALLBACK, "client_secret_basic");
    let wrong_secret = "NOT-THE-REAL-SECRET-77";
    let world = World::start(&real_oidc_toml(&oidc.url, wrong_secret), "kc").await;
    let (status, page) = world.log_in_real(8, &oidc.url, "alice").await;
    assert_eq!(status, 502, "{page}");
    assert!(
        page.contains("the provider refused: invalid_client"),
        "{page}"
    );
    assert!(!page.contains("t.me/"), "{page}");
    world
        .telegram
        .wait_text(8, "The login failed. Send /start to try again.", WAIT)
        .await;
    assert_eq!(world.identity(8), None);
    world.assert_clean(&[wrong_secret, REAL_SECRET]);

    // The provider calls itself http://127.0.0.1:PORT; cockpit was told http://localhost:PORT.
    let port = oidc.url.rsplit(':').next().expect("port");
    let elsewhere = format!("http://localhost:{port}");
    let world = World::start(&real_oidc_toml(&elsewhere, REAL_SECRET), "kc").await;
    world
        .say(9, "/start", "its issuer is not the configured one")
        .await;
    assert!(
        !world
            .telegram
            .texts_to(9)
            .iter()
            .any(|t| t.contains(&oidc.url)),
        "no login link"
    );
    world.assert_clean(&[REAL_SECRET]);
}

#[tokio::test]
async fn the_central_oauth_server_works_with_client_secret_post_and_form_encoded_answers() {
    for (auth, method) in [
        (Auth::Post, "client_secret_post"),
        (Auth::Basic, "client_secret_basic"),
    ] {
        let github = FakeGithub::start_form_only(auth).await;
        github.log_in_as("octo");
        let dir = tempfile::tempdir().expect("tempdir");
        let app = "http://127.0.0.1:9/app/callback";
        let text = format!(
            "{}[oauth_proxy]\nurl = \"http://127.0.0.1:9/oauth\"\nsigning_key = \"{key}\"\n\
             allowed_redirects = [\"{app}\"]\n\n\
             [[oauth_provider]]\nname = \"gh\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             token_endpoint_auth_method = \"{method}\"\n\
             authorize_url = \"{u}/login/oauth/authorize\"\n\
             access_token_url = \"{u}/login/oauth/access_token\"\n\
             user_info_url = \"{u}/user\"\nuser_info_fields = [\"login\"]\n",
            base_config(dir.path()),
            fake_github::CLIENT_ID,
            fake_github::CLIENT_SECRET,
            key = dir.path().join("data/oauth_proxy.key").display(),
            u = github.url,
        );
        let cockpit = Cockpit::start_in(dir, &text);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let location = |resp: &reqwest::Response| {
            resp.headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("location")
                .to_string()
        };
        let to_provider = http
            .get(format!("{}/oauth/authorize", cockpit.api))
            .query(&[("provider", "gh"), ("redirect_url", app), ("state", "s1")])
            .send()
            .await
            .expect("authorize");
        assert_eq!(to_provider.status().as_u16(), 302);
        let back = http
            .get(location(&to_provider))
            .send()
            .await
            .expect("provider");
        let back = reqwest::Url::parse(&location(&back)).expect("back");
        let query: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        let to_app = http
            .get(format!("{}/oauth/callback", cockpit.api))
            .query(&query)
            .send()
            .await
            .expect("callback");
        let to_app = location(&to_app);
        assert!(
            to_app.starts_with(app) && to_app.contains("jwt="),
            "{method}: {to_app}"
        );
        let (accepted, _, _) = github.token_calls().pop().expect("token call");
        assert!(accepted, "{method}");
        assert!(!cockpit.log_text().contains(fake_github::CLIENT_SECRET));
    }
}
