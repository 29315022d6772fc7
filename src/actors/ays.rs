//! The `Ays` actor: the repositories. It creates and deletes them, supervises one [`Repo`] actor
//! per repository (restarted alone when it fails; repositories never wait for each other), routes
//! callers to the right one, and fans events out to all of them.
//!
//! Inbound events are durable before they reach this actor (the door records them); the Ays
//! actor marks an event processed once every repository has queued its jobs, and on start it
//! processes whatever a crash left unprocessed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call};
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use super::Shared;
use super::repo::{Repo, RepoArgs, RepoMsg};
use super::restart::{Decision, RestartTracker};
use crate::store::RepoRecord;

/// Why an AYS request failed; the API maps each kind to its status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AysError {
    /// No such repository, blueprint, service, template or run (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the repository is busy (409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A blueprint (or action request) that does not validate: every problem (422).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Something on our side failed (500); the details are in the log.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for AysError {
    fn from(err: crate::store::StoreError) -> Self {
        error!(%err, "store failure");
        AysError::Internal("storage failure; see the server log".into())
    }
}

/// A repository as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoView {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub path: String,
    /// The git remote it was cloned from, if any.
    pub git_url: Option<String>,
}

/// Messages of the Ays actor.
pub enum AysMsg {
    /// Every repository.
    ListRepos(RpcReplyPort<Result<Vec<RepoView>, AysError>>),
    /// Creates a repository (and clones `git_url` into it when given).
    CreateRepo {
        /// `^[A-Za-z0-9_-]{1,64}$`.
        name: String,
        /// A git remote to clone.
        git_url: Option<String>,
        /// Gets the new repository.
        reply: RpcReplyPort<Result<RepoView, AysError>>,
    },
    /// One repository.
    GetRepo {
        /// Its name.
        name: String,
        /// Gets it.
        reply: RpcReplyPort<Result<RepoView, AysError>>,
    },
    /// Deletes a repository with its files, services and runs.
    DeleteRepo {
        /// Its name.
        name: String,
        /// Acknowledges.
        reply: RpcReplyPort<Result<(), AysError>>,
    },
    /// The actor of one repository, to talk to it directly.
    Repo {
        /// Its name.
        name: String,
        /// Gets the actor, or NotFound.
        reply: RpcReplyPort<Result<ActorRef<RepoMsg>, AysError>>,
    },
    /// An inbound event (already recorded with `id` when it came from a door) for every
    /// repository's subscribed services.
    Event {
        /// The stored event id, marked processed once delivered.
        id: Option<i64>,
        /// The channel (`email`).
        channel: String,
        /// The payload: the jobs' args.
        payload: serde_json::Value,
    },
    /// A clone for `CreateRepo` ended (sent to itself by the clone task).
    Cloned {
        /// The repository being created.
        name: String,
        /// The remote it was cloned from.
        git_url: String,
        /// Whether the clone worked.
        result: Result<(), AysError>,
        /// The creator's reply port.
        reply: RpcReplyPort<Result<RepoView, AysError>>,
    },
    /// Records the processed marks gathered since the last flush (sent to itself).
    FlushProcessed,
    /// Restarts a failed repository actor (sent to itself after backoff).
    Restart(String),
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The Ays actor.
pub struct Ays;

/// One supervised repository actor.
struct RepoChild {
    /// The repository as the store holds it (this actor is its only writer, so the copy is
    /// exact): listing repositories needs no query.
    record: RepoRecord,
    /// Its actor while it runs.
    actor: Option<ActorRef<RepoMsg>>,
    /// Its recent failures.
    restarts: RestartTracker,
    /// Events that arrived while its actor was down: delivered when it is back.
    waiting: Vec<Event>,
}

/// An event on its way to the repositories.
#[derive(Clone)]
struct Event {
    /// The stored event id (events from the API have none).
    id: Option<i64>,
    /// The channel.
    channel: String,
    /// The jobs' args.
    payload: serde_json::Value,
}

/// The Ays actor's state.
pub struct AysState {
    /// Config, store, telemetry.
    shared: Shared,
    /// Bounds the jobs running at once across all repositories.
    workers: Arc<Semaphore>,
    /// Repository actors by repository name.
    repos: BTreeMap<String, RepoChild>,
    /// Repositories whose clone is under way (their names are taken).
    cloning: std::collections::BTreeSet<String>,
    /// Events delivered whose processed mark is not yet written: marks are written together,
    /// within [`FLUSH_PROCESSED`], so a stream of mails costs one commit per batch, not per mail.
    /// A crash before the flush re-delivers those events on the next start (at least once).
    processed: Vec<i64>,
    /// Stored events some repositories (whose actors are down) still owe: how many.
    owed: BTreeMap<i64, usize>,
}

/// How long a processed mark may wait to be written with others.
const FLUSH_PROCESSED: Duration = Duration::from_millis(50);

/// How many processed marks are written at once at most.
const MAX_PROCESSED: usize = 64;

/// True for a valid repository name.
pub fn valid_repo_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `<storage>/repos/<name>`.
pub fn repo_dir(shared: &Shared, name: &str) -> PathBuf {
    shared.config.storage.path.join("repos").join(name)
}

fn view(shared: &Shared, record: &RepoRecord) -> RepoView {
    RepoView {
        name: record.name.clone(),
        path: repo_dir(shared, &record.name).display().to_string(),
        git_url: record.git_url.clone(),
    }
}

impl AysState {
    async fn spawn_repo(
        &mut self,
        myself: &ActorRef<AysMsg>,
        record: &RepoRecord,
    ) -> Result<ActorRef<RepoMsg>, AysError> {
        let name = record.name.as_str();
        let args = RepoArgs {
            shared: self.shared.clone(),
            name: name.to_string(),
            dir: repo_dir(&self.shared, name),
            workers: self.workers.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(Some(format!("repo:{name}")), Repo, args, myself.get_cell())
                .await
                .map_err(|err| {
                    AysError::Internal(format!("repository {name} did not start: {err}"))
                })?;
        let child = self.repos.entry(name.to_string()).or_insert(RepoChild {
            record: record.clone(),
            actor: None,
            restarts: RestartTracker::default(),
            waiting: Vec::new(),
        });
        child.actor = Some(actor.clone());
        Ok(actor)
    }

    fn repo(&self, name: &str) -> Result<ActorRef<RepoMsg>, AysError> {
        self.repos
            .get(name)
            .and_then(|c| c.actor.clone())
            .ok_or_else(|| AysError::NotFound(format!("repository {name:?} not found")))
    }

    /// Starts creating a repository. Without a remote it is created now; with one, the clone
    /// runs on a task (it can take minutes, and this actor serves everyone meanwhile) and
    /// [`AysMsg::Cloned`] finishes the creation.
    async fn create(
        &mut self,
        myself: &ActorRef<AysMsg>,
        name: String,
        git_url: Option<String>,
        reply: RpcReplyPort<Result<RepoView, AysError>>,
    ) {
        if !valid_repo_name(&name) {
            let _ = reply.send(Err(AysError::BadRequest(format!(
                "invalid repository name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ -"
            ))));
            return;
        }
        match self.shared.store.repo(&name) {
            Ok(None) if !self.cloning.contains(&name) => {}
            Ok(_) => {
                let _ = reply.send(Err(AysError::Conflict(format!(
                    "repository {name:?} exists"
                ))));
                return;
            }
            Err(err) => {
                let _ = reply.send(Err(err.into()));
                return;
            }
        }
        let Some(url) = git_url else {
            let _ = reply.send(self.finish_create(myself, name, None).await);
            return;
        };
        self.cloning.insert(name.clone());
        let dir = repo_dir(&self.shared, &name);
        let me = myself.clone();
        tokio::spawn(async move {
            let result = clone(&url, &dir).await;
            let cloned = AysMsg::Cloned {
                name,
                git_url: url,
                result,
                reply,
            };
            if me.cast(cloned).is_err() {
                // This actor died meanwhile: its successor knows nothing of this clone.
                let _ = std::fs::remove_dir_all(&dir);
            }
        });
    }

    /// Creates the repository's directories, records it and starts its actor.
    async fn finish_create(
        &mut self,
        myself: &ActorRef<AysMsg>,
        name: String,
        git_url: Option<String>,
    ) -> Result<RepoView, AysError> {
        let dir = repo_dir(&self.shared, &name);
        for sub in ["blueprints", "actorTemplates"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|err| {
                AysError::Internal(format!("cannot create {}: {err}", dir.display()))
            })?;
        }
        let record = RepoRecord {
            name: name.clone(),
            git_url,
            created_ms: now_ms(),
        };
        if !self.shared.store.insert_repo(&record)? {
            return Err(AysError::Conflict(format!("repository {name:?} exists")));
        }
        self.spawn_repo(myself, &record).await?;
        info!(repo = %name, "repository created");
        Ok(view(&self.shared, &record))
    }

