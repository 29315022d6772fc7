//! Roles, API tokens, users and the audit trail, end to end against the real binary: JWTs signed
//! by the test key for three people of three roles, cockpit's own tokens, the CLI beside a running
//! server, a mail, and a `kill -9`.

mod support;

use serde_json::{Value, json};
use support::{Cockpit, run};

const PRIVATE: &str = include_str!("support/keys/test_p384.pem");

/// Who gets which role: ada by name, olga by name, everyone in `myorg` (the JWTs' organization)
/// may read.
const ACCESS: &str = "[access]\nviewer = [\"group:myorg\"]\noperator = [\"itsyouonline:olga\"]\n\
                      admin = [\"itsyouonline:ada\"]\n";

fn jwt(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"iss": "itsyouonline", "exp": now + 3600, "username": user,
                        "scope": ["user:memberof:myorg"]});
    cockpit::auth::mint_token(PRIVATE, &claims).expect("mint")
}

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The audit rows as `(door, identity, action, target, outcome)`, oldest first.
async fn audit_rows(client: &Client, admin: &str) -> Vec<(String, String, String, String, String)> {
    let (status, page) = client.call(admin, "GET", "/audit?limit=1000", None).await;
    assert_eq!(status, 200, "{page}");
    let mut rows: Vec<_> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                s("door"),
                s("identity"),
                s("action"),
                s("target"),
                s("outcome"),
            )
        })
        .collect();
    rows.reverse();
    rows
}

fn row(
    door: &str,
    identity: &str,
    action: &str,
    target: &str,
    outcome: &str,
) -> (String, String, String, String, String) {
    (
        door.into(),
        identity.into(),
        action.into(),
        target.into(),
        outcome.into(),
    )
}

fn cli(cockpit: &Cockpit, args: &[&str]) -> (i32, String, String) {
    let config = cockpit.config.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", &config]);
    run(&all)
}

