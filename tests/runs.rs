//! Runs an operator can rely on, against the real binary: queued runs survive `kill -9`, actions a
//! crash left running are killed (and not run twice beside a new copy), cancel frees the
//! repository and kills the job's process group, blueprints that could never run are refused,
//! and actions know the data directory.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::{Cockpit, eventually, sse_until};

/// Whether process `pid` exists (and is not a zombie of ours).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// The pid a script wrote to `file`, once it has.
async fn pid_in(file: &Path) -> i32 {
    eventually(Duration::from_secs(20), "the action's pid", || async {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
    .await
}

/// Creates `repo` with template `node` (its actions as given) and executes a blueprint of one
/// `node__a` service with `install` scheduled.
async fn repository(api: &Api, repo: &str, actions: &[(&str, &str)]) -> std::path::PathBuf {
    let (status, view) = api.post("", json!({"name": repo})).await;
    assert_eq!(status, 201, "{view}");
    let dir = repo_path(&view);
    template(&dir, "node", "port: {type: int, default: 1}\n", actions);
    let blueprint = "node__a:\n  port: 2\nactions:\n  - action: install\n";
    let path = format!("/{repo}/blueprint");
    let (status, body) = api
        .post(&path, json!({"name": "b.yaml", "content": blueprint}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.post(&format!("{path}/b.yaml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    dir
}

/// Waits until run `key` of `repo` has ended; its JSON.
async fn ended(api: &Api, repo: &str, key: &str) -> Value {
    eventually(Duration::from_secs(30), "the run to end", || async {
        let (_, run) = api.get(&format!("/{repo}/aysrun/{key}")).await;
        let state = run["state"].as_str().unwrap_or_default().to_string();
        matches!(state.as_str(), "ok" | "error" | "cancelled").then_some(run)
    })
    .await
}

#[tokio::test]
async fn mails_whose_runs_wait_in_the_queue_run_after_kill_dash_9() {
    let cockpit = Cockpit::start(
        "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n",
    );
    let api = Api::new(&cockpit);
    let seen = cockpit.dir.path().join("seen.jsonl");
    let (status, view) = api.post("", json!({"name": "inbox"})).await;
    assert_eq!(status, 201, "{view}");
    // Slow enough that the others wait in the queue when the server is killed.
    let script = format!("sleep 1; (cat; echo) >> '{}'", seen.display());
    template(&repo_path(&view), "mailer", "", &[("onmail", &script)]);
    let blueprint = "mailer__ops:\neventfilters:\n  - {channel: email, action: onmail}\n";
    let (status, _) = api
        .post(
            "/inbox/blueprint",
            json!({"name": "m.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(api.post("/inbox/blueprint/m.yaml", json!({})).await.0, 200);

    let subjects: Vec<String> = (0..4).map(|i| format!("queued mail {i}")).collect();
    let (host, port) = cockpit.mail.rsplit_once(':').expect("mail address");
    let (host, port) = (host.to_string(), port.parse::<u16>().expect("port"));
    for subject in &subjects {
        let message = lettre::Message::builder()
            .from("alice@example.org".parse().expect("from"))
            .to("ops@cockpit.test".parse().expect("to"))
            .subject(subject)
            .body(String::from("hello"))
            .expect("message");
        let transport = lettre::SmtpTransport::builder_dangerous(&host)
            .port(port)
            .build();
        let code = tokio::task::spawn_blocking(move || {
            lettre::Transport::send(&transport, &message).map(|r| u16::from(r.code()))
        })
        .await
        .expect("send");
        assert_eq!(code.expect("sent"), 250);
    }
    let cockpit = cockpit.kill_and_restart();
    let _ = &cockpit;
    let all = eventually(Duration::from_secs(40), "every mail's action", || async {
        let text = std::fs::read_to_string(&seen).unwrap_or_default();
        subjects
            .iter()
            .all(|s| text.contains(&format!("\"subject\":\"{s}\"")))
            .then_some(text)
    })
    .await;
    assert!(!all.is_empty());
}

#[tokio::test]
async fn an_action_a_crash_left_running_is_killed_at_restart_then_run_again_never_beside_it() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let pid_file = cockpit.dir.path().join("pid");
    let overlaps = cockpit.dir.path().join("overlaps");
    // Each copy of the action notes whether an earlier copy is still alive when it starts.
    let script = format!(
        "for p in $(cat '{pids}' 2>/dev/null); do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != Z ] && echo $p >> '{overlaps}'; done; \
         echo $$ >> '{pids}'; sleep 60",
        pids = pid_file.display(),
        overlaps = overlaps.display()
    );
    repository(&api, "demo", &[("install", &script)]).await;
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let pid = pid_in(&pid_file).await;

    let cockpit = cockpit.kill_and_restart();
    let api = Api::new(&cockpit);
    let run = ended(&api, "demo", &key).await;
    assert_eq!(run["state"], "error", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("interrupted"), "{run}");
    // The acknowledged run is not lost: its action runs again, in a run that names it.
    let again = error
        .rsplit_once("queued again as run ")
        .map(|(_, k)| k.to_string())
        .expect("the error names the run queued again");
    let pids: Vec<i32> = eventually(
        Duration::from_secs(20),
        "the action to run again",
        || async {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let list: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
            (list.len() == 2).then_some(list)
        },
    )
    .await;
    assert_eq!(pids[0], pid);
    assert!(!alive(pid), "the orphan was killed");
    let (_, shown) = api.get(&format!("/demo/aysrun/{again}")).await;
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(shown["again_of"], key.as_str(), "{shown}");
    // Never two copies at once: the orphan was dead before the second copy started.
    let beside = std::fs::read_to_string(&overlaps).unwrap_or_default();
    assert_eq!(beside, "", "copies alive beside the new one: {beside}");
}

#[tokio::test]
async fn cancel_frees_the_repository_at_once_and_kills_the_process_group() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let pids = cockpit.dir.path().join("pids");
    // The action and a child of its own in the same group.
    let script = format!(
        "sleep 120 & echo $! >> '{0}'; echo $$ >> '{0}'; wait",
        pids.display()
    );
    repository(&api, "demo", &[("install", &script)]).await;
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let group: Vec<i32> = eventually(Duration::from_secs(20), "both pids", || async {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let list: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        (list.len() == 2).then_some(list)
    })
    .await;

    let (status, cancelled) = api
        .post(&format!("/demo/aysrun/{key}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    // The repository is free at once: the cancelled action is planned again.
    let (status, next) = api.post("/demo/aysrun?simulate=true", json!({})).await;
    assert_eq!(status, 201, "{next}");
    let (status, again) = api
        .post(&format!("/demo/aysrun/{key}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{again}");
    eventually(Duration::from_secs(15), "the whole group gone", || async {
        group.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
    let (_, shown) = api.get(&format!("/demo/aysrun/{key}")).await;
    assert_eq!(shown["state"], "cancelled");
    assert_eq!(shown["steps"][0]["jobs"][0]["state"], "cancelled");
}

#[tokio::test]
async fn a_blueprint_whose_services_consume_each_other_is_refused_naming_them() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let (status, view) = api.post("", json!({"name": "loop"})).await;
    assert_eq!(status, 201);
    let dir = repo_path(&view);
    template(
        &dir,
        "front",
        "back: {type: str, consume: {role: back, min: 1, max: 1}}\n",
        &[("install", "true")],
    );
    template(
        &dir,
        "back",
        "front: {type: str, consume: {role: front, min: 1, max: 1}}\n",
        &[("install", "true")],
    );
    let blueprint = "front__f:\n  back: b\nback__b:\n  front: f\nactions:\n  - action: install\n";
    let (status, _) = api
        .post(
            "/loop/blueprint",
            json!({"name": "l.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = api.post("/loop/blueprint/l.yaml", json!({})).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("loop") && error.contains("front!f") && error.contains("back!b"),
        "{body}"
    );
    // Nothing was created.
    assert_eq!(api.get("/loop/service").await.1, json!([]));
}

#[tokio::test]
async fn actions_get_the_data_directory_and_links_out_of_a_repository_are_not_followed() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let dir = repository(&api, "demo", &[("install", "echo \"data=$COCKPIT_DATA\"")]).await;
    let (_, run) = api.post("/demo/aysrun", json!({})).await;
    let run = ended(&api, "demo", run["key"].as_str().expect("key")).await;
    let expected = format!(
        "data={}",
        std::fs::canonicalize(cockpit.data_dir())
            .expect("data dir")
            .display()
    );
    assert_eq!(
        run["steps"][0]["jobs"][0]["logs"][0]["log"],
        expected.as_str(),
        "{run}"
    );

    let outside = cockpit.dir.path().join("outside.yaml");
    std::fs::write(&outside, "node__x:\n  port: 9\n").expect("outside");
    std::os::unix::fs::symlink(&outside, dir.join("blueprints/link.yaml")).expect("link");
    assert_eq!(api.get("/demo/blueprint/link.yaml").await.0, 404);
    let (status, _) = api
        .put(
            "/demo/blueprint/link.yaml",
            json!({"content": "node__y:\n  port: 1\n"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        std::fs::read_to_string(&outside).expect("outside"),
        "node__x:\n  port: 9\n"
    );
}

#[tokio::test]
async fn live_logs_arrive_while_the_job_runs_and_resume_after_a_reconnect() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let gate = cockpit.dir.path().join("gate");
    // Prints a line, then waits for the test to have seen it before it goes on.
    let script = format!(
        "echo first line; while [ ! -e '{0}' ]; do sleep 0.05; done; echo second line",
        gate.display()
    );
    repository(&api, "demo", &[("install", &script)]).await;
    let (_, run) = api.post("/demo/aysrun", json!({})).await;
    let key = run["key"].as_str().expect("key").to_string();
    let url = format!("{}/demo/aysrun/{key}/logs?follow=true", api.base);
    let response = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("sse");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let first = sse_until(response, |(_, event, _)| event == "log").await;
    let (first_id, _, data) = first.last().expect("a line").clone();
    assert!(data.contains("first line"), "{first:?}");
    // The job cannot have ended: it waits for this file.
    assert_eq!(
        api.get(&format!("/demo/aysrun/{key}")).await.1["state"],
        "running"
    );
    std::fs::write(&gate, "").expect("gate");

    // A client that reconnects after the first line gets the rest, then the end.
    let response = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .header("Last-Event-ID", &first_id)
        .send()
        .await
        .expect("sse again");
    let rest = sse_until(response, |(_, event, _)| event == "end").await;
    let lines: Vec<&str> = rest
        .iter()
        .filter(|(_, e, _)| e == "log")
        .map(|(_, _, d)| d.as_str())
        .collect();
    assert_eq!(lines.len(), 1, "{rest:?}");
    assert!(lines[0].contains("second line"), "{rest:?}");
    assert_eq!(rest.last().expect("end").2, r#"{"state":"ok"}"#);
    // The stored log is the same as before: every line once.
    let run = ended(&api, "demo", &key).await;
    let logs: Vec<&str> = run["steps"][0]["jobs"][0]["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["log"].as_str())
        .collect();
    assert_eq!(logs, ["first line", "second line"], "{run}");
    // The job's start and end times (it waited for the gate: they differ).
    let job = &run["steps"][0]["jobs"][0];
    let (started, ended) = (job["started_ms"].as_i64(), job["ended_ms"].as_i64());
    assert!(
        started.zip(ended).is_some_and(|(s, e)| s > 0 && e > s),
        "{job}"
    );
}

#[tokio::test]
async fn clients_that_follow_one_run_each_get_every_line_once_also_one_that_joins_late() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let gate = cockpit.dir.path().join("gate");
    let script = format!(
        "echo one; echo two; while [ ! -e '{0}' ]; do sleep 0.05; done; echo three; echo four",
        gate.display()
    );
    repository(&api, "demo", &[("install", &script)]).await;
    let (_, run) = api.post("/demo/aysrun", json!({})).await;
    let key = run["key"].as_str().expect("key").to_string();
    let url = format!("{}/demo/aysrun/{key}/logs?follow=true", api.base);
    let follow = || async {
        api.http
            .get(&url)
            .bearer_auth(&api.token)
            .send()
            .await
            .expect("sse")
    };
    let lines = |events: &[(String, String, String)]| -> Vec<String> {
        events
            .iter()
            .filter(|(_, e, _)| e == "log")
            .map(|(_, _, d)| serde_json::from_str::<Value>(d).expect("json")["log"].to_string())
            .collect()
    };
    // The first client follows from the start; a second one sees the first two lines arrive…
    let early = follow().await;
    let early = tokio::spawn(sse_until(early, |(_, event, _)| event == "end"));
    let seen = sse_until(follow().await, |(_, e, d)| e == "log" && d.contains("two")).await;
    assert_eq!(lines(&seen).len(), 2, "{seen:?}");
    // …and one that joins now reads them from the store, then shares the feed for the rest
    // (its response has come: its first read is done).
    let late = tokio::spawn(sse_until(follow().await, |(_, event, _)| event == "end"));
    std::fs::write(&gate, "").expect("gate");
    let expected = ["\"one\"", "\"two\"", "\"three\"", "\"four\""];
    for events in [early.await.expect("early"), late.await.expect("late")] {
        assert_eq!(lines(&events), expected, "{events:?}");
        let ids: Vec<i64> = events
            .iter()
            .filter(|(_, e, _)| e == "log")
            .map(|(id, _, _)| id.parse().expect("id"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(events.last().expect("end").2, r#"{"state":"ok"}"#);
    }
}

#[tokio::test]
async fn scheduled_args_reach_the_action_and_a_rerun_runs_the_same_actions_with_them() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let script = "cat > input.json; printf '%s' \"$COCKPIT_ARGS\" > env.json";
    let dir = repository(&api, "demo", &[("install", script)]).await;
    let service_dir = dir.join("services/node/a");
    // Args must be an object.
    let (status, body) = api
        .post("/demo/service/node/a/action/install", json!({"args": [1]}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .post(
            "/demo/service/node/a/action/install",
            json!({"args": {"target": "s3", "level": 9}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    assert_eq!(ended(&api, "demo", &key).await["state"], "ok");
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(service_dir.join("input.json")).expect("in"))
            .expect("json");
    assert_eq!(
        input["args"],
        json!({"target": "s3", "level": 9}),
        "{input}"
    );
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(service_dir.join("env.json")).expect("env"))
            .expect("json");
    assert_eq!(env, json!({"target": "s3", "level": 9}));
    // The args went with that run: the next plan of the action has none...
    std::fs::remove_file(service_dir.join("input.json")).expect("rm");
    // ...but a rerun of that run plans the same action with the same args.
    let (status, again) = api
        .post(&format!("/demo/aysrun/{key}/rerun"), json!({}))
        .await;
    assert_eq!(status, 201, "{again}");
    let again_key = again["key"].as_str().expect("key").to_string();
    assert_ne!(again_key, key);
    let done = ended(&api, "demo", &again_key).await;
    assert_eq!(done["state"], "ok", "{done}");
    assert_eq!(done["steps"][0]["jobs"][0]["action_name"], "install");
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(service_dir.join("input.json")).expect("in"))
            .expect("json");
    assert_eq!(
        input["args"],
        json!({"target": "s3", "level": 9}),
        "{input}"
    );
    let (status, body) = api.post("/demo/aysrun/nosuchrun/rerun", json!({})).await;
    assert_eq!(status, 404, "{body}");

    // Runs are listed a page at a time, newest first, and filtered by state.
    let (status, page, link) = api.get_with_link("/demo/aysrun?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(page[0]["key"], again_key);
    let link = link.expect("a next link");
    let next = link
        .strip_prefix("</ays/repository")
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .expect("link form");
    let (status, page, link) = api.get_with_link(next).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page[0]["key"], key);
    assert!(link.is_none(), "{link:?}");
    let (_, oks) = api.get("/demo/aysrun?state=ok").await;
    assert_eq!(oks.as_array().map(Vec::len), Some(2));
    let (_, errors) = api.get("/demo/aysrun?state=error").await;
    assert_eq!(errors, json!([]));
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "state=done",
        "cursor=bm9wZQ",
        // Schemathesis: a repeated parameter was a 405 (the query's rejection lost to POST's).
        "state=ok&state=ok",
    ] {
        let (status, body) = api.get(&format!("/demo/aysrun?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
