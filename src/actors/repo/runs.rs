//! The run lifecycle of a repository: plan, record, start, step, job done, run done, queue, and
//! the recurring actions that start runs by themselves.
//!
//! States: a run is recorded `new`, becomes `running` when its driver starts, and ends `ok` or
//! `error`; one run at a time per repository, the others wait `new` in the queue. Every change
//! is written to the store before it is acted on, and every start and end is published as a
//! [`Notice`] for the doors.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use ractor::ActorRef;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::driver::{AbortOnDrop, PreparedJob, drive, post_callback, random_key};
use super::{MAX_LOG_LINES, RepoMsg, RepoState};
use crate::actors::error::AysError;
use crate::actors::notice::Notice;
use crate::clock;
use crate::engine::{self, ActionState, ServiceState};
use crate::runner::{self, ActionJob, ActionOutcome};
use crate::store::{JobRecord, JobState, LogRecord, Origin, RunRecord, RunState, StepRecord};

/// The run in progress.
pub(super) struct ActiveRun {
    /// Its key.
    pub key: String,
    /// Its jobs by step: (job key, service key, action).
    pub steps: Vec<Vec<(String, String, String)>>,
    /// The args every job gets (an event's payload; `{}` otherwise).
    pub args: Value,
    /// Where to POST the result.
    pub callback_url: Option<String>,
    /// Who asked for it (handed back in the end notice).
    pub origin: Origin,
    /// The task executing it.
    pub _driver: AbortOnDrop,
}

/// A run recorded and waiting for the one in progress.
pub(super) struct QueuedRun {
    /// The record (state `new`).
    pub record: RunRecord,
    /// The args its jobs get.
    pub args: Value,
}

/// The runs of a repository: the one in progress, those waiting, and the recurring clock.
#[derive(Default)]
pub(super) struct Runs {
    /// The run in progress.
    pub active: Option<ActiveRun>,
    /// Runs waiting for it.
    pub queue: VecDeque<QueuedRun>,
    /// A recurring action became due while a run was in progress: plan again after it.
    pub replan: bool,
    /// When each recurring (service, action) last became due.
    pub recurring: std::collections::HashMap<(String, String), Instant>,
}

