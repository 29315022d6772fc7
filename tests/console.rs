//! The web console against the real binary: logins through cockpit's own OAuth server and a
//! fake provider (`support/fake_provider.rs`), one cookie-keeping HTTP client per person;
//! sessions, `next_url`, CSRF and Origin, roles (a forced route refused as the page does not
//! offer it), the blueprint editor's problems with their lines, runs with their live log,
//! cancel and re-run.

mod support;

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_provider::{CLIENT_ID, CLIENT_SECRET, FakeProvider};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Cockpit;

/// Cockpit with `[oauth_proxy]`, the fake provider and roles for three people.
struct World {
    cockpit: Cockpit,
    provider: FakeProvider,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

/// One person's browser: cookies kept, redirects not followed (each hop is looked at).
struct Browser {
    http: reqwest::Client,
    base: String,
}

/// An answer: status, `Location`, body.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl World {
    async fn start() -> World {
        let provider = FakeProvider::start().await;
        // The proxy's public URL names its port, so the port is chosen before the start (and
        // chosen again if another process took it in between).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let dir = tempfile::tempdir().expect("tempdir");
            let text = format!(
                "{}[oauth_proxy]\nurl = \"http://127.0.0.1:{port}/oauth\"\n\
                 signing_key = \"{key}\"\n\n\
                 [[oauth_provider]]\nname = \"github\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = \"{CLIENT_SECRET}\"\n\
                 authorize_url = \"{p}/login/oauth/authorize\"\n\
                 access_token_url = \"{p}/login/oauth/access_token\"\n\
                 user_info_url = \"{p}/user\"\nidentity_claim = \"login\"\n\
                 groups_claim = \"groups\"\n\
                 user_info_fields = [\"login\"]\n\n\
                 [login]\nprovider = \"github\"\nallowed_groups = [\"myorg\"]\n\n\
                 [access]\nadmin = [\"github:octocat\"]\noperator = [\"github:olive\"]\n\
                 viewer = [\"github:vera\"]\n",
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
                let base = format!("http://127.0.0.1:{port}");
                cockpit.api = base.clone();
                return World {
                    cockpit,
                    provider,
                    base,
                };
            }
        }
        panic!("cockpit did not start");
    }

    fn browser(&self) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                // A new connection each time: a test restarts the server under the browser.
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            base: self.base.clone(),
        }
    }

    /// A browser logged in as `login` (through the proxy and the provider), having asked for
    /// `next`; returns it and where the login ended.
    async fn login_to(&self, login: &str, next: &str) -> (Browser, String) {
        self.provider
            .set_user(json!({"login": login, "id": 7, "groups": ["myorg"]}));
        let browser = self.browser();
        let mut url = format!(
            "{}/console/login/start?{}",
            self.base,
            form(&[("next_url", next)])
        );
        // console → /oauth/authorize → provider → /oauth/callback → /console/callback → next
        for _ in 0..6 {
            let page = browser.get_url(&url).await;
            match page.location {
                Some(location) if page.status.is_redirection() => {
                    url = reqwest::Url::parse(&url)
                        .and_then(|u| u.join(&location))
                        .expect("location")
                        .to_string();
                    if url.starts_with(&self.base)
                        && !url.contains("/oauth/")
                        && !url.contains("/console/callback")
                        && !url.contains("/console/login/start")
                    {
                        return (browser, url.trim_start_matches(&self.base).to_string());
                    }
                }
                _ => panic!("the login stopped at {url}: {page:?}"),
            }
        }
        panic!("the login did not end");
    }

    async fn login(&self, login: &str) -> Browser {
        let (browser, landed) = self.login_to(login, "/console").await;
        assert_eq!(landed, "/console");
        browser
    }
}

/// `a=b&c=d`.
fn form(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .expect("url")
        .query()
        .unwrap_or_default()
        .to_string()
}

