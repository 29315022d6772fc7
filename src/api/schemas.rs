//! The shapes of the JSON the API answers, for the OpenAPI document (`utoipa`).
//!
//! Request bodies derive their schema on the very types the handlers parse (`api::ays`); the
//! answers are built by the actors' own view types, which stay free of HTTP concerns, so their
//! shapes are described here. Schemathesis (`scripts/schemathesis.sh`, run in CI) checks every
//! answer of the real server against these, so a drift fails CI.

#![allow(dead_code)]

use utoipa::{IntoResponses, ToSchema};

/// Every error: what went wrong and what to do about it.
#[derive(ToSchema)]
pub struct Error {
    /// The message.
    pub error: String,
}

/// A blueprint refused as a whole: every problem at once.
#[derive(ToSchema)]
pub struct Problems {
    /// The problems joined with `; `.
    pub error: String,
    /// Each problem.
    pub problems: Vec<String>,
}

/// A repository.
#[derive(ToSchema)]
pub struct Repo {
    /// Its name.
    pub name: String,
    /// Its directory on the server.
    pub path: String,
    /// The git remote it was cloned from.
    pub git_url: Option<String>,
}

/// A blueprint.
#[derive(ToSchema)]
pub struct Blueprint {
    /// File name, extension included.
    pub name: String,
    /// The YAML text.
    pub content: String,
    /// SHA-256 of the content, hex.
    pub hash: String,
    /// Whether it is archived.
    pub archived: bool,
}

/// What executing a blueprint created or changed.
#[derive(ToSchema)]
pub struct Executed {
    /// The blueprint.
    pub blueprint: String,
    /// Keys (`role!name`) of the services created or changed.
    pub services: Vec<String>,
}

/// A service in lists.
#[derive(ToSchema)]
pub struct ServiceSummary {
    /// `role!name`.
    pub key: String,
    /// Its role.
    pub role: String,
    /// Its instance name.
    pub name: String,
    /// Its actor template.
    pub actor: String,
    /// Its state (`new`, `changed`, `ok`, `error`...).
    pub state: String,
}

/// A role and instance name.
#[derive(ToSchema)]
pub struct ServiceRef {
    /// The role.
    pub role: String,
    /// The instance name.
    pub name: String,
}

/// An action of a service and its state.
#[derive(ToSchema)]
pub struct ActionOfService {
    /// The action.
    pub name: String,
    /// Its state.
    pub state: String,
}

/// A service in full.
#[derive(ToSchema)]
pub struct Service {
    /// `role!name`.
    pub key: String,
    /// Its role.
    pub role: String,
    /// Its instance name.
    pub name: String,
    /// Its actor template.
    pub actor: String,
    /// Its state.
    pub state: String,
    /// Its data: the schema's fields and what actions returned.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Its parent.
    pub parent: Option<ServiceRef>,
    /// What it consumes.
    pub producers: Vec<ServiceRef>,
    /// What consumes it.
    pub consumers: Vec<ServiceRef>,
    /// Its actions and their states.
    pub actions: Vec<ActionOfService>,
}

/// An actor template.
#[derive(ToSchema)]
pub struct Template {
    /// The actor name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// `schema.yaml` as written.
    pub schema: String,
    /// The action names.
    pub actions: Vec<String>,
    /// `config.yaml` as written.
    pub config: Option<String>,
    /// Each action's code, in `GET …/template/{name}` (not in the list): its text up to 64 KiB,
    /// or a note saying why not.
    pub code: Option<std::collections::BTreeMap<String, String>>,
}

/// One log line of a job.
#[derive(ToSchema)]
pub struct LogLine {
    /// Unix seconds (fractional) when the line was read.
    pub epoch: f64,
    /// `stdout`, `stderr` or `error`.
    pub level: String,
    /// The line.
    pub log: String,
}

/// One job of a run.
#[derive(ToSchema)]
pub struct Job {
    /// The job key.
    pub key: String,
    /// The action.
    pub action_name: String,
    /// The service's actor template.
    pub actor_name: String,
    /// The service's instance name.
    pub service_name: String,
    /// `role!name`.
    pub service_key: String,
    /// `new`, `running`, `ok`, `error` or `cancelled`.
    pub state: String,
    /// Its output.
    pub logs: Vec<LogLine>,
    /// When its process started (Unix ms), once it has.
    pub started_ms: Option<i64>,
    /// When it ended (Unix ms), once it has (none for a job cut short).
    pub ended_ms: Option<i64>,
}

