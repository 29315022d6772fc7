//! The Telegram bot end to end: the real binary against a fake Bot API and a fake ItsYou.online
//! token endpoint, both real HTTP servers standing in for the outside world.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::Api;
use support::fake_itsyou::FakeItsYou;
use support::fake_telegram::FakeTelegram;
use support::{Cockpit, base_config, eventually, login_code as code_in};

const BOT_TOKEN: &str = "424242:BOT-token-SECRET-never-logged";
const WAIT: Duration = Duration::from_secs(30);

/// The doubles and the real binary wired to them.
struct World {
    telegram: FakeTelegram,
    itsyou: FakeItsYou,
    cockpit: Cockpit,
    http: reqwest::Client,
}

impl World {
    async fn start() -> World {
        World::start_with("").await
    }

    /// The world with `extra` appended to the config.
    async fn start_with(extra: &str) -> World {
        World::start_on(FakeTelegram::start(BOT_TOKEN).await, "", extra).await
    }

    /// The world on `telegram`, with `bot` added to `[bot]` and `extra` to the config.
    async fn start_on(telegram: FakeTelegram, bot: &str, extra: &str) -> World {
        let itsyou = FakeItsYou::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        // `base_config` opens with `[oauth]`: ItsYou.online's host goes into that section.
        let text = base_config(dir.path()).replacen(
            "[oauth]\n",
            &format!("[oauth]\nitsyouonlinehost = \"{}\"\n", itsyou.url),
            1,
        ) + &format!(
            "[bot]\ntoken = \"{BOT_TOKEN}\"\napi_url = \"{}\"\n{bot}\n[debug]\nfault_injection = true\n{extra}",
            telegram.url
        );
        let cockpit = Cockpit::start_in(dir, &text);
        World {
            telegram,
            itsyou,
            cockpit,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// Sends `text` as `user` and waits for an answer containing `needle`.
    async fn say(&self, user: i64, text: &str, needle: &str) -> String {
        let since = self.telegram.texts_to(user).len();
        self.telegram.send_text(user, text);
        self.telegram.wait_new_text(user, since, needle, WAIT).await
    }

    /// `/start` as `user`: the authorize link's query parameters.
    async fn start_login(&self, user: i64) -> HashMap<String, String> {
        let answer = self.say(user, "/start", "/v1/oauth/authorize").await;
        let link = answer
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .expect("a link");
        let url = reqwest::Url::parse(link).expect("link is a URL");
        assert_eq!(
            url.as_str().split('?').next(),
            Some(format!("{}/v1/oauth/authorize", self.itsyou.url).as_str())
        );
        url.query_pairs().into_owned().collect()
    }

    /// The browser coming back to cockpit's `/oauth/callback`: status and page.
    async fn callback(&self, query: &[(&str, &str)]) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("{}/oauth/callback", self.cockpit.api))
            .query(query)
            .send()
            .await
            .expect("callback request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, response.text().await.expect("page"))
    }

    /// A full login of `user` as an organization member.
    async fn log_in(&self, user: i64) {
        let params = self.start_login(user).await;
        let since = self.telegram.texts_to(user).len();
        let code = format!("member:alice{user}");
        let (status, _, page) = self
            .callback(&[("code", &code), ("state", &params["state"])])
            .await;
        assert_eq!(status, 200, "{page}");
        self.telegram
            .wait_new_text(user, since, "open it with this Telegram account", WAIT)
            .await;
        self.say(
            user,
            &format!("/start {}", code_in(&page)),
            "You have been authorized",
        )
        .await;
    }

    /// `GET /ays/repository` over REST with a token signed by the test key.
    async fn rest_repositories(&self) -> Value {
        let (status, repos) = Api::new(&self.cockpit).get("").await;
        assert_eq!(status, 200, "{repos}");
        repos
    }

    /// `/metrics` as text.
    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.cockpit.api))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Neither the bot token nor the client secret was ever logged, and Telegram (the strict
    /// fake) refused nothing the bot sent.
    fn assert_no_secrets_logged(&self) {
        self.assert_clean(&[]);
    }

    /// As [`World::assert_no_secrets_logged`], where the test provoked refusals with these
    /// descriptions.
    fn assert_clean(&self, provoked: &[&str]) {
        let refused: Vec<_> = self
            .telegram
            .refusals()
            .into_iter()
            .filter(|c| !provoked.iter().any(|p| c.error.as_deref() == Some(*p)))
            .collect();
        assert!(refused.is_empty(), "Telegram would refuse: {refused:#?}");
        let logs = self.cockpit.log_text();
        assert!(!logs.is_empty());
        for secret in [BOT_TOKEN, "BOT-token-SECRET", "s3cr3t-client-VALUE"] {
            assert!(!logs.contains(secret), "{secret} leaked into the logs");
        }
    }
}

