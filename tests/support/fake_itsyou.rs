//! A fake ItsYou.online token endpoint: `POST /v1/oauth/access_token` answers like the real one.
//!
//! A code `member:<username>` grants `user:memberof:myorg` (as a comma-joined scope string, the
//! way ItsYou.online writes it); `outsider` grants only look-alike scopes (`user:memberof:myorgx`,
//! another organization), so a substring or prefix check would wrongly let it in; any other code
//! is refused with `invalid_grant`. Every request's form is recorded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use warp::Filter;

/// The fake server; clone freely.
#[derive(Clone)]
pub struct FakeItsYou {
    /// `http://127.0.0.1:PORT`: what `[oauth] itsyouonlinehost` is set to.
    pub url: String,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl FakeItsYou {
    /// Starts the server on a free loopback port.
    pub async fn start() -> FakeItsYou {
        let requests: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
        let seen = requests.clone();
        let token = warp::path!("v1" / "oauth" / "access_token")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(
                move |authorization: Option<String>, mut form: HashMap<String, String>| {
                    if let Some(authorization) = authorization {
                        form.insert("authorization".into(), authorization);
                    }
                    seen.lock().expect("requests").push(form.clone());
                    let code = form.get("code").cloned().unwrap_or_default();
                    let (status, body) = if let Some(username) = code.strip_prefix("member:") {
                        (
                            200,
                            json!({"access_token": format!("at-{username}"), "token_type": "bearer",
                               "scope": "user:name,user:memberof:myorg", "expires_in": 3600,
                               "info": {"username": username}}),
                        )
                    } else if code == "outsider" {
                        (
                            200,
                            json!({"access_token": "at-outsider", "token_type": "bearer",
                               "scope": "user:name,user:memberof:myorgx,user:memberof:other",
                               "expires_in": 3600, "info": {"username": "outsider"}}),
                        )
                    } else {
                        (400, json!({"error": "invalid_grant"}))
                    };
                    warp::reply::with_status(
                        warp::reply::json(&body),
                        warp::http::StatusCode::from_u16(status).expect("status"),
                    )
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake itsyou");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(warp::serve(token).incoming(listener).run());
        FakeItsYou { url, requests }
    }

    /// Every token request's form so far (with the `authorization` header, if any).
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.requests.lock().expect("requests").clone()
    }
}