/// One step of a run: jobs that run together.
#[derive(ToSchema)]
pub struct Step {
    /// From 1.
    pub number: u32,
    /// Its jobs.
    pub jobs: Vec<Job>,
}

/// A run.
#[derive(ToSchema)]
pub struct Run {
    /// The run key.
    pub key: String,
    /// `new`, `running`, `ok`, `error` or `cancelled`.
    pub state: String,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// End time, Unix seconds.
    pub ended: Option<i64>,
    /// Why it failed.
    #[schema(required = false)]
    pub error: Option<String>,
    /// Where the result is POSTed when it ends.
    #[schema(required = false)]
    pub callback_url: Option<String>,
    /// Who asked for it.
    #[schema(value_type = Object, required = false)]
    pub origin: serde_json::Value,
    /// The run a crash cut short that this one repeats (its unfinished jobs); the run cut short
    /// names this one in its `error`.
    #[schema(required = false)]
    pub again_of: Option<String>,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// An actor's state in `/health`.
#[derive(ToSchema)]
pub struct ActorHealth {
    /// `up`, `restarting` or `down`.
    pub status: String,
    /// Restarts so far.
    pub restarts: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// `/health`.
#[derive(ToSchema)]
pub struct Health {
    /// `ok` when every actor is up, else `degraded`.
    pub status: String,
    /// Each actor by name.
    pub actors: std::collections::HashMap<String, ActorHealth>,
    /// On PostgreSQL: `up`, or why the database does not answer.
    pub database: Option<String>,
    /// On PostgreSQL: `active` (this replica holds the store; a standby says `standby`).
    pub role: Option<String>,
}

/// A request `[access] two_person` holds until a second admin approves it (`202`, within 24
/// hours); nothing was done yet. (A body of a path's own response, so the document collects it.)
#[derive(ToSchema)]
pub struct Held {
    /// The approval's id: `POST /auth/approvals/{id}` (or `/approve <id>` in Telegram) by
    /// another admin carries the action out.
    pub approval: String,
    /// The held action (`repo.delete`...).
    pub action: String,
    /// What it acts on.
    pub target: String,
    /// What to do, in a sentence.
    pub error: String,
}

/// What the JWT guard of `/ays/*` answers instead of the route.
#[derive(IntoResponses)]
pub enum AuthFailures {
    /// No token, or a token that is invalid, expired or not a member's.
    #[response(status = 401)]
    Unauthorized(Error),
    /// The caller's role is below the one the route needs (the message names it), or a
    /// state-changing request with the `jwt` cookie is not from this site, or not JSON.
    #[response(status = 403)]
    CrossSite(Error),
    /// This client has too many token verifications waiting; retry after `Retry-After` seconds.
    #[response(status = 429, headers(("retry-after" = u32, description = "Seconds to wait")))]
    TooMany(Error),
    /// The token verifier is saturated; retry after `Retry-After` seconds.
    #[response(status = 503, headers(("retry-after" = u32, description = "Seconds to wait")))]
    Busy(Error),
}

/// What a repository route answers when the repository, or what is named in it, is not there,
/// or the engine fails.
#[derive(IntoResponses)]
pub enum RepoFailures {
    /// The repository (or the blueprint, service, template, run named) does not exist.
    #[response(status = 404)]
    NotFound(Error),
    /// The engine failed (a store or file-system error).
    #[response(status = 500)]
    Internal(Error),
}

/// What a route with a JSON body answers when the body is not right.
#[derive(IntoResponses)]
pub enum BodyFailures {
    /// The body is not JSON of the documented shape, or a value is refused.
    #[response(status = 400)]
    BadRequest(Error),
    /// The body is over 4 MiB.
    #[response(status = 413)]
    TooLarge(Error),
}

/// Anonymous routes that are rate-limited per client address.
#[derive(IntoResponses)]
pub enum RateFailures {
    /// Too many requests from this address; retry after `Retry-After` seconds.
    #[response(status = 429, headers(("retry-after" = u32, description = "Seconds to wait")))]
    TooMany(Error),
}