#[tokio::test]
async fn roles_tokens_users_and_the_audit_trail() {
    let mail =
        "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n";
    let mut cockpit = Cockpit::start(&format!("{ACCESS}{mail}"));
    let client = Client {
        http: reqwest::Client::new(),
        api: cockpit.api.clone(),
    };
    let (ada, olga, vic) = (jwt("ada"), jwt("olga"), jwt("vic"));
    let blueprint = json!({"name": "web.yaml", "content": "node__main:\n  size: 1\n"});

    // Roles on REST: allowed and refused as configured, the refusal naming the role needed.
    let (status, body) = client.call(&vic, "GET", "/ays/repository", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .call(
            &vic,
            "POST",
            "/ays/repository",
            Some(json!({"name": "demo"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("needs the admin role; you have viewer"),
        "{body}"
    );
    let (status, body) = client
        .call(
            &olga,
            "POST",
            "/ays/repository",
            Some(json!({"name": "demo"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = client
        .call(
            &ada,
            "POST",
            "/ays/repository",
            Some(json!({"name": "demo"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    support::api::template(
        &support::api::repo_path(&body),
        "node",
        "size: {type: int, default: 1}\n",
        &[],
    );
    let (status, body) = client
        .call(
            &vic,
            "POST",
            "/ays/repository/demo/blueprint",
            Some(blueprint.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("operator"),
        "{body}"
    );
    let (status, body) = client
        .call(
            &olga,
            "POST",
            "/ays/repository/demo/blueprint",
            Some(blueprint.clone()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = client
        .call(
            &olga,
            "POST",
            "/ays/repository/demo/blueprint",
            Some(blueprint.clone()),
        )
        .await;
    assert_eq!(status, 409, "a second add fails and is audited as an error");
    let (status, _) = client
        .call(
            &olga,
            "DELETE",
            "/ays/repository/demo/blueprint/web.yaml",
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = client.call(&vic, "GET", "/audit", None).await;
    assert_eq!(status, 403, "only admins read the audit trail");

    // Tokens: never more than the owner's role; the token works at once and stops at once.
    let (status, body) = client
        .call(
            &olga,
            "POST",
            "/auth/tokens",
            Some(json!({"name": "ci", "role": "admin", "ttl_days": 1})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, issued) = client
        .call(
            &olga,
            "POST",
            "/auth/tokens",
            Some(json!({"name": "ci", "role": "operator", "ttl_days": 1})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().expect("token").to_string();
    let id = issued["id"].as_str().expect("id").to_string();
    assert!(token.starts_with("ck_") && token.len() >= 46, "{token}");
    let (status, _) = client
        .call(
            &token,
            "POST",
            "/ays/repository/demo/blueprint/web.yaml",
            None,
        )
        .await;
    assert_eq!(status, 200, "an operator token executes a blueprint");
    let (status, _) = client
        .call(&token, "DELETE", "/ays/repository/demo", None)
        .await;
    assert_eq!(status, 403, "an operator token cannot delete a repository");
    let (status, list) = client.call(&olga, "GET", "/auth/tokens", None).await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (200, Some(1)),
        "{list}"
    );
    assert!(
        !list.to_string().contains(&token[3..]),
        "a list never shows the token"
    );
    let (status, _) = client
        .call(&vic, "DELETE", &format!("/auth/tokens/{id}"), None)
        .await;
    assert_eq!(status, 404, "not vic's token");
    let (status, _) = client.call(&vic, "GET", "/auth/tokens", None).await;
    assert_eq!(status, 200, "a viewer lists their own tokens (none)");
    let (status, _) = client
        .call(&olga, "DELETE", &format!("/auth/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = client.call(&token, "GET", "/ays/repository", None).await;
    assert_eq!(
        status, 401,
        "a revoked token is refused at the next request"
    );

    // The CLI beside the running server: create, use, revoke; the server follows at once.
    let (code, out, err) = cli(
        &cockpit,
        &[
            "tokens",
            "create",
            "--identity",
            "itsyouonline:olga",
            "--role",
            "viewer",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let cli_token = out.trim().to_string();
    let (status, _) = client
        .call(&cli_token, "GET", "/ays/repository", None)
        .await;
    assert_eq!(status, 200);
    let (code, out, err) = cli(&cockpit, &["tokens", "list"]);
    assert_eq!(code, 0, "{err}");
    let cli_id = out.split_whitespace().next().expect("an id").to_string();
    assert!(!out.contains(&cli_token[3..]));
    let (code, _, err) = cli(&cockpit, &["tokens", "revoke", &cli_id]);
    assert_eq!(code, 0, "{err}");
    let (status, _) = client
        .call(&cli_token, "GET", "/ays/repository", None)
        .await;
    assert_eq!(
        status, 401,
        "revoked from the CLI, refused by the running server at once"
    );

    // Users: a new token for olga, then olga logged out everywhere from the CLI.
    let (_, issued) = client
        .call(
            &olga,
            "POST",
            "/auth/tokens",
            Some(json!({"name": "laptop", "role": "viewer", "ttl_days": 2})),
        )
        .await;
    let laptop = issued["token"].as_str().expect("token").to_string();
    let (status, users) = client.call(&ada, "GET", "/auth/users", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        users,
        json!([{"identity": "itsyouonline:olga", "telegram_links": 0, "tokens": 1}])
    );
    let (code, out, err) = cli(&cockpit, &["users", "revoke", "itsyouonline:olga"]);
    assert_eq!(code, 0, "{out}{err}");
    let (status, _) = client.call(&laptop, "GET", "/ays/repository", None).await;
    assert_eq!(status, 401);
    let (status, _) = client
        .call(&ada, "DELETE", "/auth/users/github:nobody", None)
        .await;
    assert_eq!(status, 404);

    // A mail: audited as its sender.
    let mut smtp = tokio::net::TcpStream::connect(&cockpit.mail)
        .await
        .expect("smtp");
    support::smtp_session(
        &mut smtp,
        "ops@example.org",
        "alerts@cockpit.test",
        "the body is not audited",
    )
    .await;

    // Only the hash is in the database.
    let db = std::fs::read(cockpit.data_dir().join("cockpit.db")).unwrap_or_default();
    let wal = std::fs::read(cockpit.data_dir().join("cockpit.db-wal")).unwrap_or_default();
    for secret in [&token, &cli_token, &laptop] {
        let needle = secret.as_bytes();
        assert!(!db.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
    }

    // The audit trail survives kill -9, row for row.
    cockpit = cockpit.kill_and_restart();
    let client = Client {
        http: reqwest::Client::new(),
        api: cockpit.api.clone(),
    };
    let rows = audit_rows(&client, &ada).await;
    let cli_user = rows
        .iter()
        .find(|r| r.0 == "cli")
        .map(|r| r.1.clone())
        .expect("a cli row");
    assert!(cli_user.starts_with("cli:"), "{cli_user}");
    let ids = |rows: &[(String, String, String, String, String)]| {
        rows.iter()
            .find(|r| r.2 == "token.create" && r.4 == "ok" && r.0 == "rest")
            .map(|r| r.3.clone())
    };
    let first_id = ids(&rows).expect("a token row");
    assert_eq!(first_id, id);
    // The ids of the CLI's and the laptop's tokens are random: read them from the rows.
    let cli_created = rows
        .iter()
        .find(|r| r.0 == "cli" && r.2 == "token.create")
        .map(|r| r.3.clone())
        .expect("cli row");
    let laptop_id = rows
        .iter()
        .filter(|r| r.0 == "rest" && r.2 == "token.create" && r.4 == "ok")
        .nth(1)
        .map(|r| r.3.clone())
        .expect("laptop row");
    let expected = vec![
        row("rest", "itsyouonline:vic", "repo.create", "", "denied"),
        row("rest", "itsyouonline:olga", "repo.create", "", "denied"),
        row("rest", "itsyouonline:ada", "repo.create", "demo", "ok"),
        row(
            "rest",
            "itsyouonline:vic",
            "blueprint.add",
            "demo",
            "denied",
        ),
        row(
            "rest",
            "itsyouonline:olga",
            "blueprint.add",
            "demo/web.yaml",
            "ok",
        ),
        row(
            "rest",
            "itsyouonline:olga",
            "blueprint.add",
            "demo/web.yaml",
            "error",
        ),
        row(
            "rest",
            "itsyouonline:olga",
            "blueprint.delete",
            "demo/web.yaml",
            "denied",
        ),
        row("rest", "itsyouonline:vic", "audit.read", "", "denied"),
        row("rest", "itsyouonline:olga", "token.create", "", "denied"),
        row("rest", "itsyouonline:olga", "token.create", &id, "ok"),
        row(
            "rest",
            "itsyouonline:olga",
            "blueprint.execute",
            "demo/web.yaml",
            "ok",
        ),
        row("rest", "itsyouonline:olga", "repo.delete", "demo", "denied"),
        row("rest", "itsyouonline:vic", "token.revoke", &id, "error"),
        row("rest", "itsyouonline:olga", "token.revoke", &id, "ok"),
        row("cli", &cli_user, "token.create", &cli_created, "ok"),
        row("cli", &cli_user, "token.revoke", &cli_id, "ok"),
        row(
            "rest",
            "itsyouonline:olga",
            "token.create",
            &laptop_id,
            "ok",
        ),
        row("cli", &cli_user, "user.revoke", "itsyouonline:olga", "ok"),
        row(
            "rest",
            "itsyouonline:ada",
            "user.revoke",
            "github:nobody",
            "error",
        ),
        row(
            "mail",
            "mail:ops@example.org",
            "mail.receive",
            "alerts@cockpit.test",
            "ok",
        ),
    ];
    assert_eq!(rows, expected);
    assert_eq!(cli_created, cli_id);
    let (_, page) = client.call(&ada, "GET", "/audit?limit=1000", None).await;
    let text = page.to_string();
    for secret in [&token, &cli_token, &laptop, &ada, &olga] {
        assert!(
            !text.contains(secret.as_str()),
            "no secret in the audit trail"
        );
    }
    // Filters and paging.
    let (_, denied) = client
        .call(
            &ada,
            "GET",
            "/audit?identity=itsyouonline:vic&door=rest",
            None,
        )
        .await;
    assert_eq!(
        denied["items"].as_array().map(Vec::len),
        Some(4),
        "{denied}"
    );
    let (_, first) = client.call(&ada, "GET", "/audit?limit=2", None).await;
    let cursor = first["next_cursor"].as_i64().expect("cursor");
    let (_, next) = client
        .call(
            &ada,
            "GET",
            &format!("/audit?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(next["items"][0]["target"], "itsyouonline:olga", "{next}");
    assert_eq!(next["items"][1]["target"], laptop_id, "{next}");
    // Schemathesis: a limit outside 1..=1000 was clamped and answered 200.
    for bad in ["limit=0", "limit=1001"] {
        let (status, body) = client
            .call(&ada, "GET", &format!("/audit?{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// A JWT of `user` issued at `iat` (none: without the claim, as ItsYou.online may issue them).
fn jwt_issued(user: &str, iat: Option<u64>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = json!({"iss": "itsyouonline", "exp": now + 3600, "username": user,
                            "scope": ["user:memberof:myorg"]});
    if let Some(iat) = iat {
        claims["iat"] = json!(iat);
    }
    cockpit::auth::mint_token(PRIVATE, &claims).expect("mint")
}

/// `DELETE /auth/users/{identity}` and `cockpit users revoke` also end the JWTs that person
/// holds: a running server refuses them at the next request (also those it had accepted and
/// cached), with a message saying why; a JWT issued after the revocation works, and other
/// people's JWTs are not affected.
#[tokio::test]
async fn a_revoked_user_s_jwts_are_refused_at_once() {
    let cockpit = Cockpit::start(ACCESS);
    let client = Client {
        http: reqwest::Client::new(),
        api: cockpit.api.clone(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ada = jwt("ada");
    let olga = jwt_issued("olga", Some(now - 60));
    let (vic, vic_without_iat) = (jwt_issued("vic", Some(now - 60)), jwt_issued("vic", None));
    for token in [&ada, &olga, &vic, &vic_without_iat] {
        let (status, body) = client.call(token, "GET", "/ays/repository", None).await;
        assert_eq!(status, 200, "{body}");
    }

    // olga holds neither a Telegram link nor a cockpit token: only JWTs. Revoking her is not a
    // no-op.
    let (status, body) = client
        .call(&ada, "DELETE", "/auth/users/itsyouonline:olga", None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = client.call(&olga, "GET", "/ays/repository", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("issued before its holder's access was revoked"),
        "{body}"
    );
    for token in [&ada, &vic] {
        let (status, body) = client.call(token, "GET", "/ays/repository", None).await;
        assert_eq!(status, 200, "another user's JWT still works: {body}");
    }
    // A JWT ItsYou.online issues after the revocation works.
    let fresh = jwt_issued("olga", Some(now + 2));
    let (status, body) = client.call(&fresh, "GET", "/ays/repository", None).await;
    assert_eq!(status, 200, "{body}");

    // The CLI, beside the running server: vic's JWTs, with and without `iat`, stop at once.
    let (code, out, err) = cli(&cockpit, &["users", "revoke", "itsyouonline:vic"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("JWTs issued before now are refused"), "{out}");
    for token in [&vic, &vic_without_iat] {
        let (status, body) = client.call(token, "GET", "/ays/repository", None).await;
        assert_eq!(status, 401, "{body}");
    }
    for token in [&ada, &fresh] {
        let (status, body) = client.call(token, "GET", "/ays/repository", None).await;
        assert_eq!(status, 200, "{body}");
    }
    // olga's refusal holds after a restart.
    let cockpit = cockpit.kill_and_restart();
    let client = Client {
        http: reqwest::Client::new(),
        api: cockpit.api.clone(),
    };
    let (status, _) = client.call(&olga, "GET", "/ays/repository", None).await;
    assert_eq!(status, 401);
    let (status, _) = client.call(&fresh, "GET", "/ays/repository", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_two_person_action_waits_for_a_second_admin() {
    let cockpit = Cockpit::start(
        "[access]\nadmin = [\"itsyouonline:ada\", \"itsyouonline:bea\"]\ntwo_person = [\"repo.delete\"]\n",
    );
    let client = Client {
        http: reqwest::Client::new(),
        api: cockpit.api.clone(),
    };
    let (ada, bea) = (jwt("ada"), jwt("bea"));
    let (status, _) = client
        .call(
            &ada,
            "POST",
            "/ays/repository",
            Some(json!({"name": "demo"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, held) = client
        .call(&ada, "DELETE", "/ays/repository/demo", None)
        .await;
    assert_eq!(status, 202, "{held}");
    let id = held["approval"].as_str().expect("approval id").to_string();
    let (status, _) = client.call(&ada, "GET", "/ays/repository/demo", None).await;
    assert_eq!(status, 200, "held: nothing deleted yet");
    let (status, body) = client
        .call(&ada, "POST", &format!("/auth/approvals/{id}"), None)
        .await;
    assert_eq!(status, 403, "the same admin cannot approve: {body}");
    let (status, _) = client.call(&ada, "GET", "/ays/repository/demo", None).await;
    assert_eq!(status, 200);
    let (status, body) = client
        .call(&bea, "POST", &format!("/auth/approvals/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requested_by"], "itsyouonline:ada");
    let (status, _) = client.call(&ada, "GET", "/ays/repository/demo", None).await;
    assert_eq!(status, 404, "carried out once a second admin approved");
    let (status, _) = client
        .call(&bea, "POST", &format!("/auth/approvals/{id}"), None)
        .await;
    assert_eq!(status, 409, "an approval is used once");
    let rows = audit_rows(&client, &ada).await;
    let rows: Vec<_> = rows.into_iter().map(|r| (r.1, r.2, r.3, r.4)).collect();
    let r = |who: &str, action: &str, target: &str, outcome: &str| {
        (
            who.to_string(),
            action.to_string(),
            target.to_string(),
            outcome.to_string(),
        )
    };
    assert_eq!(
        rows,
        vec![
            r("itsyouonline:ada", "repo.create", "demo", "ok"),
            r("itsyouonline:ada", "repo.delete", "demo", "denied"),
            r("itsyouonline:ada", "approval.approve", &id, "denied"),
            r("itsyouonline:bea", "approval.approve", &id, "ok"),
            r("itsyouonline:ada", "repo.delete", "demo", "ok"),
        ]
    );
}
