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
use std::time::Duration;

use super::event::BeforeRun;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::Shared;
pub use super::error::AysError;
use super::notice::Notice;
use super::repo::{Repo, RepoArgs, RepoMsg};
use super::supervise::{Children, Decision};
use crate::auth::audit::{Audit, Outcome};
use crate::clock;
use crate::store::RepoRecord;

/// A repository: its record and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The stored record.
    pub record: RepoRecord,
    /// Its directory.
    pub dir: PathBuf,
}

/// Messages of the Ays actor. Doors do not send these: they call [`crate::client`].
pub enum AysMsg {
    /// Creates a repository (and clones `git_url` into it when given).
    CreateRepo {
        /// `^[A-Za-z0-9_-]{1,64}$`.
        name: String,
        /// A git remote to clone.
        git_url: Option<String>,
        /// The command's audit entry: its row is written with the repository's.
        audit: Option<Audit>,
        /// Gets the new repository.
        reply: RpcReplyPort<Result<RepoInfo, AysError>>,
    },
    /// One repository.
    GetRepo {
        /// Its name.
        name: String,
        /// Gets it.
        reply: RpcReplyPort<Result<RepoInfo, AysError>>,
    },
    /// Deletes a repository with its files, services and runs.
    DeleteRepo {
        /// Its name.
        name: String,
        /// The command's audit entry: its row is written with the deletion.
        audit: Option<Audit>,
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
        /// Done once before the first run it starts, if any (a mail's file written out).
        before_run: Option<BeforeRun>,
    },
    /// A clone for `CreateRepo` ended (sent to itself by the clone task).
    Cloned {
        /// The repository being created.
        name: String,
        /// The remote it was cloned from.
        git_url: String,
        /// Whether the clone worked.
        result: Result<(), AysError>,
        /// The creating command's audit entry.
        audit: Option<Audit>,
        /// The creator's reply port.
        reply: RpcReplyPort<Result<RepoInfo, AysError>>,
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

/// The repositories as they are listed, published by the `Ays` actor after every change and
/// before it answers the change (so a caller reads its own writes): listing them is a read of
/// this, not a message (the REST door's most frequent call). `None` while no `Ays` actor runs.
/// Process-wide like ractor's actor names (in-process servers run one at a time).
static LISTING: parking_lot::RwLock<Option<Arc<[RepoInfo]>>> = parking_lot::const_rwlock(None);

/// Every repository, by name, from the listing the `Ays` actor publishes; `None` while it is
/// not running.
pub fn listing() -> Option<Arc<[RepoInfo]>> {
    LISTING.read().clone()
}

/// One supervised repository actor.
struct RepoChild {
    /// The repository as the store holds it (this actor is its only writer, so the copy is
    /// exact): listing repositories needs no query.
    record: RepoRecord,
    /// Its actor while it runs.
    actor: Option<ActorRef<RepoMsg>>,
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
    /// Done once before the first run it starts.
    before_run: Option<BeforeRun>,
}

/// The Ays actor's state.
pub struct AysState {
    /// Config, store, telemetry.
    shared: Shared,
    /// Bounds the jobs running at once across all repositories.
    workers: Arc<Semaphore>,
    /// Repository actors by repository name.
    repos: BTreeMap<String, RepoChild>,
    /// Which actor is which repository, and their recent failures.
    children: Children<String>,
    /// Repositories whose clone is under way (their names are taken).
    cloning: std::collections::BTreeSet<String>,
    /// Events delivered whose processed mark is not yet written: marks are written together,
    /// within [`FLUSH_PROCESSED`], so a stream of mails costs one commit per batch, not per mail.
    /// A crash before the flush re-delivers those events on the next start (at least once).
    processed: Vec<i64>,
    /// Stored events some repositories (whose actors are down) still owe: how many.
    owed: BTreeMap<i64, usize>,
    /// The last event a crash had left pending when this actor started. Only those (cast by this
    /// actor at start, and maybe by their door too) can arrive twice; later ones come once, from
    /// their door, and need no look in the store.
    recovered_upto: i64,
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

fn info(shared: &Shared, record: &RepoRecord) -> RepoInfo {
    RepoInfo {
        record: record.clone(),
        dir: repo_dir(shared, &record.name),
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
        self.children.started(actor.get_id(), name.to_string());
        let child = self.repos.entry(name.to_string()).or_insert(RepoChild {
            record: record.clone(),
            actor: None,
            waiting: Vec::new(),
        });
        child.actor = Some(actor.clone());
        Ok(actor)
    }

    /// Publishes the listing of the repositories ([`listing`]).
    fn publish(&self) {
        let all = self
            .repos
            .values()
            .map(|c| info(&self.shared, &c.record))
            .collect();
        *LISTING.write() = Some(all);
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
        audit: Option<Audit>,
        reply: RpcReplyPort<Result<RepoInfo, AysError>>,
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
            let _ = reply.send(self.finish_create(myself, name, None, audit).await);
            return;
        };
        self.cloning.insert(name.clone());
        // Cloned beside its place and moved in only once complete: a crash mid-clone leaves a
        // `.clone-*` directory (removed at the next start), never a half repository.
        let dir = repo_dir(&self.shared, &name);
        let staging = self
            .shared
            .config
            .storage
            .path
            .join("repos")
            .join(format!(".clone-{name}-{:08x}", rand::random::<u32>()));
        let me = myself.clone();
        tokio::spawn(async move {
            let mut result = clone(&url, &staging).await;
            if result.is_ok()
                && let Err(err) = std::fs::rename(&staging, &dir)
            {
                let _ = std::fs::remove_dir_all(&staging);
                result = Err(AysError::Internal(format!(
                    "cannot move the clone into {}: {err}",
                    dir.display()
                )));
            }
            let cloned = AysMsg::Cloned {
                name,
                git_url: url,
                result,
                audit,
                reply,
            };
            if me.cast(cloned).is_err() {
                // This actor died meanwhile: its successor knows nothing of this clone.
                let _ = std::fs::remove_dir_all(&dir);
            }
        });
    }

    /// Creates the repository's directories, records it (with the command's audit row) and
    /// starts its actor.
    async fn finish_create(
        &mut self,
        myself: &ActorRef<AysMsg>,
        name: String,
        git_url: Option<String>,
        audit: Option<Audit>,
    ) -> Result<RepoInfo, AysError> {
        let dir = repo_dir(&self.shared, &name);
        for sub in ["blueprints", "actorTemplates"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|err| {
                AysError::Internal(format!("cannot create {}: {err}", dir.display()))
            })?;
        }
        let record = RepoRecord {
            name: name.clone(),
            git_url,
            created_ms: clock::now_ms(),
        };
        let row = audit.map(|a| a.row(&Outcome::Ok));
        if !self.shared.store.insert_repo(&record, row.as_ref())? {
            return Err(AysError::Conflict(format!("repository {name:?} exists")));
        }
        self.spawn_repo(myself, &record).await?;
        self.publish();
        info!(repo = %name, "repository created");
        Ok(info(&self.shared, &record))
    }

    async fn delete(
        &mut self,
        myself: &ActorRef<AysMsg>,
        name: &str,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        let actor = self.repo(name)?;
        self.children.remove(&name.to_string());
        self.shared.faults.leave(&format!("repo:{name}"));
        let removed = self.repos.remove(name);
        self.publish();
        if let Some(child) = removed {
            // A deleted repository owes nothing.
            for id in child.waiting.iter().filter_map(|e| e.id) {
                self.settle(myself, id);
            }
        }
        let _ = actor
            .stop_and_wait(Some("deleted".into()), Some(Duration::from_secs(30)))
            .await;
        let row = audit.map(|a| a.row(&Outcome::Ok));
        self.shared.store.delete_repo(name, row.as_ref())?;
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
        before_run: Option<BeforeRun>,
    ) {
        // A recorded event can arrive twice: cast by its door while this actor (re)started and
        // found it pending in the store. Run its actions once.
        if let Some(id) = id
            && id <= self.recovered_upto
            && (self.processed.contains(&id)
                || self.owed.contains_key(&id)
                || matches!(self.shared.store.event_pending(id), Ok(false)))
        {
            return;
        }
        self.shared.notices.publish(Notice::EventReceived {
            id,
            channel: channel.clone(),
        });
        let event = Event {
            id,
            channel,
            payload,
            before_run,
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
        before_run: event.before_run.clone(),
        reply
    });
    if let Err(err) = &result {
        warn!(repo = %name, %err, channel = %event.channel, "event not delivered");
    }
    result.is_ok()
}

/// How long a `git clone` may take.
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

/// Removes the `.clone-*` directories a crash left in the middle of a clone.
fn remove_unfinished_clones(shared: &Shared) {
    let Ok(entries) = std::fs::read_dir(shared.config.storage.path.join("repos")) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(".clone-") {
            warn!(path = %entry.path().display(), "removing an unfinished clone");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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
    let out = tokio::time::timeout(CLONE_TIMEOUT, run).await;
    let failed = match out {
        Ok(Ok(out)) if out.status.success() => return Ok(()),
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Ok(Err(err)) => format!("cannot run git: {err}"),
        Err(_) => format!("git clone timed out after {}s", CLONE_TIMEOUT.as_secs()),
    };
    let _ = std::fs::remove_dir_all(dir);
    Err(AysError::BadRequest(format!(
        "cannot clone {url}: {failed}"
    )))
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
        remove_unfinished_clones(&shared);
        shared
            .faults
            .join(super::names::AYS, myself.clone(), || AysMsg::Crash);
        let mut state = AysState {
            shared: shared.clone(),
            workers,
            repos: BTreeMap::new(),
            children: Children::default(),
            cloning: Default::default(),
            processed: Vec::new(),
            owed: BTreeMap::new(),
            recovered_upto: 0,
        };
        for record in shared.store.repos()? {
            state
                .spawn_repo(&myself, &record)
                .await
                .map_err(|err| err.to_string())?;
        }
        state.publish(); // also when there is no repository yet
        // Events a crash left unprocessed (recorded, acknowledged, never delivered).
        for event in shared.store.pending_events()? {
            state.recovered_upto = state.recovered_upto.max(event.id);
            // Their doors' work is done: the start wrote pending mails' files again.
            let _ = myself.cast(AysMsg::Event {
                id: Some(event.id),
                channel: event.channel,
                payload: event.payload,
                before_run: None,
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
            AysMsg::CreateRepo {
                name,
                git_url,
                audit,
                reply,
            } => state.create(&myself, name, git_url, audit, reply).await,
            AysMsg::Cloned {
                name,
                git_url,
                result,
                audit,
                reply,
            } => {
                state.cloning.remove(&name);
                let created = match result {
                    Ok(()) => {
                        state
                            .finish_create(&myself, name, Some(git_url), audit)
                            .await
                    }
                    Err(err) => Err(err),
                };
                let _ = reply.send(created);
            }
            AysMsg::GetRepo { name, reply } => {
                let result = match state.repos.get(&name) {
                    Some(child) => Ok(info(&state.shared, &child.record)),
                    None => Err(AysError::NotFound(format!("repository {name:?} not found"))),
                };
                let _ = reply.send(result);
            }
            AysMsg::DeleteRepo { name, audit, reply } => {
                let _ = reply.send(state.delete(&myself, &name, audit).await);
            }
            AysMsg::Repo { name, reply } => {
                let _ = reply.send(state.repo(&name));
            }
            AysMsg::Event {
                id,
                channel,
                payload,
                before_run,
            } => state.event(&myself, id, channel, payload, before_run).await,
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
        // A deleted repository's actor is no child any more.
        let Some(ended) = state.children.ended(&event) else {
            return Ok(());
        };
        if let Some(child) = state.repos.get_mut(&ended.key) {
            child.actor = None;
        }
        on_repo_failure(&myself, state, &ended.key, &ended.reason)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        *LISTING.write() = None;
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
    if !state.repos.contains_key(name) {
        return Ok(());
    }
    let key = name.to_string();
    match state.children.decide(&key, &state.shared.config.supervisor) {
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
