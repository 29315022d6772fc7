//! A fake Telegram Bot API: a small warp server that stands in for api.telegram.org.
//!
//! It serves `getUpdates` long polls from a queue the test fills, records every `sendMessage`
//! (and the other calls), and answers the handful of methods a bot uses. Method names are matched
//! case-insensitively, as the real Bot API does. It never answers 5xx on its own.
//!
//! It is strict: texts, captions and keyboards go through [`rules`] (Telegram's MarkdownV2 parser
//! and limits), and what Telegram would refuse gets Telegram's 400 and is not delivered. Sent
//! messages are kept per chat, so edits (`editMessageText`, `editMessageReplyMarkup`) and button
//! presses act on what the user actually sees.
#![allow(dead_code)]

#[path = "telegram_rules.rs"]
pub mod rules;

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
    /// The JSON (or multipart) parameters; an uploaded file is `{"file_name", "content"}`.
    pub params: Value,
    /// Telegram's refusal (the 400 `description`), if it was refused.
    pub error: Option<String>,
    /// Whether the refusal was injected by the test ([`FakeTelegram::refuse_next_markdown`]).
    pub injected: bool,
    /// The text (or caption) as the user reads it, once accepted.
    pub shown: Option<String>,
}

/// A message as the user sees it now (after edits).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shown {
    /// Its text, or a document's caption, after entity parsing.
    pub text: String,
    /// Its inline keyboard: rows of (label, callback data).
    pub buttons: Vec<Vec<(String, String)>>,
    /// A document's file name and content.
    pub document: Option<(String, Vec<u8>)>,
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
    /// How many of the next MarkdownV2 texts are refused as unparsable, whatever they hold.
    refuse_markdown: u32,
    /// Lowercased method → how many of its next calls are refused, and with what description.
    refusals: std::collections::HashMap<String, (u32, String)>,
    /// What each chat shows: (chat id, message id) → the message now.
    messages: std::collections::BTreeMap<(i64, i64), Shown>,
    /// Benchmarks: when a `getUpdates` first returned updates, and when the last call came.
    first_served: Option<Instant>,
    last_call: Option<Instant>,
    /// The webhook set by `setWebhook`: its URL and secret token.
    webhook: Option<(url::Url, Option<String>)>,
    /// The plain-HTTP addresses that serve the webhook URL's host (the load balancer in front
    /// of the replicas terminates TLS), taken in turn.
    backends: Vec<String>,
    next_backend: usize,
    /// Each webhook delivery: (backend, HTTP status, or 0 when it did not answer).
    deliveries: Vec<(String, u16)>,
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
        tokio::spawn(fake.clone().deliver_webhooks());
        fake
    }

    /// The plain-HTTP addresses (`http://127.0.0.1:PORT`) that stand for the webhook URL's host,
    /// taken in turn, one update at a time and in order (`max_connections` 1), as Telegram
    /// delivers through a load balancer.
    pub fn serve_webhook_by(&self, backends: &[&str]) {
        let mut state = self.state.lock().expect("state");
        state.backends = backends.iter().map(|b| b.to_string()).collect();
        drop(state);
        self.notify.notify_waiters();
    }

    /// Each webhook delivery so far: (backend, status; 0 when it did not answer).
    pub fn deliveries(&self) -> Vec<(String, u16)> {
        self.state.lock().expect("state").deliveries.clone()
    }

    /// The webhook URL set, if any.
    pub fn webhook(&self) -> Option<String> {
        let state = self.state.lock().expect("state");
        state.webhook.as_ref().map(|(url, _)| url.to_string())
    }

    /// Posts the oldest pending update to the webhook, if one is set, until it is answered
    /// `2xx` (then it is confirmed and gone); a failure is retried after a pause, as Telegram
    /// retries.
    async fn deliver_webhooks(self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        loop {
            let notified = self.notify.notified();
            let next = {
                let mut state = self.state.lock().expect("state");
                let target = match (
                    &state.webhook,
                    state.updates.front(),
                    state.backends.is_empty(),
                ) {
                    (Some((url, secret)), Some(update), false) => {
                        let backend =
                            state.backends[state.next_backend % state.backends.len()].clone();
                        Some((
                            backend,
                            url.path().to_string(),
                            secret.clone(),
                            update.clone(),
                        ))
                    }
                    _ => None,
                };
                if target.is_some() {
                    state.next_backend += 1;
                }
                target
            };
            let Some((backend, path, secret, update)) = next else {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                continue;
            };
            let mut request = http.post(format!("{backend}{path}")).json(&update);
            if let Some(secret) = secret {
                request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
            }
            let status = request.send().await.map_or(0, |r| r.status().as_u16());
            let delivered = (200..300).contains(&status);
            {
                let mut state = self.state.lock().expect("state");
                state.deliveries.push((backend, status));
                if delivered {
                    let id = update["update_id"].as_i64();
                    state.updates.retain(|u| u["update_id"].as_i64() != id);
                }
            }
            if !delivered {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
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
        let params: Value = match content_type {
            Some(c) if c.contains("json") => serde_json::from_slice(body).unwrap_or(Value::Null),
            Some(c) if c.contains("multipart/form-data") => multipart(c, body),
            // As the Bot API takes them too (aiogram sends its text-only calls so): every value a
            // string, as in a multipart body.
            Some(c) if c.contains("application/x-www-form-urlencoded") => {
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map(|pairs| {
                        Value::Object(
                            pairs
                                .into_iter()
                                .map(|(k, v)| (k, Value::String(v)))
                                .collect(),
                        )
                    })
                    .unwrap_or(Value::Null)
            }
            // Anything else: keep the raw text for assertions.
            _ => json!({"raw": String::from_utf8_lossy(body)}),
        };
        let method = method.to_ascii_lowercase();
        if method == "getupdates" && self.state.lock().expect("state").webhook.is_some() {
            let reply = warp::reply::json(&json!({"ok": false, "error_code": 409,
                "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}));
            return warp::reply::with_status(reply, warp::http::StatusCode::CONFLICT)
                .into_response();
        }
        if method == "getupdates" {
            return warp::reply::json(&json!({"ok": true, "result": self.updates(&params).await}))
                .into_response();
        }
        let result = {
            let mut state = self.state.lock().expect("state");
            state.last_call = Some(Instant::now());
            let outcome = state.apply(&method, &params);
            let (error, injected, shown) = match &outcome {
                Ok((_, shown)) => (None, false, shown.clone()),
                Err((err, injected)) => (Some(err.clone()), *injected, None),
            };
            state.calls.push(Call {
                method: method.clone(),
                params: params.clone(),
                error,
                injected,
                shown,
            });
            match outcome {
                Ok((result, _)) => result,
                Err((description, _)) => {
                    let reply = warp::reply::json(
                        &json!({"ok": false, "error_code": 400, "description": description}),
                    );
                    return warp::reply::with_status(reply, warp::http::StatusCode::BAD_REQUEST)
                        .into_response();
                }
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
            .filter(|c| c.method == "sendmessage" && c.error.is_none())
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

    /// Makes the next `n` MarkdownV2 texts fail as unparsable, as if Telegram's rules changed
    /// under the bot: what a sender must survive.
    pub fn refuse_next_markdown(&self, n: u32) {
        self.state.lock().expect("state").refuse_markdown = n;
    }

    /// Makes the next `n` calls of `method` fail with a 400 and this description (Telegram
    /// refusing something for a reason the fake does not model, such as missing rights).
    pub fn refuse_next(&self, method: &str, n: u32, description: &str) {
        self.state
            .lock()
            .expect("state")
            .refusals
            .insert(method.to_ascii_lowercase(), (n, description.to_string()));
    }

    async fn updates(&self, params: &Value) -> Value {
        // Numbers arrive as JSON numbers, or as strings in a form.
        let number = |key: &str| {
            params[key]
                .as_i64()
                .or_else(|| params[key].as_str().and_then(|v| v.parse().ok()))
        };
        let offset = number("offset").unwrap_or(0);
        let timeout = number("timeout").unwrap_or(0).clamp(0, 5) as u64;
        let limit = number("limit").unwrap_or(100).clamp(1, 100) as usize;
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

    /// Queues an inline keyboard button press with this data (on no message in particular).
    pub fn press(&self, user: i64, data: &str) -> i64 {
        self.press_on(user, 7, data)
    }

    /// Presses the button labelled `label` on the newest message of `user`'s chat that shows
    /// one, as a user can: panics when no message shows it. Returns that message's id.
    pub fn click(&self, user: i64, label: &str) -> i64 {
        let found = {
            let state = self.state.lock().expect("state");
            state
                .messages
                .range((user, i64::MIN)..=(user, i64::MAX))
                .rev()
                .find_map(|((_, id), shown)| {
                    shown
                        .buttons
                        .iter()
                        .flatten()
                        .find(|(l, _)| l == label)
                        .map(|(_, data)| (*id, data.clone()))
                })
        };
        let Some((message_id, data)) = found else {
            panic!(
                "no button {label:?} in chat {user}; it shows {:?}",
                self.keyboards(user)
            );
        };
        self.press_on(user, message_id, &data);
        message_id
    }

    /// Every message of `user`'s chat with its buttons' labels, oldest first.
    pub fn keyboards(&self, chat: i64) -> Vec<(i64, Vec<String>)> {
        let state = self.state.lock().expect("state");
        state
            .messages
            .range((chat, i64::MIN)..=(chat, i64::MAX))
            .map(|((_, id), shown)| {
                let labels = shown.buttons.iter().flatten().map(|(l, _)| l.clone());
                (*id, labels.collect())
            })
            .collect()
    }

    /// A message as the user sees it now.
    pub fn message(&self, chat: i64, message_id: i64) -> Option<Shown> {
        let state = self.state.lock().expect("state");
        state.messages.get(&(chat, message_id)).cloned()
    }

    /// The newest message of a chat as the user sees it now, with its id.
    pub fn last_message(&self, chat: i64) -> Option<(i64, Shown)> {
        let state = self.state.lock().expect("state");
        state
            .messages
            .range((chat, i64::MIN)..=(chat, i64::MAX))
            .next_back()
            .map(|((_, id), shown)| (*id, shown.clone()))
    }

    /// Documents sent to `chat`: (file name, content, caption as read).
    pub fn documents_to(&self, chat: i64) -> Vec<(String, Vec<u8>, String)> {
        let state = self.state.lock().expect("state");
        state
            .messages
            .range((chat, i64::MIN)..=(chat, i64::MAX))
            .filter_map(|(_, shown)| {
                let (name, content) = shown.document.clone()?;
                Some((name, content, shown.text.clone()))
            })
            .collect()
    }

    /// The calls Telegram would have refused (not counting injected refusals).
    pub fn refusals(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.error.is_some() && !c.injected)
            .collect()
    }

    /// Waits until message `message_id` of `chat` reads `needle` (after an edit); returns it.
    pub async fn wait_message(
        &self,
        chat: i64,
        message_id: i64,
        needle: &str,
        timeout: Duration,
    ) -> Shown {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(shown) = self.message(chat, message_id)
                && shown.text.contains(needle)
            {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "message {message_id} of {chat} never read {needle:?}; it reads {:?}",
                self.message(chat, message_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues a press of a button with this data on message `message_id`.
    pub fn press_on(&self, user: i64, message_id: i64, data: &str) -> i64 {
        self.push(json!({
            "callback_query": {
                "id": format!("cq{user}"),
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}"), "username": format!("user{user}")},
                "chat_instance": "ci",
                "data": data,
                "message": {
                    "message_id": message_id, "date": 1_700_000_000,
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
            .filter_map(|c| c.shown)
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

impl State {
    /// Applies one call as Telegram would: its result and what the user now reads, or the
    /// refusal's description (and whether the test injected it).
    fn apply(
        &mut self,
        method: &str,
        params: &Value,
    ) -> Result<(Value, Option<String>), (String, bool)> {
        let chat = params["chat_id"]
            .as_i64()
            .or_else(|| params["chat_id"].as_str().and_then(|c| c.parse().ok()));
        let parse_mode = params["parse_mode"].as_str();
        let markup = match &params["reply_markup"] {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        if matches!(method, "sendmessage" | "editmessagetext" | "senddocument")
            && parse_mode == Some("MarkdownV2")
            && self.refuse_markdown > 0
        {
            self.refuse_markdown -= 1;
            return Err((
                "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'".into(),
                true,
            ));
        }
        if let Some((left, description)) = self.refusals.get_mut(method)
            && *left > 0
        {
            *left -= 1;
            return Err((description.clone(), true));
        }
        let refused = |err: String| (err, false);
        match method {
            "getme" => Ok((
                json!({
                    "id": 4242, "is_bot": true, "first_name": "Cockpit", "username": "cockpit_test_bot",
                    "can_join_groups": true, "can_read_all_group_messages": false,
                    "supports_inline_queries": false, "can_connect_to_business": false,
                    "has_main_web_app": false
                }),
                None,
            )),
            "getwebhookinfo" => Ok((
                json!({"url": self.webhook.as_ref().map_or(String::new(), |(u, _)| u.to_string()),
                       "has_custom_certificate": false,
                       "pending_update_count": self.updates.len()}),
                None,
            )),
            "setwebhook" => {
                let text = params["url"].as_str().unwrap_or_default();
                if text.is_empty() {
                    self.webhook = None;
                    return Ok((json!(true), None));
                }
                let url = url::Url::parse(text)
                    .map_err(|_| refused("Bad Request: bad webhook: Failed to resolve host: Name or service not known".into()))?;
                if url.scheme() != "https" {
                    return Err(refused(
                        "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                            .into(),
                    ));
                }
                if !url
                    .port_or_known_default()
                    .is_some_and(|p| [443, 80, 88, 8443].contains(&p))
                {
                    return Err(refused(
                        "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443".into(),
                    ));
                }
                let secret = params["secret_token"].as_str().map(str::to_string);
                if let Some(secret) = &secret
                    && !((1..=256).contains(&secret.len())
                        && secret
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                {
                    return Err(refused(
                        "Bad Request: secret token contains unallowed characters".into(),
                    ));
                }
                let connections = params["max_connections"]
                    .as_i64()
                    .or_else(|| {
                        params["max_connections"]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                    })
                    .unwrap_or(40);
                if !(1..=100).contains(&connections) {
                    return Err(refused(
                        "Bad Request: bad webhook: max_connections must be between 1 and 100"
                            .into(),
                    ));
                }
                self.webhook = Some((url, secret));
                Ok((json!(true), None))
            }
            "deletewebhook" => {
                self.webhook = None;
                Ok((json!(true), None))
            }
            "sendmessage" | "senddocument" => {
                let chat = chat.ok_or_else(|| refused("Bad Request: chat not found".into()))?;
                let (text, document) = if method == "sendmessage" {
                    let text = params["text"].as_str().unwrap_or_default();
                    (rules::check_text(text, parse_mode).map_err(refused)?, None)
                } else {
                    let caption = params["caption"].as_str().unwrap_or_default();
                    let file = &params["document"];
                    let name = file["file_name"].as_str().unwrap_or_default().to_string();
                    let content = file["content"].as_str().unwrap_or_default();
                    if content.is_empty() {
                        return Err(refused("Bad Request: file must be non-empty".into()));
                    }
                    (
                        rules::check_caption(caption, parse_mode).map_err(refused)?,
                        Some((name, content.as_bytes().to_vec())),
                    )
                };
                rules::check_markup(&markup).map_err(refused)?;
                self.next_message_id += 1;
                let id = self.next_message_id;
                self.messages.insert(
                    (chat, id),
                    Shown {
                        text: text.clone(),
                        buttons: buttons(&markup),
                        document,
                    },
                );
                Ok((
                    json!({
                        "message_id": id,
                        "date": 1_700_000_000,
                        "chat": {"id": chat, "type": "private", "first_name": "user"},
                        "text": text,
                    }),
                    Some(text),
                ))
            }
            "editmessagetext" | "editmessagereplymarkup" => {
                let chat = chat.ok_or_else(|| refused("Bad Request: chat not found".into()))?;
                let id = params["message_id"].as_i64().unwrap_or_default();
                let Some(current) = self.messages.get(&(chat, id)).cloned() else {
                    return Err(refused("Bad Request: message to edit not found".into()));
                };
                let text = if method == "editmessagetext" {
                    if current.document.is_some() {
                        return Err(refused(
                            "Bad Request: there is no text in the message to edit".into(),
                        ));
                    }
                    let text = params["text"].as_str().unwrap_or_default();
                    rules::check_edit_text(text, parse_mode).map_err(refused)?
                } else {
                    current.text.clone()
                };
                rules::check_markup(&markup).map_err(refused)?;
                let next = Shown {
                    text: text.clone(),
                    buttons: buttons(&markup),
                    document: current.document.clone(),
                };
                if next == current {
                    return Err(refused(
                        "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message".into(),
                    ));
                }
                self.messages.insert((chat, id), next);
                Ok((
                    json!({
                        "message_id": id,
                        "date": 1_700_000_000,
                        "edit_date": 1_700_000_001,
                        "chat": {"id": chat, "type": "private", "first_name": "user"},
                        "text": text,
                    }),
                    Some(text),
                ))
            }
            "getfile" => {
                let id = params["file_id"].as_str().unwrap_or_default().to_string();
                Ok((
                    json!({"file_id": id, "file_unique_id": id, "file_size": 10, "file_path": id}),
                    None,
                ))
            }
            _ => Ok((json!(true), None)),
        }
    }
}

/// An inline keyboard's buttons as (label, data) rows.
fn buttons(markup: &Value) -> Vec<Vec<(String, String)>> {
    markup["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| {
                            (
                                b["text"].as_str().unwrap_or_default().to_string(),
                                b["callback_data"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `multipart/form-data` body as JSON: text fields as strings, a file as
/// `{"file_name", "content"}` (its bytes as text: the tests upload text files).
fn multipart(content_type: &str, body: &[u8]) -> Value {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| format!("--{}", b.trim_matches('"')))
    else {
        return Value::Null;
    };
    let mut fields = serde_json::Map::new();
    let text = body;
    let mut rest = text;
    while let Some(start) = find(rest, boundary.as_bytes()) {
        rest = &rest[start + boundary.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let after = &rest[head_end + 4..];
        let Some(end) = find(after, boundary.as_bytes()) else {
            break;
        };
        let value = after[..end].strip_suffix(b"\r\n").unwrap_or(&after[..end]);
        let param = |key: &str| {
            head.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{key}="))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        if let Some(name) = param("name") {
            let content = String::from_utf8_lossy(value).into_owned();
            let field = match param("filename") {
                Some(file_name) => json!({"file_name": file_name, "content": content}),
                None => Value::String(content),
            };
            fields.insert(name, field);
        }
        rest = after;
    }
    // teloxide sends the document as `attach://<id>` with the file in its own part.
    if let Some(reference) = fields
        .get("document")
        .and_then(Value::as_str)
        .and_then(|d| d.strip_prefix("attach://"))
        .map(String::from)
        && let Some(file) = fields.get(&reference).cloned()
    {
        fields.insert("document".into(), file);
    }
    Value::Object(fields)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
