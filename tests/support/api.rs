//! A REST client for the AYS API of a running cockpit, and helpers to write actor templates.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cockpit, eventually};

/// The private half of the test key the config trusts.
pub const PRIVATE: &str = include_str!("keys/test_p384.pem");

/// A REST client that signs its requests with the test key.
pub struct Api {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `<api>/ays/repository`.
    pub base: String,
    /// A valid JWT for the test key.
    pub token: String,
}

impl Api {
    /// A client with a fresh token for `cockpit`.
    pub fn new(cockpit: &Cockpit) -> Api {
        Api::at(&cockpit.api)
    }

    /// A client with a fresh token for the server at `api` (`http://127.0.0.1:PORT`).
    pub fn at(api: &str) -> Api {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = json!({"iss": "itsyouonline", "exp": now + 3600, "username": "ops",
                            "scope": ["user:memberof:myorg"]});
        Api {
            http: reqwest::Client::new(),
            base: format!("{api}/ays/repository"),
            token: cockpit::auth::mint_token(PRIVATE, &claims).expect("mint"),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A GET, with the answer's `Link` header.
    pub async fn get_with_link(&self, path: &str) -> (u16, Value, Option<String>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let link = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            link,
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Waits until the run ends; returns it.
    pub async fn finished_run(&self, repo: &str, key: &str) -> Value {
        eventually(Duration::from_secs(60), "the run to end", || async {
            let (_, run) = self.get(&format!("/{repo}/aysrun/{key}")).await;
            (run["state"] == "ok" || run["state"] == "error").then_some(run)
        })
        .await
    }
}

/// Writes an actor template with a schema and shell actions.
pub fn template(repo: &Path, actor: &str, schema: &str, actions: &[(&str, &str)]) {
    let dir = repo.join("actorTemplates").join(actor);
    std::fs::create_dir_all(dir.join("actions")).expect("template dir");
    std::fs::write(dir.join("schema.yaml"), schema).expect("schema");
    for (name, script) in actions {
        let path = dir.join("actions").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("action");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// The directory of a repository as the API shows it.
pub fn repo_path(view: &Value) -> PathBuf {
    PathBuf::from(view["path"].as_str().expect("path"))
}