    async fn delete(&mut self, myself: &ActorRef<AysMsg>, name: &str) -> Result<(), AysError> {
        let actor = self.repo(name)?;
        if let Some(child) = self.repos.remove(name) {
            // A deleted repository owes nothing.
            for id in child.waiting.iter().filter_map(|e| e.id) {
                self.settle(myself, id);
            }
        }
        let _ = actor
            .stop_and_wait(Some("deleted".into()), Some(Duration::from_secs(30)))
            .await;
        self.shared.store.delete_repo(name)?;
        let dir = repo_dir(&self.shared, name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|err| {
                AysError::Internal(format!("cannot remove {}: {err}", dir.display()))
            })?;
        }
        info!(repo = %name, "repository deleted");
        Ok(())
    }

    async fn event(
        &mut self,
        myself: &ActorRef<AysMsg>,
        id: Option<i64>,
        channel: String,
        payload: serde_json::Value,
    ) {
        // A recorded event can arrive twice: cast by its door while this actor (re)started and
        // found it pending in the store. Run its actions once.
        if let Some(id) = id
            && (self.processed.contains(&id)
                || self.owed.contains_key(&id)
                || matches!(self.shared.store.event_pending(id), Ok(false)))
        {
            return;
        }
        let event = Event {
            id,
            channel,
            payload,
        };
        let mut owed = 0;
        for (name, child) in self.repos.iter_mut() {
            if !deliver(name, child.actor.as_ref(), &event).await {
                // Delivered when the repository's actor is back, not to every repository again.
                child.waiting.push(event.clone());
                owed += 1;
            }
        }
        match id {
            Some(id) if owed > 0 => {
                self.owed.insert(id, owed);
            }
            Some(id) => self.processed(myself, id),
            None => {}
        }
    }

