//! The real `cockpit` binary: config checks, start/ready/health/metrics/SIGTERM, supervision,
//! clean_cache on a running server, secrets kept out of logs, and the store under `kill -9`.

mod support;

use std::time::Duration;

use cockpit::store::{AuthorizedUser, Store};
use support::{Cockpit, eventually, run};

#[test]
fn check_config_accepts_the_seed_and_names_every_bad_key() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/seed_config.toml"
    );
    let (code, out, _) = run(&["check-config", "-c", seed]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[oauth]\nclient_secret = 'do-not-print-me'\njwt_key = 42\n\
         [api.ays]\nport = \"5000\"\n[bot]\ntoken = 'TOKEN-do-not-print'\n[mail]\nport = 70000\n",
    )
    .expect("write");
    let (code, out, err) = run(&["check-config", "-c", bad.to_str().expect("utf8")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("[mail].port: expected an integer from 0 to 65535, got 70000"),
        "{err}"
    );
    assert!(
        err.contains("[api.ays].port: expected an integer from 0 to 65535, got a string"),
        "{err}"
    );
    assert!(
        err.contains("[oauth].jwt_key: expected a string, got an integer"),
        "{err}"
    );
    let all = format!("{out}{err}");
    assert!(!all.contains("do-not-print"), "{all}");

    // `start` refuses the same file the same way, before binding anything.
    let (code, _, err) = run(&["start", "-c", bad.to_str().expect("utf8")]);
    assert_eq!(code, 2);
    assert!(err.contains("[mail].port"), "{err}");

    let (code, _, err) = run(&["check-config", "-c", "/nonexistent/cockpit.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/cockpit.toml"), "{err}");
    assert!(err.contains("cannot read the config file"), "{err}");
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for command in ["start", "clean_cache", "check-config"] {
        assert!(out.contains(command), "{out}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn starts_serves_health_and_metrics_and_stops_on_sigterm() {
    let mut cockpit = Cockpit::start("");
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", cockpit.api))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["actors"]["oauth_cache"]["status"], "up");
    assert_eq!(body["actors"]["api_server"]["status"], "up");

    let metrics = http
        .get(format!("{}/metrics", cockpit.api))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cockpit_actor_restarts_total{actor=\"oauth_cache\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cockpit_http_requests_total{method=\"GET\",status=\"200\"}"),
        "{metrics}"
    );

    let doc: serde_json::Value = http
        .get(format!("{}/openapi.json", cockpit.api))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/health"]["get"].is_object());

    let missing = http
        .get(format!("{}/nope", cockpit.api))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("json error");
    assert_eq!(body["error"], "not found");

    cockpit.signal(libc::SIGTERM);
    let status = cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", cockpit.log_text());
    assert!(cockpit.log_text().contains("cockpit stopped"));
}

#[tokio::test]
async fn a_crashed_child_is_restarted_and_one_that_keeps_failing_stops_the_process() {
    let mut cockpit = Cockpit::start(
        "[debug]\nfault_injection = true\n\
         [supervisor]\nmax_restarts = 2\nwindow_secs = 60\nbackoff_initial_ms = 20\n",
    );
    let http = reqwest::Client::new();
    let crash = |actor: &str| {
        http.post(format!("{}/debug/crash/{actor}", cockpit.api))
            .send()
    };
    assert_eq!(crash("oauth_cache").await.expect("crash").status(), 202);

    // The other actors keep serving while it restarts, and the restart is counted.
    let health: serde_json::Value = eventually(Duration::from_secs(10), "a restart", || async {
        let body: serde_json::Value = http
            .get(format!("{}/health", cockpit.api))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["actors"]["oauth_cache"]["restarts"] == 1 && body["status"] == "ok").then_some(body)
    })
    .await;
    assert_eq!(health["actors"]["api_server"]["restarts"], 0);
    assert!(
        health["actors"]["oauth_cache"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("fault injection")
    );
    let metrics = http
        .get(format!("{}/metrics", cockpit.api))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cockpit_actor_restarts_total{actor=\"oauth_cache\"} 1"),
        "{metrics}"
    );

    // The API server itself can crash and come back on the same port.
    assert_eq!(crash("api_server").await.expect("crash").status(), 202);
    eventually(Duration::from_secs(10), "the API back", || async {
        let body: serde_json::Value = http
            .get(format!("{}/health", cockpit.api))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["actors"]["api_server"]["restarts"] == 1).then_some(())
    })
    .await;

    // Past the limit (2 restarts in the window) the supervisor gives up and the process fails.
    for _ in 0..3 {
        let _ = crash("oauth_cache").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_ne!(status.code(), Some(0), "{}", cockpit.log_text());
    assert!(
        cockpit
            .log_text()
            .contains("oauth_cache failed 3 times within 60s (limit 2); giving up"),
        "{}",
        cockpit.log_text()
    );
}