impl Browser {
    async fn get_url(&self, url: &str) -> Page {
        let resp = self.http.get(url).send().await.expect("get");
        page(resp).await
    }

    async fn get(&self, path: &str) -> Page {
        self.get_url(&format!("{}{path}", self.base)).await
    }

    /// The CSRF token of the forms on `path`.
    async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field on {path}: {page:?}"));
        let rest = &page.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end")].to_string()
    }

    /// A form POST from the console's own pages (its Origin).
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_from(path, fields, Some(&self.base.clone())).await
    }

    /// A form POST with this `Origin` (none: no header).
    async fn post_from(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        page(request.send().await.expect("post")).await
    }
}

async fn page(resp: reqwest::Response) -> Page {
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    Page {
        status,
        location,
        body,
    }
}

/// A git repository with template `node` whose `install` prints `n` lines, one per `pause`
/// seconds.
fn git_repo(dir: &Path, lines: u32, pause: &str) -> PathBuf {
    let repo = dir.join("git");
    support::api::template(
        &repo,
        "node",
        "port: {type: int, default: 1}\n",
        &[(
            "install",
            &format!("for i in $(seq 1 {lines}); do echo line $i; sleep {pause}; done"),
        )],
    );
    for args in [
        vec!["init", "-q"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(&args)
            .current_dir(&repo)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }
    repo
}

#[tokio::test]
async fn a_login_goes_through_cockpits_oauth_server_and_a_logout_ends_it() {
    let world = World::start().await;
    let anonymous = world.browser();
    let first = anonymous.get("/console/repos/x/runs?state=ok").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(
        first.location.as_deref(),
        Some("/console/login?next_url=%2Fconsole%2Frepos%2Fx%2Fruns%3Fstate%3Dok")
    );
    let login = anonymous.get("/console/login?next_url=/console").await;
    assert!(login.body.contains("Log in with github"), "{login:?}");
    assert!(!login.body.contains("Development login"), "{login:?}");
    // No development login on a production server.
    let dev = anonymous
        .post("/console/login/dev", &[("next_url", "/console")])
        .await;
    assert_eq!(dev.status, StatusCode::NOT_FOUND);

    let (admin, landed) = world
        .login_to("octocat", "/console/repos/x/runs?state=ok")
        .await;
    assert_eq!(landed, "/console/repos/x/runs?state=ok");
    let home = admin.get("/console").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("github:octocat · admin"), "{home:?}");
    assert!(home.body.contains("New repository"));
    let headers = admin
        .http
        .get(format!("{}/console", world.base))
        .send()
        .await
        .expect("get");
    let csp = headers
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    // Outside `[login].allowed_groups`: refused at the callback, no session.
    world
        .provider
        .set_user(json!({"login": "eve", "id": 9, "groups": ["otherorg"]}));
    let outsider = world.browser();
    let mut url = format!("{}/console/login/start?next_url=/console", world.base);
    let last = loop {
        let page = outsider.get_url(&url).await;
        match page.location.clone() {
            Some(location) if page.status.is_redirection() => {
                url = reqwest::Url::parse(&url)
                    .and_then(|u| u.join(&location))
                    .expect("location")
                    .to_string();
            }
            _ => break page,
        }
    };
    assert_eq!(last.status, StatusCode::FORBIDDEN, "{last:?}");
    assert!(
        last.body.contains("only members of myorg may log in"),
        "{last:?}"
    );
    assert_eq!(outsider.get("/console").await.status, StatusCode::SEE_OTHER);

    let csrf = admin.csrf("/console").await;
    let out = admin.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some("/console/login"));
    let after = admin.get("/console").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "logged out: {after:?}");
}

