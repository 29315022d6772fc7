//! Runs an operator can rely on, against the real binary: queued runs survive `kill -9`, actions a
//! crash left running are killed (and not run twice beside a new copy), cancel frees the
//! repository and kills the job's process group, blueprints that could never run are refused,
//! and actions know the data directory.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::{Cockpit, eventually};

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
async fn an_action_a_crash_left_running_is_killed_at_restart_not_run_again_beside_it() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let pid_file = cockpit.dir.path().join("pid");
    let script = format!("echo $$ >> '{}'; sleep 60", pid_file.display());
    repository(&api, "demo", &[("install", &script)]).await;
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let pid = pid_in(&pid_file).await;

    let cockpit = cockpit.kill_and_restart();
    let api = Api::new(&cockpit);
    eventually(
        Duration::from_secs(10),
        "the orphan to be killed",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    let run = ended(&api, "demo", &key).await;
    assert_eq!(run["state"], "error", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("interrupted")),
        "{run}"
    );
    // Nothing started the action again beside it.
    let pids = std::fs::read_to_string(&pid_file).expect("pids");
    assert_eq!(pids.lines().count(), 1, "{pids}");
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
