//! The root supervisor, part of the composition root with [`crate::server`]: it knows the core's
//! actors and every door's actor, starts every enabled one, restarts a failing child with
//! exponential backoff, and gives up (escalates) when one child fails more than `max_restarts`
//! times within `window_secs`: it then stops everything and the process exits non-zero.
//!
//! Children are started in dependency order and stopped in reverse order, so that the HTTP
//! listener (started last) is the first to stop accepting on shutdown.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tracing::{error, info, warn};

use crate::actors::ays::Ays;
use crate::actors::oauth_cache::{OAuthCache, OAuthCacheArgs};
use crate::actors::supervise::{Children, Decision};
use crate::actors::{Shared, names};
use crate::api::server::ApiServer;
use crate::bot::supervisor::TelegramBot;
use crate::mail::receiver::MailReceiver;
use crate::notify::webhook::WebhookNotifier;
use crate::telemetry::ActorStatus;

/// The kinds of children, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// The OAuth cache.
    OAuthCache,
    /// The AYS engine and its repository actors.
    Ays,
    /// The webhook notifier (when `[notify] webhooks` is not empty).
    Notifier,
    /// The Telegram bot and its chat sessions (when `[bot].active`).
    TelegramBot,
    /// The SMTP receiver (when `[mail].active`).
    MailReceiver,
    /// The HTTP server; last, so that it only accepts once everything behind it runs.
    ApiServer,
}

