//! The `TelegramBot` actor: supervises one [`ChatSession`] per chat, owns the long poller, and
//! listens to the core's notices to tell chats what concerns them (how a run they started
//! ended, how their login went).
//!
//! The poller hands each update to this actor and waits for the hand-over before it confirms the
//! update to Telegram (and records the offset in the store), so an update is never lost between
//! Telegram and its session. A session that panics is restarted alone (its state reloads from
//! the store); a session idle for a while stops and comes back on the next message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use super::progress::{self, RunMessages, Tracked};
use super::session::{ChatMsg, ChatSession, ChatSessionArgs};
use super::telegram::{self, Clients, Outbox};
use super::{Incoming, Outgoing};
use crate::actors::notice::{LoginOutcome, Notice};
use crate::actors::supervise::{Children, Decision};
use crate::actors::{AbortOnDrop, Shared, names};
use crate::client::AysClient;
use crate::store::{Origin, RunState};

/// The store setting that remembers the next update id to fetch.
const OFFSET_KEY: &str = "telegram_offset";

/// The bot's update sink in [`Shared::telegram_hook`] (webhook mode), removed when dropped.
struct HookGuard(Arc<parking_lot::Mutex<Option<crate::actors::UpdateSink>>>);

impl HookGuard {
    /// Installs the sink that hands a webhook update to `bot` and waits for the hand-over, as
    /// the long poll does; an update whose id is below the recorded offset was handed over
    /// already (Telegram repeats a delivery it saw no answer to) and is only confirmed.
    fn install(shared: &Shared, bot: &ActorRef<TelegramMsg>) -> HookGuard {
        use crate::actors::HookError;
        let (store, bot) = (shared.store.clone(), bot.clone());
        let sink: crate::actors::UpdateSink = Arc::new(move |body| {
            let (store, bot) = (store.clone(), bot.clone());
            Box::pin(async move {
                let (id, incoming) =
                    telegram::webhook_update(&body).map_err(HookError::Malformed)?;
                let offset: i64 = store
                    .setting(OFFSET_KEY)
                    .map_err(|_| HookError::Unavailable)?
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if id < offset {
                    debug!(update = id, "a webhook update handed over before");
                    return Ok(());
                }
                if let Some(incoming) = incoming {
                    call!(bot, |reply| TelegramMsg::Deliver { incoming, reply })
                        .map_err(|_| HookError::Unavailable)?;
                }
                if let Err(err) = store.set_setting(OFFSET_KEY, &(id + 1).to_string()) {
                    warn!(%err, "cannot record the Telegram offset");
                }
                Ok(())
            })
        });
        *shared.telegram_hook.lock() = Some(sink);
        HookGuard(shared.telegram_hook.clone())
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        self.0.lock().take();
    }
}

/// How long a session may stay idle before it stops.
const SESSION_IDLE: Duration = Duration::from_secs(600);

