//! The `Repo` actor: one per repository. It owns the repository's services (loaded from the
//! store, written back on every change), its blueprint files and actor templates, and its runs:
//! one run at a time, driven by a task that executes each step's jobs and reports every job back
//! here as a message.
//!
//! - [`files`]: blueprint and template files (reads, atomic writes, no links followed);
//! - [`services`]: executing blueprints into services, scheduling, deleting;
//! - [`runs`]: the run lifecycle (`new` → `running` → `ok`/`error`), the queue, recurring actions;
//! - [`driver`]: the task that executes a run, and run callbacks.
//!
//! Nothing long runs inside a handler: planning and validation are pure and fast; processes run
//! on the driver task. A run that a crash or shutdown cut short is marked `error` with the reason
//! (on shutdown here, after a crash by the next start), never left `running`. The actor knows no
//! door: what it has to tell goes out as notices.

pub mod driver;
pub mod files;
pub mod runs;
pub mod services;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::Shared;
use super::error::AysError;
use crate::auth::audit::{self, Audit, Outcome};
use crate::engine::Service;
use crate::runner::ActionOutcome;
use crate::store::{Origin, RunRecord};
use driver::PreparedJob;
use files::{Blueprint, Files, TemplateFiles};
use runs::Runs;

/// A run's log lines after some sequence number, `(seq, job, line)`, and the run's state.
pub type RunLog = (
    Vec<(i64, String, crate::store::LogRecord)>,
    crate::store::RunState,
);

pub use crate::store::RunPage;

/// A reply port carrying a result or an AYS error.
type Reply<T> = RpcReplyPort<Result<T, AysError>>;

