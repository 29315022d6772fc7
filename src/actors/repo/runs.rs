//! The run lifecycle of a repository: plan, record, start, step, job done, run done, queue, and
//! the recurring actions that start runs by themselves.
//!
//! States: a run is recorded `new` (with the args its jobs get), becomes `running` when its
//! driver starts, and ends `ok`, `error` or `cancelled`; one run at a time per repository, the
//! others wait `new` in the queue. The queue is the store's: the actor holds only run keys, and
//! after a restart the `new` runs resume in order. Every change is written to the store before it
//! is acted on, and every start and end is published as a [`Notice`] for the doors.
//!
//! After a crash, a run left `running` is marked `error` (interrupted) and the process groups of
//! its jobs that are still alive are killed first; in the same transaction a new run of its
//! unfinished jobs is queued (`again_of` names the run it repeats), whoever started it, so every
//! acknowledged run, event or mail runs its actions at least once, never two copies at a time.
//! A run cut short [`crate::store::MAX_ATTEMPTS`] times is not queued again.

use std::collections::VecDeque;
use std::time::Duration;

use std::collections::HashMap;

use ractor::ActorRef;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::driver::{PreparedJob, drive, post_callback, random_key};
use super::{MAX_LOG_LINES, RepoMsg, RepoState};
use crate::actors::AbortOnDrop;
use crate::actors::error::AysError;
use crate::actors::notice::{Notice, RunEnd, durable};
use crate::clock;
use crate::engine::{self, ActionState, ServiceState};
use crate::runner::{self, ActionJob, ActionOutcome};
use crate::store::{
    AuditRecord, Interrupted, JobRecord, JobState, LogRecord, Origin, RecurringSlot, RetryRecord,
    RunRecord, RunState, StepRecord,
};
use crate::telemetry::Count;

/// The run in progress.
pub(super) struct ActiveRun {
    /// Its key.
    pub key: String,
    /// Its jobs by step: (job key, service key, action).
    pub steps: Vec<Vec<(String, String, String)>>,
    /// The args every job gets (an event's payload; `{}` otherwise).
    pub args: Value,
    /// The args jobs were scheduled with, by job key (given over the run's args).
    pub job_args: HashMap<String, Value>,
    /// Where to POST the result.
    pub callback_url: Option<String>,
    /// Who asked for it (handed back in the end notice).
    pub origin: Origin,
    /// The process groups of its running jobs, by job key (for cancel).
    pub groups: HashMap<String, i32>,
    /// How many lines of each job were stored live (the first lines of its outcome).
    pub streamed: HashMap<String, usize>,
    /// The task executing it.
    pub driver: AbortOnDrop,
}

/// The runs of a repository: the one in progress, those waiting, and the recurring clock.
#[derive(Default)]
pub(super) struct Runs {
    /// The run in progress.
    pub active: Option<ActiveRun>,
    /// The keys of the runs waiting for it, oldest first (their records and args are in the
    /// store: a waiting 2 MB mail costs its key here, not its payload).
    pub queue: VecDeque<String>,
    /// A recurring action became due while a run was in progress: plan again after it.
    pub replan: bool,
    /// When each recurring (service, action) last became due and is next due (Unix ms; the
    /// store has them too, so a restart neither resets a period nor fires it twice).
    pub recurring: HashMap<(String, String), RecurringSlot>,
    /// When this actor started (Unix ms): a slot due before it was missed while cockpit was
    /// down (`[ays] run_missed` says whether it runs once now or is skipped).
    pub started_ms: i64,
    /// The retry state of failed actions, by (service, action) (the store has it too).
    pub retries: HashMap<(String, String), RetryRecord>,
    /// When old runs were last pruned (Unix ms), and whether that pass had more to do.
    pub pruned: (i64, bool),
}

/// How often old runs are pruned.
const PRUNE_EVERY_MS: i64 = 3_600_000;
/// At most this many runs are pruned in one pass (one short transaction); a full pass is
/// followed by another at the next tick.
pub const PRUNE_BATCH: usize = 200;