    /// Delivers what a repository missed while its actor was down.
    async fn deliver_waiting(&mut self, myself: &ActorRef<AysMsg>, name: &str) {
        let Some(child) = self.repos.get_mut(name) else {
            return;
        };
        let mut settled = Vec::new();
        for event in std::mem::take(&mut child.waiting) {
            if deliver(name, child.actor.as_ref(), &event).await {
                settled.extend(event.id);
            } else {
                child.waiting.push(event);
            }
        }
        for id in settled {
            self.settle(myself, id);
        }
    }

    /// One repository no longer owes event `id`; the last one marks it processed.
    fn settle(&mut self, myself: &ActorRef<AysMsg>, id: i64) {
        if let Some(owed) = self.owed.get_mut(&id) {
            *owed -= 1;
            if *owed == 0 {
                self.owed.remove(&id);
                self.processed(myself, id);
            }
        }
    }

    /// Queues the processed mark of event `id`.
    fn processed(&mut self, myself: &ActorRef<AysMsg>, id: i64) {
        self.processed.push(id);
        if self.processed.len() >= MAX_PROCESSED {
            self.flush_processed();
        } else if self.processed.len() == 1 {
            myself.send_after(FLUSH_PROCESSED, || AysMsg::FlushProcessed);
        }
    }