/// Messages of a repository actor. Doors do not send these: they call [`crate::client`].
pub enum RepoMsg {
    /// Blueprints (archived ones too when asked).
    ListBlueprints {
        /// Include archived blueprints.
        archived: bool,
        /// Gets them.
        reply: Reply<Vec<Blueprint>>,
    },
    /// One blueprint.
    GetBlueprint {
        /// File name, extension included.
        name: String,
        /// Gets it.
        reply: Reply<Blueprint>,
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
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the stored blueprint.
        reply: Reply<Blueprint>,
    },
    /// Deletes a blueprint file.
    DeleteBlueprint {
        /// File name.
        name: String,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Acknowledges.
        reply: Reply<()>,
    },
    /// Validates a blueprint as a whole against the templates and applies it, or changes nothing.
    ExecuteBlueprint {
        /// File name.
        name: String,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the keys of created or changed services.
        reply: Reply<Vec<String>>,
    },
    /// Every problem executing a blueprint text would meet, changing nothing (the console's
    /// Check: against the repository's templates and services as they are).
    CheckBlueprint {
        /// File name (for the problems' places).
        name: String,
        /// The text.
        content: String,
        /// Gets the problems (none: it would execute).
        reply: Reply<Vec<String>>,
    },
    /// Archives (`_`-prefixes) or restores a blueprint.
    ArchiveBlueprint {
        /// File name.
        name: String,
        /// Archive (true) or restore (false).
        archived: bool,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the blueprint.
        reply: Reply<Blueprint>,
    },
    /// Services, all or of one role.
    ListServices {
        /// Only this role.
        role: Option<String>,
        /// Gets them.
        reply: Reply<Vec<Service>>,
    },
    /// One service in full.
    GetService {
        /// Its role.
        role: String,
        /// Its instance name.
        name: String,
        /// Gets it.
        reply: Reply<Service>,
    },
    /// Deletes a service and its children.
    DeleteService {
        /// Its role.
        role: String,
        /// Its instance name.
        name: String,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
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
        /// What its job is given (a JSON object), if anything.
        args: Option<Value>,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the service.
        reply: Reply<Service>,
    },
    /// Actor templates.
    ListTemplates {
        /// Gets them.
        reply: Reply<Vec<TemplateFiles>>,
    },
    /// One actor template, with its actions' code.
    GetTemplate {
        /// Its name.
        name: String,
        /// Gets it.
        reply: Reply<TemplateFiles>,
    },
    /// Runs, newest first.
    ListRuns {
        /// Gets them (without steps).
        reply: Reply<Vec<RunRecord>>,
    },
    /// One page of runs, newest first (see [`crate::store::Store::runs_page`]).
    ListRunsPage {
        /// Only runs in this state.
        state: Option<crate::store::RunState>,
        /// Where the previous page ended.
        after: Option<(i64, i64)>,
        /// At most this many.
        limit: usize,
        /// Gets them (without steps), and where this page ends when more follow.
        reply: Reply<RunPage>,
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
        /// Who asked (kept with the run, handed back in its notices).
        origin: Origin,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
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
        /// Done once before the first run it starts.
        before_run: Option<crate::actors::event::BeforeRun>,
        /// Gets how many jobs it queued.
        reply: RpcReplyPort<usize>,
    },
    /// Plans the actions of a run again, with the same args, as a new run.
    RerunRun {
        /// The run key.
        key: String,
        /// Who asks (kept with the new run).
        origin: Origin,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the new run (running, or queued behind the run in progress).
        reply: Reply<RunRecord>,
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
    /// From the driver: a job's process runs, in this process group.
    JobStarted {
        /// The run.
        run: String,
        /// The job.
        job: String,
        /// Its process group id.
        pgid: i32,
    },
    /// From the driver: lines a running job printed, in order.
    JobLines {
        /// The run.
        run: String,
        /// The job.
        job: String,
        /// The lines.
        lines: Vec<crate::runner::LogLine>,
    },
    /// The log lines of a run after a sequence number: `(seq, job, line)`.
    RunLogs {
        /// The run key.
        key: String,
        /// Lines after this sequence number.
        after: i64,
        /// Gets them, and the run's state.
        reply: Reply<RunLog>,
    },
    /// Cancels a running or queued run.
    CancelRun {
        /// The run key.
        key: String,
        /// Who cancels (for the log and the run's error).
        who: String,
        /// The command's audit entry ([`Audit`]): its `ok` row is written with the change.
        audit: Option<Audit>,
        /// Gets the run as it ended.
        reply: Reply<RunRecord>,
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

/// The repository actor's state.
pub struct RepoState {
    /// Config, store, telemetry, notices.
    shared: Shared,
    /// The repository name.
    name: String,
    /// Its blueprint and template files.
    files: Files,
    /// The data directory, absolute (`COCKPIT_DATA` for actions).
    data_dir: PathBuf,
    /// The shared bound on jobs running at once.
    workers: Arc<Semaphore>,
    /// The services by key (the store holds the durable copy of each).
    services: BTreeMap<String, Service>,
    /// The run in progress, the queue, the recurring clock.
    runs: Runs,
    /// Sends run callbacks.
    http: reqwest::Client,
}

/// The `ok` row of a command's audit entry, for the store to write with the change.
fn ok_row(audit: Option<Audit>) -> Option<crate::store::AuditRecord> {
    audit.map(|a| a.row(&Outcome::Ok))
}

impl RepoState {
    /// Writes the `ok` row of a command that changed only files, right after the change (no
    /// transaction spans a file), and passes the result on.
    fn audit_files<T>(
        &self,
        blueprint: &str,
        audit: Option<Audit>,
        result: Result<T, AysError>,
    ) -> Result<T, AysError> {
        let value = result?;
        if self.shared.store.shared() {
            // Kept in the store before anyone hears it is written: the server that takes this
            // store over has it.
            let mut put = Vec::new();
            let mut removed = Vec::new();
            for path in [
                format!("blueprints/{blueprint}"),
                format!("blueprints/_{blueprint}"),
            ] {
                match self.files.kept(&path) {
                    Some(file) => put.push(file),
                    None => removed.push(path),
                }
            }
            self.shared
                .store
                .save_repo_files(&self.name, &put, &removed)?;
        }
        if let Some(audit) = audit {
            audit::write(&self.shared.store, &audit.row(&Outcome::Ok));
        }
        Ok(value)
    }

    /// Brings the store's copy of the templates in line with this directory (a shared store
    /// only): templates and actions are placed by hand or by a clone, not through cockpit, so
    /// they are looked at whenever the engine reads them to execute a blueprint.
    pub(super) fn keep_templates(&self) -> Result<(), AysError> {
        if !self.shared.store.shared() {
            return Ok(());
        }
        let stored: BTreeMap<String, (Vec<u8>, u32)> = self
            .shared
            .store
            .repo_files_under(&self.name, "actorTemplates/")?
            .into_iter()
            .map(|f| (f.path, (f.content, f.mode)))
            .collect();
        let here = self.files.template_tree();
        let present: std::collections::BTreeSet<&str> =
            here.iter().map(|f| f.path.as_str()).collect();
        let removed: Vec<String> = stored
            .keys()
            .filter(|path| !present.contains(path.as_str()))
            .cloned()
            .collect();
        let put: Vec<_> = here
            .iter()
            .filter(|f| {
                stored
                    .get(&f.path)
                    .is_none_or(|(content, mode)| *content != f.content || *mode != f.mode)
            })
            .cloned()
            .collect();
        if !put.is_empty() || !removed.is_empty() {
            info!(repo = %self.name, changed = put.len(), removed = removed.len(), "template files kept in the store");
            self.shared
                .store
                .save_repo_files(&self.name, &put, &removed)?;
        }
        Ok(())
    }

    /// Brings the repository's directory in line with the store's copy of its files, and the
    /// store's copy in line with files added here by hand (a shared store only).
    fn restore_files(&self) -> Result<(), AysError> {
        if !self.shared.store.shared() {
            return Ok(());
        }
        let kept = self.shared.store.repo_files(&self.name)?;
        let newer = self.files.restore(&kept)?;
        if !newer.is_empty() {
            info!(repo = %self.name, files = newer.len(), "repository files kept in the store");
            self.shared.store.save_repo_files(&self.name, &newer, &[])?;
        }
        Ok(())
    }
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
        args.shared
            .faults
            .join(format!("repo:{}", args.name), myself.clone(), || {
                RepoMsg::Crash
            });
        let data_dir = std::path::absolute(&args.shared.config.storage.path)
            .unwrap_or_else(|_| args.shared.config.storage.path.clone());
        let mut state = RepoState {
            shared: args.shared,
            name: args.name,
            files: Files::new(args.dir),
            data_dir,
            workers: args.workers,
            services,
            runs: Runs::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        state.restore_files()?;
        state.recover(
            "interrupted: cockpit stopped (or this repository's actor restarted) while the run was in progress",
        )?;
        state.start_next(&myself)?;
        myself.send_interval(Duration::from_secs(1), || RepoMsg::Tick);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the driver kills the jobs' process groups.
        state.runs.active = None;
        state.cut_short("interrupted: cockpit was shut down while the run was in progress")?;
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
                let _ = reply.send(state.files.blueprints(archived));
            }
            RepoMsg::GetBlueprint { name, reply } => {
                let _ = reply.send(state.files.blueprint(&name));
            }
            RepoMsg::PutBlueprint {
                name,
                content,
                create,
                audit,
                reply,
            } => {
                let result = state.files.put_blueprint(&name, &content, create);
                let _ = reply.send(state.audit_files(&name, audit, result));
            }
            RepoMsg::DeleteBlueprint { name, audit, reply } => {
                let result = state.files.delete_blueprint(&name);
                let _ = reply.send(state.audit_files(&name, audit, result));
            }
            RepoMsg::ExecuteBlueprint { name, audit, reply } => {
                let row = ok_row(audit);
                let _ = reply.send(state.execute_blueprint(&name, row.as_ref()));
            }
            RepoMsg::CheckBlueprint {
                name,
                content,
                reply,
            } => {
                let problems = match state.apply_blueprint(&name, &content) {
                    Ok(_) => Ok(Vec::new()),
                    Err(AysError::Invalid(problems)) => Ok(problems),
                    Err(err) => Err(err),
                };
                let _ = reply.send(problems);
            }
            RepoMsg::ArchiveBlueprint {
                name,
                archived,
                audit,
                reply,
            } => {
                let result = state.files.archive(&name, archived);
                let _ = reply.send(state.audit_files(&name, audit, result));
            }
            RepoMsg::ListServices { role, reply } => {
                let list = state
                    .services
                    .values()
                    .filter(|s| role.as_deref().is_none_or(|r| s.role == r))
                    .cloned()
                    .collect();
                let _ = reply.send(Ok(list));
            }
            RepoMsg::GetService { role, name, reply } => {
                let _ = reply.send(state.service(&role, &name).cloned());
            }
            RepoMsg::DeleteService {
                role,
                name,
                audit,
                reply,
            } => {
                let row = ok_row(audit);
                let _ = reply.send(state.delete_service(&role, &name, row.as_ref()));
            }
            RepoMsg::ScheduleAction {
                role,
                name,
                action,
                args,
                audit,
                reply,
            } => {
                let row = ok_row(audit);
                let _ = reply.send(state.schedule(&role, &name, &action, args, row.as_ref()));
            }
            RepoMsg::RerunRun {
                key,
                origin,
                audit,
                reply,
            } => {
                let row = ok_row(audit);
                let _ = reply.send(state.rerun(&myself, &key, origin, row.as_ref()));
            }
            RepoMsg::ListTemplates { reply } => {
                let _ = reply.send(state.files.template_files());
            }
            RepoMsg::GetTemplate { name, reply } => {
                let _ = reply.send(state.files.template_with_code(&name));
            }
            RepoMsg::ListRuns { reply } => {
                let _ = reply.send(state.shared.store.runs(&state.name).map_err(Into::into));
            }
            RepoMsg::ListRunsPage {
                state: wanted,
                after,
                limit,
                reply,
            } => {
                let page = state
                    .shared
                    .store
                    .runs_page(&state.name, wanted, after, limit);
                let _ = reply.send(page.map_err(Into::into));
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
                audit,
                reply,
            } => {
                let row = ok_row(audit);
                let result = state.create_run(
                    &myself,
                    simulate,
                    callback_url,
                    origin,
                    serde_json::json!({}),
                    row.as_ref(),
                );
                // A simulation records nothing but its audit row.
                if let (true, Ok(_), Some(row)) = (simulate, &result, &row) {
                    audit::write(&state.shared.store, row);
                }
                let _ = reply.send(result);
            }
            RepoMsg::Event {
                channel,
                payload,
                before_run,
                reply,
            } => {
                let queued = state.event(&myself, &channel, payload, before_run.as_ref())?;
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
            RepoMsg::JobStarted { run, job, pgid } => state.job_started(&run, &job, pgid)?,
            RepoMsg::JobLines { run, job, lines } => state.job_lines(&run, &job, lines)?,
            RepoMsg::RunLogs { key, after, reply } => {
                let result = match state.shared.store.run_state(&state.name, &key) {
                    Ok(Some(run_state)) => state
                        .shared
                        .store
                        .run_logs(&key, after, 10_000)
                        .map(|lines| (lines, run_state))
                        .map_err(Into::into),
                    Ok(None) => Err(AysError::NotFound(format!("run {key:?} not found"))),
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
            RepoMsg::CancelRun {
                key,
                who,
                audit,
                reply,
            } => {
                let row = ok_row(audit);
                let _ = reply.send(state.cancel(&myself, &key, &who, row.as_ref()));
            }
            RepoMsg::RunDone { run, error } => state.run_done(&myself, &run, error)?,
            RepoMsg::Tick => state.tick(&myself)?,
            RepoMsg::Crash => panic!("fault injection: repository actor crashed on request"),
        }
        Ok(())
    }
}