impl RepoState {
    /// Marks runs left `new`/`running` as `error` and the actions they had running as `error`.
    pub(super) fn interrupt(&mut self, reason: &str) -> Result<(), AysError> {
        let cut = self
            .shared
            .store
            .interrupt_runs(&self.name, reason, clock::now_secs())?;
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
        origin: Origin,
    ) -> RunRecord {
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
                            state: JobState::New,
                            logs: Vec::new(),
                        }
                    })
                    .collect(),
            })
            .collect();
        RunRecord {
            key: random_key(),
            repo: self.name.clone(),
            state: RunState::New,
            created: clock::now_secs(),
            ended: None,
            error: None,
            callback_url,
            origin,
            steps,
        }
    }

    /// Plans a run from every scheduled, changed or failed action; records and starts it unless
    /// `simulate`.
    pub(super) fn create_run(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        simulate: bool,
        callback_url: Option<String>,
        origin: Origin,
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
        if self.runs.active.is_some() {
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
            .set_run_state(&record.key, RunState::Running, None, None)?;
        record.state = RunState::Running;
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
        self.shared.telemetry.count("runs_started", 1);
        self.shared.notices.publish(Notice::RunStarted {
            repo: self.name.clone(),
            run: record.key.clone(),
            origin: record.origin.clone(),
        });
        self.runs.active = Some(ActiveRun {
            key: record.key.clone(),
            steps,
            args,
            callback_url: record.callback_url.clone(),
            origin: record.origin.clone(),
            _driver: AbortOnDrop(driver),
        });
        Ok(record)
    }

    /// An event: one run of every subscribed action, with the payload as args; queued behind the
    /// run in progress. Returns how many jobs it has.
    pub(super) fn event(
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
        let origin = Origin::Event {
            channel: channel.to_string(),
        };
        let record = self.record(vec![jobs], None, origin);
        self.shared.store.insert_run(&record)?;
        if self.runs.active.is_some() {
            self.runs.queue.push_back(QueuedRun {
                record,
                args: payload,
            });
        } else {
            self.start(myself, record, payload)?;
        }
        Ok(count)
    }

    /// Marks a step's jobs running and prepares their processes.
    pub(super) fn start_step(
        &mut self,
        run: &str,
        step: usize,
    ) -> Result<Vec<PreparedJob>, AysError> {
        let Some(active) = self.runs.active.as_ref().filter(|a| a.key == run) else {
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
                .files
                .dir()
                .join("services")
                .join(&service.role)
                .join(&service.name);
            std::fs::create_dir_all(&cwd).map_err(|err| super::files::io_error(&cwd, err))?;
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
                    program: self.files.action_program(&service.actor, &action),
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
            self.shared
                .store
                .finish_job(&job_key, JobState::Running, &[])?;
        }
        self.save(touched.iter(), &[])?;
        Ok(prepared)
    }

    /// Records a job's outcome: its state, logs and the data it returned.
    pub(super) fn job_done(
        &mut self,
        run: &str,
        job: &str,
        outcome: ActionOutcome,
    ) -> Result<(), AysError> {
        let Some(active) = self.runs.active.as_ref().filter(|a| a.key == run) else {
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
                epoch: clock::now_secs_f64(),
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
        let state = if ok { JobState::Ok } else { JobState::Error };
        self.shared.store.finish_job(job, state, &logs)?;
        self.save(std::iter::once(&service_key), &[])?;
        if !ok {
            let error = outcome.error.as_deref().unwrap_or("failed");
            warn!(repo = %self.name, %run, %job, service = %service_key, %action, %error, "job failed");
        }
        self.shared.notices.publish(Notice::JobEnded {
            repo: self.name.clone(),
            run: run.to_string(),
            job: job.to_string(),
            service: service_key,
            action,
            state,
        });
        Ok(())
    }

    /// Ends the run in progress, tells whoever waits, and starts the next one.
    pub(super) fn run_done(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        run: &str,
        error: Option<String>,
    ) -> Result<(), AysError> {
        let Some(active) = self.runs.active.take_if(|a| a.key == run) else {
            return Ok(());
        };
        let state = if error.is_some() {
            RunState::Error
        } else {
            RunState::Ok
        };
        self.shared
            .store
            .set_run_state(run, state, Some(clock::now_secs()), error.as_deref())?;
        match &error {
            Some(error) => warn!(repo = %self.name, %run, %state, %error, "run ended"),
            None => info!(repo = %self.name, %run, %state, "run ended"),
        }
        self.shared.telemetry.count(&format!("runs_{state}"), 1);
        if let Some(url) = active.callback_url {
            let mut body = json!({"key": run, "state": state});
            if let Some(error) = &error {
                body["error"] = json!(error);
            }
            tokio::spawn(post_callback(self.http.clone(), url, body));
        }
        self.shared.notices.publish(Notice::RunEnded {
            repo: self.name.clone(),
            run: run.to_string(),
            state,
            error,
            origin: active.origin,
        });
        if let Some(next) = self.runs.queue.pop_front() {
            self.start(myself, next.record, next.args)?;
        } else if std::mem::take(&mut self.runs.replan) {
            self.start_planned(myself)?;
        }
        Ok(())
    }

    /// Plans and starts a run when there is anything to do (recurring actions).
    fn start_planned(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        match self.create_run(myself, false, None, Origin::Schedule) {
            Ok(_) => Ok(()),
            Err(AysError::Invalid(why)) => {
                warn!(repo = %self.name, "recurring run not started: {}", why.join("; "));
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Schedules the recurring actions that are due, and runs them unless a run is in progress.
    pub(super) fn tick(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        let now = Instant::now();
        let mut due = Vec::new();
        for service in self.services.values() {
            for (action, period) in &service.recurring {
                let id = (service.key.clone(), action.clone());
                let last = *self.runs.recurring.entry(id.clone()).or_insert(now);
                if now.duration_since(last) >= Duration::from_secs((*period).max(1)) {
                    due.push(id);
                }
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        for (key, action) in &due {
            self.runs
                .recurring
                .insert((key.clone(), action.clone()), now);
            if let Err(err) = engine::schedule_action(&mut self.services, key, action) {
                warn!(repo = %self.name, %key, %action, %err, "recurring action not scheduled");
            }
        }
        self.save(due.iter().map(|(k, _)| k), &[])?;
        if self.runs.active.is_some() {
            self.runs.replan = true;
            Ok(())
        } else {
            self.start_planned(myself)
        }
    }
}