#[tokio::test]
async fn clean_cache_works_while_the_server_runs() {
    let cockpit = Cockpit::start("");
    let store = support::db::store(&cockpit.data_dir());
    store
        .upsert_user(
            &AuthorizedUser {
                user_id: 5,
                chat_id: 50,
                username: "bob".into(),
                current_repo: None,
                token_expires_at: None,
                ..Default::default()
            },
            0,
        )
        .expect("user");
    let config = cockpit.config.to_str().expect("utf8").to_string();
    let (code, out, err) = run(&["clean_cache", "-c", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed 1 authorized user(s)"), "{out}");
    assert_eq!(store.user(5).expect("query"), None);
    let (code, out, _) = run(&["clean-cache", "-c", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 0 authorized user(s)"), "{out}");
}

#[test]
fn a_taken_port_is_a_clear_error_and_secrets_never_reach_the_logs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = support::base_config(dir.path()).replace("port = 0", &format!("port = {port}"))
        + "[bot]\ntoken = \"123456:BOT-TOKEN-SECRET\"\n";
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write");
    let mut cockpit = Cockpit::spawn(dir, config);
    let status = cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let logs = cockpit.log_text();
    assert!(
        logs.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(
        !logs.contains("BOT-TOKEN-SECRET") && !logs.contains("s3cr3t-client-VALUE"),
        "{logs}"
    );
    drop(taken);

    let mut cockpit = Cockpit::start("[bot]\ntoken = \"123456:BOT-TOKEN-SECRET\"\n");
    cockpit.signal(libc::SIGINT);
    assert_eq!(
        cockpit
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let logs = cockpit.log_text();
    assert!(logs.contains("cockpit ready"));
    assert!(
        !logs.contains("BOT-TOKEN-SECRET") && !logs.contains("s3cr3t-client-VALUE"),
        "{logs}"
    );
}

/// Writer half of the `kill -9` test: runs only when re-executed by it.
#[test]
fn store_writer_child() {
    let Ok(dir) = std::env::var("COCKPIT_WRITER_DIR") else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).expect("open");
    for id in 0.. {
        let user = AuthorizedUser {
            user_id: id,
            chat_id: id * 10,
            username: format!("user{id}"),
            current_repo: Some("r".repeat(200)),
            token_expires_at: None,
            ..Default::default()
        };
        store.upsert_user(&user, id).expect("write");
        println!("committed {id}");
    }
}

#[test]
fn the_store_keeps_every_committed_fact_through_kill_dash_9() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("self"))
            .args([
                "--exact",
                "store_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("COCKPIT_WRITER_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut committed = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("committed ") {
                committed.push(id.parse::<i64>().expect("id"));
                if committed.len() == 150 + round * 37 {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                    break;
                }
            }
        }
        let _ = child.wait();
        let store = Store::open(dir.path()).expect("reopens after kill -9");
        for id in &committed {
            let user = store
                .user(*id)
                .expect("query")
                .expect("committed row present");
            assert_eq!(user.username, format!("user{id}"));
        }
    }
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.integrity_check().expect("check"), "ok");
}

#[tokio::test]
async fn on_postgresql_over_verified_tls_the_server_runs_and_a_wrong_ca_stops_it_clearly() {
    let (Ok(url), Ok(ca)) = (
        std::env::var("COCKPIT_TEST_POSTGRES"),
        std::env::var("COCKPIT_TEST_POSTGRES_CA"),
    ) else {
        eprintln!("needs COCKPIT_TEST_POSTGRES and COCKPIT_TEST_POSTGRES_CA");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = support::base_config(dir.path());
    let text = plain.replace(
        &format!("url = \"{url}\""),
        &format!("url = \"{url}?sslmode=verify-full&sslrootcert={ca}\""),
    );
    assert_ne!(text, plain, "the URL asks for TLS");
    let cockpit = Cockpit::start_in(dir, &text);
    let status = reqwest::get(format!("{}/health", cockpit.api))
        .await
        .expect("health")
        .status();
    assert_eq!(status, 200);
    drop(cockpit);

    // A CA that did not sign the server's certificate: the server refuses to start, and says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let text = support::base_config(dir.path()).replace(
        &format!("url = \"{url}\""),
        &format!(
            "url = \"{url}?sslmode=verify-full&sslrootcert={}\"",
            other.display()
        ),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("config");
    let (code, _, stderr) = run(&["start", "-c", config.to_str().expect("path")]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(
        !stderr.contains(":cockpit@"),
        "the password stays out: {stderr}"
    );
}

#[test]
fn on_postgresql_a_command_holds_one_connection_and_a_server_its_share() {
    if std::env::var("COCKPIT_TEST_POSTGRES").is_err() {
        eprintln!("needs COCKPIT_TEST_POSTGRES");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cockpit::config::Config::parse(&support::base_config(dir.path())).expect("config");
    let server = cockpit::server::open_store(&config.storage).expect("the server's store");
    assert_eq!(server.connections(), cockpit::store::POSTGRES_CONNECTIONS);
    let command = cockpit::server::open_existing_store(&config.storage).expect("a command's store");
    assert_eq!(command.connections(), 1);
    assert_eq!(
        command.schema_version().expect("version"),
        server.schema_version().expect("version")
    );
}
