//! The operator's side of the real `cockpit` binary: one instance per data directory, config
//! errors with their place, commands that never invent data, request and failure logs (text and
//! JSON), health that tells the truth about the bot, `/ready`, metrics from the first scrape with
//! a closed set of labels, and private data files.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::{Cockpit, base_config, eventually, run, run_in};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf8").to_string()
}

/// Waits for `second` to exit 1 with `holder` (what names the server it gave way to) in its
/// log; its log.
fn exits_naming(mut second: Cockpit, holder: &str) -> String {
    let status = second.wait_exit(Duration::from_secs(20)).expect("exits");
    let logs = second.log_text();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains(holder), "{logs}");
    logs
}

#[test]
fn a_second_start_of_the_same_config_names_the_holder_not_the_port() {
    // The same data directory AND the same port: the lock is what the operator must hear about.
    let first = Cockpit::start("");
    let port = first.api.rsplit(':').next().expect("port");
    let text = std::fs::read_to_string(&first.config)
        .expect("config")
        .replacen("port = 0", &format!("port = {port}"), 1);
    let other = tempfile::tempdir().expect("tempdir");
    let config = other.path().join("config.toml");
    std::fs::write(&config, text).expect("write");
    let second = Cockpit::spawn(other, config);
    let logs = exits_naming(
        second,
        &format!("in use by another cockpit (pid {}", first.child.id()),
    );
    assert!(!logs.contains("cannot listen"), "{logs}");
}

#[test]
fn a_second_start_on_a_locked_data_dir_exits_naming_the_holder() {
    let first = Cockpit::start("");
    // Another config (its own file and ports) on the same data directory.
    let other = tempfile::tempdir().expect("tempdir");
    let text = base_config(first.dir.path());
    let config = other.path().join("config.toml");
    std::fs::write(&config, text).expect("write");
    let second = Cockpit::spawn(other, config);
    let logs = exits_naming(
        second,
        &format!("in use by another cockpit (pid {}", first.child.id()),
    );
    assert!(logs.contains("cockpit.lock"), "{logs}");
    assert!(
        first
            .log_text()
            .contains(&format!("data={}", first.data_dir().display())),
        "the ready line names the data directory"
    );
    assert!(!logs.contains("cockpit ready"), "{logs}");
}

#[test]
fn a_toml_syntax_error_names_line_column_and_key_with_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A newcomer's first move: append the README's Telegram snippet to config/local.toml.
    let local = include_str!("../config/local.toml");
    let text = format!(
        "{local}\n[oauth]\nclient_id = \"...\"\nclient_secret = \"do-not-print\"\n\
         \n[bot]\ntoken = \"123456:ABC-do-not-print\"\n"
    );
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("[oauth]"))
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("second [oauth]");
    let config = write_config(dir.path(), &text);
    let (code, out, err) = run(&["check-config", "-c", &config]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("line {line}, column 2: duplicate key")),
        "{err}"
    );
    assert!(err.contains("`oauth`"), "{err}");
    assert!(err.contains(&format!("{line} | [oauth]")), "{err}");

    // A broken secret line shows the key, never the value.
    std::fs::write(&config, "[bot]\ntoken = \"123:do-not-print\n").expect("write");
    let (code, _, err) = run(&["check-config", "-c", &config]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2, column"), "{err}");
    assert!(err.contains("2 | token = ***"), "{err}");
    assert!(!err.contains("do-not-print"), "{err}");
}

