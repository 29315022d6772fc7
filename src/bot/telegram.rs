//! teloxide: the Bot API client. Long polling that confirms an update only after it was handed
//! on, per-chat outboxes that keep each chat's messages in order, throttled sends (teloxide's
//! `Throttle`) that honour `RetryAfter`, and retries with backoff when the Bot API is down.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable};
use parking_lot::Mutex;
use std::time::Duration;

use teloxide::net::Download;
use teloxide::payloads::{
    EditMessageTextSetters, GetUpdatesSetters, SendDocumentSetters, SendMessageSetters,
    SetWebhookSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    AllowedUpdate, BotCommand, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile,
    MessageId, ParseMode, UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};

use tracing::{debug, warn};

use super::{Button, Incoming, IncomingKind, Outgoing, render, views};
use crate::config::Secret;
use crate::telemetry::Telemetry;

/// The bot client used for sending: throttled to Telegram's limits, or direct when
/// `[bot].throttle` is off (a Bot API without them). Direct matters: teloxide's throttle admits
/// queued requests on 250 ms ticks, which caps a bot far below any Bot API that has no limits.
#[derive(Clone)]
pub enum Client {
    /// Held to Telegram's limits.
    Throttled(teloxide::adaptors::Throttle<Bot>),
    /// Unthrottled.
    Direct(Bot),
}

/// Runs `$body` with `$c` bound to whichever client `$client` holds.
macro_rules! with_client {
    ($client:expr, $c:ident => $body:expr) => {
        match $client {
            Client::Throttled($c) => $body,
            Client::Direct($c) => $body,
        }
    };
}

/// The Bot API clients: one for long polling and downloads, one for sending (throttled unless
/// `[bot].throttle` is off), and the bound on sends in flight.
#[derive(Clone)]
pub struct Clients {
    /// Long polling and file downloads.
    pub poll: Bot,
    /// Sends.
    pub send: Client,
    /// Bounds the sends in flight across all chats (and so the connections to the Bot API).
    pub sending: Arc<tokio::sync::Semaphore>,
    /// Where refused sends are counted.
    pub telemetry: Arc<Telemetry>,
}

/// Sends in flight at most, across all chats: enough to keep the Bot API busy, few enough that a
/// burst to thousands of chats does not open thousands of connections.
const MAX_SENDS_IN_FLIGHT: usize = 64;

/// Builds the clients for `api_url` (a path must not end in `/`); `throttle` holds sends to
/// Telegram's limits, otherwise the limits are set out of reach.
pub fn clients(
    token: &Secret,
    api_url: &str,
    throttle: bool,
    telemetry: Arc<Telemetry>,
) -> Result<Clients, String> {
    let url = reqwest::Url::parse(api_url.trim_end_matches('/'))
        .map_err(|err| format!("[bot].api_url is not a URL: {err}"))?;
    let poll = Bot::new(token.expose()).set_api_url(url.clone());
    let http = teloxide::net::default_reqwest_settings()
        .pool_max_idle_per_host(MAX_SENDS_IN_FLIGHT)
        .build()
        .map_err(|err| format!("cannot build the Bot API client: {err}"))?;
    let sender = Bot::with_client(token.expose(), http).set_api_url(url);
    let send = if throttle {
        Client::Throttled(teloxide::requests::RequesterExt::throttle(
            sender,
            teloxide::adaptors::throttle::Limits {
                // teloxide holds every chat that is not a channel or supergroup to 20 messages a
                // minute (Telegram's limit for groups): a user going through menus would wait up
                // to a minute for replies. One a second per chat is Telegram's rule for private
                // chats; a basic group beyond its 20 gets `RetryAfter`, which is waited out.
                messages_per_min_chat: 60,
                ..teloxide::adaptors::throttle::Limits::default()
            },
        ))
    } else {
        Client::Direct(sender)
    };
    Ok(Clients {
        poll,
        send,
        sending: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS_IN_FLIGHT)),
        telemetry,
    })
}

/// The bot's own Telegram username (`getMe`), for `https://t.me/<bot>` links.
pub async fn username(client: &Bot) -> Option<String> {
    match with_retries(|| client.get_me()).await {
        Ok(me) => me.user.username.clone(),
        Err(err) => {
            warn!(error = %cause(&err), "getMe failed");
            None
        }
    }
}

