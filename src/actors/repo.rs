//! The `Repo` actor: one per repository. It owns the repository's services (loaded from the
//! store, written back on every change), its blueprint files and actor templates, and its runs:
//! one run at a time, driven by a task that executes each step's jobs in parallel (bounded by
//! the shared worker semaphore) and reports every job back here as a message.
//!
//! Nothing long runs inside a handler: planning and validation are pure and fast; processes run
//! on the driver task. A run that a crash or shutdown cut short is marked `error` with the reason
//! (on shutdown here, after a crash by the next start), never left `running`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, call};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Shared;
use super::ays::{AysError, now_ms};
use super::names;
use super::telegram::TelegramMsg;
use crate::engine::{self, ActionState, Problem, Service, ServiceState, Template};
use crate::runner::{self, ActionJob, ActionOutcome};
use crate::store::{JobRecord, LogRecord, RunRecord, StepRecord};

/// A reply port carrying a result or an AYS error.
type Reply<T> = RpcReplyPort<Result<T, AysError>>;

/// Messages of a repository actor.
pub enum RepoMsg {
    /// Blueprints (archived ones too when asked).
    ListBlueprints {
        /// Include archived blueprints.
        archived: bool,
        /// Gets them.
        reply: Reply<Vec<BlueprintView>>,
    },
    /// One blueprint.
    GetBlueprint {
        /// File name, extension included.
        name: String,
        /// Gets it.
        reply: Reply<BlueprintView>,
    },
    /// Creates (`create`, 409 if it exists) or replaces (404 if missing) a blueprint; invalid
    /// YAML is refused and nothing is written.
    PutBlueprint {
        /// File name, extension included.
        name: String,
        /// The YAML text.
        content: String,
        /// Create rather than replace.
        create: bool,
        /// Gets the stored blueprint.
        reply: Reply<BlueprintView>,
    },
    /// Deletes a blueprint file.
    DeleteBlueprint {
        /// File name.
        name: String,
        /// Acknowledges.
        reply: Reply<()>,
    },
    /// Validates a blueprint as a whole against the templates and applies it, or changes nothing.
    ExecuteBlueprint {
        /// File name.
        name: String,
        /// Gets the keys of created or changed services.
        reply: Reply<ExecuteView>,
    },
    /// Archives (`_`-prefixes) or restores a blueprint.
    ArchiveBlueprint {
        /// File name.
        name: String,
        /// Archive (true) or restore (false).
        archived: bool,
        /// Gets the blueprint.
        reply: Reply<BlueprintView>,
    },
    /// Services, all or of one role.
    ListServices {
        /// Only this role.
        role: Option<String>,
        /// Gets them.
        reply: Reply<Vec<ServiceSummary>>,
    },
    /// One service in full.
    GetService {
        /// Its role.
        role: String,
        /// Its instance name.
        name: String,
        /// Gets it.
        reply: Reply<ServiceView>,
    },
    /// Deletes a service and its children.
    DeleteService {
        /// Its role.
        role: String,
        /// Its instance name.
        name: String,
        /// Gets the removed keys.
        reply: Reply<Vec<String>>,
    },
    /// Schedules one action of a service.
    ScheduleAction {
        /// Its role.
        role: String,
        /// Its instance name.
        name: String,
        /// The action.
        action: String,
        /// Gets the service.
        reply: Reply<ServiceView>,
    },
    /// Actor templates.
    ListTemplates {
        /// Gets them.
        reply: Reply<Vec<TemplateView>>,
    },
    /// One actor template.
    GetTemplate {
        /// The actor name.
        name: String,
        /// Gets it.
        reply: Reply<TemplateView>,
    },
    /// Runs, newest first.
    ListRuns {
        /// Gets them (without steps).
        reply: Reply<Vec<RunRecord>>,
    },
    /// One run with steps, jobs and logs.
    GetRun {
        /// The run key.
        key: String,
        /// Gets it.
        reply: Reply<RunRecord>,
    },
    /// Plans a run from every scheduled/changed/error action and starts it (or only plans it).
    CreateRun {
        /// Plan only.
        simulate: bool,
        /// Where to POST the result.
        callback_url: Option<String>,
        /// Who asked (kept with the run).
        origin: Value,
        /// Gets the run as started.
        reply: Reply<RunRecord>,
    },
    /// An event: runs every subscribed action with the payload as args (queued behind a run
    /// in progress, recorded at once).
    Event {
        /// The channel.
        channel: String,
        /// The payload.
        payload: Value,
        /// Gets how many jobs it queued.
        reply: RpcReplyPort<usize>,
    },
    /// From the driver: marks a step's jobs running and hands back what to execute.
    StartStep {
        /// The run.
        run: String,
        /// 0-based step index.
        step: usize,
        /// Gets the prepared jobs.
        reply: RpcReplyPort<Vec<PreparedJob>>,
    },
    /// From the driver: a job ended.
    JobDone {
        /// The run.
        run: String,
        /// The job.
        job: String,
        /// What happened.
        outcome: ActionOutcome,
        /// Acknowledges the durable write.
        reply: RpcReplyPort<()>,
    },
    /// From the driver: the run ended (`error` set when a job failed).
    RunDone {
        /// The run.
        run: String,
        /// Why it failed.
        error: Option<String>,
    },
    /// Every second: recurring actions that are due.
    Tick,
    /// Fault injection: panics inside the handler.
    Crash,
}

