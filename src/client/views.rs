//! What the doors show of the core: the JSON bodies of the REST API (SPEC §5), also what the bot
//! renders. Built from the core's records at the boundary, so a store record never doubles as an
//! HTTP body and the actors do not care how things are shown.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::actors::ays::RepoInfo;
use crate::actors::repo::files::{Blueprint, TemplateFiles};
use crate::engine::{self, ActionState, Service, ServiceState};
use crate::store::{JobRecord, JobState, LogRecord, RunRecord, RunState, StepRecord};

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoView {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub path: String,
    /// The git remote it was cloned from, if any.
    pub git_url: Option<String>,
}

impl From<RepoInfo> for RepoView {
    fn from(info: RepoInfo) -> Self {
        RepoView {
            name: info.record.name,
            path: info.dir.display().to_string(),
            git_url: info.record.git_url,
        }
    }
}

impl From<&RepoInfo> for RepoView {
    fn from(info: &RepoInfo) -> Self {
        RepoView {
            name: info.record.name.clone(),
            path: info.dir.display().to_string(),
            git_url: info.record.git_url.clone(),
        }
    }
}

/// A blueprint.
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

impl From<Blueprint> for BlueprintView {
    fn from(b: Blueprint) -> Self {
        BlueprintView {
            hash: hex::encode(Sha256::digest(b.content.as_bytes())),
            name: b.name,
            content: b.content,
            archived: b.archived,
        }
    }
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

impl From<Service> for ServiceSummary {
    fn from(s: Service) -> Self {
        ServiceSummary {
            key: s.key,
            role: s.role,
            name: s.name,
            actor: s.actor,
            state: s.state,
        }
    }
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

fn ref_view(r: &engine::ServiceRef) -> RefView {
    RefView {
        role: r.role.clone(),
        name: r.name.clone(),
    }
}

impl From<Service> for ServiceView {
    fn from(s: Service) -> Self {
        ServiceView {
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
            key: s.key,
            role: s.role,
            name: s.name,
            actor: s.actor,
            state: s.state,
            data: s.data,
        }
    }
}

/// An actor template.
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
    /// Each action's code, in the view of one template (not in listings).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub code: BTreeMap<String, String>,
}

impl From<TemplateFiles> for TemplateView {
    fn from(t: TemplateFiles) -> Self {
        TemplateView {
            name: t.name,
            role: t.role,
            schema: t.schema,
            actions: t.actions,
            config: t.config,
            code: t.code,
        }
    }
}

/// One log line of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogView {
    /// Unix seconds (fractional) when the line was read.
    pub epoch: f64,
    /// `stdout`, `stderr` or `error` (cockpit's own words about the job).
    pub level: String,
    /// The line.
    pub log: String,
}

/// One job of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// Unique job key.
    pub key: String,
    /// The action run.
    pub action_name: String,
    /// The service's actor (template) name.
    pub actor_name: String,
    /// The service's instance name.
    pub service_name: String,
    /// The service key (`role!name`).
    pub service_key: String,
    /// `new`, `running`, `ok`, `error` or `cancelled`.
    pub state: JobState,
    /// What the job printed.
    pub logs: Vec<LogView>,
    /// When its process started (Unix ms), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// When it ended (Unix ms), once it has (none for a job cut short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
}

/// A step of a run: jobs that run in parallel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// 1-based step number.
    pub number: u32,
    /// The step's jobs.
    pub jobs: Vec<JobView>,
}

/// A run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// Unique run key.
    pub key: String,
    /// `new`, `running`, `ok`, `error` or `cancelled`.
    pub state: RunState,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// End time, Unix seconds, once ended.
    pub ended: Option<i64>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where to POST the result when it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Who asked for it (`{"api": true}`, `{"chat": 42}`, `{"event": "email"}`...).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub origin: Value,
    /// The run a crash cut short that this one repeats (its unfinished jobs); the run cut short
    /// names this one in its `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub again_of: Option<String>,
    /// The steps with their jobs.
    pub steps: Vec<StepView>,
}

fn log_view(l: LogRecord) -> LogView {
    LogView {
        epoch: l.epoch,
        level: l.level,
        log: l.log,
    }
}

fn job_view(j: JobRecord) -> JobView {
    JobView {
        key: j.key,
        action_name: j.action_name,
        actor_name: j.actor_name,
        service_name: j.service_name,
        service_key: j.service_key,
        state: j.state,
        logs: j.logs.into_iter().map(log_view).collect(),
        started_ms: j.started_ms,
        ended_ms: j.ended_ms,
    }
}

fn step_view(s: StepRecord) -> StepView {
    StepView {
        number: s.number,
        jobs: s.jobs.into_iter().map(job_view).collect(),
    }
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            origin: r.origin.to_json(),
            key: r.key,
            state: r.state,
            created: r.created,
            ended: r.ended,
            error: r.error,
            callback_url: r.callback_url,
            again_of: r.again_of,
            steps: r.steps.into_iter().map(step_view).collect(),
        }
    }
}

/// One line of a run's log, with its place in it (the SSE event id).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLineView {
    /// Its sequence number in the run's log.
    #[serde(skip)]
    pub seq: i64,
    /// The job that printed it.
    pub job: String,
    /// Unix seconds (fractional) when the line was read.
    pub epoch: f64,
    /// `stdout`, `stderr` or `error`.
    pub level: String,
    /// The line.
    pub log: String,
}

impl LogLineView {
    /// A stored line of `job`.
    pub fn new(seq: i64, job: String, line: LogRecord) -> LogLineView {
        LogLineView {
            seq,
            job,
            epoch: line.epoch,
            level: line.level,
            log: line.log,
        }
    }
}