/// Registers the commands for the client's menu.
pub async fn register_commands(client: &Bot) {
    let commands = super::commands::COMMANDS
        .iter()
        .map(|(name, description)| BotCommand::new(*name, *description));
    if let Err(err) = with_retries(|| client.set_my_commands(commands.clone())).await {
        warn!(error = %err, "setMyCommands failed");
    }
}

/// Long-polls updates forever, handing each to `deliver` and confirming it (advancing the
/// offset) only once `deliver` returned. `start` is the first update id not yet handed on.
/// `delivered` is told the last update id of each batch once all of it was handed on.
/// `reachable` is told after each poll whether the Bot API answered (`Err` names the host and
/// the cause, never the token).
pub async fn poll<D, F>(
    client: Bot,
    start: i64,
    mut deliver: D,
    mut delivered: impl FnMut(i64),
    mut reachable: impl FnMut(Result<(), String>),
) where
    D: FnMut(Incoming) -> F,
    F: Future<Output = ()>,
{
    let host = client
        .api_url()
        .host_str()
        .unwrap_or("the Bot API")
        .to_string();
    let mut offset = start;
    loop {
        let request = || {
            client
                .get_updates()
                .offset(offset.clamp(0, i32::MAX as i64) as i32)
                .timeout(25)
                .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                .into_future()
        };
        // Retried without end: the bot waits for Telegram as long as Telegram is away.
        let polled = request
            .retry(backoff(Duration::from_millis(500)).without_max_times())
            .when(|_| true)
            .adjust(retry_after)
            .notify(|err: &RequestError, wait: Duration| {
                let retry_in_ms = wait.as_millis() as u64;
                if !matches!(err, RequestError::RetryAfter(_)) {
                    warn!(%host, error = %cause(err), retry_in_ms, "getUpdates failed");
                    reachable(Err(format!("getUpdates at {host} failed: {}", cause(err))));
                }
            })
            .await;
        match polled {
            Ok(updates) => {
                reachable(Ok(()));
                let before = offset;
                for update in updates {
                    let id = update.id.0 as i64;
                    if id < offset {
                        continue;
                    }
                    if let Some(incoming) = incoming(update) {
                        deliver(incoming).await;
                    }
                    offset = id + 1;
                }
                // Recorded once per batch, as Telegram itself confirms a whole batch with the next
                // `getUpdates`: a crash mid-batch re-delivers that batch, whichever side restarts.
                if offset > before {
                    delivered(offset - 1);
                }
            }
            Err(err) => warn!(%host, error = %cause(&err), "getUpdates failed"),
        }
    }
}