impl ChildKind {
    /// The registered actor name.
    pub fn name(self) -> &'static str {
        match self {
            ChildKind::OAuthCache => names::OAUTH_CACHE,
            ChildKind::Ays => names::AYS,
            ChildKind::Notifier => names::NOTIFIER,
            ChildKind::TelegramBot => names::TELEGRAM_BOT,
            ChildKind::MailReceiver => names::MAIL_RECEIVER,
            ChildKind::ApiServer => names::API_SERVER,
        }
    }

    /// The children a configuration enables, in start order.
    pub fn enabled(shared: &Shared) -> Vec<ChildKind> {
        let mut kinds = vec![ChildKind::OAuthCache];
        kinds.push(ChildKind::Ays);
        if !shared.config.notify.webhooks.is_empty() {
            kinds.push(ChildKind::Notifier);
        }
        if shared.config.bot.active {
            kinds.push(ChildKind::TelegramBot);
        }
        if shared.config.mail.active {
            kinds.push(ChildKind::MailReceiver);
        }
        if shared.config.api.active {
            kinds.push(ChildKind::ApiServer);
        }
        kinds
    }

    async fn spawn(self, shared: &Shared, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        let name = Some(self.name().to_string());
        let cell = match self {
            ChildKind::OAuthCache => {
                let args = OAuthCacheArgs {
                    store: shared.store.clone(),
                    ttl: Duration::from_secs(shared.config.oauth.state_ttl_secs),
                    faults: shared.faults.clone(),
                };
                Actor::spawn_linked(name, OAuthCache, args, supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            ChildKind::Ays => Actor::spawn_linked(name, Ays, shared.clone(), supervisor)
                .await?
                .0
                .get_cell(),
            ChildKind::Notifier => {
                Actor::spawn_linked(name, WebhookNotifier, shared.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            ChildKind::TelegramBot => {
                Actor::spawn_linked(name, TelegramBot, shared.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            ChildKind::MailReceiver => {
                Actor::spawn_linked(name, MailReceiver, shared.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            ChildKind::ApiServer => {
                Actor::spawn_linked(name, ApiServer, shared.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
        };
        Ok(cell)
    }
}

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// Restarts a child after its backoff (sent to itself).
    Restart(ChildKind),
    /// Stops every child in reverse start order, then the supervisor; replies when done.
    Shutdown(RpcReplyPort<()>),
}

/// Why the supervisor gave up, shared with `main` so that it can exit non-zero.
pub type Escalation = Arc<Mutex<Option<String>>>;

/// How the supervisor is started.
pub struct SupervisorArgs {
    /// What every child gets.
    pub shared: Shared,
    /// Where the supervisor writes why it gave up.
    pub escalation: Escalation,
}

/// The root supervisor actor.
pub struct Supervisor;

/// One supervised child.
struct Child {
    /// What it is.
    kind: ChildKind,
    /// Its cell while it runs.
    cell: Option<ActorCell>,
}

/// The supervisor's state.
pub struct SupervisorState {
    /// What children are started with.
    shared: Shared,
    /// The children, in start order.
    children: Vec<Child>,
    /// Which actor is which child, and their recent failures.
    supervised: Children<ChildKind>,
    /// Set once shutdown began: stops are then expected, not failures.
    shutting_down: bool,
    /// Where to record why the supervisor gave up.
    escalation: Escalation,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        let mut supervised = Children::default();
        for kind in ChildKind::enabled(&args.shared) {
            match kind.spawn(&args.shared, myself.get_cell()).await {
                Ok(cell) => {
                    args.shared.telemetry.actor_up(kind.name());
                    supervised.started(cell.get_id(), kind);
                    children.push(Child {
                        kind,
                        cell: Some(cell),
                    });
                }
                Err(err) => {
                    for child in children.iter().rev() {
                        if let Some(cell) = &child.cell {
                            let _ = cell
                                .stop_and_wait(None, Some(Duration::from_secs(10)))
                                .await;
                        }
                    }
                    return Err(
                        format!("{} did not start: {}", kind.name(), spawn_reason(&err)).into(),
                    );
                }
            }
        }
        Ok(SupervisorState {
            shared: args.shared,
            children,
            supervised,
            shutting_down: false,
            escalation: args.escalation,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(kind) => {
                if state.shutting_down {
                    return Ok(());
                }
                match kind.spawn(&state.shared, myself.get_cell()).await {
                    Ok(cell) => {
                        info!(actor = kind.name(), "actor restarted");
                        state.shared.telemetry.actor_restarted(kind.name());
                        state.supervised.started(cell.get_id(), kind);
                        if let Some(child) = state.children.iter_mut().find(|c| c.kind == kind) {
                            child.cell = Some(cell);
                        }
                    }
                    Err(err) => {
                        let reason = spawn_reason(&err);
                        on_failure(&myself, state, kind, &reason).await;
                    }
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                stop_children(state).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(ended) = state.supervised.ended(&event) else {
            return Ok(());
        };
        if state.shutting_down {
            return Ok(());
        }
        let kind = ended.key;
        if let Some(child) = state.children.iter_mut().find(|c| c.kind == kind) {
            child.cell = None;
        }
        let reason = if ended.failed {
            ended.reason
        } else {
            format!("stopped unexpectedly ({})", ended.reason)
        };
        on_failure(&myself, state, kind, &reason).await;
        Ok(())
    }
}

/// Records a failure of `kind` and either schedules its restart or gives up.
async fn on_failure(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    kind: ChildKind,
    reason: &str,
) {
    let policy = state.shared.config.supervisor.clone();
    let policy = &policy;
    match state.supervised.decide(&kind, policy) {
        Decision::GiveUp(recent) => {
            let why = format!(
                "{} failed {recent} times within {}s (limit {}); giving up: {reason}",
                kind.name(),
                policy.window_secs,
                policy.max_restarts
            );
            error!(actor = kind.name(), "supervisor escalates: {why}");
            state
                .shared
                .telemetry
                .actor_failed(kind.name(), reason, ActorStatus::Down);
            *state.escalation.lock() = Some(why.clone());
            state.shutting_down = true;
            stop_children(state).await;
            myself.stop(Some(why));
        }
        Decision::RestartAfter(delay) => {
            warn!(
                actor = kind.name(),
                restart_in_ms = delay.as_millis() as u64,
                "actor failed: {reason}"
            );
            state
                .shared
                .telemetry
                .actor_failed(kind.name(), reason, ActorStatus::Degraded);
            myself.send_after(delay, move || SupervisorMsg::Restart(kind));
        }
    }
}

/// Stops the children in reverse start order, waiting for each (in-flight work finishes).
async fn stop_children(state: &mut SupervisorState) {
    for child in state.children.iter_mut().rev() {
        if let Some(cell) = child.cell.take() {
            let _ = cell
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30)))
                .await;
        }
        state.shared.telemetry.actor_down(child.kind.name());
    }
}

/// A spawn error in words; a failed `pre_start` carries the actor's own message.
fn spawn_reason(err: &SpawnErr) -> String {
    match err {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