#[tokio::test]
async fn a_session_and_its_csrf_token_outlive_a_kill_and_restart() {
    let world = World::start().await;
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let World {
        cockpit,
        provider,
        base,
    } = world;
    let world = World {
        cockpit: cockpit.kill_and_restart(),
        provider,
        base,
    };
    // The same browser, after the restart: still logged in, and its form's token still good.
    let home = admin.get("/console").await;
    assert_eq!(home.status, StatusCode::OK, "{home:?}");
    assert!(home.body.contains("github:octocat · admin"), "{home:?}");
    let made = admin
        .post("/console/repos", &[("name", "after"), ("csrf", &csrf)])
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{made:?}");
    assert_eq!(made.location.as_deref(), Some("/console/repos/after"));
    // A logout still ends it for good.
    let out = admin.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(admin.get("/console").await.status, StatusCode::SEE_OTHER);
    drop(world);
}

#[tokio::test]
async fn next_url_stays_on_this_site() {
    let world = World::start().await;
    for next in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let (_, landed) = world.login_to("octocat", next).await;
        assert_eq!(landed, "/console", "{next}");
    }
    let (_, landed) = world.login_to("octocat", "/console/repos/a?b=c").await;
    assert_eq!(landed, "/console/repos/a?b=c");
}

#[tokio::test]
async fn a_change_needs_the_sessions_csrf_token_and_this_origin() {
    let world = World::start().await;
    let admin = world.login("octocat").await;
    let other = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let others = other.csrf("/console").await;
    assert_ne!(csrf, others, "a token per session");
    let base = world.base.clone();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("no token", vec![("name", "r1")], Some(&base)),
        (
            "a wrong token",
            vec![("name", "r1"), ("csrf", "00")],
            Some(&base),
        ),
        (
            "another session's token",
            vec![("name", "r1"), ("csrf", &others)],
            Some(&base),
        ),
        (
            "another origin",
            vec![("name", "r1"), ("csrf", &csrf)],
            Some("http://evil.example"),
        ),
        ("no origin", vec![("name", "r1"), ("csrf", &csrf)], None),
    ];
    for (what, fields, origin) in cases {
        let refused = admin.post_from("/console/repos", &fields, origin).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{what}: {refused:?}");
    }
    // Fetch metadata saying cross-site wins over a matching Origin.
    let cross = admin
        .http
        .post(format!("{}/console/repos", world.base))
        .header("origin", &world.base)
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("name", "r1"), ("csrf", &csrf)]))
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(
        !admin.get("/console").await.body.contains("r1"),
        "nothing was created"
    );

    let made = admin
        .post("/console/repos", &[("name", "r1"), ("csrf", &csrf)])
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{made:?}");
    assert_eq!(made.location.as_deref(), Some("/console/repos/r1"));
    assert!(admin.get("/console").await.body.contains("r1"));
}

#[tokio::test]
async fn what_a_role_may_not_do_is_not_offered_and_refused_when_forced() {
    let world = World::start().await;
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let made = admin
        .post("/console/repos", &[("name", "demo"), ("csrf", &csrf)])
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER);
    assert!(admin.get("/console").await.body.contains(">Delete<"));

    let viewer = world.login("vera").await;
    let home = viewer.get("/console").await;
    assert!(home.body.contains("github:vera · viewer"), "{home:?}");
    assert!(home.body.contains("demo"));
    assert!(!home.body.contains(">Delete<"), "not offered: {home:?}");
    assert!(!home.body.contains("New repository"));
    let repo = viewer.get("/console/repos/demo").await;
    assert!(!repo.body.contains("Start a run") && !repo.body.contains("New blueprint"));
    let csrf = viewer.csrf("/console").await;
    let forced = [
        ("/console/repos/demo/delete", vec![("csrf", csrf.as_str())]),
        (
            "/console/repos",
            vec![("csrf", csrf.as_str()), ("name", "mine")],
        ),
        ("/console/repos/demo/runs", vec![("csrf", csrf.as_str())]),
        (
            "/console/repos/demo/blueprints",
            vec![
                ("csrf", csrf.as_str()),
                ("name", "a.yaml"),
                ("content", "x__y:\n"),
            ],
        ),
    ];
    for (path, fields) in &forced {
        let refused = viewer.post(path, fields).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}: {refused:?}");
        assert!(refused.body.contains("needs the"), "{path}: {refused:?}");
    }
    assert!(
        viewer.get("/console").await.body.contains("demo"),
        "still there"
    );

    // An operator may add blueprints and start runs, not delete repositories.
    let operator = world.login("olive").await;
    let repo = operator.get("/console/repos/demo").await;
    assert!(repo.body.contains("Start a run") && repo.body.contains("New blueprint"));
    let csrf = operator.csrf("/console").await;
    let refused = operator
        .post("/console/repos/demo/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // A member with no role sees nothing.
    let stranger = world.login("mallory").await;
    let page = stranger.get("/console").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!page.body.contains("demo"));

    // Each refusal left a `denied` row of the console door.
    let db = audit_rows(&world.cockpit.data_dir());
    assert!(
        db.iter()
            .any(|r| r.contains("console|github:vera|repo.delete|demo|denied")),
        "{db:?}"
    );
}