/// A blueprint as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BlueprintView {
    /// File name, extension included.
    pub name: String,
    /// The YAML text.
    pub content: String,
    /// SHA-256 of the content, hex.
    pub hash: String,
    /// Whether it is archived (`_`-prefixed on disk).
    pub archived: bool,
}

/// What executing a blueprint changed.
#[derive(Debug, Clone, Serialize)]
pub struct ExecuteView {
    /// The blueprint.
    pub blueprint: String,
    /// Keys of created or changed services.
    pub services: Vec<String>,
}

/// A service in lists.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    /// `role!name`.
    pub key: String,
    /// Its role.
    pub role: String,
    /// Its instance name.
    pub name: String,
    /// Its actor template.
    pub actor: String,
    /// Its state.
    pub state: ServiceState,
}

/// A role and name pair.
#[derive(Debug, Clone, Serialize)]
pub struct RefView {
    /// The role.
    pub role: String,
    /// The instance name.
    pub name: String,
}

/// An action and its state.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// The action.
    pub name: String,
    /// Its state.
    pub state: ActionState,
}

/// A service in full.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    /// `role!name`.
    pub key: String,
    /// Its role.
    pub role: String,
    /// Its instance name.
    pub name: String,
    /// Its actor template.
    pub actor: String,
    /// Its state.
    pub state: ServiceState,
    /// Its data (schema fields, and what actions returned).
    pub data: serde_json::Map<String, Value>,
    /// Its parent.
    pub parent: Option<RefView>,
    /// What it consumes.
    pub producers: Vec<RefView>,
    /// What consumes it.
    pub consumers: Vec<RefView>,
    /// Its actions and their states.
    pub actions: Vec<ActionView>,
}

/// An actor template as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateView {
    /// The actor name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// `schema.yaml` as written.
    pub schema: String,
    /// The action names (files in `actions/`).
    pub actions: Vec<String>,
    /// `config.yaml` as written, if any.
    pub config: Option<String>,
}

/// A job ready to execute.
pub struct PreparedJob {
    /// The job key.
    pub key: String,
    /// The process to run.
    pub job: ActionJob,
}

/// The repository actor.
pub struct Repo;

/// How a repository actor is started.
pub struct RepoArgs {
    /// Config, store, telemetry.
    pub shared: Shared,
    /// The repository name.
    pub name: String,
    /// The repository directory.
    pub dir: PathBuf,
    /// The shared bound on jobs running at once.
    pub workers: Arc<Semaphore>,
}

/// Aborts a task when dropped (a failed actor's state is dropped without `post_stop`).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The run in progress.
struct ActiveRun {
    /// Its key.
    key: String,
    /// Its jobs by step: (job key, service key, action).
    steps: Vec<Vec<(String, String, String)>>,
    /// The args every job gets (an event's payload; `{}` otherwise).
    args: Value,
    /// Where to POST the result.
    callback_url: Option<String>,
    /// The Telegram chat that started it, told the result.
    telegram_chat: Option<i64>,
    /// The task executing it.
    _driver: AbortOnDrop,
}

/// A run recorded and waiting for the one in progress.
struct QueuedRun {
    /// The record (state `new`).
    record: RunRecord,
    /// The args its jobs get.
    args: Value,
}

/// The repository actor's state.
pub struct RepoState {
    /// Config, store, telemetry.
    shared: Shared,
    /// The repository name.
    name: String,
    /// The repository directory.
    dir: PathBuf,
    /// The shared bound on jobs running at once.
    workers: Arc<Semaphore>,
    /// The services by key (the store holds the durable copy of each).
    services: BTreeMap<String, Service>,
    /// The run in progress.
    active: Option<ActiveRun>,
    /// Runs waiting for it.
    queue: VecDeque<QueuedRun>,
    /// A recurring action became due while a run was in progress: plan again after it.
    replan: bool,
    /// When each recurring (service, action) last became due.
    recurring: HashMap<(String, String), Instant>,
    /// Sends run callbacks.
    http: reqwest::Client,
}

/// How many log lines of one job are kept.
const MAX_LOG_LINES: usize = 10_000;