    /// Writes the gathered processed marks; on failure they stay pending in the store and are
    /// delivered again on the next start.
    fn flush_processed(&mut self) {
        if self.processed.is_empty() {
            return;
        }
        if let Err(err) = self.shared.store.mark_events_processed(&self.processed) {
            warn!(%err, "cannot mark events processed");
        }
        self.processed.clear();
    }
}

/// Hands `event` to a repository's actor; false when it is down or did not take it.
async fn deliver(name: &str, actor: Option<&ActorRef<RepoMsg>>, event: &Event) -> bool {
    let Some(actor) = actor else {
        return false;
    };
    let result = call!(actor, |reply| RepoMsg::Event {
        channel: event.channel.clone(),
        payload: event.payload.clone(),
        reply
    });
    if let Err(err) = &result {
        warn!(repo = %name, %err, channel = %event.channel, "event not delivered");
    }
    result.is_ok()
}

/// Clones `url` into `dir` with the git CLI (bounded in time); nothing is left behind on failure.
async fn clone(url: &str, dir: &std::path::Path) -> Result<(), AysError> {
    if url.starts_with('-') {
        return Err(AysError::BadRequest(format!("invalid git_url {url:?}")));
    }
    let run = tokio::process::Command::new("git")
        .arg("clone")
        .arg("--quiet")
        .arg("--")
        .arg(url)
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await;
    let failed = match out {
        Ok(Ok(out)) if out.status.success() => return Ok(()),
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Ok(Err(err)) => format!("cannot run git: {err}"),
        Err(_) => "git clone timed out after 300s".to_string(),
    };
    let _ = std::fs::remove_dir_all(dir);
    Err(AysError::BadRequest(format!(
        "cannot clone {url}: {failed}"
    )))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Actor for Ays {
    type Msg = AysMsg;
    type State = AysState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let workers = Arc::new(Semaphore::new(shared.config.ays.workers));
        let mut state = AysState {
            shared: shared.clone(),
            workers,
            repos: BTreeMap::new(),
            cloning: Default::default(),
            processed: Vec::new(),
            owed: BTreeMap::new(),
        };
        for record in shared.store.repos()? {
            state
                .spawn_repo(&myself, &record)
                .await
                .map_err(|err| err.to_string())?;
        }
        // Events a crash left unprocessed (recorded, acknowledged, never delivered).
        for event in shared.store.pending_events()? {
            let _ = myself.cast(AysMsg::Event {
                id: Some(event.id),
                channel: event.channel,
                payload: event.payload,
            });
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AysMsg::ListRepos(reply) => {
                let all = state.repos.values();
                let _ = reply.send(Ok(all.map(|c| view(&state.shared, &c.record)).collect()));
            }
            AysMsg::CreateRepo {
                name,
                git_url,
                reply,
            } => state.create(&myself, name, git_url, reply).await,
            AysMsg::Cloned {
                name,
                git_url,
                result,
                reply,
            } => {
                state.cloning.remove(&name);
                let created = match result {
                    Ok(()) => state.finish_create(&myself, name, Some(git_url)).await,
                    Err(err) => Err(err),
                };
                let _ = reply.send(created);
            }
            AysMsg::GetRepo { name, reply } => {
                let result = match state.repos.get(&name) {
                    Some(child) => Ok(view(&state.shared, &child.record)),
                    None => Err(AysError::NotFound(format!("repository {name:?} not found"))),
                };
                let _ = reply.send(result);
            }
            AysMsg::DeleteRepo { name, reply } => {
                let _ = reply.send(state.delete(&myself, &name).await);
            }
            AysMsg::Repo { name, reply } => {
                let _ = reply.send(state.repo(&name));
            }
            AysMsg::Event {
                id,
                channel,
                payload,
            } => state.event(&myself, id, channel, payload).await,
            AysMsg::FlushProcessed => state.flush_processed(),
            AysMsg::Restart(name) => {
                let down = state.repos.get(&name).filter(|c| c.actor.is_none());
                if let Some(record) = down.map(|c| c.record.clone()) {
                    match state.spawn_repo(&myself, &record).await {
                        Ok(_) => state.deliver_waiting(&myself, &name).await,
                        Err(err) => {
                            warn!(repo = %name, %err, "repository actor restart failed");
                            on_repo_failure(&myself, state, &name, &err.to_string())?;
                        }
                    }
                }
            }
            AysMsg::Crash => panic!("fault injection: ays crashed on request"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(name) = state
            .repos
            .iter()
            .find(|(_, c)| c.actor.as_ref().map(|a| a.get_id()) == Some(cell.get_id()))
            .map(|(name, _)| name.clone())
        else {
            return Ok(()); // a deleted repository's actor
        };
        if let Some(child) = state.repos.get_mut(&name) {
            child.actor = None;
        }
        on_repo_failure(&myself, state, &name, &reason)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_processed();
        for child in state.repos.values_mut() {
            if let Some(actor) = child.actor.take() {
                let _ = actor
                    .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30)))
                    .await;
            }
        }
        Ok(())
    }
}

