//! A fake Telegram Bot API: a small warp server that stands in for api.telegram.org.
//!
//! It serves `getUpdates` long polls from a queue the test fills, records every `sendMessage`
//! (and the other calls), and answers the handful of methods a bot uses. Method names are matched
//! case-insensitively, as the real Bot API does. It never answers 5xx.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;
use warp::Filter;

/// One recorded outbound call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Lowercased method name.
    pub method: String,
    /// The JSON (or form) parameters.
    pub params: Value,
}

#[derive(Default)]
struct State {
    updates: VecDeque<Value>,
    next_update_id: i64,
    next_message_id: i64,
    calls: Vec<Call>,
    confirmed_offset: i64,
    files: Vec<(String, Vec<u8>)>,
    /// Lowercased method → how many of its next calls fail with a 502.
    failures: std::collections::HashMap<String, u32>,
    /// Benchmarks: when a `getUpdates` first returned updates, and when the last call came.
    first_served: Option<Instant>,
    last_call: Option<Instant>,
}

/// The fake server; clone freely.
#[derive(Clone)]
pub struct FakeTelegram {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    /// `http://127.0.0.1:PORT`: what `[bot] api_url` is set to.
    pub url: String,
    /// The token the bot must use.
    pub token: String,
}

impl FakeTelegram {
    /// Starts the server on a free loopback port.
    pub async fn start(token: &str) -> FakeTelegram {
        let state = Arc::new(Mutex::new(State {
            next_update_id: 1,
            next_message_id: 1000,
            ..State::default()
        }));
        let notify = Arc::new(Notify::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake telegram");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = FakeTelegram {
            state,
            notify,
            url,
            token: token.to_string(),
        };
        let api = fake.clone();
        let route = warp::path!(String / String)
            .and(warp::post())
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::bytes())
            .then(
                move |bot: String, method: String, ctype: Option<String>, body: bytes::Bytes| {
                    let api = api.clone();
                    async move { api.handle(&bot, &method, ctype.as_deref(), &body).await }
                },
            );
        let files_api = fake.clone();
        let files = warp::path!("file" / String / String).and(warp::get()).map(
            move |_bot: String, path: String| {
                let state = files_api.state.lock().expect("state");
                let body = state
                    .files
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                warp::reply::with_header(body, "content-type", "application/octet-stream")
            },
        );
        tokio::spawn(warp::serve(files.or(route)).incoming(listener).run());
        fake
    }

    async fn handle(
        &self,
        bot: &str,
        method: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> warp::reply::Response {
        use warp::Reply;
        if bot != format!("bot{}", self.token) {
            return warp::reply::json(
                &json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            )
            .into_response();
        }
        let lowered = method.to_ascii_lowercase();
        if let Some(left) = self.state.lock().expect("state").failures.get_mut(&lowered)
            && *left > 0
        {
            *left -= 1;
            // A proxy's HTML page for getUpdates, Telegram's own JSON error for the others.
            let reply = if lowered == "getupdates" {
                warp::reply::html("<html><body>502 Bad Gateway</body></html>").into_response()
            } else {
                warp::reply::json(
                    &json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
                )
                .into_response()
            };
            return warp::reply::with_status(reply, warp::http::StatusCode::BAD_GATEWAY)
                .into_response();
        }
        let params: Value = if content_type.is_some_and(|c| c.contains("json")) {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        } else {
            // Form or multipart bodies: keep the raw text for assertions.
            json!({"raw": String::from_utf8_lossy(body)})
        };
        let method = method.to_ascii_lowercase();
        if method == "getupdates" {
            return warp::reply::json(&json!({"ok": true, "result": self.updates(&params).await}))
                .into_response();
        }
        let result = {
            let mut state = self.state.lock().expect("state");
            state.last_call = Some(Instant::now());
            state.calls.push(Call {
                method: method.clone(),
                params: params.clone(),
            });
            match method.as_str() {
                "getme" => json!({
                    "id": 4242, "is_bot": true, "first_name": "Cockpit", "username": "cockpit_test_bot",
                    "can_join_groups": true, "can_read_all_group_messages": false,
                    "supports_inline_queries": false, "can_connect_to_business": false,
                    "has_main_web_app": false
                }),
                "getwebhookinfo" => {
                    json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0})
                }
                "sendmessage" | "editmessagetext" => {
                    state.next_message_id += 1;
                    json!({
                        "message_id": state.next_message_id,
                        "date": 1_700_000_000,
                        "chat": {"id": params["chat_id"], "type": "private", "first_name": "user"},
                        "text": params["text"],
                    })
                }
                "getfile" => {
                    let id = params["file_id"].as_str().unwrap_or_default().to_string();
                    json!({"file_id": id, "file_unique_id": id, "file_size": 10, "file_path": id})
                }
                _ => json!(true),
            }
        };
        warp::reply::json(&json!({"ok": true, "result": result})).into_response()
    }

    /// Benchmarks: how many `sendMessage` calls came, and the seconds from the first served
    /// batch of updates to the last call (`None` before any).
    pub fn throughput(&self) -> (usize, Option<f64>) {
        let state = self.state.lock().expect("state");
        let sent = state
            .calls
            .iter()
            .filter(|c| c.method == "sendmessage")
            .count();
        let span = state
            .first_served
            .zip(state.last_call)
            .map(|(first, last)| last.saturating_duration_since(first).as_secs_f64());
        (sent, span)
    }

    /// Benchmarks: forgets recorded calls and timings (queued updates stay).
    pub fn reset(&self) {
        let mut state = self.state.lock().expect("state");
        state.calls.clear();
        state.first_served = None;
        state.last_call = None;
    }

    /// Makes the next `n` calls of `method` fail with a 502, as an overloaded Bot API does.
    pub fn fail_next(&self, method: &str, n: u32) {
        self.state
            .lock()
            .expect("state")
            .failures
            .insert(method.to_ascii_lowercase(), n);
    }

    async fn updates(&self, params: &Value) -> Value {
        let offset = params["offset"].as_i64().unwrap_or(0);
        let timeout = params["timeout"].as_u64().unwrap_or(0).min(5);
        let limit = params["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
        let deadline = Instant::now() + Duration::from_secs(timeout);
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.state.lock().expect("state");
                if offset > state.confirmed_offset {
                    state.confirmed_offset = offset;
                }
                // Confirmed updates are gone for good, as in the real API.
                state
                    .updates
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                if !state.updates.is_empty() {
                    state.first_served.get_or_insert_with(Instant::now);
                    return Value::Array(state.updates.iter().take(limit).cloned().collect());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return json!([]);
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    fn push(&self, mut update: Value) -> i64 {
        let mut state = self.state.lock().expect("state");
        let id = state.next_update_id;
        state.next_update_id += 1;
        update["update_id"] = json!(id);
        state.updates.push_back(update);
        drop(state);
        self.notify.notify_waiters();
        id
    }

    /// Queues a text message from `user` in their private chat (chat id = user id).
    pub fn send_text(&self, user: i64, text: &str) -> i64 {
        let entities = if text.starts_with('/') {
            let len = text
                .split_whitespace()
                .next()
                .map_or(0, |c| c.encode_utf16().count());
            json!([{"type": "bot_command", "offset": 0, "length": len}])
        } else {
            json!([])
        };
        self.push(json!({
            "message": {
                "message_id": 1, "date": 1_700_000_000,
                "chat": {"id": user, "type": "private", "first_name": format!("user{user}")},
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}"), "username": format!("user{user}")},
                "text": text, "entities": entities,
            }
        }))
    }

    /// Queues a document upload (its bytes are served by the fake file endpoint).
    pub fn send_document(&self, user: i64, file_name: &str, content: &[u8]) -> i64 {
        let file_id = format!("doc{}", self.state.lock().expect("state").next_update_id);
        self.state
            .lock()
            .expect("state")
            .files
            .push((file_id.clone(), content.to_vec()));
        self.push(json!({
            "message": {
                "message_id": 1, "date": 1_700_000_000,
                "chat": {"id": user, "type": "private", "first_name": format!("user{user}")},
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}"), "username": format!("user{user}")},
                "document": {"file_id": file_id, "file_unique_id": file_id, "file_name": file_name, "file_size": content.len()},
            }
        }))
    }

    /// Queues an inline keyboard button press.
    pub fn press(&self, user: i64, data: &str) -> i64 {
        self.push(json!({
            "callback_query": {
                "id": format!("cq{user}"),
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}"), "username": format!("user{user}")},
                "chat_instance": "ci",
                "data": data,
                "message": {
                    "message_id": 7, "date": 1_700_000_000,
                    "chat": {"id": user, "type": "private", "first_name": format!("user{user}")},
                    "text": "menu",
                },
            }
        }))
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Texts sent to `chat` so far, in order, as the user reads them (MarkdownV2 escapes removed,
    /// as Telegram does when it parses the message).
    pub fn texts_to(&self, chat: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "sendmessage" && c.params["chat_id"].as_i64() == Some(chat))
            .filter_map(|c| {
                let text = c.params["text"].as_str()?;
                Some(if c.params["parse_mode"] == "MarkdownV2" {
                    unescape_markdown_v2(text)
                } else {
                    text.to_string()
                })
            })
            .collect()
    }

    /// The highest offset the bot confirmed.
    pub fn confirmed_offset(&self) -> i64 {
        self.state.lock().expect("state").confirmed_offset
    }

    /// Waits until a text to `chat` contains `needle`; returns it.
    pub async fn wait_text(&self, chat: i64, needle: &str, timeout: Duration) -> String {
        self.wait_new_text(chat, 0, needle, timeout).await
    }

    /// Waits until a text to `chat`, after the first `since` ones, contains `needle`; returns it.
    /// (`since` is `texts_to(chat).len()` taken before the command was sent.)
    pub async fn wait_new_text(
        &self,
        chat: i64,
        since: usize,
        needle: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self
                .texts_to(chat)
                .into_iter()
                .skip(since)
                .find(|t| t.contains(needle))
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no message to {chat} containing {needle:?}; got {:?}",
                self.texts_to(chat)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Drops MarkdownV2's backslash escapes: `127\.0` reads `127.0`.
fn unescape_markdown_v2(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}