#[tokio::test]
async fn login_link_callback_and_single_use_states() {
    let world = World::start().await;

    // Before logging in, commands ask for /start.
    world
        .say(1, "/repo list", "I don't know you yet, please use /start")
        .await;

    let params = world.start_login(1).await;
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "cockpit-test");
    assert_eq!(params["redirect_uri"], "http://127.0.0.1/oauth/callback");
    assert_eq!(params["scope"], "user:memberof:myorg");
    let state = &params["state"];
    assert!(state.len() >= 32, "≥128 bits of state: {state}");

    let since = world.telegram.texts_to(1).len();
    let (status, content_type, page) = world
        .callback(&[("code", "member:alice"), ("state", state)])
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("<html") && page.contains("alice"), "{page}");
    world
        .telegram
        .wait_new_text(1, since, "open it with this Telegram account", WAIT)
        .await;
    // The login page's one-time link back to the bot finishes the login.
    world
        .say(
            1,
            &format!("/start {}", code_in(&page)),
            "You have been authorized, alice",
        )
        .await;
    // The code was exchanged with the client's credentials, for this redirect.
    let exchange = world.itsyou.requests().pop().expect("a token request");
    assert_eq!(exchange["code"], "member:alice");
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(exchange["redirect_uri"], "http://127.0.0.1/oauth/callback");
    assert!(exchange.contains_key("authorization") || exchange.contains_key("client_secret"));

    // A used state and an unknown one are refused, with a page, without asking ItsYou.online.
    let asked = world.itsyou.requests().len();
    for bad in [state.as_str(), "00112233445566778899aabbccddeeff"] {
        let (status, content_type, page) = world
            .callback(&[("code", "member:mallory"), ("state", bad)])
            .await;
        assert_eq!(status, 400, "{page}");
        assert!(content_type.starts_with("text/html"));
        assert!(page.contains("expired"), "{page}");
    }
    let (status, _, _) = world.callback(&[("code", "member:mallory")]).await;
    assert_eq!(status, 400);
    assert_eq!(world.itsyou.requests().len(), asked);

    // Now logged in: /start welcomes back, commands work.
    world.say(1, "/start", "Welcome back alice").await;
    world.say(1, "/repo list", "Repositories:").await;

    // Unknown commands get a helpful answer; every command is registered with setMyCommands.
    world.say(1, "/frobnicate", "/help").await;
    let registered = world
        .telegram
        .calls()
        .into_iter()
        .find(|c| c.method == "setmycommands")
        .expect("setMyCommands");
    let names: Vec<&str> = registered.params["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["command"].as_str())
        .collect();
    for command in ["start", "repo", "blueprint", "service", "run", "help"] {
        assert!(names.contains(&command), "{command} not in {names:?}");
    }
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_non_member_is_refused_and_stays_refused() {
    let world = World::start().await;
    let params = world.start_login(2).await;
    let since = world.telegram.texts_to(2).len();
    // ItsYou.online grants only look-alike scopes (`myorgx`, another organization).
    let (status, content_type, page) = world
        .callback(&[("code", "outsider"), ("state", &params["state"])])
        .await;
    assert_eq!(status, 403, "{page}");
    assert!(content_type.starts_with("text/html"));
    assert!(
        page.contains("not a member of the organization myorg"),
        "{page}"
    );
    world
        .telegram
        .wait_new_text(2, since, "not a member of the organization myorg", WAIT)
        .await;
    // Still refused: commands ask for /start, and /start offers a new link, not a welcome.
    world
        .say(
            2,
            "/repo create sneaky",
            "I don't know you yet, please use /start",
        )
        .await;
    world.say(2, "/start", "/v1/oauth/authorize").await;
    assert!(
        world
            .rest_repositories()
            .await
            .as_array()
            .is_some_and(|repos| repos.is_empty())
    );

    // A code ItsYou.online refuses is a failed login, reported in the chat, not a crash.
    let params = world.start_login(2).await;
    let since = world.telegram.texts_to(2).len();
    let (status, _, page) = world
        .callback(&[("code", "forged"), ("state", &params["state"])])
        .await;
    assert_eq!(status, 502, "{page}");
    world
        .telegram
        .wait_new_text(2, since, "The login failed", WAIT)
        .await;
    world.assert_no_secrets_logged();
}

/// A template whose `install` records the job JSON it was given.
fn web_template(repo: &std::path::Path) {
    let dir = repo.join("actorTemplates/web");
    std::fs::create_dir_all(dir.join("actions")).expect("template dir");
    std::fs::write(
        dir.join("schema.yaml"),
        "port:\n  type: int\n  default: 80\n",
    )
    .expect("schema");
    let action = dir.join("actions/install");
    std::fs::write(
        &action,
        "#!/bin/sh\ncat > input.json\necho installed $COCKPIT_SERVICE\n",
    )
    .expect("action");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&action, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn an_authorized_user_drives_repos_blueprints_services_and_runs() {
    let world = World::start().await;
    world.log_in(3).await;

    world
        .say(
            3,
            "/repo create demo",
            "Repository demo created and selected",
        )
        .await;
    let repos = world.rest_repositories().await;
    assert_eq!(repos[0]["name"], "demo", "{repos}");
    let path = std::path::PathBuf::from(repos[0]["path"].as_str().expect("path"));
    web_template(&path);

    // A blueprint pasted as the next message after /blueprint add is saved...
    world
        .say(
            3,
            "/blueprint add site.yaml",
            "Send me the YAML of site.yaml",
        )
        .await;
    world
        .say(
            3,
            "web__site:\n  port: 8080\n",
            "Blueprint site.yaml saved in demo",
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(path.join("blueprints/site.yaml"))
            .expect("saved")
            .trim_end(),
        "web__site:\n  port: 8080"
    );
    // ...YAML that does not parse is refused and nothing is saved...
    world
        .say(3, "/blueprint add bad.yaml", "Send me the YAML")
        .await;
    world
        .say(3, "web__x: [unclosed\n", "Blueprint bad.yaml not saved")
        .await;
    assert!(!path.join("blueprints/bad.yaml").exists());
    // ...one naming an unknown actor is saved but refuses to execute, naming the problem...
    world
        .say(3, "/blueprint add ghost.yaml", "Send me the YAML")
        .await;
    world
        .say(3, "nosuchactor__x:\n", "Blueprint ghost.yaml saved")
        .await;
    world
        .say(3, "/blueprint execute ghost.yaml", "nosuchactor")
        .await;
    world.say(3, "/service list", "none yet").await;
    // ...one uploaded as a document is saved too, and listed from the inline menu.
    world
        .say(3, "/blueprint add other.yaml", "Send me the YAML")
        .await;
    let since = world.telegram.texts_to(3).len();
    world
        .telegram
        .send_document(3, "other.yaml", b"web__other:\n");
    world
        .telegram
        .wait_new_text(3, since, "Blueprint other.yaml saved", WAIT)
        .await;
    let since = world.telegram.texts_to(3).len();
    world.telegram.press(3, "/blueprint list");
    let listed = world
        .telegram
        .wait_new_text(3, since, "other.yaml", WAIT)
        .await;
    assert!(listed.contains("site.yaml"), "{listed}");
    eventually(WAIT, "the button press to be answered", || async {
        world
            .telegram
            .calls()
            .iter()
            .any(|c| c.method == "answercallbackquery")
            .then_some(())
    })
    .await;

    // Executing it creates the service; /service execute runs install and reports the end.
    world
        .say(
            3,
            "/blueprint execute site.yaml",
            "Blueprint site.yaml executed",
        )
        .await;
    world.say(3, "/service list", "web!site").await;
    let started = world
        .say(3, "/service execute install web!site", "started")
        .await;
    let key = started
        .split_whitespace()
        .nth(1)
        .expect("run key")
        .to_string();
    let ended = world
        .telegram
        .wait_text(3, &format!("Run {key} in demo ended: ok"), WAIT)
        .await;
    assert!(ended.contains(&format!("/run inspect {key}")), "{ended}");
    let input: Value = serde_json::from_str(
        &std::fs::read_to_string(path.join("services/web/site/input.json")).expect("job input"),
    )
    .expect("job json");
    assert_eq!(input["service"]["data"]["port"], 8080, "{input}");
    world.say(3, &format!("/run inspect {key}"), "ok").await;
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn authorization_survives_a_restart_and_clean_cache_ends_it_at_once() {
    let mut world = World::start().await;
    world.log_in(4).await;
    world.say(4, "/repo create keep", "created").await;

    // Restart the binary on the same data: still authorized, current repo kept.
    world.cockpit.signal(libc::SIGTERM);
    assert_eq!(
        world
            .cockpit
            .wait_exit(WAIT)
            .and_then(|status| status.code()),
        Some(0)
    );
    let dir = std::mem::replace(&mut world.cockpit.dir, tempfile::tempdir().expect("tmp"));
    let text = std::fs::read_to_string(&world.cockpit.config).expect("config");
    world.cockpit = Cockpit::start_in(dir, &text);
    world.say(4, "/start", "Welcome back alice4").await;
    world.say(4, "/repo list", "Current repository: keep").await;

    // `cockpit clean_cache` while the server runs: the next command asks for /start.
    let config = world.cockpit.config.to_string_lossy().to_string();
    let (code, out, err) = support::run(&["clean_cache", "-c", &config]);
    assert_eq!(code, 0, "{out}{err}");
    world
        .say(4, "/repo list", "I don't know you yet, please use /start")
        .await;
    world.say(4, "/start", "/v1/oauth/authorize").await;
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_panicking_session_restarts_alone_while_fifty_chats_are_answered() {
    let world = World::start().await;
    let crashed = 999;
    let others: Vec<i64> = (100..150).collect();

    // Every chat has a session before the crash, so that all of them are live when it happens.
    world.say(crashed, "/help", "I can drive").await;
    for user in &others {
        world.telegram.send_text(*user, "/help");
    }
    world.telegram.send_text(crashed, "/crash");
    for user in &others {
        world.telegram.send_text(*user, "/repo list");
    }
    for user in &others {
        world.telegram.wait_text(*user, "I can drive", WAIT).await;
        world
            .telegram
            .wait_text(*user, "I don't know you yet", WAIT)
            .await;
    }
    // The crashed chat's next command works.
    world.say(crashed, "/help", "I can drive").await;
    world
        .say(crashed, "/repo list", "I don't know you yet")
        .await;

    let metrics = reqwest::get(format!("{}/metrics", world.cockpit.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let restarts = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cockpit_chat_session_restarts_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(restarts, Some(1), "{metrics}");
    assert!(
        metrics.contains("cockpit_chat_session_restart_seconds_count 1"),
        "the restart's latency is measured: {metrics}"
    );
    // Every update was confirmed, none was lost or answered twice.
    for user in &others {
        assert_eq!(world.telegram.texts_to(*user).len(), 2, "chat {user}");
    }
    assert!(world.cockpit.log_text().contains("panic"));
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn bot_api_failures_are_retried_and_never_take_the_server_down() {
    let world = World::start().await;
    world.say(5, "/help", "I can drive").await;

    // The Bot API answers 502 to the next poll and the next send: the update still arrives and
    // its answer is sent once, and the HTTP side never noticed.
    world.telegram.fail_next("getUpdates", 1);
    world.telegram.fail_next("sendMessage", 1);
    let since = world.telegram.texts_to(5).len();
    world.telegram.send_text(5, "/repo list");
    world
        .telegram
        .wait_new_text(5, since, "I don't know you yet", Duration::from_secs(60))
        .await;
    assert_eq!(world.telegram.texts_to(5).len(), since + 1);
    let health = reqwest::get(format!("{}/health", world.cockpit.api))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_webhook_left_set_is_removed_before_the_long_poll() {
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    // As Telegram does: no plain-HTTP webhook, and no port it does not deliver to.
    let set = |url: &str| {
        reqwest::Client::new()
            .post(format!("{}/bot{BOT_TOKEN}/setWebhook", telegram.url))
            .json(&json!({"url": url}))
            .send()
    };
    for (url, refusal) in [
        (
            "http://old.example/telegram/webhook",
            "An HTTPS URL must be provided",
        ),
        (
            "https://old.example:9000/telegram/webhook",
            "only on ports 80, 88, 443 or 8443",
        ),
    ] {
        let answer = set(url).await.expect("setWebhook");
        assert_eq!(answer.status(), 400);
        let body = answer.text().await.expect("body");
        assert!(body.contains(refusal), "{body}");
    }
    // A webhook an earlier start in webhook mode left set: getUpdates is refused (409) until
    // it is deleted.
    let answer = set("https://old.example/telegram/webhook")
        .await
        .expect("set");
    assert_eq!(answer.status(), 200);
    let world = World::start_on(telegram, "", "").await;
    world.say(5, "/help", "I can drive").await;
    assert_eq!(world.telegram.webhook(), None);
    // Without webhook mode there is no webhook route.
    let answer = world
        .http
        .post(format!("{}/telegram/webhook", world.cockpit.api))
        .header("X-Telegram-Bot-Api-Secret-Token", "anything")
        .json(&json!({"update_id": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 404);
}

#[tokio::test]
async fn in_webhook_mode_updates_come_by_the_webhook_once_each() {
    let secret = "hook_S3cret-value";
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    let world = World::start_on(
        telegram,
        &format!(
            "webhook_url = \"https://cockpit.test/telegram/webhook\"\nwebhook_secret = \"{secret}\"\n"
        ),
        "",
    )
    .await;
    eventually(Duration::from_secs(20), "the webhook set", || async {
        world.telegram.webhook()
    })
    .await;
    world.telegram.serve_webhook_by(&[&world.cockpit.api]);
    world.say(5, "/help", "I can drive").await;
    let delivered = world.telegram.deliveries();
    assert!(
        delivered.iter().any(|(_, status)| *status == 200),
        "{delivered:?}"
    );
    // Telegram repeats a delivery it saw no answer to: handed over once, confirmed again.
    let since = world.telegram.texts_to(5).len();
    let again = json!({"update_id": 1, "message": {"message_id": 1, "date": 0,
        "chat": {"id": 5, "type": "private", "first_name": "u"},
        "from": {"id": 5, "is_bot": false, "first_name": "u"}, "text": "/help"}});
    let post = |body: Value, secret: &str| {
        world
            .http
            .post(format!("{}/telegram/webhook", world.cockpit.api))
            .header("X-Telegram-Bot-Api-Secret-Token", secret)
            .json(&body)
            .send()
    };
    assert_eq!(post(again, secret).await.expect("post").status(), 200);
    assert_eq!(
        post(json!({"not": "an update"}), secret)
            .await
            .expect("post")
            .status(),
        400
    );
    assert_eq!(
        post(json!({"update_id": 99}), "wrong")
            .await
            .expect("post")
            .status(),
        401
    );
    // The chat answers in order: once this is answered, a second answer to the repeated
    // update would be there.
    world.say(5, "/repo list", "I don't know you yet").await;
    let after: Vec<String> = world.telegram.texts_to(5).split_off(since);
    assert_eq!(
        after.len(),
        1,
        "the repeated update was answered again: {after:?}"
    );
    world.assert_no_secrets_logged();
    assert!(
        !world.cockpit.log_text().contains(secret),
        "the webhook secret was logged"
    );
}

/// A valid blueprint of about `bytes` bytes, full of MarkdownV2's reserved characters.
fn big_blueprint(bytes: usize) -> String {
    let mut yaml = String::new();
    let mut i = 0;
    while yaml.len() < bytes {
        yaml.push_str(&format!(
            "web__site-{i}:\n  port: {i}\n  note: \"a_b*c [x](y) ~`#1.` > {{ok}} | !-+= \\\\ 😀\"\n"
        ));
        i += 1;
    }
    yaml
}

#[tokio::test]
async fn a_10_kb_blueprint_is_delivered_whole() {
    let world = World::start().await;
    world.log_in(6).await;
    world.say(6, "/repo create big", "created").await;
    let yaml = big_blueprint(10 * 1024);
    world
        .say(6, "/blueprint add big.yaml", "Send me the YAML")
        .await;
    let since = world.telegram.texts_to(6).len();
    world.telegram.send_document(6, "big.yaml", yaml.as_bytes());
    world
        .telegram
        .wait_new_text(6, since, "Blueprint big.yaml saved", WAIT)
        .await;

    // Long: a document with a caption, the YAML byte for byte.
    world.telegram.send_text(6, "/blueprint get big.yaml");
    let (name, content, caption) = eventually(WAIT, "the blueprint as a document", || async {
        world.telegram.documents_to(6).pop()
    })
    .await;
    assert_eq!(name, "big.yaml");
    assert_eq!(String::from_utf8_lossy(&content), yaml);
    assert!(caption.contains("big.yaml"), "{caption}");

    // A document Telegram will not take still arrives: as text, in code blocks split to fit.
    world.telegram.refuse_next(
        "sendDocument",
        1,
        "Bad Request: not enough rights to send documents to the chat",
    );
    let since = world.telegram.texts_to(6).len();
    world.telegram.send_text(6, "/blueprint get big.yaml");
    let read = eventually(WAIT, "the blueprint as text", || async {
        let read: String = world.telegram.texts_to(6)[since..].concat();
        read.contains(yaml.trim_end()).then_some(read)
    })
    .await;
    assert!(world.telegram.texts_to(6).len() - since >= 3, "{read}");

    // Short: inline, in a code block that Telegram parses, every reserved character intact.
    let small = big_blueprint(1500);
    world
        .say(6, "/blueprint add small.yaml", "Send me the YAML")
        .await;
    world.say(6, &small, "Blueprint small.yaml saved").await;
    let shown = world
        .say(6, "/blueprint get small.yaml", "web__site-0")
        .await;
    assert!(shown.contains(small.trim_end()), "{shown}");
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn repo_list_pages_through_150_repositories_in_one_message() {
    let world = World::start().await;
    world.log_in(7).await;
    let api = Api::new(&world.cockpit);
    // The longest name a repository may have: its select button goes through a short id.
    let long = "r".repeat(64);
    let mut names: Vec<String> = (0..149).map(|i| format!("repo{i:03}")).collect();
    names.push(long.clone());
    for name in &names {
        let (status, body) = api.post("", serde_json::json!({"name": name})).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }

    world.say(7, "/repo list", "1–20 of 150").await;
    let (list_id, first) = world.telegram.last_message(7).expect("the list");
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    for n in 1..=8 {
        seen.extend(
            page.text
                .lines()
                .filter_map(|l| l.strip_prefix("- "))
                .map(String::from),
        );
        if n == 8 {
            break;
        }
        // The › button turns the page in place: the same message, edited.
        assert_eq!(world.telegram.click(7, "›"), list_id);
        let from = n * 20 + 1;
        page = world
            .telegram
            .wait_message(7, list_id, &format!("{from}–"), WAIT)
            .await;
    }
    assert!(page.text.contains("141–150 of 150"), "{}", page.text);
    assert!(
        page.buttons.iter().flatten().all(|(label, _)| label != "›"),
        "the last page has no next"
    );
    let mut expected = names.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    // Back one page (Telegram refusing the markup once: the page comes as plain text), then
    // select the long-named repository by its button.
    world.telegram.refuse_next_markdown(1);
    world.telegram.click(7, "‹");
    world
        .telegram
        .wait_message(7, list_id, "121–140 of 150", WAIT)
        .await;
    assert!(
        world
            .metrics()
            .await
            .contains("cockpit_telegram_plain_fallbacks_total 1")
    );
    world.telegram.click(7, "›");
    let last = world
        .telegram
        .wait_message(7, list_id, "141–150 of 150", WAIT)
        .await;
    let label = last
        .buttons
        .iter()
        .flatten()
        .map(|(label, _)| label.clone())
        .find(|label| label.starts_with("Select rrrr"))
        .expect("a button for the long name");
    let since = world.telegram.texts_to(7).len();
    world.telegram.click(7, &label);
    world
        .telegram
        .wait_new_text(7, since, &format!("Repository {long} selected"), WAIT)
        .await;
    // A page asked from a message that cannot be edited (gone) comes as a new message.
    let since = world.telegram.texts_to(7).len();
    world.telegram.press_on(7, 1, "/repo list 3");
    world
        .telegram
        .wait_new_text(7, since, "41–60 of 150", WAIT)
        .await;
    world.assert_clean(&["Bad Request: message to edit not found"]);
}

#[tokio::test]
async fn a_message_telegram_refuses_is_sent_again_as_plain_text() {
    let world = World::start().await;
    world.say(8, "/help", "I can drive").await;
    // Telegram refuses the next MarkdownV2 text as unparsable: the reply comes as plain text.
    world.telegram.refuse_next_markdown(1);
    let shown = world.say(8, "/help", "I can drive").await;
    assert!(
        shown.contains("/repo list | create <name> [git_url]"),
        "{shown}"
    );
    let calls = world.telegram.calls();
    let refused = calls
        .iter()
        .filter(|c| c.method == "sendmessage" && c.error.is_some())
        .count();
    assert_eq!(refused, 1);
    let fallback = calls.last().expect("a call");
    assert_eq!(fallback.method, "sendmessage");
    assert!(fallback.error.is_none() && fallback.params["parse_mode"].is_null());
    let metrics = world.metrics().await;
    assert!(
        metrics.contains("cockpit_telegram_plain_fallbacks_total 1"),
        "{metrics}"
    );
    world.assert_no_secrets_logged();
}

/// One path through the menus: a bare command (none: go on from what the chat shows), the
/// buttons pressed in turn (each on the newest message showing it), the text expected last.
struct Path<'a> {
    bare: &'a str,
    clicks: &'a [&'a str],
    expect: &'a str,
}

impl World {
    /// Follows a path by buttons alone; returns the answer.
    async fn follow(&self, user: i64, path: &Path<'_>) -> String {
        let mut since = self.telegram.texts_to(user).len();
        if !path.bare.is_empty() {
            self.telegram.send_text(user, path.bare);
        }
        for label in path.clicks {
            let deadline = std::time::Instant::now() + WAIT;
            while !self
                .telegram
                .keyboards(user)
                .last()
                .is_some_and(|(_, labels)| labels.iter().any(|l| l == label))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no button {label:?} on the way from {:?}: {:?}\n{:#?}\nrefused: {:#?}\n{}",
                    path.bare,
                    self.telegram.keyboards(user).last(),
                    self.telegram
                        .texts_to(user)
                        .iter()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>(),
                    self.telegram.refusals(),
                    self.cockpit
                        .log_text()
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            since = self.telegram.texts_to(user).len();
            self.telegram.click(user, label);
        }
        let answer = self
            .telegram
            .wait_new_text(user, since, path.expect, WAIT)
            .await;
        assert!(
            !answer.starts_with("Usage") && !answer.contains("I don't know"),
            "{answer}"
        );
        answer
    }
}

#[tokio::test]
async fn every_subcommand_is_reachable_from_its_bare_command_by_buttons() {
    let world = World::start().await;
    let user = 9;
    world.log_in(user).await;
    world
        .say(user, "/repo create demo", "created and selected")
        .await;
    world.say(user, "/repo create spare", "created").await;
    // Creating one that exists selects it, as the original bot did.
    world
        .say(
            user,
            "/repo create demo",
            "Repository demo already exists; selected",
        )
        .await;
    let repos = world.rest_repositories().await;
    let demo = repos
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "demo"))
        .expect("demo");
    web_template(std::path::Path::new(demo["path"].as_str().expect("path")));
    for (name, yaml) in [
        ("site.yaml", "web__site:\n  port: 8080\n"),
        ("other.yaml", "web__other:\n"),
        (
            "sched.yaml",
            "web__sched:\n\nactions:\n  - action: install\n    actor: web\n",
        ),
    ] {
        world
            .say(user, &format!("/blueprint add {name}"), "Send me the YAML")
            .await;
        world.say(user, yaml, "saved").await;
    }
    world
        .say(user, "/blueprint execute other.yaml", "executed")
        .await;

    let mut pressed: Vec<(String, String)> = Vec::new();
    let mut follow = async |bare: &str, clicks: &[&str], expect: &str| {
        if let Some(first) = clicks.first().filter(|_| !bare.is_empty()) {
            pressed.push((bare.to_string(), first.to_string()));
        }
        world
            .follow(
                user,
                &Path {
                    bare,
                    clicks,
                    expect,
                },
            )
            .await
    };
    follow("/repo", &["List"], "Repositories:").await;
    follow("/repo", &["Select", "spare"], "Repository spare selected").await;
    follow("/repo", &["Delete", "spare"], "Really repo delete spare?").await;
    follow("", &["Confirm"], "Repository spare deleted").await;
    // Prompts take free text where no list fits: the name, then the git URL (or Skip).
    follow("/repo", &["Create"], "name of the new repository").await;
    world.say(user, "fresh", "Send me the git URL").await;
    follow("", &["Skip"], "Repository fresh created and selected").await;
    follow("/repo", &["Select", "demo"], "Repository demo selected").await;
    follow("/blueprint", &["Add"], "name of the new blueprint").await;
    world
        .say(user, "third.yaml", "Send me the YAML of third.yaml")
        .await;
    world
        .say(user, "web__third:\n", "Blueprint third.yaml saved")
        .await;
    follow("/blueprint", &["List"], "Blueprints in demo").await;
    follow("/blueprint", &["Get", "site.yaml"], "web__site").await;
    follow(
        "/blueprint",
        &["Execute", "site.yaml"],
        "Blueprint site.yaml executed",
    )
    .await;
    follow(
        "/blueprint",
        &["Archive", "other.yaml"],
        "Blueprint other.yaml archived",
    )
    .await;
    follow(
        "/blueprint",
        &["Restore", "other.yaml"],
        "Blueprint other.yaml restored",
    )
    .await;
    follow(
        "/blueprint",
        &["Delete", "other.yaml"],
        "Press Confirm within 60 seconds",
    )
    .await;
    follow("", &["Confirm"], "Blueprint other.yaml deleted").await;
    follow("/service", &["List"], "Services in demo").await;
    follow("/service", &["Inspect", "web!site"], "Service web!site").await;
    follow(
        "/service",
        &["Delete", "web!other"],
        "Really service delete",
    )
    .await;
    follow("", &["Confirm"], "Deleted").await;
    follow(
        "/blueprint",
        &["Execute", "sched.yaml"],
        "Blueprint sched.yaml executed",
    )
    .await;
    follow("/run", &["Simulate"], "would run in").await;
    follow("/run", &["Create"], "started").await;
    world.telegram.wait_text(user, "ended: ok", WAIT).await;
    let started = follow(
        "/service",
        &["Execute", "web!site", "Run install"],
        "started",
    )
    .await;
    let key = started
        .split_whitespace()
        .nth(1)
        .expect("run key")
        .to_string();
    world
        .telegram
        .wait_text(user, &format!("Run {key} in demo ended: ok"), WAIT)
        .await;
    follow("/run", &["List", "ok"], "Runs in demo (ok)").await;
    follow("/run", &["Inspect", &key], &format!("Run {key}: ok")).await;
    // Nothing is pending any more: the answer says so.
    follow("/run", &["Execute"], "nothing to run").await;

    // Every subcommand each bare command offers was pressed above.
    for command in ["repo", "blueprint", "service", "run"] {
        for (label, _) in cockpit::bot::commands::menu(command) {
            assert!(
                pressed
                    .iter()
                    .any(|(bare, first)| *bare == format!("/{command}") && first == label),
                "/{command} → {label} was never pressed"
            );
        }
    }
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn the_bot_allows_and_refuses_as_configured_and_audits_it() {
    // alice1 is an admin by name; every member of myorg (alice2) may read; the REST client `ops`
    // is an admin too, to read the audit trail.
    let world = World::start_with(
        "[access]\nviewer = [\"group:myorg\"]\nadmin = [\"itsyouonline:alice1\", \"itsyouonline:ops\"]\n",
    )
    .await;
    world.log_in(1).await;
    world.log_in(2).await;
    world
        .say(
            2,
            "/repo create demo",
            "this needs the admin role; you have viewer",
        )
        .await;
    world.say(2, "/repo create", "needs the admin role").await;
    world
        .say(
            1,
            "/repo create demo",
            "Repository demo created and selected",
        )
        .await;
    world
        .say(2, "/repo select demo", "Repository demo selected")
        .await;
    world
        .say(2, "/run execute", "this needs the operator role")
        .await;
    world
        .say(2, "/blueprint add x.yaml", "this needs the operator role")
        .await;
    assert_eq!(world.rest_repositories().await[0]["name"], "demo");

    // `/token` in the private chat: a viewer token that reads but cannot create.
    let answer = world.say(2, "/token", "Your API token (viewer").await;
    let token = answer
        .split_whitespace()
        .find(|w| w.starts_with("ck_"))
        .expect("a token")
        .to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/ays/repository", world.cockpit.api);
    let read = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(read.status().as_u16(), 200);
    let create = http
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "other"}))
        .send()
        .await
        .expect("post");
    assert_eq!(create.status().as_u16(), 403);

    let api = Api::new(&world.cockpit);
    let response = http
        .get(format!(
            "{}/audit?door=telegram&limit=100",
            world.cockpit.api
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("audit");
    assert_eq!(response.status().as_u16(), 200);
    let page: Value = response.json().await.expect("json");
    let mut rows: Vec<(String, String, String, String)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("identity"), s("action"), s("target"), s("outcome"))
        })
        .collect();
    rows.reverse();
    let token_id = rows
        .iter()
        .find(|r| r.1 == "token.create")
        .map(|r| r.2.clone())
        .unwrap_or_default();
    let row = |who: &str, action: &str, target: &str, outcome: &str| {
        (
            who.to_string(),
            action.to_string(),
            target.to_string(),
            outcome.to_string(),
        )
    };
    assert_eq!(
        rows,
        vec![
            row("itsyouonline:alice2", "repo.create", "demo", "denied"),
            row("itsyouonline:alice2", "repo.create", "-", "denied"),
            row("itsyouonline:alice1", "repo.create", "demo", "ok"),
            row("itsyouonline:alice2", "run.create", "demo", "denied"),
            row(
                "itsyouonline:alice2",
                "blueprint.add",
                "demo/x.yaml",
                "denied"
            ),
            row("itsyouonline:alice2", "token.create", &token_id, "ok"),
        ]
    );
    assert!(token_id.starts_with("tok_"), "{token_id}");
    assert!(
        !page.to_string().contains(&token),
        "no token in the audit trail"
    );

    // A destructive command waits for its Confirm: unconfirmed, nothing is deleted.
    world
        .say(
            1,
            "/repo delete demo",
            "Really repo delete demo? Press Confirm",
        )
        .await;
    assert_eq!(world.rest_repositories().await[0]["name"], "demo");
    world.say(1, "/confirm", "Repository demo deleted").await;
    world
        .say(1, "/confirm", "There is nothing to confirm")
        .await;
    assert_eq!(world.rest_repositories().await, serde_json::json!([]));
    world.assert_no_secrets_logged();
}

#[tokio::test]
async fn service_execute_gives_key_value_args_to_the_action() {
    let world = World::start().await;
    world.log_in(3).await;
    world
        .say(3, "/repo create demo", "Repository demo created")
        .await;
    let repos = world.rest_repositories().await;
    let path = std::path::PathBuf::from(repos[0]["path"].as_str().expect("path"));
    web_template(&path);
    world
        .say(3, "/blueprint add site.yaml", "Send me the YAML")
        .await;
    world
        .say(3, "web__site:\n  port: 8080\n", "Blueprint site.yaml saved")
        .await;
    world
        .say(3, "/blueprint execute site.yaml", "executed")
        .await;
    world
        .say(3, "/service execute install web!site =x", "key=value")
        .await;
    let started = world
        .say(
            3,
            "/service execute install web!site target=s3 level=9",
            "started",
        )
        .await;
    let key = started
        .split_whitespace()
        .nth(1)
        .expect("run key")
        .to_string();
    world
        .telegram
        .wait_text(3, &format!("Run {key} in demo ended: ok"), WAIT)
        .await;
    let input: Value = serde_json::from_str(
        &std::fs::read_to_string(path.join("services/web/site/input.json")).expect("job input"),
    )
    .expect("job json");
    assert_eq!(
        input["args"],
        json!({"target": "s3", "level": "9"}),
        "{input}"
    );
    world.assert_no_secrets_logged();
}

/// A JWT of ItsYou.online user `user` in `myorg`, signed by the test key.
fn jwt(user: &str) -> String {
    const PRIVATE: &str = include_str!("support/keys/test_p384.pem");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"iss": "itsyouonline", "exp": now + 3600, "username": user,
                        "scope": ["user:memberof:myorg"]});
    cockpit::auth::mint_token(PRIVATE, &claims).expect("mint")
}

/// One audit row as the test compares it: `(door, identity, action, target, outcome)`.
type Row = (String, String, String, String, String);

fn row(door: &str, identity: &str, action: &str, target: &str, outcome: &str) -> Row {
    (
        door.into(),
        identity.into(),
        action.into(),
        target.into(),
        outcome.into(),
    )
}

impl World {
    /// `GET /audit` as the REST admin `ops`: the rows oldest first, and the page as text.
    async fn audit(&self) -> (Vec<Row>, String) {
        let api = Api {
            base: self.cockpit.api.clone(),
            ..Api::new(&self.cockpit)
        };
        let (status, page) = api.get("/audit?limit=1000").await;
        assert_eq!(status, 200, "{page}");
        let mut rows: Vec<Row> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (
                    s("door"),
                    s("identity"),
                    s("action"),
                    s("target"),
                    s("outcome"),
                )
            })
            .collect();
        rows.reverse();
        (rows, page.to_string())
    }
}

#[tokio::test]
async fn a_two_person_repo_delete_waits_for_a_second_admin_in_telegram() {
    let world = World::start_with(
        "[access]\nadmin = [\"itsyouonline:alice1\", \"itsyouonline:alice2\", \"itsyouonline:ops\"]\ntwo_person = [\"repo.delete\"]\n",
    )
    .await;
    world.log_in(1).await;
    world.log_in(2).await;
    world
        .say(1, "/repo create demo", "Repository demo created")
        .await;
    world.say(1, "/repo delete demo", "Press Confirm").await;
    let held = world.say(1, "/confirm", "needs a second admin").await;
    let at = held.find("apr_").expect("an approval id");
    let id: String = held[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(world.rest_repositories().await[0]["name"], "demo", "held");

    world
        .say(
            1,
            &format!("/approve {id}"),
            "the same admin cannot approve their own request",
        )
        .await;
    assert_eq!(world.rest_repositories().await[0]["name"], "demo");
    world
        .say(
            2,
            &format!("/approve {id}"),
            "Approved: repo.delete demo (asked by itsyouonline:alice1) is done",
        )
        .await;
    assert_eq!(world.rest_repositories().await, json!([]));
    world
        .say(2, &format!("/approve {id}"), "already approved")
        .await;

    let (rows, _) = world.audit().await;
    let t = "telegram";
    assert_eq!(
        rows,
        vec![
            row(t, "itsyouonline:alice1", "repo.create", "demo", "ok"),
            row(t, "itsyouonline:alice1", "repo.delete", "demo", "denied"),
            row(t, "itsyouonline:alice1", "approval.approve", &id, "denied"),
            row(t, "itsyouonline:alice2", "approval.approve", &id, "ok"),
            row(t, "itsyouonline:alice1", "repo.delete", "demo", "ok"),
        ]
    );
    world.assert_no_secrets_logged();
}

/// One fixed script through every door (REST, Telegram, mail, the CLI), allowed, refused and
/// failing commands, then `kill -9`: the audit trail has exactly the expected rows, in order,
/// and no secret.
#[tokio::test]
async fn a_mixed_script_through_every_door_is_audited_row_for_row_across_kill_9() {
    let mail =
        "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n";
    let mut world = World::start_with(&format!(
        "[access]\nviewer = [\"group:myorg\"]\noperator = [\"itsyouonline:olga\"]\n\
         admin = [\"itsyouonline:alice1\", \"itsyouonline:ops\"]\n{mail}"
    ))
    .await;
    world.log_in(1).await; // alice1: admin
    world.log_in(2).await; // alice2: viewer (myorg)
    let (olga, vic) = (jwt("olga"), jwt("vic"));
    let ops = Api::new(&world.cockpit);
    let rest = |token: &str| Api {
        token: token.to_string(),
        ..Api::new(&world.cockpit)
    };

    // REST: a viewer refused, an admin creates.
    let (status, _) = rest(&vic).post("", json!({"name": "demo"})).await;
    assert_eq!(status, 403);
    let (status, repo) = ops.post("", json!({"name": "demo"})).await;
    assert_eq!(status, 201, "{repo}");
    support::api::template(
        &support::api::repo_path(&repo),
        "node",
        "size: {type: int, default: 1}\n",
        &[("install", "sleep 30")],
    );

    // Telegram: a viewer refused, an admin adds and executes a blueprint, one that is not there
    // fails.
    world.say(2, "/repo select demo", "selected").await;
    world
        .say(2, "/blueprint add x.yaml", "needs the operator role")
        .await;
    world.say(1, "/repo select demo", "selected").await;
    world
        .say(1, "/blueprint add web.yaml", "Send me the YAML")
        .await;
    world
        .say(1, "node__main:\n  size: 2\n", "Blueprint web.yaml saved")
        .await;
    world
        .say(1, "/blueprint execute web.yaml", "executed")
        .await;
    world
        .say(1, "/blueprint execute nope.yaml", "not found")
        .await;

    // REST: an operator schedules an action and starts a run (the action sleeps), is refused a
    // deletion, fails an execution, raises an event.
    let (status, body) = rest(&olga)
        .post("/demo/service/node/main/action/install", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, run) = rest(&olga).post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("run key").to_string();
    let (status, _) = rest(&olga)
        .call(reqwest::Method::DELETE, "/demo", None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = rest(&olga)
        .post("/demo/blueprint/nope.yaml", json!({}))
        .await;
    assert_eq!(status, 404);
    let events = Api {
        base: world.cockpit.api.clone(),
        ..rest(&olga)
    };
    let (status, body) = events
        .post("/ays/event/deploy", json!({"version": "1.2"}))
        .await;
    assert_eq!(status, 202, "{body}");

    // Telegram: the admin cancels the run.
    world
        .say(1, &format!("/run cancel {key}"), "cancelled")
        .await;

    // Mail, audited as its sender; the body stays out of the trail.
    let body = "the mail body SECRET-never-audited";
    let mut smtp = tokio::net::TcpStream::connect(&world.cockpit.mail)
        .await
        .expect("smtp");
    support::smtp_session(&mut smtp, "ops@example.org", "alerts@cockpit.test", body).await;

    // The CLI beside the running server: a token for olga, then olga logged out everywhere; one
    // revocation of nobody fails.
    let config = world.cockpit.config.display().to_string();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-c", config.as_str()]);
        support::run(&all)
    };
    let (code, cli_token, err) = cli(&[
        "tokens",
        "create",
        "--identity",
        "itsyouonline:olga",
        "--role",
        "viewer",
    ]);
    assert_eq!(code, 0, "{err}");
    let cli_token = cli_token.trim().to_string();
    let (code, _, err) = cli(&["users", "revoke", "itsyouonline:olga"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = cli(&["users", "revoke", "github:nobody"]);
    assert_ne!(code, 0);

    world.cockpit = world.cockpit.kill_and_restart();
    let (rows, page) = world.audit().await;
    let cli_user = rows
        .iter()
        .find(|r| r.0 == "cli")
        .map(|r| r.1.clone())
        .expect("a cli row");
    assert!(cli_user.starts_with("cli:"), "{cli_user}");
    let token_id = rows
        .iter()
        .find(|r| r.0 == "cli" && r.2 == "token.create")
        .map(|r| r.3.clone())
        .expect("the token's row");
    assert!(token_id.starts_with("tok_"), "{token_id}");
    let (a1, a2) = ("itsyouonline:alice1", "itsyouonline:alice2");
    let (t, r) = ("telegram", "rest");
    assert_eq!(
        rows,
        vec![
            row(r, "itsyouonline:vic", "repo.create", "", "denied"),
            row(r, "itsyouonline:ops", "repo.create", "demo", "ok"),
            row(t, a2, "blueprint.add", "demo/x.yaml", "denied"),
            row(t, a1, "blueprint.add", "demo/web.yaml", "ok"),
            row(t, a1, "blueprint.execute", "demo/web.yaml", "ok"),
            row(t, a1, "blueprint.execute", "demo/nope.yaml", "error"),
            row(
                r,
                "itsyouonline:olga",
                "service.execute",
                "demo/node/main/install",
                "ok"
            ),
            row(r, "itsyouonline:olga", "run.create", "demo", "ok"),
            row(r, "itsyouonline:olga", "repo.delete", "demo", "denied"),
            row(
                r,
                "itsyouonline:olga",
                "blueprint.execute",
                "demo/nope.yaml",
                "error"
            ),
            row(r, "itsyouonline:olga", "event.raise", "deploy", "ok"),
            row(t, a1, "run.cancel", &format!("demo/{key}"), "ok"),
            row(
                "mail",
                "mail:ops@example.org",
                "mail.receive",
                "alerts@cockpit.test",
                "ok"
            ),
            row("cli", &cli_user, "token.create", &token_id, "ok"),
            row("cli", &cli_user, "user.revoke", "itsyouonline:olga", "ok"),
            row("cli", &cli_user, "user.revoke", "github:nobody", "error"),
        ]
    );
    for secret in [
        cli_token.as_str(),
        &cli_token[3..],
        &olga,
        &vic,
        &ops.token,
        BOT_TOKEN,
        "s3cr3t-client-VALUE",
        body,
        "SECRET",
    ] {
        assert!(!page.contains(secret), "{secret:?} is in the audit trail");
    }
    world.assert_no_secrets_logged();
}
