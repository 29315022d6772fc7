//! The server run in the test's own process through `server::run(config, listeners, shutdown)`:
//! the REST API end to end, a door actor restarted on the same socket, and a clean shutdown.

mod support;

use std::time::Duration;

use serde_json::json;
use support::api::{Api, repo_path, template};
use support::inprocess::InProcess;

#[tokio::test]
async fn a_blueprint_runs_through_the_in_process_server_and_it_shuts_down_cleanly() {
    let server = InProcess::start("[debug]\nfault_injection = true\n").await;
    let api = Api::at(&server.api);
    let (status, repo) = api.post("", json!({"name": "demo"})).await;
    assert_eq!(status, 201, "{repo}");
    template(
        &repo_path(&repo),
        "node",
        "port: {type: int, default: 1}\n",
        &[("install", "echo installed")],
    );
    let blueprint = "node__a:\n  port: 2\nactions:\n  - action: install\n";
    let (status, body) = api
        .post(
            "/demo/blueprint",
            json!({"name": "b.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(api.post("/demo/blueprint/b.yaml", json!({})).await.0, 200);
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let mut state = String::new();
    for _ in 0..400 {
        let (_, run) = api.get(&format!("/demo/aysrun/{key}")).await;
        state = run["state"].as_str().unwrap_or_default().to_string();
        if state == "ok" || state == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, "ok");

    // The HTTP server's actor crashes and comes back on the very same socket.
    let crashed = reqwest::Client::new()
        .post(format!("{}/debug/crash/api_server", server.api))
        .send()
        .await
        .expect("crash");
    assert_eq!(crashed.status(), 202);
    let mut back = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if api.get("").await.0 == 200 {
            back = true;
            break;
        }
    }
    assert!(back, "the API came back on its socket");
    assert_eq!(api.get("/demo").await.0, 200);

    server.stop().await.expect("a clean stop");
}
