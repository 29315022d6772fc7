//! The AYS engine end to end over the REST API of the real binary: repositories, templates with
//! real shell actions, blueprints, runs in dependency order, failures, callbacks, and a restart.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Cockpit;
use support::api::{Api, repo_path, template};
use warp::Filter;

/// An action that records the order it ran in, keeps its input, logs to both streams, and
/// returns data.
const RECORDING_ACTION: &str = r#"cat > input.json
echo "$COCKPIT_SERVICE $COCKPIT_ACTION" >> ../../../order.log
echo "hello from $COCKPIT_SERVICE"
echo "a warning" >&2
echo '{"data": {"installed": true}}'"#;

#[tokio::test]
async fn a_blueprint_runs_in_dependency_order_and_survives_a_restart() {
    let mut cockpit = Cockpit::start("[ays]\nworkers = 4\n");
    let api = Api::new(&cockpit);

    let (status, repo) = api.post("", json!({"name": "demo"})).await;
    assert_eq!(status, 201, "{repo}");
    assert_eq!(api.post("", json!({"name": "demo"})).await.0, 409);
    assert_eq!(api.post("", json!({"name": "no/slash"})).await.0, 400);
    let dir = repo_path(&repo);
    template(
        &dir,
        "db",
        "port: {type: int, default: 5432}\n",
        &[("install", RECORDING_ACTION)],
    );
    template(
        &dir,
        "web",
        "port: {type: int, default: 80}\ndb: {type: str, consume: {role: db, min: 1, max: 1}}\n",
        &[("install", RECORDING_ACTION)],
    );

    // Invalid YAML is refused and nothing is saved.
    let (status, body) = api
        .post(
            "/demo/blueprint",
            json!({"name": "bad.yaml", "content": "db__x: [unclosed"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(api.get("/demo/blueprint").await.1, json!([]));

    let blueprint =
        "web__site:\n  db: main\ndb__main:\n  port: 5433\nactions:\n  - action: install\n";
    let (status, body) = api
        .post(
            "/demo/blueprint",
            json!({"name": "app.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["archived"], false);
    assert_eq!(body["hash"].as_str().map(str::len), Some(64));
    let (status, body) = api.post("/demo/blueprint/app.yaml", json!({})).await;
    assert_eq!(status, 200, "{body}");

    // A blueprint with three different problems lists all three and changes nothing.
    let broken = "web__two:\n  db: nowhere\n  colour: red\nghost__one:\ndb__x:\n  port: many\n";
    api.post(
        "/demo/blueprint",
        json!({"name": "broken.yaml", "content": broken}),
    )
    .await;
    let before = api.get("/demo/service").await.1;
    let (status, body) = api.post("/demo/blueprint/broken.yaml", json!({})).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.len() >= 3, "{body}");
    for needle in ["colour", "ghost", "db__x"] {
        assert!(
            body["error"].as_str().unwrap_or("").contains(needle),
            "{needle}: {body}"
        );
    }
    assert_eq!(api.get("/demo/service").await.1, before, "nothing changed");

    let (status, db) = api.get("/demo/service/db/main").await;
    assert_eq!(status, 200);
    assert_eq!(db["data"]["port"], 5433);
    assert_eq!(db["consumers"], json!([{"role": "web", "name": "site"}]));
    let (_, web) = api.get("/demo/service/web/site").await;
    assert_eq!(web["producers"], json!([{"role": "db", "name": "main"}]));
    assert_eq!(web["data"]["port"], 80, "default filled");
    assert!(
        web["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!({"name": "install", "state": "scheduled"})))
    );

    let (status, simulated) = api.post("/demo/aysrun?simulate=true", json!({})).await;
    assert_eq!(status, 201, "{simulated}");
    assert_eq!(simulated["steps"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        api.get("/demo/aysrun").await.1,
        json!([]),
        "simulation records nothing"
    );

    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let run = api.finished_run("demo", &key).await;
    assert_eq!(run["state"], "ok", "{run}");
    let steps = run["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["jobs"][0]["service_key"], "db!main");
    assert_eq!(steps[1]["jobs"][0]["service_key"], "web!site");
    let web_job = &steps[1]["jobs"][0];
    assert_eq!(web_job["action_name"], "install");
    assert_eq!(web_job["actor_name"], "web");
    let logs = web_job["logs"].as_array().expect("logs");
    // stdout and stderr are read concurrently, so their relative order is not fixed.
    assert!(
        logs.iter()
            .any(|line| line["level"] == "stdout" && line["log"] == "hello from web!site"),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l["level"] == "stderr" && l["log"] == "a warning"),
        "{logs:?}"
    );

    // The actions really ran, producer first, with the job JSON on stdin.
    let order = std::fs::read_to_string(dir.join("order.log")).expect("order");
    assert_eq!(order, "db!main install\nweb!site install\n");
    let input: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("services/web/site/input.json")).expect("input"),
    )
    .expect("job json");
    assert_eq!(input["repo"], "demo");
    assert_eq!(input["run"], key.as_str());
    assert_eq!(input["action"], "install");
    assert_eq!(input["service"]["key"], "web!site");
    assert_eq!(input["service"]["data"]["port"], 80);
    assert_eq!(input["producers"][0]["key"], "db!main");
    let (_, db) = api.get("/demo/service/db/main").await;
    assert_eq!(
        db["data"]["installed"], true,
        "the data line updated the service"
    );
    assert_eq!(db["state"], "ok");

    // Restart the binary on the same data: everything is still there.
    cockpit.signal(libc::SIGTERM);
    assert_eq!(
        cockpit
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let dir_holder = std::mem::replace(&mut cockpit.dir, tempfile::tempdir().expect("tmp"));
    let text = std::fs::read_to_string(&cockpit.config).expect("config");
    let again = Cockpit::start_in(dir_holder, &text);
    let api = Api::new(&again);
    let (_, repos) = api.get("").await;
    assert_eq!(repos[0]["name"], "demo");
    assert_eq!(
        api.get("/demo/blueprint/app.yaml").await.1["content"],
        blueprint
    );
    let (_, run) = api.get(&format!("/demo/aysrun/{key}")).await;
    assert_eq!(run["state"], "ok");
    // Every stdout/stderr line is kept, the `{"data": …}` line too.
    assert_eq!(
        run["steps"][1]["jobs"][0]["logs"].as_array().map(Vec::len),
        Some(3)
    );
    let (_, db) = api.get("/demo/service/db/main").await;
    assert_eq!(db["data"]["installed"], true);
}

#[tokio::test]
async fn the_listing_follows_every_create_and_delete() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let names = |repos: &Value| -> Vec<String> {
        repos
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(api.get("").await.1, json!([]));
    assert_eq!(api.post("", json!({"name": "a"})).await.0, 201);
    assert_eq!(names(&api.get("").await.1), ["a"]);
    assert_eq!(names(&api.get("").await.1), ["a"], "read again");
    assert_eq!(api.post("", json!({"name": "b"})).await.0, 201);
    assert_eq!(names(&api.get("").await.1), ["a", "b"]);
    let (status, _) = api.call(reqwest::Method::DELETE, "/a", None).await;
    assert!(status == 200 || status == 204, "{status}");
    let response = api
        .http
        .get(&api.base)
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("list");
    assert_eq!(response.headers()["content-type"], "application/json");
    let repos: Value = response.json().await.expect("json");
    assert_eq!(names(&repos), ["b"]);
}

#[tokio::test]
async fn a_failing_action_marks_job_service_and_run_error_and_calls_back() {
    // A callback receiver: a real HTTP server recording what it is sent.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let route = warp::post()
        .and(warp::path!("done"))
        .and(warp::body::json())
        .map(move |body: Value| {
            let _ = tx.send(body);
            "thanks"
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let callback = format!("http://{}/done", listener.local_addr().expect("addr"));
    tokio::spawn(warp::serve(route).incoming(listener).run());

    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let (_, repo) = api.post("", json!({"name": "ops"})).await;
    template(
        &repo_path(&repo),
        "flaky",
        "",
        &[("install", "echo 'about to fail'\nexit 3")],
    );
    let blueprint = "flaky__one:\nactions:\n  - action: install\n";
    api.post(
        "/ops/blueprint",
        json!({"name": "f.yaml", "content": blueprint}),
    )
    .await;
    assert_eq!(api.post("/ops/blueprint/f.yaml", json!({})).await.0, 200);
    let (status, run) = api
        .post(&format!("/ops/aysrun?callback_url={callback}"), json!({}))
        .await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let run = api.finished_run("ops", &key).await;
    assert_eq!(run["state"], "error");
    let job = &run["steps"][0]["jobs"][0];
    assert_eq!(job["state"], "error");
    let logs = job["logs"].as_array().expect("logs");
    assert!(logs.iter().any(|l| l["log"] == "about to fail"), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l["level"] == "error" && l["log"].as_str().unwrap_or("").contains('3')),
        "{logs:?}"
    );
    let (_, service) = api.get("/ops/service/flaky/one").await;
    assert_eq!(service["state"], "error");
    assert!(
        service["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!({"name": "install", "state": "error"})))
    );

    let called = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("callback in time")
        .expect("callback body");
    assert_eq!(called["key"], key.as_str());
    assert_eq!(called["state"], "error");
    assert!(called["error"].is_string());

    // The error action is planned again by the next run.
    let (status, retry) = api.post("/ops/aysrun?simulate=true", json!({})).await;
    assert_eq!(status, 201, "{retry}");
    assert_eq!(retry["steps"][0]["jobs"][0]["service_key"], "flaky!one");
}

#[tokio::test]
async fn resources_answer_with_the_right_status_codes() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    assert_eq!(api.get("/nope").await.0, 404);
    assert_eq!(api.get("/nope/blueprint").await.0, 404);

    // A JSON body is read as JSON whatever its Content-Type (`curl -d` says form); a body that is
    // not JSON is a 400 that says so, not a 405.
    for (body, status, needle) in [
        (r#"{"name": "curled"}"#, 201, "curled"),
        ("name=curled2", 400, "invalid JSON body"),
    ] {
        let response = api
            .http
            .post(&api.base)
            .bearer_auth(&api.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status);
        assert!(response.text().await.expect("body").contains(needle));
    }
    let (_, repo) = api.post("", json!({"name": "r1"})).await;
    template(
        &repo_path(&repo),
        "node",
        "size: {type: int, default: 1}\n",
        &[("install", "true")],
    );
    let content = "node__a:\n  size: 2\n";
    let (status, _) = api
        .post(
            "/r1/blueprint",
            json!({"name": "n.yaml", "content": content}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        api.post(
            "/r1/blueprint",
            json!({"name": "n.yaml", "content": content})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        api.post(
            "/r1/blueprint",
            json!({"name": "../evil.yaml", "content": content})
        )
        .await
        .0,
        400
    );
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            "/r1/blueprint/n.yaml",
            Some(json!({"content": "node__a:\n  size: 3\n"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["content"].as_str().unwrap_or("").contains("3"));
    let (status, body) = api
        .call(reqwest::Method::PUT, "/r1/blueprint/n.yaml/archive", None)
        .await;
    assert_eq!((status, &body["archived"]), (200, &json!(true)));
    assert_eq!(api.get("/r1/blueprint").await.1, json!([]));
    assert_eq!(
        api.get("/r1/blueprint?archived=true").await.1[0]["name"],
        "n.yaml"
    );
    assert_eq!(
        api.post("/r1/blueprint/n.yaml", json!({})).await.0,
        409,
        "archived"
    );
    api.call(reqwest::Method::PUT, "/r1/blueprint/n.yaml/restore", None)
        .await;
    assert_eq!(api.post("/r1/blueprint/n.yaml", json!({})).await.0, 200);

    let (status, templates) = api.get("/r1/template").await;
    assert_eq!(status, 200);
    assert_eq!(templates[0]["name"], "node");
    assert_eq!(templates[0]["actions"], json!(["install"]));
    assert!(
        templates[0].get("code").is_none(),
        "a listing holds no code"
    );
    let (status, node) = api.get("/r1/template/node").await;
    assert_eq!(status, 200);
    let code = node["code"]["install"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty(),
        "one template shows its actions' code: {node}"
    );
    assert_eq!(api.get("/r1/template/ghost").await.0, 404);

    let (_, list) = api.get("/r1/service/node").await;
    assert_eq!(
        list,
        json!([{"key": "node!a", "role": "node", "name": "a", "actor": "node", "state": "new"}])
    );
    let (status, service) = api
        .post("/r1/service/node/a/action/install", json!({}))
        .await;
    assert_eq!(status, 200, "{service}");
    assert_eq!(
        api.post("/r1/service/node/a/action/fly", json!({})).await.0,
        404
    );
    assert_eq!(api.get("/r1/aysrun/none").await.0, 404);
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/r1/service/node/a", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(api.get("/r1/service/node/a").await.0, 404);
    let (status, _) = api
        .call(reqwest::Method::DELETE, "/r1/blueprint/n.yaml", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api.call(reqwest::Method::DELETE, "/r1", None).await;
    assert_eq!(status, 204);
    assert_eq!(api.get("/r1").await.0, 404);
    assert!(!repo_path(&repo).exists());
}

#[tokio::test]
async fn a_cycle_is_refused_naming_the_services() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let (_, repo) = api.post("", json!({"name": "loop"})).await;
    let dir = repo_path(&repo);
    template(
        &dir,
        "a",
        "b: {type: str, consume: {role: b, min: 0, max: 1}}\n",
        &[("install", "true")],
    );
    template(
        &dir,
        "b",
        "a: {type: str, consume: {role: a, min: 0, max: 1}}\n",
        &[("install", "true")],
    );
    let content = "a__one:\n  b: two\nb__two:\n  a: one\nactions:\n  - action: install\n";
    api.post(
        "/loop/blueprint",
        json!({"name": "l.yaml", "content": content}),
    )
    .await;
    // Refused when the blueprint is executed (it used to be accepted and then block every run
    // of the repository), naming the services; nothing is created.
    let (status, body) = api.post("/loop/blueprint/l.yaml", json!({})).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains("a!one") && error.contains("b!two"),
        "{error}"
    );
    assert_eq!(api.get("/loop/service").await.1, json!([]));
    let (status, body) = api.post("/loop/aysrun", json!({})).await;
    assert_eq!(status, 422, "nothing to run: {body}");
    assert_eq!(api.get("/loop/aysrun").await.1, json!([]));
}

#[tokio::test]
async fn a_slow_clone_blocks_nothing_and_a_real_one_creates_the_repository() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);

    // A remote that accepts and never answers: the clone hangs, everything else goes on.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/repo.git", silent.local_addr().expect("addr"));
    let hanging = Api::new(&cockpit);
    let clone = tokio::spawn(async move {
        hanging
            .post("", json!({"name": "slow", "git_url": url}))
            .await
    });
    let (_git, _) = tokio::time::timeout(Duration::from_secs(20), silent.accept())
        .await
        .expect("git connects")
        .expect("accept");
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let (status, _) = api.post("", json!({"name": "quick"})).await;
        assert_eq!(status, 201);
        let (status, repos) = api.get("").await;
        assert_eq!(status, 200);
        repos
    })
    .await
    .expect("the engine answers while a clone hangs");
    let names: Vec<&str> = answered
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["quick"],
        "a repository being cloned is not listed yet"
    );
    assert_eq!(
        api.post("", json!({"name": "slow"})).await.0,
        409,
        "its name is taken"
    );
    clone.abort();

    // A real clone from a local repository.
    let origin = cockpit.dir.path().join("origin");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&origin)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .expect("git");
        assert!(out.status.success(), "{out:?}");
    };
    std::fs::create_dir_all(origin.join("blueprints")).expect("origin");
    std::fs::write(origin.join("blueprints/app.yaml"), "x__y:\n").expect("blueprint");
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "blueprint"]);
    let url = format!("file://{}", origin.display());
    let (status, repo) = api
        .post("", json!({"name": "cloned", "git_url": url}))
        .await;
    assert_eq!(status, 201, "{repo}");
    assert_eq!(repo["git_url"], url.as_str());
    assert!(repo_path(&repo).join("blueprints/app.yaml").exists());
    let (_, listed) = api.get("/cloned/blueprint").await;
    assert_eq!(listed[0]["name"], "app.yaml", "{listed}");
}