#[test]
fn check_config_checks_meanings_and_reports_each_problem_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").expect("write");
    let text = format!(
        "[oauth]\norganization = \"\"\nredirect_uri = \"notaurl\"\nitsyouonlinehost = \"ftp://x.org\"\n\
         [mode]\nprod = false\n[storage]\npath = \"{}\"\n\
         [oauth_proxy]\nurl = \"https://c.example.com/oauth\"\n\
         [[oauth_provider]]\nname = \"\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
         authorize_url = \"https://github.com/login/oauth/authorize\"\n\
         access_token_url = \"https://github.com/login/oauth/access_token\"\n",
        not_a_dir.display()
    );
    let config = write_config(dir.path(), &text);
    let (code, _, err) = run(&["check-config", "-c", &config]);
    assert_eq!(code, 2, "{err}");
    let expected = [
        "[oauth].organization: must not be empty",
        "[oauth].redirect_uri: expected an http:// or https:// URL, got \"notaurl\"",
        "[oauth].itsyouonlinehost: expected an http:// or https:// URL, got \"ftp://x.org\"",
        "[oauth_provider[0]].name: must not be empty",
        "[oauth_provider[0]].user_info_url: required",
    ];
    for problem in expected {
        assert_eq!(err.matches(problem).count(), 1, "{problem} once in\n{err}");
    }
    let lines: Vec<&str> = err.lines().skip(1).map(str::trim).collect();
    let mut paths: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(p, _)| p))
        .collect();
    let all = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), all, "a key reported twice:\n{err}");

    // Paths that exist but are the wrong kind of thing are found by `check-config` too.
    let text = format!(
        "[mode]\nprod = false\n[storage]\npath = \"{}\"\n",
        not_a_dir.display()
    );
    std::fs::write(&config, text).expect("write");
    let (code, _, err) = run(&["check-config", "-c", &config]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("[storage].path: ") && err.contains("is not a directory"),
        "{err}"
    );
}

#[test]
fn start_without_a_config_names_the_file_and_suggests_the_local_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = run_in(dir.path(), &["start"]);
    assert_eq!(code, 2, "{err}");
    let looked_for = dir.path().join("config.toml");
    assert!(
        err.contains(&looked_for.display().to_string()),
        "names the file looked for: {err}"
    );
    assert!(err.contains("-c config/local.toml"), "{err}");
}

#[test]
fn clean_cache_elsewhere_creates_nothing_and_names_the_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[mode]\nprod = false\n[storage]\npath = \"data\"\n",
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run_in(elsewhere.path(), &["clean_cache", "-c", &config]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "data directory: {}",
            elsewhere.path().join("data").display()
        )),
        "{out}"
    );
    assert!(err.contains("no cockpit database"), "{err}");
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).expect("dir").count(),
        0,
        "clean_cache created something"
    );
}

#[tokio::test]
async fn requests_auth_failures_and_failed_runs_are_logged_with_their_reason_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path());
    let mut cockpit = Cockpit::start_logging(dir, &text, "info");
    let http = reqwest::Client::new();
    let url = format!("{}/ays/repository", cockpit.api);

    let missing = http.get(&url).send().await.expect("request");
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(
        body["error"],
        "missing token: send the JWT as `Authorization: Bearer <token>` (or as the `jwt` cookie)"
    );
    let forged = http
        .get(&url)
        .bearer_auth("forged.token-do-not-log.x")
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), 401);

    let api = Api::new(&cockpit);
    let (_, repo) = api.post("", json!({"name": "ops"})).await;
    template(
        &repo_path(&repo),
        "flaky",
        "",
        &[("install", "echo 'disk on fire'\nexit 3")],
    );
    let blueprint = "flaky__one:\nactions:\n  - action: install\n";
    api.post(
        "/ops/blueprint",
        json!({"name": "f.yaml", "content": blueprint}),
    )
    .await;
    assert_eq!(api.post("/ops/blueprint/f.yaml", json!({})).await.0, 200);
    let (status, run) = api.post("/ops/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    assert_eq!(api.finished_run("ops", &key).await["state"], "error");
    cockpit
        .wait_for_log("run ended", Duration::from_secs(10))
        .expect("run end logged");

    let logs = cockpit.log_text();
    let lines: Vec<&str> = logs.lines().collect();
    let auth: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert_eq!(auth.len(), 2, "{logs}");
    assert!(auth.iter().all(|l| l.contains("WARN")), "{logs}");
    assert!(auth[0].contains("missing token"), "{logs}");
    assert!(auth[1].contains("Your JWT is invalid"), "{logs}");
    assert!(
        auth.iter()
            .all(|l| l.contains("route=/ays/repository") && l.contains("peer=127.0.0.1:")),
        "{logs}"
    );
    let requests: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" request ") && l.contains("status=401"))
        .collect();
    assert_eq!(requests.len(), 2, "one line per request:\n{logs}");
    assert!(
        requests.iter().all(|l| l.contains("INFO")
            && l.contains("method=GET")
            && l.contains("route=/ays/repository")
            && l.contains("duration_ms=")
            && l.contains("peer=127.0.0.1:")),
        "{logs}"
    );
    // An accepted request names who made it; a path parameter shows as its template.
    assert!(
        lines.iter().any(|l| l.contains(" request ")
            && l.contains("route=/ays/repository/{repo}/aysrun/{key}")
            && l.contains("user=ops")),
        "{logs}"
    );
    let job = lines
        .iter()
        .find(|l| l.contains("job failed"))
        .unwrap_or_else(|| panic!("no job failure line:\n{logs}"));
    assert!(
        job.contains("WARN") && job.contains("action=install") && job.contains("flaky!one"),
        "{job}"
    );
    assert!(
        job.contains("disk on fire") || job.contains("exit"),
        "the job's error: {job}"
    );
    let ended = lines
        .iter()
        .find(|l| l.contains("run ended"))
        .expect("run ended");
    assert!(
        ended.contains("WARN") && ended.contains("failed job"),
        "{ended}"
    );
    assert!(!logs.contains("do-not-log"), "a token in the logs:\n{logs}");
    assert!(!logs.contains(&api.token), "a token in the logs");
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path()) + "[log]\nformat = \"json\"\n";
    let mut cockpit = Cockpit::start_logging(dir, &text, "info");
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{}/ays/repository", cockpit.api))
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 401);
    cockpit
        .wait_for_log("authentication failed", Duration::from_secs(10))
        .expect("logged");
    cockpit.signal(libc::SIGTERM);
    cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    let logs = cockpit.log_text();
    let mut levels = Vec::new();
    for line in logs.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        levels.push(value["level"].as_str().unwrap_or("").to_string());
        if value["fields"]["message"] == "request" {
            assert_eq!(value["fields"]["status"], 401, "{line}");
            assert_eq!(value["fields"]["route"], "/ays/repository", "{line}");
        }
    }
    assert!(logs.contains("cockpit ready") && logs.contains("cockpit stopped"));
    assert!(levels.iter().any(|l| l == "WARN"), "{logs}");
}

