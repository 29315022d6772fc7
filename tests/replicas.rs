//! Two cockpit replicas on one PostgreSQL database (issue 18): one holds the store and runs the
//! engine, the other stands by, forwards every HTTP request to it, tells SMTP senders to try
//! later, and takes over when the holder dies, finishing everything the holder acknowledged.
//! These tests need `COCKPIT_TEST_POSTGRES` (`scripts/postgres-test.sh` sets it); on SQLite
//! there is one server per data directory and nothing to test here.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::fake_itsyou::FakeItsYou;
use support::fake_telegram::FakeTelegram;
use support::{Cockpit, base_config, eventually, sse_until};

const GITHUB_SECRET: &str = "gh-S3cret-value";

const WAIT: Duration = Duration::from_secs(30);

const MAIL: &str =
    "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n";

/// A holder and a standby on one database and schema (the holder's), each with its own data
/// directory and ports; `None` on SQLite.
fn two_replicas(extra: &str) -> Option<(Cockpit, Cockpit)> {
    std::env::var_os("COCKPIT_TEST_POSTGRES")?;
    let a_dir = tempfile::tempdir().expect("tempdir");
    let shared = support::postgres_storage(a_dir.path());
    let a_text = format!("{}{extra}", base_config(a_dir.path()));
    let a = Cockpit::start_in(a_dir, &a_text);
    let b_dir = tempfile::tempdir().expect("tempdir");
    let b_text = format!("{}{extra}", base_config(b_dir.path()))
        .replace(&support::postgres_storage(b_dir.path()), &shared);
    let b = Cockpit::start_standby(b_dir, &b_text);
    Some((a, b))
}

/// Sends one mail to `address` (`host:port`); the reply code, or the error's text.
async fn send_mail(address: &str, subject: &str) -> Result<u16, String> {
    let (host, port) = address.rsplit_once(':').expect("mail address");
    let (host, port) = (host.to_string(), port.parse::<u16>().expect("port"));
    let message = lettre::Message::builder()
        .from("alice@example.org".parse().expect("from"))
        .to("ops@cockpit.test".parse().expect("to"))
        .subject(subject)
        // One Message-ID per subject: the same subject sent again is the same mail again.
        .message_id(Some(format!(
            "<{}@replicas.test>",
            subject.replace(' ', ".")
        )))
        .body(String::from("hello"))
        .expect("message");
    let transport = lettre::SmtpTransport::builder_dangerous(&host)
        .port(port)
        .build();
    tokio::task::spawn_blocking(move || {
        lettre::Transport::send(&transport, &message)
            .map(|r| u16::from(r.code()))
            .map_err(|err| err.to_string())
    })
    .await
    .expect("send")
}