impl Actor for Repo {
    type Msg = RepoMsg;
    type State = RepoState;
    type Arguments = RepoArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RepoArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut services = BTreeMap::new();
        for (key, doc) in args.shared.store.services(&args.name)? {
            match serde_json::from_str::<Service>(&doc) {
                Ok(service) => {
                    services.insert(key, service);
                }
                Err(err) => warn!(repo = %args.name, %key, %err, "unreadable service skipped"),
            }
        }
        let mut state = RepoState {
            shared: args.shared,
            name: args.name,
            dir: args.dir,
            workers: args.workers,
            services,
            active: None,
            queue: VecDeque::new(),
            replan: false,
            recurring: HashMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        state.interrupt(
            "interrupted: cockpit stopped (or this repository's actor restarted) while the run was in progress",
        )?;
        myself.send_interval(Duration::from_secs(1), || RepoMsg::Tick);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.active = None;
        state.interrupt("interrupted: cockpit was shut down while the run was in progress")?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RepoMsg::ListBlueprints { archived, reply } => {
                let _ = reply.send(state.blueprints(archived));
            }
            RepoMsg::GetBlueprint { name, reply } => {
                let _ = reply.send(state.blueprint(&name));
            }
            RepoMsg::PutBlueprint {
                name,
                content,
                create,
                reply,
            } => {
                let _ = reply.send(state.put_blueprint(&name, &content, create));
            }
            RepoMsg::DeleteBlueprint { name, reply } => {
                let result = state.find_blueprint(&name).and_then(|(path, _)| {
                    std::fs::remove_file(&path).map_err(|err| io_error(&path, err))
                });
                let _ = reply.send(result);
            }
            RepoMsg::ExecuteBlueprint { name, reply } => {
                let _ = reply.send(state.execute_blueprint(&name));
            }
            RepoMsg::ArchiveBlueprint {
                name,
                archived,
                reply,
            } => {
                let _ = reply.send(state.archive(&name, archived));
            }
            RepoMsg::ListServices { role, reply } => {
                let list = state
                    .services
                    .values()
                    .filter(|s| role.as_deref().is_none_or(|r| s.role == r))
                    .map(summary)
                    .collect();
                let _ = reply.send(Ok(list));
            }
            RepoMsg::GetService { role, name, reply } => {
                let result = state.service(&role, &name).map(service_view);
                let _ = reply.send(result);
            }
            RepoMsg::DeleteService { role, name, reply } => {
                let _ = reply.send(state.delete_service(&role, &name));
            }
            RepoMsg::ScheduleAction {
                role,
                name,
                action,
                reply,
            } => {
                let _ = reply.send(state.schedule(&role, &name, &action));
            }
            RepoMsg::ListTemplates { reply } => {
                let _ = reply.send(state.template_views());
            }
            RepoMsg::GetTemplate { name, reply } => {
                let result = state.template_views().and_then(|all| {
                    all.into_iter()
                        .find(|t| t.name == name)
                        .ok_or_else(|| AysError::NotFound(format!("template {name:?} not found")))
                });
                let _ = reply.send(result);
            }
            RepoMsg::ListRuns { reply } => {
                let _ = reply.send(state.shared.store.runs(&state.name).map_err(Into::into));
            }
            RepoMsg::GetRun { key, reply } => {
                let result = match state.shared.store.run(&state.name, &key) {
                    Ok(Some(run)) => Ok(run),
                    Ok(None) => Err(AysError::NotFound(format!("run {key:?} not found"))),
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
            RepoMsg::CreateRun {
                simulate,
                callback_url,
                origin,
                reply,
            } => {
                let _ = reply.send(state.create_run(&myself, simulate, callback_url, origin));
            }
            RepoMsg::Event {
                channel,
                payload,
                reply,
            } => {
                let queued = state.event(&myself, &channel, payload)?;
                let _ = reply.send(queued);
            }
            RepoMsg::StartStep { run, step, reply } => {
                let _ = reply.send(state.start_step(&run, step)?);
            }
            RepoMsg::JobDone {
                run,
                job,
                outcome,
                reply,
            } => {
                state.job_done(&run, &job, outcome)?;
                let _ = reply.send(());
            }
            RepoMsg::RunDone { run, error } => state.run_done(&myself, &run, error)?,
            RepoMsg::Tick => state.tick(&myself)?,
            RepoMsg::Crash => panic!("fault injection: repository actor crashed on request"),
        }
        Ok(())
    }
}

/// A blueprint name is a plain file name with a YAML extension, not `_`-prefixed (that marks
/// archived files on disk).
fn valid_blueprint_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('_')
        && !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn io_error(path: &Path, err: std::io::Error) -> AysError {
    warn!(path = %path.display(), %err, "file operation failed");
    AysError::Internal(format!("cannot access {}: {err}", path.display()))
}

fn problems(list: Vec<Problem>) -> Vec<String> {
    list.into_iter().map(|p| p.to_string()).collect()
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn summary(s: &Service) -> ServiceSummary {
    ServiceSummary {
        key: s.key.clone(),
        role: s.role.clone(),
        name: s.name.clone(),
        actor: s.actor.clone(),
        state: s.state,
    }
}

fn ref_view(r: &engine::ServiceRef) -> RefView {
    RefView {
        role: r.role.clone(),
        name: r.name.clone(),
    }
}

fn service_view(s: &Service) -> ServiceView {
    ServiceView {
        key: s.key.clone(),
        role: s.role.clone(),
        name: s.name.clone(),
        actor: s.actor.clone(),
        state: s.state,
        data: s.data.clone(),
        parent: s.parent.as_ref().map(ref_view),
        producers: s.producers.iter().map(ref_view).collect(),
        consumers: s.consumers.iter().map(ref_view).collect(),
        actions: s
            .actions
            .iter()
            .map(|(name, state)| ActionView {
                name: name.clone(),
                state: *state,
            })
            .collect(),
    }
}

/// Writes a file atomically (temp file and rename), so a crash never leaves half a blueprint.
fn write_atomic(path: &Path, content: &str) -> Result<(), AysError> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).map_err(|err| io_error(&tmp, err))?;
    std::fs::rename(&tmp, path).map_err(|err| io_error(path, err))
}

