//! The `TelegramBot` actor: supervises one [`ChatSession`] per chat and owns the long poller.
//!
//! The poller hands each update to this actor and waits for the hand-over before it confirms the
//! update to Telegram (and records the offset in the store), so an update is never lost between
//! Telegram and its session. A session that panics is restarted alone (its state reloads from
//! the store); a session idle for a while stops and comes back on the next message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call};
use tracing::{info, warn};

use super::Shared;
use super::chat_session::{ChatMsg, ChatSession, ChatSessionArgs};
use super::restart::{Decision, RestartTracker};
use crate::bot::telegram::{self, Clients, Outbox};
use crate::bot::{Incoming, Outgoing};

/// The store setting that remembers the next update id to fetch.
const OFFSET_KEY: &str = "telegram_offset";

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
    /// A message for a chat from elsewhere (a run ended, a login completed).
    Notify {
        /// The chat.
        chat_id: i64,
        /// The text (plain; escaped when sent).
        text: String,
    },
    /// Stops the sessions idle for longer than [`SESSION_IDLE`] (sent to itself every 30 s).
    Sweep,
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
    /// Chat ids by session actor id (for supervision events).
    chats: HashMap<ActorId, i64>,
    /// Recent failures per chat.
    restarts: HashMap<i64, RestartTracker>,
    /// The poller task; aborted with the state.
    _poller: AbortOnDrop,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            };
            // Unnamed: a crashed session's name could still be registered while its successor
            // starts. Sessions are found through `sessions` and `chats`.
            let (actor, _) =
                Actor::spawn_linked(None, ChatSession, args, myself.get_cell()).await?;
            self.chats.insert(actor.get_id(), chat_id);
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
        let me = myself.clone();
        let poller = tokio::spawn(async move {
            telegram::register_commands(&poll_client).await;
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
            )
            .await;
        });
        myself.send_interval(Duration::from_secs(30), || TelegramMsg::Sweep);
        info!("telegram bot polling");
        Ok(TelegramState {
            shared,
            clients,
            sessions: HashMap::new(),
            chats: HashMap::new(),
            restarts: HashMap::new(),
            _poller: AbortOnDrop(poller),
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
                state.shared.telemetry.count("telegram_updates", 1);
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
            TelegramMsg::Notify { chat_id, text } => {
                let session = state.session(&myself, chat_id).await?;
                session.outbox.send(Outgoing::text(chat_id, &text));
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
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(chat_id) = state.chats.remove(&cell.get_id()) else {
            return Ok(());
        };
        if failure.is_some() {
            state.shared.telemetry.count("chat_session_restarts", 1);
        }
        // A newer session may already run (an update arrived first); then there is nothing to do.
        if state
            .sessions
            .get(&chat_id)
            .is_none_or(|s| s.actor.get_id() != cell.get_id())
        {
            return Ok(());
        }
        // The old outbox drains what it holds and ends; a new session gets a new one.
        state.sessions.remove(&chat_id);
        if let Some(why) = failure {
            let tracker = state.restarts.entry(chat_id).or_default();
            match tracker.record(&state.shared.config.supervisor, Instant::now()) {
                Decision::RestartAfter(_) => {
                    warn!(chat_id, "chat session failed, restarting it: {why}");
                    // Restarted at once, alone; its state comes back from the store.
                    let restarting = Instant::now();
                    state.session(&myself, chat_id).await?;
                    state
                        .shared
                        .telemetry
                        .observe("chat_session_restart", restarting.elapsed());
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