/// How long a cancelled job has between `SIGTERM` and `SIGKILL`.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

impl RepoState {
    /// What a start finds: kills the leftover process groups of runs a crash cut short, marks
    /// those runs `error` and queues their unfinished jobs again, and reloads the queue and
    /// the recurring clock.
    pub(super) fn recover(&mut self, reason: &str) -> Result<(), AysError> {
        self.cut_short(reason)?;
        self.runs.queue = self.shared.store.queued_runs(&self.name)?.into();
        self.runs.recurring = self.shared.store.recurring(&self.name)?;
        self.runs.started_ms = clock::now_ms();
        self.runs.retries = self
            .shared
            .store
            .retries(&self.name)?
            .into_iter()
            .map(|r| ((r.service.clone(), r.action.clone()), r))
            .collect();
        Ok(())
    }

    /// Ends the runs left `running` (after a crash, or at shutdown): kills what is left of their
    /// jobs' process groups, marks them `error` with `reason`, and queues each again as a new
    /// run of its unfinished jobs (at least once, whoever started it; see
    /// [`crate::store::MAX_ATTEMPTS`]).
    pub(super) fn cut_short(&mut self, reason: &str) -> Result<(), AysError> {
        for (pgid, run) in self.shared.store.running_groups(&self.name)? {
            if crate::runner::kill_leftover_group(pgid, &run) {
                warn!(repo = %self.name, %run, pgid, "killed an action left running by a crash");
            }
        }
        let interrupted = self.interrupt(reason)?;
        // Also the actions whose group the store does not have: a crash came between spawning
        // one and recording its group (found by the crash test, bench/crash.py).
        let killed = crate::runner::kill_leftovers_of_runs(&interrupted.runs);
        if killed > 0 {
            warn!(repo = %self.name, killed, "killed actions of interrupted runs");
        }
        for (run, again) in &interrupted.again {
            info!(repo = %self.name, %run, %again, "interrupted run queued again");
        }
        Ok(())
    }

    /// Starts the oldest queued run, if none is running.
    pub(super) fn start_next(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        while self.runs.active.is_none() {
            let Some(key) = self.runs.queue.pop_front() else {
                return Ok(());
            };
            let Some(record) = self.shared.store.run(&self.name, &key)? else {
                continue; // deleted meanwhile
            };
            if record.state != RunState::New {
                continue; // cancelled while it waited
            }
            let args = self.shared.store.run_args(&key)?;
            self.start(myself, record, args)?;
        }
        Ok(())
    }

