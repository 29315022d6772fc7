//! Events from outside against the real binary: `POST /ays/event/{channel}` with an operator's
//! token, and `POST /webhooks/github` from a sender that signs as GitHub does (HMAC-SHA256 of the
//! raw body under the shared secret, `X-Hub-Signature-256: sha256=<hex>`, a fresh
//! `X-GitHub-Delivery` GUID per delivery). A forged, unsigned or replayed delivery runs nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::webhook_receiver::hmac_hex;
use support::{Cockpit, eventually};

const GITHUB_SECRET: &str = "gh-webhook-s3cr3t";

/// A GitHub-like sender: what github.com sends for a webhook delivery.
struct GitHub {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl GitHub {
    /// Delivers `event` with `payload` as delivery `id`, signed with `secret` (or not at all);
    /// the status and answer.
    async fn deliver_as(
        &self,
        secret: Option<&str>,
        event: &str,
        id: &str,
        payload: &Value,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(payload).expect("payload");
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/044aadd")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .header("x-github-hook-id", "292430182");
        if let Some(secret) = secret {
            request = request.header(
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(secret, &body)),
            );
        }
        let response = request.body(body).send().await.expect("deliver");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn deliver(&self, event: &str, id: &str, payload: &Value) -> (u16, Value) {
        let secret = self.secret.clone();
        self.deliver_as(Some(&secret), event, id, payload).await
    }
}

/// A repository `ci` whose `hooks__ci` service runs `onpush` on `github.push` and `ondeploy` on
/// `deploy`, each appending its stdin (the job's JSON) to `seen`.
async fn subscribed_repository(api: &Api, seen: &Path) {
    let (status, view) = api.post("", json!({"name": "ci"})).await;
    assert_eq!(status, 201, "{view}");
    let script = format!("(cat; echo) >> '{}'", seen.display());
    template(
        &repo_path(&view),
        "hooks",
        "",
        &[("onpush", &script), ("ondeploy", &script)],
    );
    let blueprint = "hooks__ci:\neventfilters:\n  - {channel: github.push, action: onpush}\n  - {channel: deploy, action: ondeploy}\n";
    let (status, body) = api
        .post(
            "/ci/blueprint",
            json!({"name": "h.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(api.post("/ci/blueprint/h.yaml", json!({})).await.0, 200);
}

/// The jobs' inputs recorded so far, one JSON per line.
fn seen_jobs(seen: &Path) -> Vec<Value> {
    std::fs::read_to_string(seen)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_github_signed_delivery_runs_its_action_and_forged_or_replayed_ones_run_nothing() {
    let cockpit = Cockpit::start(&format!(
        "[webhooks]\ngithub_secret = \"{GITHUB_SECRET}\"\nmax_body_bytes = 65536\n"
    ));
    let api = Api::new(&cockpit);
    let seen = cockpit.dir.path().join("seen.jsonl");
    subscribed_repository(&api, &seen).await;
    let github = GitHub {
        http: reqwest::Client::new(),
        url: format!("{}/webhooks/github", cockpit.api),
        secret: GITHUB_SECRET.into(),
    };
    let push = json!({"ref": "refs/heads/main", "after": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
                      "repository": {"full_name": "octo/ci"}});

    // Forged (another secret), unsigned, or signed over another body: 401, nothing recorded.
    let (status, _) = github
        .deliver_as(
            Some("not-the-secret"),
            "push",
            "f0000000-0000-0000-0000-000000000001",
            &push,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = github
        .deliver_as(None, "push", "f0000000-0000-0000-0000-000000000002", &push)
        .await;
    assert_eq!(status, 401);
    let tampered = github
        .http
        .post(&github.url)
        .header("x-github-event", "push")
        .header("x-github-delivery", "f0000000-0000-0000-0000-000000000003")
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(GITHUB_SECRET, b"{}")),
        )
        .body(serde_json::to_vec(&push).expect("body"))
        .send()
        .await
        .expect("tampered");
    assert_eq!(tampered.status(), 401);

    // The real thing: 202, and `onpush` gets the payload.
    let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let (status, answer) = github.deliver("push", id, &push).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["channel"], "github.push");
    let jobs = eventually(Duration::from_secs(30), "the push action", || async {
        let jobs = seen_jobs(&seen);
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(jobs[0]["action"], "onpush");
    assert_eq!(jobs[0]["args"]["event"], "push");
    assert_eq!(jobs[0]["args"]["delivery"], id);
    assert_eq!(jobs[0]["args"]["payload"], push);

    // The same delivery again (a replay, or GitHub's "Redeliver"): 200, duplicate, nothing run.
    let (status, answer) = github.deliver("push", id, &push).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);

    // An event nobody subscribed to is recorded and runs nothing; too large a body is 413.
    let (status, _) = github
        .deliver(
            "issues",
            "72d3162e-cc78-11e3-81ab-4c9367dc0959",
            &json!({"action": "opened"}),
        )
        .await;
    assert_eq!(status, 202);
    let big = json!({"blob": "x".repeat(70_000)});
    let (status, _) = github
        .deliver("push", "72d3162e-cc78-11e3-81ab-4c9367dc0960", &big)
        .await;
    assert_eq!(status, 413);

    // Everything the server had to run has run: exactly the one push.
    let runs = eventually(Duration::from_secs(30), "the runs to end", || async {
        let (_, runs) = api.get("/ci/aysrun").await;
        let runs = runs.as_array().cloned().unwrap_or_default();
        runs.iter().all(|r| r["state"] == "ok").then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(seen_jobs(&seen).len(), 1);
    let logs = cockpit.log_text();
    assert!(
        !logs.contains(GITHUB_SECRET),
        "the secret leaked into the logs"
    );
}

#[tokio::test]
async fn an_operator_raises_an_event_that_runs_subscribed_actions_and_outlives_a_crash() {
    let cockpit = Cockpit::start("");
    let api = Api::new(&cockpit);
    let seen = cockpit.dir.path().join("seen.jsonl");
    subscribed_repository(&api, &seen).await;
    let event_url = format!("{}/ays/event/deploy", cockpit.api);

    // No token: 401, nothing recorded.
    let anonymous = reqwest::Client::new()
        .post(&event_url)
        .json(&json!({"version": "0"}))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status(), 401);
    // A bad channel or a body that is not JSON: 400.
    let bad = api
        .http
        .post(format!("{}/ays/event/a%20b", cockpit.api))
        .bearer_auth(&api.token)
        .json(&json!({}))
        .send()
        .await
        .expect("bad channel");
    assert_eq!(bad.status(), 400);
    let bad = api
        .http
        .post(&event_url)
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("bad body");
    assert_eq!(bad.status(), 400);

    // Accepted (202 = recorded), then the server is killed at once: the action still runs.
    let accepted = api
        .http
        .post(&event_url)
        .bearer_auth(&api.token)
        .json(&json!({"version": "1.2.3"}))
        .send()
        .await
        .expect("event");
    assert_eq!(accepted.status(), 202);
    let cockpit = cockpit.kill_and_restart();
    let jobs = eventually(Duration::from_secs(30), "the deploy action", || async {
        let jobs = seen_jobs(&seen);
        jobs.iter()
            .any(|j| j["action"] == "ondeploy" && j["args"] == json!({"version": "1.2.3"}))
            .then_some(jobs)
    })
    .await;
    assert!(jobs.iter().all(|j| j["action"] == "ondeploy"));
    drop(cockpit);
}