impl RepoState {
    fn blueprints_dir(&self) -> PathBuf {
        self.dir.join("blueprints")
    }

    fn templates_dir(&self) -> PathBuf {
        self.dir.join("actorTemplates")
    }

    /// The file of blueprint `name` and whether it is archived; 404 if neither exists.
    fn find_blueprint(&self, name: &str) -> Result<(PathBuf, bool), AysError> {
        if !valid_blueprint_name(name) {
            return Err(AysError::NotFound(format!("blueprint {name:?} not found")));
        }
        let plain = self.blueprints_dir().join(name);
        if plain.is_file() {
            return Ok((plain, false));
        }
        let archived = self.blueprints_dir().join(format!("_{name}"));
        if archived.is_file() {
            return Ok((archived, true));
        }
        Err(AysError::NotFound(format!("blueprint {name:?} not found")))
    }

    fn read_blueprint(&self, name: &str) -> Result<BlueprintView, AysError> {
        let (path, archived) = self.find_blueprint(name)?;
        let content = std::fs::read_to_string(&path).map_err(|err| io_error(&path, err))?;
        Ok(BlueprintView {
            name: name.to_string(),
            hash: sha256(&content),
            content,
            archived,
        })
    }

    fn blueprint(&self, name: &str) -> Result<BlueprintView, AysError> {
        self.read_blueprint(name)
    }