    /// Marks runs left `running` as `error` and the actions they had running as `error`, and
    /// queues them again; what was cut short and queued.
    pub(super) fn interrupt(&mut self, reason: &str) -> Result<Interrupted, AysError> {
        let config = self.shared.config.clone();
        let repo = self.name.clone();
        let notice = move |run: &str, origin: &Origin, error: &str| {
            crate::actors::notice::durable(
                &config,
                &RunEnd {
                    repo: &repo,
                    run,
                    state: RunState::Error,
                    error: Some(error),
                    origin,
                },
            )
        };
        let interrupted = self.shared.store.interrupt_runs(
            &self.name,
            reason,
            clock::now_secs(),
            &notice,
            &mut random_key,
        )?;
        let mut touched = Vec::new();
        for (key, action) in interrupted.jobs.iter().cloned() {
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
        self.save(touched.iter(), &[])?;
        Ok(interrupted)
    }

    /// A new run record from planned steps of (service key, action, the job's own args).
    fn record(
        &self,
        steps: Vec<Vec<(String, String, Value)>>,
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
                    .map(|(service_key, action, args)| {
                        let service = self.services.get(&service_key);
                        JobRecord {
                            key: random_key(),
                            action_name: action,
                            actor_name: service.map(|s| s.actor.clone()).unwrap_or_default(),
                            service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
                            service_key,
                            state: JobState::New,
                            logs: Vec::new(),
                            args,
                            started_ms: None,
                            ended_ms: None,
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
            attempt: 1,
            again_of: None,
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
        args: Value,
        audit: Option<&AuditRecord>,
    ) -> Result<RunRecord, AysError> {
        let plan = if origin == Origin::Schedule {
            engine::plan_scheduled(&self.services)
        } else {
            engine::plan_run(&self.services)
        };
        let plan = plan.map_err(|err| AysError::Invalid(vec![err.to_string()]))?;
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
                    .map(|job| {
                        let args = self
                            .services
                            .get(&job.service_key)
                            .and_then(|s| s.args.get(&job.action))
                            .cloned()
                            .unwrap_or(Value::Null);
                        (job.service_key, job.action, args)
                    })
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
        if !matches!(record.origin, Origin::Schedule) {
            // A person runs these actions: their retries start afresh.
            let planned: Vec<(String, String)> = record
                .steps
                .iter()
                .flat_map(|s| &s.jobs)
                .map(|j| (j.service_key.clone(), j.action_name.clone()))
                .collect();
            self.forget_retries(&planned)?;
        }
        self.shared
            .store
            .insert_run_audited(&record, &args, audit)?;
        // The args actions were scheduled with now belong to this run's jobs.
        let mut took = Vec::new();
        for job in record.steps.iter().flat_map(|s| &s.jobs) {
            if let Some(service) = self.services.get_mut(&job.service_key)
                && service.args.remove(&job.action_name).is_some()
            {
                took.push(job.service_key.clone());
            }
        }
        self.save(took.iter(), &[])?;
        self.start(myself, record, args)
    }

    /// Plans the actions of run `key` again, with the same args, as a new run (queued behind
    /// the run in progress, if any); `who` asked for it.
    pub(super) fn rerun(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        key: &str,
        origin: Origin,
        audit: Option<&AuditRecord>,
    ) -> Result<RunRecord, AysError> {
        let Some(old) = self.shared.store.run(&self.name, key)? else {
            return Err(AysError::NotFound(format!("run {key:?} not found")));
        };
        let args = self.shared.store.run_args(key)?;
        let steps: Vec<Vec<(String, String, Value)>> = old
            .steps
            .iter()
            .map(|s| {
                s.jobs
                    .iter()
                    .filter(|j| self.services.contains_key(&j.service_key))
                    .map(|j| (j.service_key.clone(), j.action_name.clone(), j.args.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|jobs| !jobs.is_empty())
            .collect();
        if steps.is_empty() {
            return Err(AysError::Invalid(vec![format!(
                "nothing to run again: the services of run {key} are gone"
            )]));
        }
        let record = self.record(steps, old.callback_url.clone(), origin);
        let planned: Vec<(String, String)> = record
            .steps
            .iter()
            .flat_map(|s| &s.jobs)
            .map(|j| (j.service_key.clone(), j.action_name.clone()))
            .collect();
        self.forget_retries(&planned)?;
        self.shared
            .store
            .insert_run_audited(&record, &args, audit)?;
        info!(repo = %self.name, run = %record.key, of = %key, "run planned again");
        if self.runs.active.is_some() {
            self.runs.queue.push_back(record.key.clone());
            Ok(record)
        } else {
            self.start(myself, record, args)
        }
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
        let driver = AbortOnDrop(driver);
        let job_args = record
            .steps
            .iter()
            .flat_map(|s| &s.jobs)
            .filter(|j| !j.args.is_null())
            .map(|j| (j.key.clone(), j.args.clone()))
            .collect();
        info!(repo = %self.name, run = %record.key, steps = steps.len(), "run started");
        self.shared.telemetry.count(Count::RunsStarted, 1);
        self.shared.notices.publish(Notice::RunStarted {
            repo: self.name.clone(),
            run: record.key.clone(),
            origin: record.origin.clone(),
        });
        self.runs.active = Some(ActiveRun {
            key: record.key.clone(),
            steps,
            args,
            job_args,
            callback_url: record.callback_url.clone(),
            origin: record.origin.clone(),
            groups: HashMap::new(),
            streamed: HashMap::new(),
            driver,
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
        before_run: Option<&crate::actors::event::BeforeRun>,
    ) -> Result<usize, AysError> {
        let jobs = engine::subscribers(&self.services, channel);
        if jobs.is_empty() {
            return Ok(0);
        }
        if let Some(Err(why)) = before_run.map(|work| work.run()) {
            // The run goes ahead: what the work could not prepare the action will miss, loudly.
            warn!(repo = %self.name, %channel, %why, "an event's preparation failed");
        }
        let count = jobs.len();
        let origin = Origin::Event {
            channel: channel.to_string(),
        };
        let jobs = jobs.into_iter().map(|(s, a)| (s, a, Value::Null)).collect();
        let record = self.record(vec![jobs], None, origin);
        self.shared.store.insert_run(&record, &payload)?;
        if self.runs.active.is_some() {
            self.runs.queue.push_back(record.key);
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
        let run_args = here(active.args.clone(), &self.data_dir);
        let job_args = active.job_args.clone();
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
            let own = job_args.get(&job_key);
            let args = merge_args(&run_args, own);
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
                        ("COCKPIT_DATA".into(), self.data_dir.display().to_string()),
                        ("COCKPIT_REPO".into(), self.name.clone()),
                        ("COCKPIT_RUN".into(), run.to_string()),
                        ("COCKPIT_ACTION".into(), action.clone()),
                        ("COCKPIT_SERVICE".into(), service.key.clone()),
                        (
                            "COCKPIT_ARGS".into(),
                            own.map_or_else(|| "{}".to_string(), Value::to_string),
                        ),
                    ],
                    timeout: Duration::from_secs(self.shared.config.ays.job_timeout_secs),
                    max_log_lines: MAX_LOG_LINES,
                },
            });
            self.shared
                .store
                .start_job(&job_key, crate::clock::now_ms())?;
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
        // The first lines were stored as they came; the rest (the tail of a long output, the
        // runner's own words) now.
        let streamed = active.streamed.get(job).copied().unwrap_or(0);
        let mut logs: Vec<LogRecord> = outcome.logs.iter().skip(streamed).map(log_record).collect();
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
        let args = merge_args(&active.args, active.job_args.get(job));
        let origin = active.origin.clone();
        self.after_attempt(&service_key, &action, ok, args, origin)?;
        // The job's end, its last lines and its service's new state: one transaction.
        let docs = self.documents(std::iter::once(&service_key))?;
        let seqs = self.shared.store.finish_job_and_save(
            job,
            state,
            &logs,
            &self.name,
            &docs,
            crate::clock::now_ms(),
        )?;
        self.tell_lines(run, job, seqs, logs);
        if !ok {
            // The reason: the runner's own (timeout, not executable...) or the job's last words.
            let error = outcome
                .error
                .clone()
                .or_else(|| outcome.logs.last().map(|l| l.log.clone()))
                .unwrap_or_else(|| "failed".into());
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
        let notice = durable(
            &self.shared.config,
            &RunEnd {
                repo: &self.name,
                run,
                state,
                error: error.as_deref(),
                origin: &active.origin,
            },
        );
        self.shared.store.end_run(
            run,
            state,
            clock::now_secs(),
            error.as_deref(),
            notice.as_ref(),
        )?;
        match &error {
            Some(error) => warn!(repo = %self.name, %run, %state, %error, "run ended"),
            None => info!(repo = %self.name, %run, %state, "run ended"),
        }
        let counted = if error.is_some() {
            Count::RunsError
        } else {
            Count::RunsOk
        };
        self.shared.telemetry.count(counted, 1);
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
        self.after_run(myself)
    }

    /// What follows the end of a run: the next queued one, or a recurring plan that waited.
    fn after_run(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        self.start_next(myself)?;
        if self.runs.active.is_none() && std::mem::take(&mut self.runs.replan) {
            self.start_planned(myself)?;
        }
        Ok(())
    }

    /// Lines a running job printed: stored, then told as notices.
    pub(super) fn job_lines(
        &mut self,
        run: &str,
        job: &str,
        lines: Vec<crate::runner::LogLine>,
    ) -> Result<(), AysError> {
        let Some(active) = self.runs.active.as_mut().filter(|a| a.key == run) else {
            return Ok(());
        };
        *active.streamed.entry(job.to_string()).or_default() += lines.len();
        let records: Vec<LogRecord> = lines.iter().map(log_record).collect();
        let seqs = self.shared.store.append_logs(job, &records)?;
        self.tell_lines(run, job, seqs, records);
        Ok(())
    }

    /// Publishes stored lines as notices.
    fn tell_lines(&self, run: &str, job: &str, seqs: Vec<i64>, lines: Vec<LogRecord>) {
        for (seq, line) in seqs.into_iter().zip(lines) {
            self.shared.notices.publish(Notice::JobLog {
                repo: self.name.clone(),
                run: run.to_string(),
                job: job.to_string(),
                seq,
                line,
            });
        }
    }

    /// A job's process runs: its group is recorded (killed after a crash, signalled on cancel).
    pub(super) fn job_started(&mut self, run: &str, job: &str, pgid: i32) -> Result<(), AysError> {
        let Some(active) = self.runs.active.as_mut().filter(|a| a.key == run) else {
            return Ok(());
        };
        active.groups.insert(job.to_string(), pgid);
        self.shared.store.set_job_group(job, pgid)?;
        Ok(())
    }

    /// Cancels run `key`: a running one gets `SIGTERM` on every job's process group, then
    /// `SIGKILL` after [`CANCEL_GRACE`]; a queued one never starts. The run ends `cancelled` at
    /// once and the repository is free for the next run.
    /// Records that run `key` was cancelled: its end with the durable notice for the webhooks
    /// (one transaction), the log line `what`, the counter, and the `RunEnded` notice.
    fn record_cancel(
        &self,
        key: &str,
        who: &str,
        reason: String,
        origin: Origin,
        what: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), AysError> {
        let notice = durable(
            &self.shared.config,
            &RunEnd {
                repo: &self.name,
                run: key,
                state: RunState::Cancelled,
                error: Some(reason.as_str()),
                origin: &origin,
            },
        );
        self.shared
            .store
            .cancel_run(key, clock::now_secs(), &reason, notice.as_ref(), audit)?;
        info!(repo = %self.name, run = %key, %who, "{what}");
        self.shared.telemetry.count(Count::RunsCancelled, 1);
        self.shared.notices.publish(Notice::RunEnded {
            repo: self.name.clone(),
            run: key.to_string(),
            state: RunState::Cancelled,
            error: Some(reason),
            origin,
        });
        Ok(())
    }

    pub(super) fn cancel(
        &mut self,
        myself: &ActorRef<RepoMsg>,
        key: &str,
        who: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<RunRecord, AysError> {
        let reason = format!("cancelled by {who}");
        if let Some(active) = self.runs.active.take_if(|a| a.key == key) {
            for pgid in active.groups.values() {
                crate::runner::terminate_group(*pgid);
            }
            let driver = active.driver;
            tokio::spawn(async move {
                tokio::time::sleep(CANCEL_GRACE).await;
                drop(driver); // aborts the driver: the runner kills what is left of each group
            });
            // The actions it was running are to be run again.
            let mut touched = Vec::new();
            for (_, service_key, action) in active.steps.iter().flatten() {
                if let Some(service) = self.services.get_mut(service_key)
                    && service.actions.get(action) == Some(&ActionState::Running)
                {
                    service.actions.insert(action.clone(), ActionState::Error);
                    touched.push(service_key.clone());
                }
            }
            self.save(touched.iter(), &[])?;
            self.record_cancel(key, who, reason, active.origin, "run cancelled", audit)?;
            self.after_run(myself)?;
        } else if let Some(at) = self.runs.queue.iter().position(|k| k == key) {
            self.runs.queue.remove(at);
            let origin = self
                .shared
                .store
                .run(&self.name, key)?
                .map(|r| r.origin)
                .unwrap_or(Origin::Unknown);
            self.record_cancel(key, who, reason, origin, "queued run cancelled", audit)?;
        } else {
            return match self.shared.store.run(&self.name, key)? {
                Some(run) => Err(AysError::Conflict(format!(
                    "run {key} has ended ({}); nothing to cancel",
                    run.state
                ))),
                None => Err(AysError::NotFound(format!("run {key:?} not found"))),
            };
        }
        self.shared
            .store
            .run(&self.name, key)?
            .ok_or_else(|| AysError::NotFound(format!("run {key:?} not found")))
    }

    /// Plans and starts a run when there is anything to do (recurring actions).
    fn start_planned(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        match self.create_run(myself, false, None, Origin::Schedule, json!({}), None) {
            Ok(_) => Ok(()),
            Err(AysError::Invalid(why)) => {
                warn!(repo = %self.name, "recurring run not started: {}", why.join("; "));
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Schedules the recurring actions that are due and the retries that are due, and runs
    /// them unless a run is in progress.
    pub(super) fn tick(&mut self, myself: &ActorRef<RepoMsg>) -> Result<(), AysError> {
        let now = clock::now_ms();
        self.prune(now)?;
        self.retries_due(myself, now)?;
        let due = self.recurring_due(now)?;
        if due.is_empty() {
            return Ok(());
        }
        for (key, action) in &due {
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

    /// Deletes ended runs older than `[ays] keep_days`, with their jobs and logs, at most
    /// [`PRUNE_BATCH`] per pass: at start, then hourly, and at every tick while a pass finds a
    /// full batch. Runs that wait or run are never pruned.
    fn prune(&mut self, now: i64) -> Result<(), AysError> {
        let (last, more) = self.runs.pruned;
        if !more && last != 0 && now - last < PRUNE_EVERY_MS {
            return Ok(());
        }
        let keep = i64::from(self.shared.config.ays.keep_days) * 86_400;
        let before = now / 1000 - keep;
        let pruned = self
            .shared
            .store
            .prune_runs(&self.name, before, PRUNE_BATCH)?;
        if pruned > 0 {
            info!(repo = %self.name, runs = pruned, "old runs pruned");
        }
        self.runs.pruned = (now, pruned == PRUNE_BATCH);
        Ok(())
    }

    /// The recurring actions due at `now`. Each one's last and next due times are recorded
    /// before it is scheduled: a crash from here on neither fires it again nor resets it. A new
    /// (or changed) schedule is first due at its next slot after `now` (a period: one period
    /// from now); a slot that passed while cockpit was down runs once now, or is skipped when
    /// `[ays] run_missed` is false; several missed slots run once.
    fn recurring_due(&mut self, now: i64) -> Result<Vec<(String, String)>, AysError> {
        let run_missed = self.shared.config.ays.run_missed;
        let mut changed = Vec::new();
        let mut due = Vec::new();
        for service in self.services.values() {
            for (action, schedule) in &service.recurring {
                let id = (service.key.clone(), action.clone());
                let spec = schedule.to_string();
                let stored = self.runs.recurring.get(&id);
                let mut slot = match stored {
                    Some(slot) if slot.spec.as_deref() == Some(spec.as_str()) => slot.clone(),
                    // Written before next times were stored: a period counted from its last.
                    Some(slot) if slot.spec.is_none() && slot.last_ms > 0 => RecurringSlot {
                        last_ms: slot.last_ms,
                        next_ms: schedule.next_after(slot.last_ms, slot.last_ms),
                        spec: Some(spec),
                    },
                    _ => RecurringSlot {
                        last_ms: stored.map_or(0, |s| s.last_ms),
                        next_ms: schedule.next_after(now, now),
                        spec: Some(spec),
                    },
                };
                let fresh = stored != Some(&slot);
                let Some(next) = slot.next_ms.filter(|next| *next <= now) else {
                    if fresh {
                        changed.push((id, slot));
                    }
                    continue;
                };
                slot.next_ms = schedule.next_after(next, now);
                if next < self.runs.started_ms && !run_missed {
                    info!(repo = %self.name, service = %id.0, action = %id.1, "recurring slot missed while down: skipped ([ays] run_missed = false)");
                } else {
                    slot.last_ms = now;
                    due.push(id.clone());
                }
                changed.push((id, slot));
            }
        }
        if !changed.is_empty() {
            self.shared.store.set_recurring(&self.name, &changed)?;
            self.runs.recurring.extend(changed);
        }
        Ok(due)
    }

    /// After a job of `(service, action)` ended: a success forgets its retries; a failure of an
    /// action with a retry policy records when it is tried again (the delay doubling with each
    /// failure, capped), or that its retries are exhausted: it then stays `error` until a person
    /// runs it.
    fn after_attempt(
        &mut self,
        service_key: &str,
        action: &str,
        ok: bool,
        args: Value,
        origin: Origin,
    ) -> Result<(), AysError> {
        let id = (service_key.to_string(), action.to_string());
        if ok {
            if self.runs.retries.contains_key(&id) {
                self.forget_retries(std::slice::from_ref(&id))?;
            }
            return Ok(());
        }
        let Some(policy) = self
            .services
            .get(service_key)
            .and_then(|s| s.retries.get(action))
            .copied()
        else {
            return Ok(());
        };
        let failures = self.runs.retries.get(&id).map_or(0, |r| r.failures) + 1;
        let next_ms = (failures <= policy.retries).then(|| {
            clock::now_ms().saturating_add(policy.delay_after(failures).saturating_mul(1000) as i64)
        });
        match next_ms {
            Some(at) => {
                info!(repo = %self.name, service = %service_key, %action, failures, retry_at_ms = at, "action failed: retry scheduled")
            }
            None => {
                warn!(repo = %self.name, service = %service_key, %action, failures, "action failed: retries exhausted, it stays error until a person runs it")
            }
        }
        let retry = RetryRecord {
            service: id.0.clone(),
            action: id.1.clone(),
            failures,
            next_ms,
            args,
            origin,
        };
        self.shared.store.set_retry(&self.name, &retry)?;
        self.runs.retries.insert(id, retry);
        Ok(())
    }

    /// Forgets the retry state of these actions (a person runs them: they start afresh).
    pub(super) fn forget_retries(&mut self, actions: &[(String, String)]) -> Result<(), AysError> {
        if actions.iter().any(|id| self.runs.retries.contains_key(id)) {
            self.shared.store.clear_retries(&self.name, actions)?;
            for id in actions {
                self.runs.retries.remove(id);
            }
        }
        Ok(())
    }

    /// Queues a run of every retry due at `now`, with the args and origin of the run that
    /// failed. The run is recorded before the retry is marked taken, so a crash in between
    /// runs it twice rather than never.
    fn retries_due(&mut self, myself: &ActorRef<RepoMsg>, now: i64) -> Result<(), AysError> {
        let due: Vec<RetryRecord> = self
            .runs
            .retries
            .values()
            .filter(|r| r.next_ms.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        for mut retry in due {
            let id = (retry.service.clone(), retry.action.clone());
            if !self.services.contains_key(&retry.service) {
                self.forget_retries(std::slice::from_ref(&id))?;
                continue;
            }
            let job = (id.0.clone(), id.1.clone(), Value::Null);
            let record = self.record(vec![vec![job]], None, retry.origin.clone());
            self.shared.store.insert_run(&record, &retry.args)?;
            retry.next_ms = None;
            self.shared.store.set_retry(&self.name, &retry)?;
            info!(repo = %self.name, run = %record.key, service = %retry.service, action = %retry.action, attempt = retry.failures + 1, "retry queued");
            self.runs.retries.insert(id, retry);
            self.runs.queue.push_back(record.key);
        }
        self.start_next(myself)
    }
}

/// The args a job gets: the run's (an event's payload, or `{}`) with the job's own (those its
/// action was scheduled with) over them, key by key.
fn merge_args(run: &Value, own: Option<&Value>) -> Value {
    match (run, own) {
        (_, None) => run.clone(),
        (Value::Object(base), Some(Value::Object(over))) => {
            let mut merged = base.clone();
            merged.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
            Value::Object(merged)
        }
        (_, Some(own)) => own.clone(),
    }
}

/// A run's args with the paths another server wrote into them made this server's (`raw`,
/// `data_dir`, `attachments`, the keys of a mail's payload): an event recorded by one replica
/// (a mail's file, its attachments' `extract` commands, under the payload's `data_dir`) may run
/// on another after a takeover, whose data directory is `here` (the mail's file is written
/// there again from the store at start).
fn here(args: Value, here: &std::path::Path) -> Value {
    let Some(there) = args
        .get("data_dir")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return args;
    };
    let here = here.display().to_string();
    if there == here || there.is_empty() {
        return args;
    }
    fn walk(value: Value, there: &str, here: &str) -> Value {
        match value {
            Value::String(text) => match text.strip_prefix(there) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    Value::String(format!("{here}{rest}"))
                }
                _ => Value::String(text),
            },
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| walk(v, there, here)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, walk(v, there, here)))
                    .collect(),
            ),
            other => other,
        }
    }
    let Value::Object(mut map) = args else {
        return args;
    };
    for key in ["raw", "data_dir", "attachments"] {
        if let Some(value) = map.remove(key) {
            map.insert(key.to_owned(), walk(value, &there, &here));
        }
    }
    Value::Object(map)
}

/// A runner's line as the store keeps it.
fn log_record(line: &crate::runner::LogLine) -> LogRecord {
    LogRecord {
        epoch: line.epoch,
        level: line.level.as_str().to_string(),
        log: line.log.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_recorded_by_another_server_points_at_this_one_s_files() {
        let args = json!({
            "subject": "/data/a/not a path of ours",
            "raw": "/data/a/mail/1.eml",
            "data_dir": "/data/a",
            "attachments": [{"extract": ["/usr/bin/cockpit", "mail-attachment", "/data/a/mail/1.eml", "1"]}],
            "other": "/data/ab/mail/1.eml",
        });
        let moved = here(args.clone(), std::path::Path::new("/srv/b"));
        assert_eq!(moved["raw"], "/srv/b/mail/1.eml");
        assert_eq!(moved["data_dir"], "/srv/b");
        assert_eq!(moved["attachments"][0]["extract"][2], "/srv/b/mail/1.eml");
        assert_eq!(moved["attachments"][0]["extract"][0], "/usr/bin/cockpit");
        assert_eq!(
            moved["subject"], "/data/a/not a path of ours",
            "only the paths"
        );
        assert_eq!(moved["other"], "/data/ab/mail/1.eml");
        let prefix = here(
            json!({"data_dir": "/data/a", "raw": "/data/ab/x"}),
            std::path::Path::new("/srv/b"),
        );
        assert_eq!(prefix["raw"], "/data/ab/x", "only whole path parts");
        // Recorded here, or no data_dir at all: unchanged.
        assert_eq!(here(args.clone(), std::path::Path::new("/data/a")), args);
        assert_eq!(
            here(json!({"n": 1}), std::path::Path::new("/srv/b")),
            json!({"n": 1})
        );
    }
}