#[tokio::test]
async fn a_clients_malformed_request_is_not_an_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path());
    let mut cockpit = Cockpit::start_logging(dir, &text, "info");
    let addr = cockpit.api.trim_start_matches("http://").to_string();
    for request in [
        &b"GET /<key> HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n"[..],
        &b"\x16\x03\x01 not http at all\r\n\r\n"[..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    }
    // The server still serves, and wrote no ERROR line about the clients' mistakes.
    let health = reqwest::get(format!("{}/health", cockpit.api))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    cockpit.signal(libc::SIGTERM);
    cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    let logs = cockpit.log_text();
    assert!(!logs.contains("ERROR"), "{logs}");
}

#[tokio::test]
async fn with_the_bot_api_unreachable_the_bot_is_degraded_and_the_process_ready() {
    // A port nothing listens on: every Bot API call is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let cockpit = Cockpit::start(&format!(
        "[bot]\ntoken = \"123456:BOT-TOKEN-SECRET\"\napi_url = \"http://127.0.0.1:{port}\"\n"
    ));
    let http = reqwest::Client::new();
    let health: Value = eventually(Duration::from_secs(60), "the bot degraded", || async {
        let body: Value = http
            .get(format!("{}/health", cockpit.api))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["actors"]["telegram_bot"]["status"] == "degraded").then_some(body)
    })
    .await;
    assert_eq!(health["status"], "degraded");
    let bot = &health["actors"]["telegram_bot"];
    let error = bot["last_error"].as_str().unwrap_or("");
    assert!(error.contains("127.0.0.1"), "names the host: {error}");
    assert!(
        error.to_lowercase().contains("refused"),
        "names the cause: {error}"
    );
    assert!(!error.contains("BOT-TOKEN-SECRET"), "{error}");
    assert!(
        bot["since"].as_u64().is_some_and(|s| s > 1_600_000_000),
        "{bot}"
    );
    assert_eq!(health["actors"]["api_server"]["status"], "up");

    let ready = http
        .get(format!("{}/ready", cockpit.api))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["database"], "up");
    assert_eq!(body["checks"]["api"], "up");
    assert!(!cockpit.log_text().contains("BOT-TOKEN-SECRET"));
}