/// Schedules a repository actor's restart, or fails the Ays actor (escalating to the root
/// supervisor) when it keeps failing.
fn on_repo_failure(
    myself: &ActorRef<AysMsg>,
    state: &mut AysState,
    name: &str,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    let telemetry_name = format!("repo:{name}");
    let Some(child) = state.repos.get_mut(name) else {
        return Ok(());
    };
    match child
        .restarts
        .record(&state.shared.config.supervisor, Instant::now())
    {
        Decision::GiveUp(n) => {
            Err(format!("repository actor {name} failed {n} times in the window: {reason}").into())
        }
        Decision::RestartAfter(delay) => {
            warn!(repo = %name, restart_in_ms = delay.as_millis() as u64, "repository actor failed: {reason}");
            state
                .shared
                .telemetry
                .count(crate::telemetry::Count::RepoRestarts, 1);
            state.shared.telemetry.actor_failed(
                &telemetry_name,
                reason,
                crate::telemetry::ActorStatus::Up,
            );
            let name = name.to_string();
            myself.send_after(delay, move || AysMsg::Restart(name));
            Ok(())
        }
    }
}

/// How long a caller waits for an AYS actor's answer.
const CALL_TIMEOUT_MS: u64 = 30_000;

/// Asks the Ays actor (found by name, so a restarted one is reached).
pub async fn ask_ays<T: Send + 'static>(
    msg: impl FnOnce(RpcReplyPort<Result<T, AysError>>) -> AysMsg,
) -> Result<T, AysError> {
    let ays = ActorRef::<AysMsg>::where_is(super::names::AYS)
        .ok_or_else(|| AysError::Internal("the AYS engine is restarting; retry".into()))?;
    ractor::call_t!(ays, msg, CALL_TIMEOUT_MS)
        .map_err(|err| AysError::Internal(format!("the AYS engine did not answer: {err}")))?
}

/// Asks the actor of repository `repo` (404 when there is no such repository).
pub async fn ask_repo<T: Send + 'static>(
    repo: &str,
    msg: impl FnOnce(RpcReplyPort<Result<T, AysError>>) -> RepoMsg,
) -> Result<T, AysError> {
    let name = repo.to_string();
    let actor = ask_ays(|reply| AysMsg::Repo { name, reply }).await?;
    ractor::call_t!(actor, msg, CALL_TIMEOUT_MS)
        .map_err(|err| AysError::Internal(format!("repository {repo} did not answer: {err}")))?
}