/// A repository `name` made through `api` with one `node` service whose `install` runs
/// `script`; its directory.
async fn repository(
    api: &Api,
    name: &str,
    actor: &str,
    blueprint: &str,
    actions: &[(&str, &str)],
) -> std::path::PathBuf {
    let (status, view) = api.post("", json!({"name": name})).await;
    assert_eq!(status, 201, "{view}");
    let dir = repo_path(&view);
    template(&dir, actor, "", actions);
    let path = format!("/{name}/blueprint");
    let (status, body) = api
        .post(&path, json!({"name": "b.yaml", "content": blueprint}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.post(&format!("{path}/b.yaml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    dir
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When each scheduled run of `clock`'s `tick` ran (ms), leaving out the runs that ran again
/// a run a crash cut short (`again_of`).
async fn tick_times(api: &Api, ticks: &Path) -> Vec<i64> {
    let mut times = Vec::new();
    for line in lines(ticks) {
        let Some((run, at)) = line.split_once(' ') else {
            continue;
        };
        let (_, shown) = api.get(&format!("/clock/aysrun/{run}")).await;
        if shown["again_of"].is_null() {
            times.push(at.parse().expect("ms"));
        }
    }
    times.sort();
    times
}

/// Every line of a file (none if it is missing).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_run_made_on_one_replica_is_followed_and_cancelled_on_the_other() {
    let Some((mut a, b)) = two_replicas(MAIL) else {
        eprintln!("needs COCKPIT_TEST_POSTGRES");
        return;
    };
    let (on_a, on_b) = (Api::new(&a), Api::new(&b));
    let http = reqwest::Client::new();
    let ready: Value = http
        .get(format!("{}/ready", b.api))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["role"], "standby", "{ready}");
    assert_eq!(
        ready["ready"], true,
        "a standby serves, forwarding: {ready}"
    );
    for (api, role) in [(&a.api, "active"), (&b.api, "standby")] {
        let health: Value = http
            .get(format!("{api}/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (health["role"].as_str(), health["database"].as_str()),
            (Some(role), Some("up")),
            "{health}"
        );
    }
    let metrics = http
        .get(format!("{}/metrics", b.api))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("role=\"standby\""), "{metrics}");

    let blueprint = "node__a:\nactions:\n  - action: install\n";
    repository(
        &on_a,
        "demo",
        "node",
        blueprint,
        &[("install", "echo line one; sleep 60")],
    )
    .await;
    let (status, run) = on_a.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();

    // Followed through B: its log streams, forwarded from A as it comes.
    let response = on_b
        .http
        .get(format!("{}/demo/aysrun/{key}/logs?follow=true", on_b.base))
        .bearer_auth(&on_b.token)
        .send()
        .await
        .expect("follow");
    assert_eq!(response.status(), 200);
    let follow = tokio::spawn(sse_until(response, |(_, event, _)| event == "end"));
    // A token B never saw is checked by A, the holder: a bad one is refused through B too.
    let (status, _) = Api {
        token: "not-a-token".into(),
        ..Api::at(&b.api)
    }
    .get("/demo")
    .await;
    assert_eq!(status, 401);

    // A page of this site posting with its cookie through B: the holder sees the name the
    // browser used (Host), so the same-origin rule holds; another site's page is refused.
    let host = b.api.trim_start_matches("http://").to_string();
    for (origin, expected) in [
        (format!("http://{host}"), 202),
        ("https://evil.example".into(), 403),
    ] {
        let status = http
            .post(format!("{}/ays/event/jobs", b.api))
            .header("cookie", format!("jwt={}", on_b.token))
            .header("origin", origin.as_str())
            .json(&json!({"from": "a form"}))
            .send()
            .await
            .expect("post")
            .status();
        assert_eq!(status, expected, "{origin}");
    }

    // The holder counts a forwarded request against the client B saw (its peer shares), only
    // when B proves it is a replica: a client's own X-Forwarded-For is not believed.
    assert!(
        a.wait_for_log("peer=127.0.0.1:0", Duration::from_secs(10))
            .is_some(),
        "no forwarded request counted for its client: {}",
        a.log_text()
    );
    let replica_key = support::db::rows(
        &a.data_dir(),
        "SELECT value FROM settings WHERE key = 'replica_key'",
    )[0][0]
        .clone()
        .expect("the replicas' key");
    for (proof, client) in [
        ("not-the-key", "203.0.113.9"),
        (replica_key.as_str(), "198.51.100.7"),
    ] {
        let status = http
            .get(format!("{}/ays/repository", a.api))
            .bearer_auth(&on_a.token)
            .header("x-cockpit-replica", proof)
            .header("x-forwarded-for", client)
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, 200);
    }
    assert!(
        a.wait_for_log("peer=198.51.100.7:0", Duration::from_secs(10))
            .is_some(),
        "{}",
        a.log_text()
    );
    assert!(
        !a.log_text().contains("203.0.113.9"),
        "a client's claim was believed"
    );
    let logged: Vec<String> = a
        .log_text()
        .lines()
        .filter(|l| l.contains(&replica_key))
        .map(str::to_string)
        .collect();
    assert!(
        logged.is_empty(),
        "the replicas' key was logged: {logged:?}"
    );

    // Cancelled through B.
    eventually(Duration::from_secs(20), "the run to be running", || async {
        let (_, shown) = on_b.get(&format!("/demo/aysrun/{key}")).await;
        (shown["state"] == "running").then_some(())
    })
    .await;
    let (status, cancelled) = on_b
        .post(&format!("/demo/aysrun/{key}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let events = tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("the stream ends")
        .expect("follow");
    assert!(
        events
            .iter()
            .any(|(_, e, d)| e == "log" && d.contains("line one")),
        "{events:?}"
    );
    let (_, _, end) = events.last().expect("end");
    assert!(end.contains("cancelled"), "{events:?}");

    // SMTP senders are sent to the holder.
    let refused = send_mail(&b.mail, "to the standby").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("standby")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn when_the_holder_is_killed_the_standby_finishes_everything_it_acknowledged_never_twice_at_once()
 {
    let Some((mut a, mut b)) = two_replicas(&format!(
        "{MAIL}\n[webhooks]\ngithub_secret = \"{GITHUB_SECRET}\"\n"
    )) else {
        eprintln!("needs COCKPIT_TEST_POSTGRES");
        return;
    };
    let (on_a, on_b) = (Api::new(&a), Api::new(&b));
    let out = b.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let (seen, overlaps, lock) = (out.join("seen"), out.join("overlaps"), out.join("lock"));
    // Each action holds one lock for the whole repository while it works: a copy that finds it
    // taken runs beside another (two runs at once, or a copy a crash left behind).
    let work = format!(
        "input=$(cat | tr -d '\\n'); exec 9>>'{lock}'; flock -n 9 || echo \"$input\" >> '{overlaps}'; \
         sleep 1; echo \"$ACTION $input\" >> '{seen}'",
        lock = lock.display(),
        overlaps = overlaps.display(),
        seen = seen.display()
    );
    // A mail's action opens the mail's file, wherever the mail was received.
    let check_raw = format!(
        "raw=$(echo \"$input\" | grep -o '\"raw\":\"[^\"]*\"' | cut -d'\"' -f4); \
         [ -f \"$raw\" ] || echo \"no file $raw\" >> '{}'",
        overlaps.display()
    );
    let blueprint = "worker__w:\nactions:\n  - action: install\neventfilters:\n  - {channel: jobs, action: onevent}\n  - {channel: github.push, action: onevent}\n  - {channel: email, action: onmail}\n";
    repository(
        &on_a,
        "work",
        "worker",
        blueprint,
        &[
            ("install", &format!("ACTION=install; {work}")),
            ("onevent", &format!("ACTION=event; {work}")),
            ("onmail", &format!("ACTION=mail; {work}; {check_raw}")),
        ],
    )
    .await;
    // A repository whose `tick` runs every 3 s, on whichever replica holds the store.
    let ticks = out.join("ticks");
    let (status, view) = on_a.post("", json!({"name": "clock"})).await;
    assert_eq!(status, 201, "{view}");
    let clock_dir = repo_path(&view);
    template(
        &clock_dir,
        "clock",
        "",
        &[(
            "tick",
            &format!(
                "echo \"$COCKPIT_RUN $(date +%s%3N)\" >> '{}'",
                ticks.display()
            ),
        )],
    );
    std::fs::write(
        clock_dir.join("actorTemplates/clock/config.yaml"),
        "recurring:\n  - {action: tick, period: 3}\n",
    )
    .expect("config.yaml");
    let (status, body) = on_a
        .post(
            "/clock/blueprint",
            json!({"name": "c.yaml", "content": "clock__c:\n"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(on_a.post("/clock/blueprint/c.yaml", json!({})).await.0, 200);

    let (status, run) = on_a.post("/work/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let install = run["key"].as_str().expect("key").to_string();
    eventually(Duration::from_secs(30), "the install run", || async {
        lines(&seen)
            .iter()
            .any(|l| l.starts_with("install"))
            .then_some(())
    })
    .await;

    eventually(Duration::from_secs(20), "a tick on A", || async {
        (!lines(&ticks).is_empty()).then_some(())
    })
    .await;

    // Acknowledged by A, some of them through B, while the first ones run: then A dies.
    let mut events = Vec::new();
    for n in 0..4 {
        let api = if n % 2 == 0 { &on_a } else { &on_b };
        let (status, body) = api
            .http
            .post(format!(
                "{}/ays/event/jobs",
                api.base.trim_end_matches("/ays/repository")
            ))
            .bearer_auth(&api.token)
            .json(&json!({"n": n}))
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .expect("event");
        assert_eq!(status, 202, "{:?}", body.text().await);
        events.push(format!("\"args\":{{\"n\":{n}}}"));
    }
    // A GitHub delivery, through B.
    let body = serde_json::to_vec(&json!({"n": "push"})).expect("body");
    let delivered = reqwest::Client::new()
        .post(format!("{}/webhooks/github", b.api))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-1")
        .header(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                support::webhook_receiver::hmac_hex(GITHUB_SECRET, &body)
            ),
        )
        .body(body)
        .send()
        .await
        .expect("deliver");
    assert_eq!(delivered.status(), 202);
    events.push("\"delivery\":\"d-1\"".to_string());
    let subjects: Vec<String> = (0..2).map(|i| format!("mail {i}")).collect();
    for subject in &subjects {
        assert_eq!(send_mail(&a.mail, subject).await, Ok(250));
    }
    let (status, run) = on_b
        .post(&format!("/work/aysrun/{install}/rerun"), json!({}))
        .await;
    assert_eq!(status, 201, "{run}");
    let killed_ms = now_ms();
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "killed");
    // As if A's machine were gone: its mail files are not there for B.
    let _ = std::fs::remove_dir_all(a.data_dir().join("mail"));

    // B takes the store over and says so.
    assert!(
        b.wait_for_log("this replica takes over", Duration::from_secs(30))
            .is_some(),
        "{}",
        b.log_text()
    );
    b.wait_for_log("cockpit ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", b.log_text()));
    let ready: Value = reqwest::get(format!("{}/ready", b.api))
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready.get("role").is_none_or(|r| r == "active"), "{ready}");
    let metrics = reqwest::get(format!("{}/metrics", b.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("role=\"active\""), "{metrics}");

    // Everything acknowledged runs on B: every event, every mail, the run made through B.
    let complete = |seen: &[String]| {
        events.iter().all(|e| {
            seen.iter()
                .any(|l| l.starts_with("event") && l.contains(e.as_str()))
        }) && subjects.iter().all(|s| {
            seen.iter()
                .any(|l| l.starts_with("mail") && l.contains(s.as_str()))
        }) && seen.iter().filter(|l| l.starts_with("install")).count() >= 2
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !complete(&lines(&seen)) {
        assert!(
            std::time::Instant::now() < deadline,
            "not everything acknowledged ran: {:?}\nB's log:\n{}",
            lines(&seen),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let beside = lines(&overlaps);
    assert!(
        beside.is_empty(),
        "two actions at once, or a mail's file missing: {beside:?}"
    );
    // The schedule went on on B, and no slot fired twice: the ticks (not counting a run a
    // crash cut short and B ran again) fit the slots between the first and the last.
    eventually(Duration::from_secs(20), "a tick on B", || async {
        tick_times(&on_b, &ticks)
            .await
            .last()
            .is_some_and(|last| *last > killed_ms + 3_000)
            .then_some(())
    })
    .await;
    let times = tick_times(&on_b, &ticks).await;
    let (first, last) = (times[0], times[times.len() - 1]);
    let slots = (last - first + 1_000) / 3_000 + 1;
    assert!(
        times.len() as i64 <= slots,
        "{} ticks in {slots} slots: {times:?}",
        times.len()
    );
    // The standby's own mail door now accepts. A mail A acknowledged, sent again to B (as a
    // sender does that never saw A's `250`): answered, and recorded once.
    assert_eq!(send_mail(&b.mail, "after").await, Ok(250));
    assert_eq!(send_mail(&b.mail, &subjects[0]).await, Ok(250));
    let recorded = support::db::rows(
        &a.data_dir(),
        "SELECT COUNT(*) FROM events WHERE channel = 'email' AND payload LIKE '%\"subject\":\"mail 0\"%'",
    );
    assert_eq!(recorded[0][0].as_deref(), Some("1"), "{recorded:?}");
}

const BOT_TOKEN: &str = "434343:BOT-token-SECRET-never-logged";
const WEBHOOK_SECRET: &str = "webhook-S3cret_value";

/// `[bot]` in webhook mode at the fake Bot API.
fn bot_config(telegram: &FakeTelegram) -> String {
    format!(
        "[bot]\ntoken = \"{BOT_TOKEN}\"\napi_url = \"{}\"\n\
         webhook_url = \"https://cockpit.test/telegram/webhook\"\n\
         webhook_secret = \"{WEBHOOK_SECRET}\"\n",
        telegram.url
    )
}

#[tokio::test]
async fn a_login_started_on_one_replica_by_webhook_completes_on_the_other_after_it_died() {
    let Ok(_) = std::env::var("COCKPIT_TEST_POSTGRES") else {
        eprintln!("needs COCKPIT_TEST_POSTGRES");
        return;
    };
    let chat = 7;
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    let itsyou = FakeItsYou::start().await;
    let with_provider = |dir: &Path| {
        base_config(dir).replacen(
            "[oauth]\n",
            &format!("[oauth]\nitsyouonlinehost = \"{}\"\n", itsyou.url),
            1,
        ) + &bot_config(&telegram)
            + "[debug]\nconsole_dev_login = true\n"
    };
    let a_dir = tempfile::tempdir().expect("tempdir");
    let shared = support::postgres_storage(a_dir.path());
    let a_text = with_provider(a_dir.path());
    let mut a = Cockpit::start_in(a_dir, &a_text);
    let b_dir = tempfile::tempdir().expect("tempdir");
    let b_text =
        with_provider(b_dir.path()).replace(&support::postgres_storage(b_dir.path()), &shared);
    let mut b = Cockpit::start_standby(b_dir, &b_text);
    eventually(Duration::from_secs(20), "the webhook set by A", || async {
        telegram
            .webhook()
            .filter(|u| u.ends_with("/telegram/webhook"))
    })
    .await;

    // Without the secret, or with another, an update is refused, on either replica.
    let http = reqwest::Client::new();
    for (api, secret) in [(&a.api, None), (&b.api, Some("wrong"))] {
        let mut request = http
            .post(format!("{api}/telegram/webhook"))
            .json(&json!({"update_id": 1}));
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let status = request.send().await.expect("post").status();
        assert_eq!(status, 401, "{api}");
    }

    // The login starts through B (forwarded to A, which runs the bot).
    telegram.serve_webhook_by(&[&b.api]);
    telegram.send_text(chat, "/start");
    let link = telegram.wait_text(chat, "/v1/oauth/authorize", WAIT).await;
    assert!(
        telegram
            .deliveries()
            .iter()
            .all(|(to, status)| to == &b.api && *status == 200),
        "{:?}",
        telegram.deliveries()
    );
    let state = link
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .and_then(|l| reqwest::Url::parse(l).ok())
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "state")
                .map(|(_, v)| v.into_owned())
        })
        .expect("a link with a state");

    // A console session opened on A, with its form's CSRF token.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let console = |api: &str| {
        let api = api.to_string();
        let browser = browser.clone();
        async move {
            let page = browser
                .get(format!("{api}/console"))
                .send()
                .await
                .expect("console");
            (page.status(), page.text().await.expect("page"))
        }
    };
    let dev = browser
        .post(format!("{}/console/login/dev", a.api))
        .header("origin", &a.api)
        .form(&[("next_url", "/console")])
        .send()
        .await
        .expect("dev login");
    assert_eq!(dev.status(), 303);
    let (status, home) = console(&a.api).await;
    assert_eq!(status, 200, "{home}");
    let csrf = home
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();

    // A dies; B takes over, and the login started on A finishes on B.
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "killed");
    b.wait_for_log("cockpit ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", b.log_text()));
    // A new connection: the standby's server closed its idle ones when B took over.
    let page = reqwest::Client::new()
        .get(format!("{}/oauth/callback", b.api))
        .query(&[("code", "member:alice"), ("state", &state)])
        .send()
        .await
        .expect("callback");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page");
    let code = support::login_code(&page);
    // Telegram keeps delivering to the load balancer: both addresses, one of them gone.
    telegram.serve_webhook_by(&[&a.api, &b.api]);
    telegram.send_text(chat, &format!("/start {code}"));
    telegram
        .wait_text(chat, "You have been authorized", WAIT)
        .await;
    assert!(
        telegram
            .deliveries()
            .iter()
            .any(|(to, status)| to == &b.api && *status == 200),
        "{:?}",
        telegram.deliveries()
    );
    assert!(
        !b.log_text().contains(WEBHOOK_SECRET) && !b.log_text().contains("BOT-token-SECRET"),
        "a secret in the log"
    );

    // The console session opened on A goes on on B, and its form's token too.
    let (status, home) = console(&b.api).await;
    assert_eq!(status, 200, "{home}");
    assert!(home.contains("dev:local"), "{home}");
    let made = browser
        .post(format!("{}/console/repos", b.api))
        .header("origin", &b.api)
        .form(&[("name", "after-takeover"), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(made.status(), 303);
    assert_eq!(
        made.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/console/repos/after-takeover")
    );
}

/// A TCP relay to PostgreSQL that can go silent, as a network does: then nothing passes either
/// way, while both sides' kernels keep acknowledging what they are sent (so neither end's TCP
/// timeouts fire). When a client closes its side, the relay closes the database's.
struct Relay {
    /// Where clients connect.
    addr: std::net::SocketAddr,
    /// Set: nothing passes.
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let (a, b) = (quiet.clone(), quiet.clone());
                tokio::spawn(async move {
                    // The database's side ends with the client's.
                    Relay::pass(client_read, server_write, a).await;
                });
                tokio::spawn(Relay::pass(server_read, client_write, b));
            }
        });
        Relay { addr, silent }
    }

    /// Copies `from` to `to` until `from` ends, dropping what comes while silent.
    async fn pass(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !silent.load(std::sync::atomic::Ordering::Relaxed)
                        && to.write_all(&buf[..n]).await.is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown().await;
    }

    fn go_silent(&self) {
        self.silent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

// Multi-threaded: the relay's tasks run while the test waits (blocking) for the servers' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_the_database_kills_its_actions_and_stops_before_the_standby_runs_them()
 {
    let Ok(url) = std::env::var("COCKPIT_TEST_POSTGRES") else {
        eprintln!("needs COCKPIT_TEST_POSTGRES");
        return;
    };
    let direct = reqwest::Url::parse(&url).expect("url");
    let upstream = format!(
        "{}:{}",
        direct.host_str().expect("host"),
        direct.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let mut relayed = direct.clone();
    relayed.set_port(Some(relay.addr.port())).expect("port");

    // A reaches the database through the relay, B directly; one schema.
    let a_dir = tempfile::tempdir().expect("tempdir");
    let shared = support::postgres_storage(a_dir.path());
    let a_text = base_config(a_dir.path()).replace(&url, relayed.as_str().trim_end_matches('/'));
    assert_ne!(
        a_text,
        base_config(a_dir.path()),
        "A goes through the relay"
    );
    let mut a = Cockpit::start_in(a_dir, &a_text);
    let b_dir = tempfile::tempdir().expect("tempdir");
    let b_text =
        base_config(b_dir.path()).replace(&support::postgres_storage(b_dir.path()), &shared);
    let mut b = Cockpit::start_standby(b_dir, &b_text);

    let out = tempfile::tempdir().expect("out");
    let path = |name: &str| out.path().join(name);
    // The first copy of the action holds the repository's lock and works for a minute; a copy
    // that finds the lock taken runs beside another.
    let install = format!(
        "exec 9>>'{lock}'; flock -n 9 || echo overlap >> '{overlaps}'; \
         echo $$ >> '{started}'; \
         if [ ! -f '{first}' ]; then touch '{first}'; sleep 60; fi; echo done >> '{finished}'",
        lock = path("lock").display(),
        overlaps = path("overlaps").display(),
        started = path("started").display(),
        first = path("first").display(),
        finished = path("finished").display(),
    );
    let on_a = Api::new(&a);
    repository(
        &on_a,
        "work",
        "worker",
        "worker__w:\nactions:\n  - action: install\n",
        &[("install", &install)],
    )
    .await;
    let (status, run) = on_a.post("/work/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let pid = eventually(
        Duration::from_secs(30),
        "the action running on A",
        || async { lines(&path("started")).first().cloned() },
    )
    .await;

    // The network between A and the database goes silent. A cannot confirm its claim: within
    // its lease it kills its action and stops.
    relay.go_silent();
    let status = a
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("A did not stop: {}", a.log_text()));
    assert_eq!(status.code(), Some(1), "{}", a.log_text());
    assert!(
        a.log_text()
            .contains("has not confirmed this server's claim"),
        "{}",
        a.log_text()
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
    assert!(
        matches!(state, None | Some('Z' | 'X')),
        "A's action {pid} outlived A: {stat}"
    );

    // A's connections closed, the database lets the claim go: B takes over and runs the run
    // A's death cut short, alone.
    b.wait_for_log("cockpit ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("B did not take over: {}", b.log_text()));
    eventually(Duration::from_secs(60), "the run again on B", || async {
        (!lines(&path("finished")).is_empty()).then_some(())
    })
    .await;
    assert_eq!(lines(&path("started")).len(), 2);
    assert!(
        lines(&path("overlaps")).is_empty(),
        "two copies at once: {:?}",
        lines(&path("overlaps"))
    );
}