    fn blueprints(&self, include_archived: bool) -> Result<Vec<BlueprintView>, AysError> {
        let dir = self.blueprints_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir, err)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|file| match file.strip_prefix('_') {
                Some(name) if include_archived => Some(name.to_string()),
                Some(_) => None,
                None => Some(file),
            })
            .filter(|name| valid_blueprint_name(name))
            .collect();
        names.sort();
        names.dedup();
        names.iter().map(|n| self.read_blueprint(n)).collect()
    }

    fn put_blueprint(
        &self,
        name: &str,
        content: &str,
        create: bool,
    ) -> Result<BlueprintView, AysError> {
        if !valid_blueprint_name(name) {
            return Err(AysError::BadRequest(format!(
                "invalid blueprint name {name:?}: a file name ending in .yaml or .yml, \
                 of A-Z a-z 0-9 _ - ., not starting with _ or ."
            )));
        }
        let existing = self.find_blueprint(name).ok();
        let path = match (&existing, create) {
            (Some(_), true) => {
                return Err(AysError::Conflict(format!("blueprint {name:?} exists")));
            }
            (None, false) => {
                return Err(AysError::NotFound(format!("blueprint {name:?} not found")));
            }
            (Some((path, _)), false) => path.clone(),
            (None, true) => self.blueprints_dir().join(name),
        };
        if let Err(list) = engine::Blueprint::parse(name, content) {
            return Err(AysError::BadRequest(format!(
                "invalid blueprint: {}",
                problems(list).join("; ")
            )));
        }
        std::fs::create_dir_all(self.blueprints_dir())
            .map_err(|err| io_error(&self.blueprints_dir(), err))?;
        write_atomic(&path, content)?;
        self.read_blueprint(name)
    }

    fn archive(&self, name: &str, archived: bool) -> Result<BlueprintView, AysError> {
        let (path, is_archived) = self.find_blueprint(name)?;
        if is_archived != archived {
            let target = if archived {
                self.blueprints_dir().join(format!("_{name}"))
            } else {
                self.blueprints_dir().join(name)
            };
            std::fs::rename(&path, &target).map_err(|err| io_error(&path, err))?;
        }
        self.read_blueprint(name)
    }

    /// Reads every actor template of the repository; problems are returned beside the good ones.
    fn templates(&self) -> Result<(BTreeMap<String, Template>, Vec<Problem>), AysError> {
        let mut templates = BTreeMap::new();
        let mut found = Vec::new();
        for view in self.template_views()? {
            let schema = match engine::Schema::parse(&view.schema) {
                Ok(schema) => schema,
                Err(list) => {
                    found.extend(list.into_iter().map(|p| {
                        Problem::new(
                            format!("actorTemplates/{}/schema.yaml: {}", view.name, p.location),
                            p.message,
                        )
                    }));
                    continue;
                }
            };
            let config = match view.config.as_deref().map(engine::TemplateConfig::parse) {
                None => engine::TemplateConfig::default(),
                Some(Ok(config)) => config,
                Some(Err(list)) => {
                    found.extend(list.into_iter().map(|p| {
                        Problem::new(
                            format!("actorTemplates/{}/config.yaml: {}", view.name, p.location),
                            p.message,
                        )
                    }));
                    continue;
                }
            };
            templates.insert(
                view.name.clone(),
                Template {
                    actor: view.name,
                    schema,
                    actions: view.actions,
                    config,
                },
            );
        }
        Ok((templates, found))
    }

    fn template_views(&self) -> Result<Vec<TemplateView>, AysError> {
        let dir = self.templates_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir, err)),
        };
        let mut views = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let Some(name) = entry.file_name().into_string().ok() else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') {
                continue;
            }
            let schema = std::fs::read_to_string(path.join("schema.yaml")).unwrap_or_default();
            let config = std::fs::read_to_string(path.join("config.yaml")).ok();
            let mut actions: Vec<String> = std::fs::read_dir(path.join("actions"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().is_file())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            actions.sort();
            views.push(TemplateView {
                role: engine::role_of(&name).to_string(),
                name,
                schema,
                actions,
                config,
            });
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    fn execute_blueprint(&mut self, name: &str) -> Result<ExecuteView, AysError> {
        let view = self.read_blueprint(name)?;
        if view.archived {
            return Err(AysError::Conflict(format!(
                "blueprint {name:?} is archived; restore it first"
            )));
        }
        let (templates, mut found) = self.templates()?;
        let outcome =
            match engine::execute_blueprint(name, &view.content, &templates, &self.services) {
                Ok(outcome) if found.is_empty() => outcome,
                Ok(_) => return Err(AysError::Invalid(problems(found))),
                Err(list) => {
                    found.extend(list);
                    return Err(AysError::Invalid(problems(found)));
                }
            };
        let changed: Vec<String> = outcome.changed.clone();
        let previous = std::mem::replace(&mut self.services, outcome.services);
        if let Err(err) = self.save(changed.iter(), &[]) {
            self.services = previous;
            return Err(err);
        }
        info!(repo = %self.name, blueprint = %name, changed = changed.len(), "blueprint executed");
        Ok(ExecuteView {
            blueprint: name.to_string(),
            services: changed,
        })
    }

    /// Writes these services (and deletes those keys) durably.
    fn save<'a>(
        &self,
        keys: impl Iterator<Item = &'a String>,
        deleted: &[String],
    ) -> Result<(), AysError> {
        let mut docs = Vec::new();
        for key in keys {
            if let Some(service) = self.services.get(key) {
                let doc = serde_json::to_string(service)
                    .map_err(|err| AysError::Internal(format!("cannot encode {key}: {err}")))?;
                docs.push((key.clone(), doc));
            }
        }
        self.shared
            .store
            .save_services(&self.name, &docs, deleted)
            .map_err(Into::into)
    }

    fn service(&self, role: &str, name: &str) -> Result<&Service, AysError> {
        self.services
            .get(&format!("{role}!{name}"))
            .ok_or_else(|| AysError::NotFound(format!("service {role}!{name} not found")))
    }

    fn delete_service(&mut self, role: &str, name: &str) -> Result<Vec<String>, AysError> {
        let key = self.service(role, name)?.key.clone();
        let before = self.services.clone();
        let removed = engine::remove_service(&mut self.services, &key);
        let touched: Vec<String> = self
            .services
            .iter()
            .filter(|(k, s)| before.get(*k) != Some(*s))
            .map(|(k, _)| k.clone())
            .collect();
        if let Err(err) = self.save(touched.iter(), &removed) {
            self.services = before;
            return Err(err);
        }
        Ok(removed)
    }

    fn schedule(&mut self, role: &str, name: &str, action: &str) -> Result<ServiceView, AysError> {
        let key = self.service(role, name)?.key.clone();
        engine::schedule_action(&mut self.services, &key, action)
            .map_err(|err| AysError::NotFound(err.to_string()))?;
        self.save(std::iter::once(&key), &[])?;
        self.service(role, name).map(service_view)
    }

    /// Marks runs left `new`/`running` as `error` and the actions they had running as `error`.
    fn interrupt(&mut self, reason: &str) -> Result<(), AysError> {
        let cut = self
            .shared
            .store
            .interrupt_runs(&self.name, reason, now_ms() / 1000)?;
        let mut touched = Vec::new();
        for (key, action) in cut {
            if let Some(service) = self.services.get_mut(&key) {
                service.actions.insert(action, ActionState::Error);
                service.state = ServiceState::Error;
                touched.push(key);
            }
        }
        // Actions marked running in memory by a run that never got to record its jobs.
        for service in self.services.values_mut() {
            for state in service.actions.values_mut() {
                if *state == ActionState::Running {
                    *state = ActionState::Error;
                    touched.push(service.key.clone());
                }
            }
        }
        if !touched.is_empty() {
            warn!(repo = %self.name, services = touched.len(), "{reason}");
        }
        self.save(touched.iter(), &[])
    }

    /// A new run record from planned steps of (service key, action).
    fn record(
        &self,
        steps: Vec<Vec<(String, String)>>,
        callback_url: Option<String>,
        origin: Value,
    ) -> RunRecord {
        let key = random_key();
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, jobs)| StepRecord {
                number: i as u32 + 1,
                jobs: jobs
                    .into_iter()
                    .map(|(service_key, action)| {
                        let service = self.services.get(&service_key);
                        JobRecord {
                            key: random_key(),
                            action_name: action,
                            actor_name: service.map(|s| s.actor.clone()).unwrap_or_default(),
                            service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
                            service_key,
                            state: "new".into(),
                            logs: Vec::new(),
                        }
                    })
                    .collect(),
            })
            .collect();
        RunRecord {
            key,
            repo: self.name.clone(),
            state: "new".into(),
            created: now_ms() / 1000,
            ended: None,
            error: None,
            callback_url,
            origin,
            steps,
        }
    }

    fn create_run(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        simulate: bool,
        callback_url: Option<String>,
        origin: Value,
    ) -> Result<RunRecord, AysError> {
        let plan = engine::plan_run(&self.services)
            .map_err(|err| AysError::Invalid(vec![err.to_string()]))?;
        if plan.steps.is_empty() {
            return Err(AysError::Invalid(vec![
                "nothing to run: no action is scheduled, changed or in error".into(),
            ]));
        }
        let steps = plan
            .steps
            .into_iter()
            .map(|step| {
                step.jobs
                    .into_iter()
                    .map(|job| (job.service_key, job.action))
                    .collect()
            })
            .collect();
        let record = self.record(steps, callback_url, origin);
        if simulate {
            return Ok(record);
        }
        if self.active.is_some() {
            return Err(AysError::Conflict(format!(
                "a run is in progress in repository {:?}; one run at a time",
                self.name
            )));
        }
        self.shared.store.insert_run(&record)?;
        self.start(myself, record, json!({}))
    }

    /// Starts a recorded run: marks it running and spawns its driver.
    fn start(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        mut record: RunRecord,
        args: Value,
    ) -> Result<RunRecord, AysError> {
        self.shared
            .store
            .set_run_state(&record.key, "running", None, None)?;
        record.state = "running".into();
        let steps: Vec<Vec<(String, String, String)>> = record
            .steps
            .iter()
            .map(|s| {
                s.jobs
                    .iter()
                    .map(|j| (j.key.clone(), j.service_key.clone(), j.action_name.clone()))
                    .collect()
            })
            .collect();
        let driver = tokio::spawn(drive(
            myself.clone(),
            record.key.clone(),
            steps.len(),
            self.workers.clone(),
        ));
        info!(repo = %self.name, run = %record.key, steps = steps.len(), "run started");
        self.shared
            .telemetry
            .count(crate::telemetry::Count::RunsStarted, 1);
        self.active = Some(ActiveRun {
            key: record.key.clone(),
            steps,
            args,
            callback_url: record.callback_url.clone(),
            telegram_chat: record.origin["telegram_chat"].as_i64(),
            _driver: AbortOnDrop(driver),
        });
        Ok(record)
    }

    fn event(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        channel: &str,
        payload: Value,
    ) -> Result<usize, AysError> {
        let jobs = engine::subscribers(&self.services, channel);
        if jobs.is_empty() {
            return Ok(0);
        }
        let count = jobs.len();
        let record = self.record(vec![jobs], None, json!({"event": channel}));
        self.shared.store.insert_run(&record)?;
        if self.active.is_some() {
            self.queue.push_back(QueuedRun {
                record,
                args: payload,
            });
        } else {
            self.start(myself, record, payload)?;
        }
        Ok(count)
    }

    fn start_step(&mut self, run: &str, step: usize) -> Result<Vec<PreparedJob>, AysError> {
        let Some(active) = self.active.as_ref().filter(|a| a.key == run) else {
            return Ok(Vec::new());
        };
        let jobs = active.steps.get(step).cloned().unwrap_or_default();
        let args = active.args.clone();
        let mut prepared = Vec::new();
        let mut touched = Vec::new();
        for (job_key, service_key, action) in jobs {
            let Some(service) = self.services.get_mut(&service_key) else {
                continue;
            };
            service.actions.insert(action.clone(), ActionState::Running);
            if action == "install" {
                service.state = ServiceState::Installing;
            }
            touched.push(service_key.clone());
            let service = &self.services[&service_key];
            let cwd = self
                .dir
                .join("services")
                .join(&service.role)
                .join(&service.name);
            std::fs::create_dir_all(&cwd).map_err(|err| io_error(&cwd, err))?;
            let related = |r: &engine::ServiceRef| {
                let key = format!("{}!{}", r.role, r.name);
                let data = self
                    .services
                    .get(&key)
                    .map(|s| Value::Object(s.data.clone()));
                json!({"role": r.role, "name": r.name, "key": key, "data": data})
            };
            let stdin = json!({
                "repo": self.name,
                "run": run,
                "action": action,
                "args": args,
                "service": {
                    "role": service.role,
                    "name": service.name,
                    "key": service.key,
                    "actor": service.actor,
                    "data": service.data,
                },
                "parent": service.parent.as_ref().map(related),
                "producers": service.producers.iter().map(related).collect::<Vec<_>>(),
            });
            prepared.push(PreparedJob {
                key: job_key.clone(),
                job: ActionJob {
                    program: self
                        .templates_dir()
                        .join(&service.actor)
                        .join("actions")
                        .join(&action),
                    cwd,
                    stdin_json: stdin,
                    env: vec![
                        ("COCKPIT_REPO".into(), self.name.clone()),
                        ("COCKPIT_RUN".into(), run.to_string()),
                        ("COCKPIT_ACTION".into(), action.clone()),
                        ("COCKPIT_SERVICE".into(), service.key.clone()),
                    ],
                    timeout: Duration::from_secs(self.shared.config.ays.job_timeout_secs),
                    max_log_lines: MAX_LOG_LINES,
                },
            });
            self.shared.store.finish_job(&job_key, "running", &[])?;
        }
        self.save(touched.iter(), &[])?;
        Ok(prepared)
    }

    fn job_done(&mut self, run: &str, job: &str, outcome: ActionOutcome) -> Result<(), AysError> {
        let Some(active) = self.active.as_ref().filter(|a| a.key == run) else {
            return Ok(());
        };
        let Some((_, service_key, action)) = active
            .steps
            .iter()
            .flatten()
            .find(|(k, _, _)| k == job)
            .cloned()
        else {
            return Ok(());
        };
        let ok = outcome.state == runner::ActionState::Ok;
        if !ok {
            // The reason: the runner's own (timeout, not executable...) or the job's last words.
            let why = outcome
                .error
                .clone()
                .or_else(|| outcome.logs.last().map(|l| l.log.clone()))
                .unwrap_or_else(|| "failed".into());
            warn!(
                repo = %self.name, run = %run, job = %job, service = %service_key, action = %action,
                error = %why, "job failed"
            );
        }
        let mut logs: Vec<LogRecord> = outcome
            .logs
            .iter()
            .map(|l| LogRecord {
                epoch: l.epoch,
                level: l.level.as_str().to_string(),
                log: l.log.clone(),
            })
            .collect();
        if let Some(error) = &outcome.error {
            logs.push(LogRecord {
                epoch: now_ms() as f64 / 1000.0,
                level: "error".into(),
                log: error.clone(),
            });
        }
        if let Some(service) = self.services.get_mut(&service_key) {
            let state = if ok {
                ActionState::Ok
            } else {
                ActionState::Error
            };
            service.actions.insert(action.clone(), state);
            if let Some(data) = outcome.data {
                service.data.extend(data);
            }
            if !ok {
                service.state = ServiceState::Error;
            } else if action == "install" {
                service.state = ServiceState::Ok;
            }
        }
        self.shared
            .store
            .finish_job(job, if ok { "ok" } else { "error" }, &logs)?;
        self.save(std::iter::once(&service_key), &[])?;
        Ok(())
    }

    fn run_done(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        run: &str,
        error: Option<String>,
    ) -> Result<(), AysError> {
        let Some(active) = self.active.take_if(|a| a.key == run) else {
            return Ok(());
        };
        let state = if error.is_some() { "error" } else { "ok" };
        self.shared
            .store
            .set_run_state(run, state, Some(now_ms() / 1000), error.as_deref())?;
        match &error {
            Some(error) => warn!(repo = %self.name, run = %run, state, %error, "run ended"),
            None => info!(repo = %self.name, run = %run, state, "run ended"),
        }
        self.shared.telemetry.count(
            if error.is_some() {
                crate::telemetry::Count::RunsError
            } else {
                crate::telemetry::Count::RunsOk
            },
            1,
        );
        if let Some(url) = active.callback_url {
            let mut body = json!({"key": run, "state": state});
            if let Some(error) = &error {
                body["error"] = json!(error);
            }
            tokio::spawn(post_callback(self.http.clone(), url, body));
        }
        if let Some(chat_id) = active.telegram_chat {
            let mut text = format!("Run {run} in {} ended: {state}.", self.name);
            if let Some(error) = &error {
                text.push_str(&format!("\n{error}"));
            }
            text.push_str(&format!("\nDetails: /run inspect {run}"));
            match ActorRef::<TelegramMsg>::where_is(names::TELEGRAM_BOT) {
                Some(bot) => {
                    let _ = bot.cast(TelegramMsg::Notify { chat_id, text });
                }
                None => {
                    warn!(repo = %self.name, run = %run, "the bot is not running; run end not told")
                }
            }
        }
        if let Some(next) = self.queue.pop_front() {
            self.start(myself, next.record, next.args)?;
        } else if std::mem::take(&mut self.replan) {
            self.start_planned(myself, json!({"recurring": true}))?;
        }
        Ok(())
    }

    /// Plans and starts a run when there is anything to do (recurring actions).
    fn start_planned(&mut self, myself: &ActorRef<RepoMsg>, origin: Value) -> Result<(), AysError> {
        match self.create_run(myself, false, None, origin) {
            Ok(_) => Ok(()),
            Err(AysError::Invalid(why)) => {
                warn!(repo = %self.name, "recurring run not started: {}", why.join("; "));
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    fn tick(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        let now = Instant::now();
        let mut due = Vec::new();
        for service in self.services.values() {
            for (action, period) in &service.recurring {
                let id = (service.key.clone(), action.clone());
                let last = *self.recurring.entry(id.clone()).or_insert(now);
                if now.duration_since(last) >= Duration::from_secs((*period).max(1)) {
                    due.push(id);
                }
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        for (key, action) in &due {
            self.recurring.insert((key.clone(), action.clone()), now);
            if let Err(err) = engine::schedule_action(&mut self.services, key, action) {
                warn!(repo = %self.name, %key, %action, %err, "recurring action not scheduled");
            }
        }
        self.save(due.iter().map(|(k, _)| k), &[])?;
        if self.active.is_some() {
            self.replan = true;
            Ok(())
        } else {
            self.start_planned(myself, json!({"recurring": true}))
        }
    }
}

/// Executes a run's steps in order, each step's jobs in parallel, and reports back.
async fn drive(repo: ActorRef<RepoMsg>, run: String, steps: usize, workers: Arc<Semaphore>) {
    let mut error = None;
    for step in 0..steps {
        let Ok(jobs) = call!(repo, |reply| RepoMsg::StartStep {
            run: run.clone(),
            step,
            reply
        }) else {
            return; // the actor is gone; its successor marks this run interrupted
        };
        let outcomes = futures::future::join_all(jobs.into_iter().map(|job| {
            let workers = workers.clone();
            async move {
                let _permit = workers.acquire_owned().await;
                (job.key, runner::run_action(job.job).await)
            }
        }))
        .await;
        let mut failed = 0;
        for (job, outcome) in outcomes {
            if outcome.state != runner::ActionState::Ok {
                failed += 1;
            }
            let reported = call!(repo, |reply| RepoMsg::JobDone {
                run: run.clone(),
                job,
                outcome,
                reply
            });
            if reported.is_err() {
                return;
            }
        }
        if failed > 0 {
            error = Some(format!("step {} had {failed} failed job(s)", step + 1));
            break;
        }
    }
    let _ = repo.cast(RepoMsg::RunDone { run, error });
}

/// POSTs a run's result to its callback URL, retrying a few times.
async fn post_callback(http: reqwest::Client, url: String, body: Value) {
    let run = body["key"].as_str().unwrap_or_default().to_string();
    for attempt in 0..3u32 {
        match http.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                warn!(%run, status = response.status().as_u16(), attempt, "run callback refused")
            }
            Err(err) => warn!(%run, attempt, error = %err.without_url(), "run callback failed"),
        }
        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
    }
}

/// A random key for runs and jobs: 16 hex characters.
fn random_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