#[tokio::test]
async fn ready_reports_the_database_and_listeners() {
    let cockpit = Cockpit::start("[mail]\nhost = \"127.0.0.1\"\nport = 0\n");
    let body: Value = reqwest::get(format!("{}/ready", cockpit.api))
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"database": "up", "api": "up", "mail": "up"}})
    );
}

#[tokio::test]
async fn every_metric_has_help_from_the_first_scrape() {
    let cockpit = Cockpit::start("");
    let text = reqwest::get(format!("{}/metrics", cockpit.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &typed {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP:\n{text}"
        );
    }
    for name in [
        "cockpit_http_requests_total",
        "cockpit_http_request_duration_seconds",
        "cockpit_actor_restarts_total",
        "cockpit_actor_up",
        "cockpit_runs_started_total",
        "cockpit_runs_error_total",
        "cockpit_mail_accepted_total",
        "cockpit_telegram_updates_total",
        "cockpit_chat_session_restarts_total",
    ] {
        assert!(typed.contains(&name), "{name} missing:\n{text}");
    }
    assert!(text.contains("cockpit_actor_restarts_total{actor=\"api_server\"} 0"));
    // Every sample belongs to a family with HELP.
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap_or("");
        assert!(
            typed.iter().any(|t| name.starts_with(t)),
            "{sample} has no family"
        );
    }
}

#[tokio::test]
async fn odd_and_huge_method_names_do_not_grow_the_metrics() {
    let cockpit = Cockpit::start("");
    let addr = cockpit.api.trim_start_matches("http://").to_string();
    let send = |method: String| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let request =
                format!("{method} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            Some(answer.len())
        }
    };
    let scrape = || async {
        reqwest::get(format!("{}/metrics", cockpit.api))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // One odd method first, so that its series exists before the flood.
    assert!(send("WARMUP".into()).await.is_some());
    let before = scrape().await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    for batch in 0..40 {
        let sends = (0..50).map(|i| {
            let n = batch * 50 + i;
            // Distinct names, one in ten of them 100 KB long.
            let tail = if n % 10 == 0 {
                "X".repeat(100_000)
            } else {
                String::new()
            };
            send(format!("M{n}{tail}"))
        });
        futures::future::join_all(sends).await;
    }
    let after = scrape().await;
    assert_eq!(series(&before), series(&after), "{after}");
    assert!(after.len() < before.len() + 100, "{after}");
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(!after.contains("M1999"), "{after}");
}

#[tokio::test]
async fn data_files_are_private() {
    let cockpit = Cockpit::start("");
    let data = cockpit.data_dir();
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "data directory");
    let files: &[&str] = if std::env::var_os("COCKPIT_TEST_POSTGRES").is_some() {
        &["cockpit.lock"] // no database file: it is in PostgreSQL
    } else {
        &["cockpit.db", "cockpit.lock"]
    };
    for file in files {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for entry in std::fs::read_dir(&data).expect("data") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} readable by others",
                path.display()
            );
        }
    }
}

#[test]
fn a_second_server_on_the_same_postgres_schema_stands_by_naming_the_holder_until_it_is_gone() {
    if std::env::var_os("COCKPIT_TEST_POSTGRES").is_none() {
        eprintln!("on SQLite the data directory's lock is the claim (tested above)");
        return;
    }
    let mut first = Cockpit::start("");
    // Another config and data directory, the same database and schema.
    let first_storage = support::postgres_storage(first.dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    let text =
        base_config(other.path()).replace(&support::postgres_storage(other.path()), &first_storage);
    let mut second = Cockpit::start_standby(other, &text);
    let logs = second.log_text();
    assert!(
        logs.contains(&format!("holder=pid {} on ", first.child.id())),
        "{logs}"
    );
    assert!(!logs.contains("cockpit ready"), "{logs}");

    // The holder killed: its connection ends, the database releases the claim, and the
    // standby takes it.
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).is_some(), "killed");
    assert!(
        second
            .wait_for_log("cockpit ready", Duration::from_secs(30))
            .is_some(),
        "{}",
        second.log_text()
    );
}