/// Messages of the bot supervisor.
pub enum TelegramMsg {
    /// An update from the poller; replied to once the session has it.
    Deliver {
        /// The update.
        incoming: Incoming,
        /// Acknowledges the hand-over.
        reply: RpcReplyPort<()>,
    },
    /// A notice from the core; the chats it concerns are told.
    Notice(Arc<Notice>),
    /// Stops the sessions idle for longer than [`SESSION_IDLE`] (sent to itself every 30 s).
    Sweep,
    /// Edits the messages of running runs with their progress (sent to itself every
    /// [`progress::EVERY`]).
    Progress,
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The bot supervisor actor.
pub struct TelegramBot;

/// A running session and its outbox.
struct Session {
    /// The session actor.
    actor: ActorRef<ChatMsg>,
    /// Its outbox (kept here too, so notifications stay in order with replies).
    outbox: Outbox,
    /// When the chat last sent something; idle sessions are stopped by [`TelegramMsg::Sweep`].
    last_active: Instant,
}

/// The bot supervisor's state.
pub struct TelegramState {
    /// Config, store, telemetry.
    shared: Shared,
    /// The Bot API clients.
    clients: Clients,
    /// Sessions by chat id.
    sessions: HashMap<i64, Session>,
    /// Which session actor is which chat, and their recent failures.
    chats: Children<i64>,
    /// The run messages edited with their progress.
    runs: RunMessages,
    /// The poller task; aborted with the state.
    _poller: AbortOnDrop,
    /// The task that forwards the core's notices here; aborted with the state.
    _notices: AbortOnDrop,
    /// Webhook mode: the HTTP door's way to this bot, withdrawn when the bot stops.
    _hook: Option<HookGuard>,
}

impl TelegramState {
    async fn session(
        &mut self,
        myself: &ActorRef<TelegramMsg>,
        chat_id: i64,
    ) -> Result<&Session, ActorProcessingErr> {
        if !self.sessions.contains_key(&chat_id) {
            let outbox = Outbox::start(&self.clients);
            let args = ChatSessionArgs {
                shared: self.shared.clone(),
                chat_id,
                outbox: outbox.clone(),
                client: self.clients.poll.clone(),
                runs: self.runs.clone(),
            };
            // Unnamed: a crashed session's name could still be registered while its successor
            // starts. Sessions are found through `sessions` and `chats`.
            let (actor, _) =
                Actor::spawn_linked(None, ChatSession, args, myself.get_cell()).await?;
            self.chats.started(actor.get_id(), chat_id);
            self.sessions.insert(
                chat_id,
                Session {
                    actor,
                    outbox,
                    last_active: Instant::now(),
                },
            );
        }
        self.sessions
            .get(&chat_id)
            .ok_or_else(|| "session vanished".into())
    }
}

impl TelegramState {
    /// Edits a run's message with its progress when its text changed; once the run has ended
    /// (or `ended`), the last time, without the Cancel button.
    async fn show_progress(
        &mut self,
        myself: &ActorRef<TelegramMsg>,
        run: &str,
        tracked: Tracked,
        ended: bool,
    ) -> Result<(), ActorProcessingErr> {
        let view = match AysClient.get_run(&tracked.repo, run.to_string()).await {
            Ok(view) => view,
            Err(err) => {
                // Deleted meanwhile, or the engine is restarting: stop following it.
                debug!(%run, %err, "run message no longer followed");
                self.runs.take(run);
                return Ok(());
            }
        };
        let text = progress::text(&tracked.repo, &view);
        let over = ended || view.state.is_final();
        if over {
            self.runs.take(run);
        }
        if text == tracked.shown {
            return Ok(());
        }
        let keyboard = if over {
            Vec::new()
        } else {
            progress::cancel_button(run)
        };
        self.runs.shown(run, &text);
        let session = self.session(myself, tracked.chat_id).await?;
        session.outbox.send(Outgoing::Edit {
            chat_id: tracked.chat_id,
            message_id: tracked.message_id,
            text,
            keyboard,
        });
        Ok(())
    }
}

impl Actor for TelegramBot {
    type Msg = TelegramMsg;
    type State = TelegramState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let token = shared
            .config
            .bot
            .token
            .clone()
            .ok_or("[bot].token is required")?;
        let clients = telegram::clients(
            &token,
            &shared.config.bot.api_url,
            shared.config.bot.throttle,
            shared.telemetry.clone(),
        )?;
        let start: i64 = shared
            .store
            .setting(OFFSET_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let poll_client = clients.poll.clone();
        let store = shared.store.clone();
        let telemetry = shared.telemetry.clone();
        let me = myself.clone();
        let webhook = shared
            .config
            .bot
            .webhook_url
            .clone()
            .zip(shared.config.bot.webhook_secret.clone());
        let hook = webhook
            .is_some()
            .then(|| HookGuard::install(&shared, &myself));
        let poller = tokio::spawn(async move {
            // Login pages link back to the bot by its username.
            if let Some(name) = telegram::username(&poll_client).await
                && let Err(err) =
                    store.set_setting(crate::oauth::login::BOT_USERNAME_SETTING, &name)
            {
                warn!(%err, "cannot record the bot's username");
            }
            telegram::register_commands(&poll_client).await;
            let reachable = |answered: Result<(), String>| match answered {
                Ok(()) => telemetry.dependency_ok(crate::actors::names::TELEGRAM_BOT),
                Err(error) => {
                    telemetry.dependency_failed(crate::actors::names::TELEGRAM_BOT, &error)
                }
            };
            if let Some((url, secret)) = webhook {
                telegram::set_webhook(&poll_client, url, secret.expose(), reachable).await;
                return;
            }
            telegram::delete_webhook(&poll_client).await;
            telegram::poll(
                poll_client,
                start,
                |incoming| {
                    let me = me.clone();
                    async move {
                        // Waits for the hand-over; if the bot actor is restarting the update is
                        // not confirmed and comes again.
                        let _ = call!(me, |reply| TelegramMsg::Deliver { incoming, reply });
                    }
                },
                |last| {
                    if let Err(err) = store.set_setting(OFFSET_KEY, &(last + 1).to_string()) {
                        warn!(%err, "cannot record the Telegram offset");
                    }
                },
                reachable,
            )
            .await;
        });
        let mut notices = shared.notices.subscribe();
        let me = myself.clone();
        let listener = tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Ok(notice) if concerns_a_chat(&notice) => {
                        if me.cast(TelegramMsg::Notice(notice)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(lost)) => {
                        warn!(
                            lost,
                            "the bot fell behind the core's notices; some chats were not told"
                        )
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        shared
            .faults
            .join(names::TELEGRAM_BOT, myself.clone(), || TelegramMsg::Crash);
        myself.send_interval(Duration::from_secs(30), || TelegramMsg::Sweep);
        myself.send_interval(progress::EVERY, || TelegramMsg::Progress);
        if hook.is_some() {
            info!("telegram bot taking updates by webhook");
        } else {
            info!("telegram bot polling");
        }
        Ok(TelegramState {
            shared,
            clients,
            sessions: HashMap::new(),
            chats: Children::default(),
            runs: RunMessages::default(),
            _poller: AbortOnDrop(poller),
            _hook: hook,
            _notices: AbortOnDrop(listener),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TelegramMsg::Deliver { incoming, reply } => {
                state
                    .shared
                    .telemetry
                    .count(crate::telemetry::Count::TelegramUpdates, 1);
                let chat_id = incoming.chat_id;
                let session = state.session(&myself, chat_id).await?;
                if let Err(err) = session.actor.cast(ChatMsg::Incoming(incoming)) {
                    // The session died and its supervision event is still on the way: start
                    // the next one now, so the update is not lost.
                    state.sessions.remove(&chat_id);
                    let session = state.session(&myself, chat_id).await?;
                    if let ractor::MessagingErr::SendErr(ChatMsg::Incoming(incoming)) = err {
                        let _ = session.actor.cast(ChatMsg::Incoming(incoming));
                    }
                }
                if let Some(session) = state.sessions.get_mut(&chat_id) {
                    session.last_active = Instant::now();
                }
                let _ = reply.send(());
            }
            TelegramMsg::Sweep => {
                // Stopped sessions come back on the chat's next message, from the store.
                state.sessions.retain(|_, session| {
                    let idle = session.last_active.elapsed() >= SESSION_IDLE;
                    if idle {
                        session.actor.stop(Some("idle".into()));
                    }
                    !idle
                });
            }
            TelegramMsg::Progress => {
                for (run, tracked) in state.runs.all() {
                    state.show_progress(&myself, &run, tracked, false).await?;
                }
            }
            TelegramMsg::Notice(notice) => {
                if let Notice::RunEnded { run, .. } = &*notice
                    && let Some(tracked) = state.runs.take(run)
                {
                    // The run's message shows how it ended, before the chat is told.
                    state.show_progress(&myself, run, tracked, true).await?;
                }
                let mut told = None;
                if let Some((chat_id, text)) = tell(&notice) {
                    let session = state.session(&myself, chat_id).await?;
                    session.outbox.send(Outgoing::text(chat_id, &text));
                    told = Some(chat_id);
                }
                // The chats that asked (`/notify on <repo>`) hear about every failed run.
                if let Some((repo, text)) = failure(&notice) {
                    let chats = match state.shared.store.notify_chats(repo) {
                        Ok(chats) => chats,
                        Err(err) => {
                            warn!(%repo, %err, "cannot read the chats to notify");
                            Vec::new()
                        }
                    };
                    for chat_id in chats.into_iter().filter(|c| Some(*c) != told) {
                        let session = state.session(&myself, chat_id).await?;
                        session.outbox.send(Outgoing::text(chat_id, &text));
                    }
                }
            }
            TelegramMsg::Crash => panic!("fault injection: telegram_bot crashed on request"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let cell_id = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, ..) => cell.get_id(),
            _ => return Ok(()),
        };
        let Some(ended) = state.chats.ended(&event) else {
            return Ok(());
        };
        let chat_id = ended.key;
        if ended.failed {
            state
                .shared
                .telemetry
                .count(crate::telemetry::Count::ChatSessionRestarts, 1);
        }
        // A newer session may already run (an update arrived first); then there is nothing to do.
        if state
            .sessions
            .get(&chat_id)
            .is_none_or(|s| s.actor.get_id() != cell_id)
        {
            return Ok(());
        }
        // The old outbox drains what it holds and ends; a new session gets a new one.
        state.sessions.remove(&chat_id);
        if ended.failed {
            let why = ended.reason;
            match state
                .chats
                .decide(&chat_id, &state.shared.config.supervisor)
            {
                Decision::RestartAfter(_) => {
                    warn!(chat_id, "chat session failed, restarting it: {why}");
                    // Restarted at once, alone; its state comes back from the store.
                    let restarting = Instant::now();
                    state.session(&myself, chat_id).await?;
                    state
                        .shared
                        .telemetry
                        .chat_session_restarted(restarting.elapsed());
                }
                Decision::GiveUp(n) => {
                    warn!(
                        chat_id,
                        failures = n,
                        "chat session keeps failing; it restarts on its next message: {why}"
                    );
                }
            }
        }
        Ok(())
    }
}

/// True for the notices some chat is to be told about.
fn concerns_a_chat(notice: &Notice) -> bool {
    tell(notice).is_some() || failure(notice).is_some()
}

/// A run that ended `error` or `cancelled`: its repository and what subscribed chats are told.
fn failure(notice: &Notice) -> Option<(&str, String)> {
    match notice {
        Notice::RunEnded {
            repo,
            run,
            state: state @ (RunState::Error | RunState::Cancelled),
            error,
            ..
        } => Some((
            repo.as_str(),
            ended_text(repo, run, *state, error.as_deref()),
        )),
        _ => None,
    }
}

/// How a chat is told that a run ended.
fn ended_text(repo: &str, run: &str, state: RunState, error: Option<&str>) -> String {
    let mut text = format!("Run {run} in {repo} ended: {state}.");
    if let (RunState::Error | RunState::Cancelled, Some(error)) = (state, error) {
        text.push_str(&format!("\n{error}"));
    }
    text.push_str(&format!("\nDetails: /run inspect {run}"));
    text
}

/// What to tell which chat about a notice, if anything: a run a chat started has ended, a chat's
/// login finished.
fn tell(notice: &Notice) -> Option<(i64, String)> {
    match notice {
        Notice::RunEnded {
            repo,
            run,
            state,
            error,
            origin: Origin::Chat { chat_id },
        } => Some((*chat_id, ended_text(repo, run, *state, error.as_deref()))),
        Notice::LoginFinished { chat_id, outcome } => {
            let text = match outcome {
                LoginOutcome::Completed => {
                    "The login page shows a link back to me: open it with this \
                     Telegram account to finish logging in."
                        .to_string()
                }
                LoginOutcome::Cancelled => {
                    "The login was cancelled. Send /start to try again.".to_string()
                }
                LoginOutcome::NotMember { organization } => format!(
                    "You are not a member of the organization {organization}; I cannot let you in."
                ),
                LoginOutcome::Failed => "The login failed. Send /start to try again.".to_string(),
            };
            Some((*chat_id, text))
        }
        _ => None,
    }
}