/// The audit rows as `door|identity|action|target|outcome`.
fn audit_rows(data_dir: &Path) -> Vec<String> {
    support::db::rows(
        data_dir,
        "SELECT door, identity, action, target, outcome FROM audit ORDER BY id",
    )
    .into_iter()
    .map(|row| {
        row.into_iter()
            .map(Option::unwrap_or_default)
            .collect::<Vec<_>>()
            .join("|")
    })
    .collect()
}

#[tokio::test]
async fn a_blueprint_shows_its_problems_by_line_then_runs_with_a_live_log() {
    let world = World::start().await;
    let git = git_repo(world.cockpit.dir.path(), 3, "0.2");
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let made = admin
        .post(
            "/console/repos",
            &[
                ("name", "demo"),
                ("git_url", git.to_str().expect("path")),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{made:?}");

    let bad =
        "node__a:\n  port: 2\nbad key: 1\nactions:\n  - action: install\n    recurring: nope\n";
    let checked = |content: &'static str| {
        let request = admin
            .http
            .post(format!("{}/console/repos/demo/check", world.base))
            .header("origin", &world.base)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("name", "web.yaml"), ("content", content)]));
        async move {
            let response = request.send().await.expect("check");
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.expect("json");
            body["problems"].as_array().expect("list").clone()
        }
    };
    let problems = checked(bad).await;
    let lines: Vec<Value> = problems.iter().map(|p| p["line"].clone()).collect();
    assert_eq!(lines, vec![json!(3), json!(6)], "{problems:?}");

    // Saving it is refused with the problems shown; nothing is saved.
    let refused = admin
        .post(
            "/console/repos/demo/blueprints",
            &[("name", "web.yaml"), ("content", bad), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("line 3"), "{refused:?}");
    assert!(refused.body.contains("needs to be actor__instance"));
    assert_eq!(
        admin
            .get("/console/repos/demo/blueprints/web.yaml")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // An unknown actor and a field of the wrong type: Check shows them too, by line, before
    // anything is saved (against the repository's templates)…
    let unknown = "node__a:\n  port: 2\nnope__b:\nactions:\n  - action: install\n";
    let problems = checked(unknown).await;
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == json!(3)
                && p["text"].as_str().unwrap_or("").contains("unknown actor")),
        "{problems:?}"
    );
    let problems = checked("node__a:\n  port: many\n").await;
    assert!(
        problems.iter().any(|p| p["line"] == json!(2)),
        "{problems:?}"
    );
    assert_eq!(
        checked("node__a:\n  port: 2\n").await,
        Vec::<Value>::new(),
        "a good one has none"
    );
    // …and Execute refuses a saved one with the same problems.
    let saved = admin
        .post(
            "/console/repos/demo/blueprints",
            &[("name", "web.yaml"), ("content", unknown), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{saved:?}");
    let execute = admin
        .post(
            "/console/repos/demo/blueprints/web.yaml/execute",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(execute.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(execute.body.contains("line 3"), "{execute:?}");
    assert!(execute.body.contains("unknown actor"), "{execute:?}");

    let good = "node__a:\n  port: 2\nactions:\n  - action: install\n";
    let saved = admin
        .post(
            "/console/repos/demo/blueprints/web.yaml",
            &[("name", "web.yaml"), ("content", good), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{saved:?}");
    let executed = admin
        .post(
            "/console/repos/demo/blueprints/web.yaml/execute",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(executed.status, StatusCode::SEE_OTHER, "{executed:?}");
    let note = admin
        .get(executed.location.as_deref().expect("location"))
        .await;
    assert!(note.body.contains("Executed: 1 service"), "{note:?}");

    let started = admin
        .post("/console/repos/demo/runs", &[("csrf", &csrf)])
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{started:?}");
    let run = started.location.expect("run page");
    let shown = admin.get(&run).await;
    assert!(shown.body.contains("<svg"), "the timeline: {shown:?}");
    // The live log: every line, then the end, over the console's event stream.
    let mut stream = admin
        .http
        .get(format!("{}{run}/logs", world.base))
        .send()
        .await
        .expect("logs");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !text.contains("event:end") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the log ends in time")
            .expect("chunk");
        match chunk {
            Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
    }
    for n in 1..=3 {
        assert!(text.contains(&format!("line {n}")), "{text}");
    }
    assert!(text.contains("\"state\":\"ok\""), "{text}");
    let ended = admin.get(&run).await;
    assert!(
        ended.body.contains("line 3") && ended.body.contains("Re-run"),
        "{ended:?}"
    );
    // The timeline draws the job from its start to its end, and the list says how long it took
    // (three lines 0.2 s apart: over 0.4 s).
    assert!(ended.body.contains(r#"<rect class="s-ok""#), "{ended:?}");
    let took = took_seconds(&ended.body);
    assert!(took >= 0.4, "took {took} s: {ended:?}");
    // The service: its page, its place in the graph, its action run with args.
    let services = admin.get("/console/repos/demo/services").await;
    assert!(services.body.contains("node!a"), "{services:?}");
    let graph = admin.get("/console/repos/demo/graph").await;
    assert!(
        graph.body.contains("<svg") && graph.body.contains("node!a"),
        "{graph:?}"
    );
    let service = admin.get("/console/repos/demo/services/node/a").await;
    assert!(service.body.contains(">Run<"), "{service:?}");
    let bad_args = admin
        .post(
            "/console/repos/demo/services/node/a/install",
            &[("args", "not json"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        bad_args.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{bad_args:?}"
    );
    let ran = admin
        .post(
            "/console/repos/demo/services/node/a/install",
            &[("args", "{\"who\": \"console\"}"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(ran.status, StatusCode::SEE_OTHER, "{ran:?}");
    assert!(
        ran.location
            .expect("run")
            .contains("/console/repos/demo/runs/")
    );
    // A re-run waits behind the run in progress.
    let again = admin
        .post(&format!("{run}/rerun"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{again:?}");
    assert_ne!(again.location.as_deref(), Some(run.as_str()));
    let runs = admin.get("/console/repos/demo/runs?state=ok").await;
    assert!(runs.body.contains("badge ok"), "{runs:?}");

    let templates = admin.get("/console/repos/demo/templates").await;
    assert!(templates.body.contains("install"), "{templates:?}");
    // One template's page shows its actions' code.
    assert!(
        templates
            .body
            .contains("/console/repos/demo/templates/node"),
        "{templates:?}"
    );
    let template = admin.get("/console/repos/demo/templates/node").await;
    assert!(
        template.body.contains("actions/install")
            && template
                .body
                .contains("for i in $(seq 1 3); do echo line $i"),
        "{template:?}"
    );
}

/// The seconds of the first `· 1.2 s` (or `· 640 ms`) a run page's job list shows.
fn took_seconds(body: &str) -> f64 {
    for (i, _) in body.match_indices("· ") {
        let rest = &body[i + "· ".len()..];
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let unit = &rest[number.len()..];
        if let Ok(value) = number.parse::<f64>() {
            if unit.starts_with(" s<") || unit.starts_with(" s\n") {
                return value;
            }
            if unit.starts_with(" ms") {
                return value / 1000.0;
            }
        }
    }
    panic!("no duration in the page")
}

#[tokio::test]
async fn a_running_run_is_cancelled_from_its_page() {
    let world = World::start().await;
    let git = git_repo(world.cockpit.dir.path(), 600, "0.1");
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let post = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let admin = &admin;
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin.post(path, &pairs).await
        }
    };
    let git = git.to_str().expect("path").to_string();
    post(
        "/console/repos",
        vec![
            ("name", "slow".into()),
            ("git_url", git),
            ("csrf", csrf.clone()),
        ],
    )
    .await;
    let bp = "node__a:\nactions:\n  - action: install\n";
    post(
        "/console/repos/slow/blueprints",
        vec![
            ("name", "web.yaml".into()),
            ("content", bp.into()),
            ("csrf", csrf.clone()),
        ],
    )
    .await;
    let executed = post(
        "/console/repos/slow/blueprints/web.yaml/execute",
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(executed.status, StatusCode::SEE_OTHER, "{executed:?}");
    let started = post("/console/repos/slow/runs", vec![("csrf", csrf.clone())]).await;
    let run = started.location.expect("run page");
    let page = admin.get(&run).await;
    assert!(page.body.contains(">Cancel<"), "{page:?}");
    let cancelled = admin
        .post(&format!("{run}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER, "{cancelled:?}");
    let page = admin.get(&run).await;
    assert!(page.body.contains("badge cancelled"), "{page:?}");
    assert!(!page.body.contains(">Cancel<"));
}

/// The directory of the browser test's Node.js packages.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console-browser")
}

/// Where the browser test writes its screenshots and measurements (not committed).
fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-shots")
}

/// Runs one phase of `tests/console-browser/flow.mjs`; its stdout.
async fn browser_phase(job: Value) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new("node")
            .arg("flow.mjs")
            .arg(job.to_string())
            .current_dir(browser_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the browser phase {} took too long", job["phase"]))
    .expect("node runs (scripts/console-test.sh installs Node.js and Chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "browser phase {}: {}\n{stdout}",
        job["phase"],
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `big`: 1,000 services (a blueprint of 1,000 declarations, executed) and 1,000 ended runs
/// (rows written into the store, as the pruner would find them after a busy day).
async fn big_repository(world: &World, git: &Path) -> String {
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let made = admin
        .post(
            "/console/repos",
            &[
                ("name", "big"),
                ("git_url", git.to_str().expect("path")),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{made:?}");
    let blueprint: String = (1..=1000)
        .map(|i| format!("node__s{i}:\n  port: {i}\n"))
        .collect();
    let saved = admin
        .post(
            "/console/repos/big/blueprints",
            &[
                ("name", "big.yaml"),
                ("content", &blueprint),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{saved:?}");
    let executed = admin
        .post(
            "/console/repos/big/blueprints/big.yaml/execute",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(executed.status, StatusCode::SEE_OTHER, "{executed:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let rows: Vec<String> = (0..1000i64)
        .map(|i| {
            let at = now - 86_400 + i * 60;
            let state = if i % 10 == 0 { "error" } else { "ok" };
            format!(
                "('{:016x}', 'big', '{state}', {at}, {at}, '{{\"api\":true}}')",
                0xb16_0000 + i
            )
        })
        .collect();
    support::db::execute(
        &world.cockpit.data_dir(),
        &format!(
            "INSERT INTO runs (key, repo, state, created, ended, origin) VALUES {}",
            rows.join(", ")
        ),
    );
    format!("{:016x}", 0xb16_0000 + 999)
}

/// The acceptance flow of the console in headless Chromium (Debian's `chromium`, driven by
/// playwright-core): log in, create a repository from a local git repository, an invalid
/// blueprint's problems, fixed and executed, a run's log arriving live, a cancelled run, a
/// viewer without the Delete button and refused the route, log out; then each page's first load
/// with 1,000 runs and 1,000 services. Screenshots and figures in `target/console-shots/`.
/// Run by `scripts/console-test.sh` (which installs Chromium and the npm packages).
#[tokio::test]
#[ignore = "needs Chromium and Node.js: scripts/console-test.sh"]
async fn the_console_in_chromium() {
    let world = World::start().await;
    let git = git_repo(world.cockpit.dir.path(), 12, "0.25");
    let shots = shots_dir();
    std::fs::create_dir_all(&shots).expect("shots dir");
    let base = world.base.clone();
    let job = |phase: &str| json!({"phase": phase, "base": base, "git": git, "shots": shots, "pages": []});
    world
        .provider
        .set_user(json!({"login": "octocat", "id": 1, "groups": ["myorg"]}));
    browser_phase(job("admin")).await;
    world
        .provider
        .set_user(json!({"login": "vera", "id": 2, "groups": ["myorg"]}));
    browser_phase(job("viewer")).await;

    let run = big_repository(&world, &git).await;
    world
        .provider
        .set_user(json!({"login": "octocat", "id": 1, "groups": ["myorg"]}));
    let pages = [
        "/console".to_string(),
        "/console/repos/big".into(),
        "/console/repos/big/runs".into(),
        "/console/repos/big/runs?state=error".into(),
        format!("/console/repos/big/runs/{run}"),
        "/console/repos/big/services".into(),
        "/console/repos/big/services/node/s500".into(),
        "/console/repos/big/blueprints/big.yaml".into(),
        "/console/repos/big/graph".into(),
        "/console/repos/big/templates".into(),
        "/console/tokens".into(),
        "/console/audit".into(),
    ];
    let mut measure = job("measure");
    measure["pages"] = json!(pages);
    let out = browser_phase(measure).await;
    let figures: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(figures.len(), pages.len(), "{out}");
    std::fs::write(
        shots.join("measure.json"),
        serde_json::to_string_pretty(&figures).expect("json"),
    )
    .expect("measure.json");
    // Sizes are checked here; times only in the benchmark (`bench/run.py console` reads this
    // file): a timed assertion failed a CI run on a loaded machine (371 ms against 300).
    for f in &figures {
        let bytes = f["bytes"].as_u64().expect("bytes");
        assert!(f["load_ms"].as_f64().is_some(), "{f}");
        assert!(bytes < 100 * 1024, "{} transfers {bytes} bytes", f["path"]);
    }
}

#[tokio::test]
async fn tokens_are_shown_once_and_revoked_users_revoked_and_the_audit_read_by_admins() {
    let world = World::start().await;
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console/tokens").await;
    // Above one's own role: refused.
    let viewer = world.login("vera").await;
    let vcsrf = viewer.csrf("/console/tokens").await;
    let above = viewer
        .post(
            "/console/tokens",
            &[
                ("name", "mine"),
                ("role", "admin"),
                ("ttl_days", "1"),
                ("csrf", &vcsrf),
            ],
        )
        .await;
    assert_eq!(above.status, StatusCode::FORBIDDEN, "{above:?}");
    let made = viewer
        .post(
            "/console/tokens",
            &[
                ("name", "ci"),
                ("role", "viewer"),
                ("ttl_days", "30"),
                ("csrf", &vcsrf),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{made:?}");
    let at = made.body.find("ck_").expect("the token is shown");
    let token: String = made.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let listed = viewer.get("/console/tokens").await;
    assert!(
        listed.body.contains(">ci<") && !listed.body.contains(&token),
        "shown once"
    );
    let rest = |token: String| {
        let url = format!("{}/ays/repository", world.base);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("rest")
                .status()
        }
    };
    assert_eq!(rest(token.clone()).await, StatusCode::OK);

    // The viewer sees neither users nor the audit trail, and cannot revoke people.
    assert!(!listed.body.contains(">Audit<") && !listed.body.contains(">Users<"));
    assert_eq!(
        viewer.get("/console/audit").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.get("/console/users").await.status,
        StatusCode::FORBIDDEN
    );
    let forced = viewer
        .post(
            "/console/users/revoke",
            &[("identity", "github:vera"), ("csrf", &vcsrf)],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN);
    assert_eq!(rest(token.clone()).await, StatusCode::OK);

    // An admin revokes the viewer everywhere: the token dies at once.
    let users = admin.get("/console/users").await;
    assert!(users.body.contains("github:vera"), "{users:?}");
    let revoked = admin
        .post(
            "/console/users/revoke",
            &[("identity", "github:vera"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{revoked:?}");
    assert_eq!(rest(token).await, StatusCode::UNAUTHORIZED);
    // ... and the viewer's console session with it.
    let after = viewer.get("/console").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "{after:?}");

    // A token of one's own, revoked from the list.
    let made = admin
        .post(
            "/console/tokens",
            &[
                ("name", "mine"),
                ("role", "operator"),
                ("ttl_days", "1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    let at = made.body.find("ck_").expect("token");
    let token: String = made.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let at = made.body.find("/console/tokens/").expect("revoke form");
    let id: String = made.body[at + "/console/tokens/".len()..]
        .chars()
        .take_while(|c| *c != '/')
        .collect();
    let gone = admin
        .post(&format!("/console/tokens/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "{gone:?}");
    assert_eq!(rest(token).await, StatusCode::UNAUTHORIZED);

    let audit = admin.get("/console/audit?door=console").await;
    assert_eq!(audit.status, StatusCode::OK);
    for row in ["token.create", "user.revoke", "token.revoke", "denied"] {
        assert!(audit.body.contains(row), "{row}: {audit:?}");
    }
    assert!(!audit.body.contains("ck_"), "no token in the audit trail");
}

#[tokio::test]
async fn a_run_page_shows_the_last_lines_of_a_long_log() {
    let world = World::start().await;
    let git = git_repo(world.cockpit.dir.path(), 700, "0");
    let admin = world.login("octocat").await;
    let csrf = admin.csrf("/console").await;
    let git = git.to_str().expect("path").to_string();
    let steps: [(&str, Vec<(&str, &str)>); 3] = [
        ("/console/repos", vec![("name", "long"), ("git_url", &git)]),
        (
            "/console/repos/long/blueprints",
            vec![
                ("name", "web.yaml"),
                ("content", "node__a:\nactions:\n  - action: install\n"),
            ],
        ),
        ("/console/repos/long/blueprints/web.yaml/execute", vec![]),
    ];
    for (path, mut fields) in steps {
        fields.push(("csrf", &csrf));
        let done = admin.post(path, &fields).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{path}: {done:?}");
    }
    let started = admin
        .post("/console/repos/long/runs", &[("csrf", &csrf)])
        .await;
    let run = started.location.expect("run page");
    let page = support::eventually(Duration::from_secs(30), "the run to end", || async {
        let page = admin.get(&run).await;
        page.body.contains(">Re-run<").then_some(page)
    })
    .await;
    assert!(
        page.body.contains("200 earlier lines are not shown"),
        "{page:?}"
    );
    assert!(page.body.contains("] line 700\n") && page.body.contains("] line 201\n"));
    assert!(!page.body.contains("] line 200\n"));
    assert!(page.body.len() < 100 * 1024, "{} bytes", page.body.len());
}