/// Webhook mode: tells Telegram to post updates to `url` with `secret` (one at a time, in
/// order: `max_connections` 1, as the long poll takes them), retrying until it takes it.
/// Telegram refuses a URL that is not HTTPS on port 443, 80, 88 or 8443; that refusal is
/// logged and retried, as every other.
pub async fn set_webhook(
    client: &Bot,
    url: url::Url,
    secret: &str,
    mut reachable: impl FnMut(Result<(), String>),
) {
    loop {
        let set = with_retries(|| {
            client
                .set_webhook(url.clone())
                .secret_token(secret)
                .max_connections(1)
                .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
        })
        .await;
        match set {
            Ok(_) => {
                reachable(Ok(()));
                return;
            }
            Err(err) => {
                let error = cause(&err);
                warn!(%error, "setWebhook failed; trying again in 5 s");
                reachable(Err(format!("setWebhook failed: {error}")));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Long-poll mode: removes a webhook an earlier webhook-mode start left set (Telegram refuses
/// `getUpdates` while one is set), keeping the updates it holds.
pub async fn delete_webhook(client: &Bot) {
    if let Err(err) = with_retries(|| client.delete_webhook()).await {
        warn!(error = %cause(&err), "deleteWebhook failed");
    }
}

/// A webhook's body as an update: our view of it (`None` for kinds the bot ignores), and its
/// id; an error when it is not an update.
pub fn webhook_update(body: &[u8]) -> Result<(i64, Option<Incoming>), String> {
    let update: teloxide::types::Update =
        serde_json::from_slice(body).map_err(|err| err.to_string())?;
    Ok((update.id.0 as i64, incoming(update)))
}

/// An error with its chain of causes (`network error: ...: connection refused`). teloxide
/// strips the URL (which holds the token) from network errors, and so does this.
fn cause(err: &RequestError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Our view of an update; `None` for kinds the bot ignores.
fn incoming(update: teloxide::types::Update) -> Option<Incoming> {
    let update_id = update.id.0 as i64;
    match update.kind {
        UpdateKind::Message(message) => {
            let user = message.from.as_ref()?;
            let kind = if let Some(text) = message.text() {
                IncomingKind::Text(text.to_string())
            } else if let Some(doc) = message.document() {
                IncomingKind::Document {
                    file_id: doc.file.id.0.clone(),
                    file_name: doc.file_name.clone(),
                    size: doc.file.size,
                }
            } else {
                return None;
            };
            Some(Incoming {
                update_id,
                chat_id: message.chat.id.0,
                user_id: user.id.0 as i64,
                username: user
                    .username
                    .clone()
                    .unwrap_or_else(|| user.first_name.clone()),
                kind,
            })
        }
        UpdateKind::CallbackQuery(query) => {
            let chat_id = query
                .message
                .as_ref()
                .map(|m| m.chat().id.0)
                .unwrap_or(query.from.id.0 as i64);
            Some(Incoming {
                update_id,
                chat_id,
                user_id: query.from.id.0 as i64,
                username: query
                    .from
                    .username
                    .clone()
                    .unwrap_or_else(|| query.from.first_name.clone()),
                kind: IncomingKind::Callback {
                    id: query.id.0.clone(),
                    data: query.data.clone().unwrap_or_default(),
                    message_id: query.message.as_ref().map(|m| i64::from(m.id().0)),
                },
            })
        }
        _ => None,
    }
}

/// A chat's outbox: messages queued here are sent in order. A sending task runs only while the
/// chat has messages to send, so the thousands of chats that are quiet cost no task here.
#[derive(Clone)]
pub struct Outbox {
    /// The (throttled) client the sending task uses.
    client: Client,
    /// The permits shared by every chat's sends.
    sending: Arc<tokio::sync::Semaphore>,
    /// Where refused sends are counted.
    telemetry: Arc<Telemetry>,
    /// What waits behind the message being sent; `None` while no sending task runs.
    queue: Arc<Mutex<Option<VecDeque<Outgoing>>>>,
}

impl Outbox {
    /// An empty outbox of one chat.
    pub fn start(clients: &Clients) -> Outbox {
        Outbox {
            client: clients.send.clone(),
            sending: clients.sending.clone(),
            telemetry: clients.telemetry.clone(),
            queue: Arc::default(),
        }
    }

    /// Queues a message; never blocks.
    pub fn send(&self, out: Outgoing) {
        let mut queue = lock(&self.queue);
        if let Some(waiting) = queue.as_mut() {
            // The running task takes it after what it is sending.
            waiting.push_back(out);
            return;
        }
        *queue = Some(VecDeque::new());
        drop(queue);
        let client = self.client.clone();
        let sending = self.sending.clone();
        let telemetry = self.telemetry.clone();
        let shared = self.queue.clone();
        tokio::spawn(async move {
            let mut next = Some(out);
            while let Some(out) = next {
                let permit = sending.acquire().await;
                send(&client, &telemetry, out).await;
                drop(permit);
                let mut queue = lock(&shared);
                next = queue.as_mut().and_then(VecDeque::pop_front);
                if next.is_none() {
                    *queue = None;
                }
            }
        });
    }
}

/// Takes a lock; the queue stays usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

/// Sends one outgoing item, split at Telegram's limit, with retries. A part Telegram refuses as
/// unparsable MarkdownV2 is sent again once as plain text (and counted), so that no reply is
/// lost to a markup mistake.
pub async fn send(client: &Client, telemetry: &Telemetry, out: Outgoing) {
    match out {
        Outgoing::Message {
            chat_id,
            text,
            keyboard,
        } => {
            send_message(client, telemetry, chat_id, &text, keyboard).await;
        }
        Outgoing::Tracked {
            chat_id,
            text,
            keyboard,
            on_sent,
        } => {
            if let Some(id) = send_message(client, telemetry, chat_id, &text, keyboard).await {
                (on_sent.0)(id);
            }
        }
        Outgoing::Edit {
            chat_id,
            message_id,
            text,
            keyboard,
        } => {
            let parts = render::split(&text);
            if parts.len() != 1 {
                send_message(client, telemetry, chat_id, &text, keyboard).await;
                return;
            }
            let markup = markup(keyboard.clone());
            let edit = |text: String, markdown: bool| {
                edit_text(client, chat_id, message_id, text, markdown, markup.clone())
            };
            let mut result = edit(parts[0].clone(), true).await;
            if let Err(RequestError::Api(ApiError::CantParseEntities(why))) = &result {
                warn!(chat_id, error = %why, "Telegram refused the markup; editing as plain text");
                fell_back(telemetry);
                result = edit(render::plain(&parts[0]), false).await;
            }
            match result {
                // A second press on the same page.
                Ok(()) | Err(RequestError::Api(ApiError::MessageNotModified)) => {}
                Err(err) => {
                    debug!(chat_id, error = %err, "editMessageText failed; sending anew");
                    send_message(client, telemetry, chat_id, &text, keyboard).await;
                }
            }
        }
        Outgoing::Document {
            chat_id,
            file_name,
            content,
            caption,
        } => {
            let file = InputFile::memory(content.clone()).file_name(file_name.clone());
            let result = with_client!(client, c => with_retries(|| {
                c.send_document(ChatId(chat_id), file.clone())
                    .caption(caption.clone())
                    .parse_mode(ParseMode::MarkdownV2)
            })
            .await)
            .map(|_| ());
            if let Err(err) = result {
                // The content still reaches the user, as text.
                warn!(chat_id, error = %err, "sendDocument failed; sending the file as text");
                let mut text = format!(
                    "{}\n```\n{}\n```",
                    caption,
                    render::escape_code(&String::from_utf8_lossy(&content))
                );
                if render::split(&text).len() > MAX_FILE_AS_TEXT_PARTS {
                    text = render::escape(&format!(
                        "I could not send {file_name} as a file, and it is too long for messages."
                    ));
                }
                send_message(client, telemetry, chat_id, &text, Vec::new()).await;
            }
        }
        Outgoing::AnswerCallback { id } => {
            let id = teloxide::types::CallbackQueryId(id);
            let result = with_client!(client, c => with_retries(|| c.answer_callback_query(id.clone())).await.map(|_| ()));
            if let Err(err) = result {
                debug!(error = %err, "answerCallbackQuery failed");
            }
        }
    }
}

/// Counts a part sent again as plain text (`cockpit_telegram_plain_fallbacks_total`).
fn fell_back(telemetry: &Telemetry) {
    telemetry.count(crate::telemetry::Count::TelegramPlainFallbacks, 1);
}

/// A file Telegram refused is sent as text only when that takes at most this many messages
/// (a 10 KB blueprint takes three; a 1 MiB one would flood the chat).
const MAX_FILE_AS_TEXT_PARTS: usize = 8;

/// An inline keyboard held to Telegram's limits; `None` when empty.
fn markup(keyboard: Vec<Vec<Button>>) -> Option<InlineKeyboardMarkup> {
    let keyboard = views::fit_keyboard(keyboard);
    (!keyboard.is_empty()).then(|| {
        InlineKeyboardMarkup::new(keyboard.into_iter().map(|row| {
            row.into_iter()
                .map(|b| InlineKeyboardButton::callback(b.label, b.data))
                .collect::<Vec<_>>()
        }))
    })
}

/// Sends a MarkdownV2 text as as many messages as it needs, the keyboard on the last; a part
/// refused as unparsable goes again as plain text. The id of the last message, if it was sent.
async fn send_message(
    client: &Client,
    telemetry: &Telemetry,
    chat_id: i64,
    text: &str,
    keyboard: Vec<Vec<Button>>,
) -> Option<i64> {
    let mut parts = render::split(text);
    if parts.is_empty() {
        // Nothing visible: say so rather than lose the keyboard (Telegram refuses blank texts).
        parts.push(render::escape("(empty)"));
    }
    let last = parts.len() - 1;
    let markup = markup(keyboard);
    let mut sent = None;
    for (i, part) in parts.into_iter().enumerate() {
        let markup = if i == last { markup.clone() } else { None };
        let send = |text: String, markdown: bool| {
            send_text(client, chat_id, text, markdown, markup.clone())
        };
        let mut result = send(part.clone(), true).await;
        if let Err(RequestError::Api(ApiError::CantParseEntities(why))) = &result {
            warn!(chat_id, error = %why, "Telegram refused the markup; sending as plain text");
            fell_back(telemetry);
            result = send(render::plain(&part), false).await;
        }
        match result {
            Ok(id) => sent = Some(id),
            Err(err) => warn!(chat_id, error = %err, "sendMessage failed"),
        }
    }
    sent
}

/// One `sendMessage`, as MarkdownV2 or plain text, with retries.
async fn send_text(
    client: &Client,
    chat_id: i64,
    text: String,
    markdown: bool,
    markup: Option<InlineKeyboardMarkup>,
) -> Result<i64, RequestError> {
    with_client!(client, c => with_retries(|| {
        let request = c.send_message(ChatId(chat_id), text.clone());
        let request = if markdown {
            request.parse_mode(ParseMode::MarkdownV2)
        } else {
            request
        };
        match markup.clone() {
            Some(markup) => request.reply_markup(markup),
            None => request,
        }
    })
    .await)
    .map(|message| i64::from(message.id.0))
}

/// One `editMessageText`, as MarkdownV2 or plain text, with retries.
async fn edit_text(
    client: &Client,
    chat_id: i64,
    message_id: i64,
    text: String,
    markdown: bool,
    markup: Option<InlineKeyboardMarkup>,
) -> Result<(), RequestError> {
    let id = MessageId(i32::try_from(message_id).unwrap_or(i32::MAX));
    with_client!(client, c => with_retries(|| {
        let request = c.edit_message_text(ChatId(chat_id), id, text.clone());
        let request = if markdown {
            request.parse_mode(ParseMode::MarkdownV2)
        } else {
            request
        };
        match markup.clone() {
            Some(markup) => request.reply_markup(markup),
            None => request,
        }
    })
    .await)
    .map(|_| ())
}

/// Downloads a (small) file the user uploaded; refuses files over `max` bytes.
pub async fn download(client: &Bot, file_id: &str, max: u32) -> Result<Vec<u8>, String> {
    let file = client
        .get_file(teloxide::types::FileId(file_id.to_string()))
        .await
        .map_err(|err| format!("cannot get the file: {err}"))?;
    if file.meta.size > max {
        return Err(format!("the file is larger than {max} bytes"));
    }
    let mut buffer = Vec::new();
    client
        .download_file(&file.path, &mut buffer)
        .await
        .map_err(|err| format!("cannot download the file: {err}"))?;
    if buffer.len() > max as usize {
        return Err(format!("the file is larger than {max} bytes"));
    }
    Ok(buffer)
}

/// Whether a failed Bot API call is worth retrying: the network, a timeout, a 5xx (Telegram's
/// JSON ones come as `Unknown` with the status text; a proxy's HTML error page does not parse),
/// or a rate limit without `retry_after`. A refused request (bad chat, bad markup) is not.
fn transient(err: &RequestError) -> bool {
    match err {
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => true,
        RequestError::Api(ApiError::Unknown(text)) => [
            "Too Many",
            "Internal Server Error",
            "Bad Gateway",
            "Service Unavailable",
            "Gateway Timeout",
        ]
        .iter()
        .any(|needle| text.contains(needle)),
        _ => false,
    }
}

/// Exponential backoff from `first`, doubling up to a minute.
fn backoff(first: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(60))
}

/// Telegram's own `retry_after` replaces the backoff's wait.
fn retry_after(err: &RequestError, wait: Option<Duration>) -> Option<Duration> {
    match err {
        RequestError::RetryAfter(after) => Some(after.duration()),
        _ => wait,
    }
}

/// Runs a request, waiting out `RetryAfter` and retrying transient failures with backoff
/// (5 attempts in all).
async fn with_retries<R, Req>(mut make: impl FnMut() -> Req) -> Result<R, RequestError>
where
    Req: std::future::IntoFuture<Output = Result<R, RequestError>>,
{
    (|| make().into_future())
        .retry(backoff(Duration::from_millis(300)).with_max_times(4))
        .when(|err| matches!(err, RequestError::RetryAfter(_)) || transient(err))
        .adjust(retry_after)
        .notify(|err: &RequestError, wait: Duration| {
            let retry_in_ms = wait.as_millis() as u64;
            debug!(error = %err, retry_in_ms, "Bot API call failed");
        })
        .await
}
