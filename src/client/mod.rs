//! The core's facade: a typed client of the AYS actors that every door calls
//! (`client.list_repos()`, `client.put_blueprint(repo, name, text)`, `client.create_run(...)`),
//! answering with the [`views`] the doors show. The actors' message enums stay behind it.
//!
//! The client finds the `Ays` actor by its registered name at each call, so a restarted actor is
//! reached without handing new references around; a call that gets no answer within
//! [`CALL_TIMEOUT`] is an internal error, never a hang.
//!
//! Every command that changes something takes the door's [`Audit`] entry (`None`: not audited,
//! e.g. a step of a larger command): the core writes its `ok` row in the store transaction of
//! the change (right after the write for blueprint files, which no transaction spans). A command
//! that fails changed nothing; its door writes the `error` row.

pub mod views;

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde_json::Value;

use crate::actors::ays::AysMsg;
pub use crate::actors::error::AysError;
pub use crate::actors::event::BeforeRun;
use crate::actors::names;
use crate::actors::repo::RepoMsg;
pub use crate::auth::audit::Audit;
use crate::store::Origin;
use views::{
    BlueprintView, ExecuteView, RepoView, RunView, ServiceSummary, ServiceView, TemplateView,
};

/// How long a caller waits for an AYS actor's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a new run is: plan only, where to report, who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Plan only: nothing is recorded or run.
    pub simulate: bool,
    /// Where to POST the result when it ends.
    pub callback_url: Option<String>,
    /// Who asks.
    pub origin: Origin,
    /// The command's audit entry: its `ok` row is written with the run.
    pub audit: Option<Audit>,
}

/// The typed client of the AYS engine. Cheap to copy; holds no actor reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct AysClient;

/// How long a caller waits for a repository created from a git remote: longer than the clone
/// may take ([`crate::actors::ays::CLONE_TIMEOUT`]), so the caller learns the real outcome.
const CREATE_TIMEOUT: Duration = Duration::from_secs(330);

/// Asks the Ays actor.
async fn ask_ays<T: Send + 'static>(
    msg: impl FnOnce(RpcReplyPort<Result<T, AysError>>) -> AysMsg,
) -> Result<T, AysError> {
    ask_ays_within(CALL_TIMEOUT, msg).await
}

/// What a caller hears while the Ays actor is not running.
fn restarting() -> AysError {
    AysError::Internal("the AYS engine is restarting; retry".into())
}

/// Asks the Ays actor, waiting at most `timeout` for the answer.
async fn ask_ays_within<T: Send + 'static>(
    timeout: Duration,
    msg: impl FnOnce(RpcReplyPort<Result<T, AysError>>) -> AysMsg,
) -> Result<T, AysError> {
    let ays = ActorRef::<AysMsg>::where_is(names::AYS).ok_or_else(restarting)?;
    ractor::call_t!(ays, msg, timeout.as_millis() as u64)
        .map_err(|err| AysError::Internal(format!("the AYS engine did not answer: {err}")))?
}

/// Asks the actor of repository `repo` (404 when there is no such repository).
async fn ask_repo<T: Send + 'static>(
    repo: &str,
    msg: impl FnOnce(RpcReplyPort<Result<T, AysError>>) -> RepoMsg,
) -> Result<T, AysError> {
    let name = repo.to_string();
    let actor = ask_ays(|reply| AysMsg::Repo { name, reply }).await?;
    ractor::call_t!(actor, msg, CALL_TIMEOUT.as_millis() as u64)
        .map_err(|err| AysError::Internal(format!("repository {repo} did not answer: {err}")))?
}

/// Converts every item.
fn all<T, V: From<T>>(items: Vec<T>) -> Vec<V> {
    items.into_iter().map(V::from).collect()
}

impl AysClient {
    /// Every repository.
    pub async fn list_repos(&self) -> Result<Vec<RepoView>, AysError> {
        // A read of what the Ays actor published, not a message: the most frequent call.
        let listing = crate::actors::ays::listing().ok_or_else(restarting)?;
        Ok(listing.iter().map(RepoView::from).collect())
    }

    /// [`AysClient::list_repos`] as its JSON body, serialised once per listing the `Ays` actor
    /// publishes (it changes when a repository is created or deleted; it is read on every
    /// `GET /ays/repository`).
    pub async fn list_repos_json(&self) -> Result<bytes::Bytes, AysError> {
        type Cached = Option<(Arc<[crate::actors::ays::RepoInfo]>, bytes::Bytes)>;
        static CACHE: parking_lot::Mutex<Cached> = parking_lot::const_mutex(None);
        let listing = crate::actors::ays::listing().ok_or_else(restarting)?;
        if let Some((cached, json)) = &*CACHE.lock()
            && Arc::ptr_eq(cached, &listing)
        {
            return Ok(json.clone());
        }
        let views: Vec<RepoView> = listing.iter().map(RepoView::from).collect();
        let json = bytes::Bytes::from(
            serde_json::to_vec(&views).map_err(|err| AysError::Internal(err.to_string()))?,
        );
        *CACHE.lock() = Some((listing, json.clone()));
        Ok(json)
    }

    /// Creates a repository, cloning `git_url` into it when given.
    pub async fn create_repo(
        &self,
        name: String,
        git_url: Option<String>,
        audit: Option<Audit>,
    ) -> Result<RepoView, AysError> {
        let timeout = match git_url {
            Some(_) => CREATE_TIMEOUT,
            None => CALL_TIMEOUT,
        };
        ask_ays_within(timeout, |reply| AysMsg::CreateRepo {
            name,
            git_url,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// One repository.
    pub async fn get_repo(&self, name: String) -> Result<RepoView, AysError> {
        ask_ays(|reply| AysMsg::GetRepo { name, reply })
            .await
            .map(Into::into)
    }

    /// Carries out an action a second admin approved (`[access].two_person`): a deletion of
    /// `demo`, `demo/web.yaml` or `demo/role/name`: `audit` names the action and its target.
    pub async fn carry_out(&self, audit: Audit) -> Result<(), AysError> {
        use crate::auth::access::Action;
        let (action, target) = (audit.action, audit.target.clone());
        let parts: Vec<&str> = target.split('/').collect();
        let audit = Some(audit);
        match (action, parts.as_slice()) {
            (Action::RepoDelete, [repo]) => self.delete_repo(repo.to_string(), audit).await,
            (Action::BlueprintDelete, [repo, name]) => {
                self.delete_blueprint(repo, name.to_string(), audit).await
            }
            (Action::ServiceDelete, [repo, role, name]) => self
                .delete_service(repo, role.to_string(), name.to_string(), audit)
                .await
                .map(|_| ()),
            _ => Err(AysError::BadRequest(format!(
                "{} on {target:?} cannot be held for approval",
                action.as_str()
            ))),
        }
    }

    /// Deletes a repository with its files, services and runs.
    pub async fn delete_repo(&self, name: String, audit: Option<Audit>) -> Result<(), AysError> {
        ask_ays(|reply| AysMsg::DeleteRepo { name, audit, reply }).await
    }

    /// The blueprints of a repository (archived ones too when asked).
    pub async fn list_blueprints(
        &self,
        repo: &str,
        archived: bool,
    ) -> Result<Vec<BlueprintView>, AysError> {
        ask_repo(repo, |reply| RepoMsg::ListBlueprints { archived, reply })
            .await
            .map(all)
    }

    /// One blueprint.
    pub async fn get_blueprint(&self, repo: &str, name: String) -> Result<BlueprintView, AysError> {
        ask_repo(repo, |reply| RepoMsg::GetBlueprint { name, reply })
            .await
            .map(Into::into)
    }

    /// Creates (`create`: 409 if it exists) or replaces (404 if missing) a blueprint.
    pub async fn put_blueprint(
        &self,
        repo: &str,
        name: String,
        content: String,
        create: bool,
        audit: Option<Audit>,
    ) -> Result<BlueprintView, AysError> {
        ask_repo(repo, |reply| RepoMsg::PutBlueprint {
            name,
            content,
            create,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// Deletes a blueprint.
    pub async fn delete_blueprint(
        &self,
        repo: &str,
        name: String,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        ask_repo(repo, |reply| RepoMsg::DeleteBlueprint {
            name,
            audit,
            reply,
        })
        .await
    }

    /// Every problem executing blueprint text `content` (as file `name`) would meet against the
    /// repository's templates and services; none when it would execute. Changes nothing.
    pub async fn check_blueprint(
        &self,
        repo: &str,
        name: String,
        content: String,
    ) -> Result<Vec<String>, AysError> {
        ask_repo(repo, |reply| RepoMsg::CheckBlueprint {
            name,
            content,
            reply,
        })
        .await
    }

    /// Executes a blueprint into services (all or nothing).
    pub async fn execute_blueprint(
        &self,
        repo: &str,
        name: String,
        audit: Option<Audit>,
    ) -> Result<ExecuteView, AysError> {
        let blueprint = name.clone();
        let services = ask_repo(repo, |reply| RepoMsg::ExecuteBlueprint {
            name,
            audit,
            reply,
        })
        .await?;
        Ok(ExecuteView {
            blueprint,
            services,
        })
    }

    /// Archives or restores a blueprint.
    pub async fn archive_blueprint(
        &self,
        repo: &str,
        name: String,
        archived: bool,
        audit: Option<Audit>,
    ) -> Result<BlueprintView, AysError> {
        ask_repo(repo, |reply| RepoMsg::ArchiveBlueprint {
            name,
            archived,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// The services of a repository, all or of one role.
    pub async fn list_services(
        &self,
        repo: &str,
        role: Option<String>,
    ) -> Result<Vec<ServiceSummary>, AysError> {
        ask_repo(repo, |reply| RepoMsg::ListServices { role, reply })
            .await
            .map(all)
    }

    /// One service in full.
    pub async fn get_service(
        &self,
        repo: &str,
        role: String,
        name: String,
    ) -> Result<ServiceView, AysError> {
        ask_repo(repo, |reply| RepoMsg::GetService { role, name, reply })
            .await
            .map(Into::into)
    }

    /// Deletes a service and its children; the removed keys.
    pub async fn delete_service(
        &self,
        repo: &str,
        role: String,
        name: String,
        audit: Option<Audit>,
    ) -> Result<Vec<String>, AysError> {
        ask_repo(repo, |reply| RepoMsg::DeleteService {
            role,
            name,
            audit,
            reply,
        })
        .await
    }

    /// Schedules one action of a service; `args` (a JSON object of at most
    /// [`MAX_ARGS_BYTES`]) are given to its job by the next run.
    pub async fn schedule_action(
        &self,
        repo: &str,
        role: String,
        name: String,
        action: String,
        args: Option<Value>,
        audit: Option<Audit>,
    ) -> Result<ServiceView, AysError> {
        if let Some(args) = &args {
            check_args(args)?;
        }
        ask_repo(repo, |reply| RepoMsg::ScheduleAction {
            role,
            name,
            action,
            args,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// The actor templates of a repository.
    pub async fn list_templates(&self, repo: &str) -> Result<Vec<TemplateView>, AysError> {
        ask_repo(repo, |reply| RepoMsg::ListTemplates { reply })
            .await
            .map(all)
    }

    /// One actor template, with its actions' code.
    pub async fn get_template(&self, repo: &str, name: &str) -> Result<TemplateView, AysError> {
        let name = name.to_string();
        ask_repo(repo, |reply| RepoMsg::GetTemplate { name, reply })
            .await
            .map(Into::into)
    }

    /// The runs of a repository, newest first, without their steps.
    pub async fn list_runs(&self, repo: &str) -> Result<Vec<RunView>, AysError> {
        ask_repo(repo, |reply| RepoMsg::ListRuns { reply })
            .await
            .map(all)
    }

    /// One page of the runs of a repository, newest first, without their steps: at most
    /// `limit`, only those in `state` when given, from `cursor` (from a previous page) on; and
    /// the cursor of the next page when more follow. A cursor that is not ours is a bad request.
    pub async fn list_runs_page(
        &self,
        repo: &str,
        state: Option<crate::store::RunState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RunView>, Option<String>), AysError> {
        let after = match cursor {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                AysError::BadRequest(
                    "cursor is not one this server gave: use the next cursor of a previous page"
                        .into(),
                )
            })?),
        };
        let (runs, next) = ask_repo(repo, |reply| RepoMsg::ListRunsPage {
            state,
            after,
            limit,
            reply,
        })
        .await?;
        Ok((all(runs), next.map(encode_cursor)))
    }

    /// One run with its steps, jobs and logs.
    pub async fn get_run(&self, repo: &str, key: String) -> Result<RunView, AysError> {
        ask_repo(repo, |reply| RepoMsg::GetRun { key, reply })
            .await
            .map(Into::into)
    }

    /// Plans a run of everything due and starts it (or only plans it).
    pub async fn create_run(&self, repo: &str, request: RunRequest) -> Result<RunView, AysError> {
        ask_repo(repo, |reply| RepoMsg::CreateRun {
            simulate: request.simulate,
            callback_url: request.callback_url,
            origin: request.origin,
            audit: request.audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// Plans the actions of run `key` again, with the same args, as a new run (queued behind
    /// the run in progress, if any).
    pub async fn rerun(
        &self,
        repo: &str,
        key: String,
        origin: Origin,
        audit: Option<Audit>,
    ) -> Result<RunView, AysError> {
        ask_repo(repo, |reply| RepoMsg::RerunRun {
            key,
            origin,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// The log lines of a run after sequence number `after` (at most 10,000), and its state.
    pub async fn run_logs(
        &self,
        repo: &str,
        key: String,
        after: i64,
    ) -> Result<(Vec<views::LogLineView>, crate::store::RunState), AysError> {
        let (lines, state) = ask_repo(repo, |reply| RepoMsg::RunLogs { key, after, reply }).await?;
        let lines = lines
            .into_iter()
            .map(|(seq, job, line)| views::LogLineView::new(seq, job, line))
            .collect();
        Ok((lines, state))
    }

    /// Cancels a running or queued run; `who` is recorded with it.
    pub async fn cancel_run(
        &self,
        repo: &str,
        key: String,
        who: &str,
        audit: Option<Audit>,
    ) -> Result<RunView, AysError> {
        let who = who.to_string();
        ask_repo(repo, |reply| RepoMsg::CancelRun {
            key,
            who,
            audit,
            reply,
        })
        .await
        .map(Into::into)
    }

    /// Hands an inbound event to every repository; `id` is its stored id when the door recorded
    /// it (it is then marked processed once delivered). False when the engine is not running
    /// (a recorded event then waits in the store for its next start).
    pub fn event(&self, id: Option<i64>, channel: &str, payload: Value) -> bool {
        self.event_before_run(id, channel, payload, None)
    }

    /// [`AysClient::event`], with work done once before the first run the event starts, and only
    /// if it starts one (the mail door writes the mail's file then).
    pub fn event_before_run(
        &self,
        id: Option<i64>,
        channel: &str,
        payload: Value,
        before_run: Option<BeforeRun>,
    ) -> bool {
        ActorRef::<AysMsg>::where_is(names::AYS).is_some_and(|ays| {
            ays.cast(AysMsg::Event {
                id,
                channel: channel.to_string(),
                payload,
                before_run,
            })
            .is_ok()
        })
    }
}

/// The most bytes the args of one scheduled action may take as JSON: they travel in the job's
/// environment (`COCKPIT_ARGS`), which the OS bounds.
pub const MAX_ARGS_BYTES: usize = 16 * 1024;

/// Args must be a JSON object of at most [`MAX_ARGS_BYTES`].
fn check_args(args: &Value) -> Result<(), AysError> {
    if !args.is_object() {
        return Err(AysError::Invalid(vec![
            "args must be a JSON object of names to values".into(),
        ]));
    }
    let size = args.to_string().len();
    if size > MAX_ARGS_BYTES {
        return Err(AysError::Invalid(vec![format!(
            "args take {size} bytes as JSON; at most {MAX_ARGS_BYTES} are allowed"
        )]));
    }
    Ok(())
}

/// A page cursor: where the page ended, `(created, rowid)`, as opaque URL-safe text.
fn encode_cursor((created, rowid): (i64, i64)) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created}.{rowid}"))
}

/// Reads a cursor made by [`encode_cursor`].
fn decode_cursor(cursor: &str) -> Option<(i64, i64)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (created, rowid) = text.split_once('.')?;
    Some((created.parse().ok()?, rowid.parse().ok()?))
}
