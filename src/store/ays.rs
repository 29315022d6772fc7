//! The AYS tables: repositories, services (as JSON documents), runs with their jobs and job logs,
//! and inbound events waiting to be processed.

use super::db::{self, Column, OptionalExtension, Param, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::access::insert_audit_tx;
use super::{AuditRecord, DurableNotice, Store, StoreError};

/// Writes the audit row of the command a change carries out, in the change's transaction.
fn audit_tx(
    tx: &super::db::Transaction<'_>,
    audit: Option<&AuditRecord>,
) -> Result<(), StoreError> {
    match audit {
        Some(row) => insert_audit_tx(tx, row),
        None => Ok(()),
    }
}

/// The state of a run: `new` (recorded, waiting) → `running` → `ok` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Recorded, not started (queued behind the run in progress).
    New,
    /// Its jobs are being executed.
    Running,
    /// Every job ended ok.
    Ok,
    /// A job failed, or the run was interrupted.
    Error,
    /// Someone cancelled it.
    Cancelled,
}

/// The state of a job: `new` → `running` → `ok` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Not started.
    New,
    /// Its process runs.
    Running,
    /// It exited 0.
    Ok,
    /// It failed, timed out, or was cut short.
    Error,
    /// Its run was cancelled while it ran or waited.
    Cancelled,
}

/// A state stored as its lowercase name.
macro_rules! stored_state {
    ($type:ident) => {
        impl $type {
            /// Its stored and shown name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $type::New => "new",
                    $type::Running => "running",
                    $type::Ok => "ok",
                    $type::Error => "error",
                    $type::Cancelled => "cancelled",
                }
            }

            /// Parses a stored name.
            pub fn parse(name: &str) -> Option<$type> {
                Some(match name {
                    "new" => $type::New,
                    "running" => $type::Running,
                    "ok" => $type::Ok,
                    "error" => $type::Error,
                    "cancelled" => $type::Cancelled,
                    _ => return None,
                })
            }

            /// True once it can change no more.
            pub fn is_final(self) -> bool {
                matches!(self, $type::Ok | $type::Error | $type::Cancelled)
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Param for $type {
            fn value(&self) -> db::Value<'_> {
                db::Value::Text(self.as_str())
            }
        }

        impl Column for $type {
            fn column(value: db::Value<'_>) -> Result<Self, String> {
                let name = String::column(value)?;
                $type::parse(&name).ok_or_else(|| format!("unknown {} {name:?}", stringify!($type)))
            }
        }
    };
}

stored_state!(RunState);
stored_state!(JobState);

/// Who asked for a run. Stored with the run as JSON (`{"api": true}`, `{"chat": 42}`,
/// `{"event": "email"}`, `{"recurring": true}`); the core keeps it and hands it back in notices,
/// and only the door that owns a kind of origin knows what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The REST API.
    Api,
    /// A chat of a chat door (the Telegram bot): it is told how the run ended.
    Chat {
        /// The chat id.
        chat_id: i64,
    },
    /// An inbound event on a channel (`email`).
    Event {
        /// The channel.
        channel: String,
    },
    /// A recurring action became due.
    Schedule,
    /// Not recorded (runs older than origins).
    Unknown,
}

impl Origin {
    /// The stored JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Origin::Api => json!({"api": true}),
            Origin::Chat { chat_id } => json!({"chat": chat_id}),
            Origin::Event { channel } => json!({"event": channel}),
            Origin::Schedule => json!({"recurring": true}),
            Origin::Unknown => Value::Null,
        }
    }

    /// Reads the stored JSON (`telegram_chat` is how chats were recorded before).
    pub fn from_json(value: &Value) -> Origin {
        if let Some(chat_id) = value["chat"]
            .as_i64()
            .or_else(|| value["telegram_chat"].as_i64())
        {
            Origin::Chat { chat_id }
        } else if let Some(channel) = value["event"].as_str() {
            Origin::Event {
                channel: channel.to_string(),
            }
        } else if value["api"] == json!(true) {
            Origin::Api
        } else if value["recurring"] == json!(true) {
            Origin::Schedule
        } else {
            Origin::Unknown
        }
    }
}

/// A repository as the store knows it (its files live under `<storage>/repos/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoRecord {
    /// The repository name.
    pub name: String,
    /// The git remote it was cloned from, if any.
    pub git_url: Option<String>,
    /// When it was created (Unix ms).
    pub created_ms: i64,
}

/// One log line of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// Unix seconds (fractional) when the line was read.
    pub epoch: f64,
    /// `stdout`, `stderr` or `error` (cockpit's own words about the job).
    pub level: String,
    /// The line.
    pub log: String,
}

/// One job of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
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
    /// Where it is.
    pub state: JobState,
    /// What the job printed.
    pub logs: Vec<LogRecord>,
    /// The args its action was scheduled with (`/service execute … key=value`), given to the
    /// job over the run's args; `Null` when none.
    pub args: Value,
    /// When its process started (Unix ms); none until then.
    pub started_ms: Option<i64>,
    /// When it ended (Unix ms); none until then, and for a job cut short.
    pub ended_ms: Option<i64>,
}

/// A step of a run: jobs that run in parallel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// 1-based step number.
    pub number: u32,
    /// The step's jobs.
    pub jobs: Vec<JobRecord>,
}

/// Where a recurring action stands: when it last became due and when it is next due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecurringSlot {
    /// When it last became due (Unix ms; 0 when it never has).
    pub last_ms: i64,
    /// When it is next due (Unix ms); `None` when a cron expression has no slot left, or for a
    /// row written before next times were stored.
    pub next_ms: Option<i64>,
    /// The schedule the next time was computed from (its display form); another schedule in
    /// the blueprint starts afresh. `None` for rows written before schedules were stored.
    pub spec: Option<String>,
}

/// The retry state of one failed action.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRecord {
    /// The service key.
    pub service: String,
    /// The action.
    pub action: String,
    /// How many times it has failed in a row (since it last succeeded or a person ran it).
    pub failures: u32,
    /// When the next attempt is due (Unix ms); `None` once the retries are exhausted.
    pub next_ms: Option<i64>,
    /// The args the failed run's jobs had (an event's payload): the retry gets them again.
    pub args: Value,
    /// Who started the run that failed; the retry is recorded with the same origin.
    pub origin: Origin,
}

/// A page of runs, and where it ends, `(created, rowid)`, when more follow.
pub type RunPage = (Vec<RunRecord>, Option<(i64, i64)>);

/// A run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Unique run key.
    pub key: String,
    /// The repository it belongs to.
    #[serde(skip)]
    pub repo: String,
    /// Where it is.
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
    /// Who asked for it.
    #[serde(skip)]
    pub origin: Origin,
    /// How many times its jobs were started: 1, or more for a run queued again because a crash
    /// cut the one before short.
    #[serde(skip)]
    pub attempt: u32,
    /// The run a crash cut short that this one repeats.
    #[serde(skip)]
    pub again_of: Option<String>,
    /// The steps with their jobs.
    pub steps: Vec<StepRecord>,
}

/// Appends log lines inside a transaction; their sequence numbers.
fn append(
    tx: &super::db::Transaction<'_>,
    job_key: &str,
    logs: &[LogRecord],
) -> Result<Vec<i64>, StoreError> {
    if logs.is_empty() {
        return Ok(Vec::new());
    }
    let run_key: Option<String> = tx
        .prepare_cached("SELECT run_key FROM jobs WHERE key = ?1")?
        .query_row(params![job_key], |row| row.get(0))
        .optional()?;
    let mut put = tx.prepare_cached(
        "INSERT INTO job_logs (job_key, run_key, epoch, level, log) VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING seq",
    )?;
    let mut seqs = Vec::with_capacity(logs.len());
    for line in logs {
        seqs.push(put.query_row(
            params![job_key, run_key, line.epoch, line.level, line.log],
            |row| row.get(0),
        )?);
    }
    Ok(seqs)
}

/// Writes the documents of `repo`'s services (`(key, JSON)`), new or changed.
fn upsert_services(
    tx: &super::db::Transaction<'_>,
    repo: &str,
    docs: &[(String, String)],
) -> Result<(), StoreError> {
    let mut put = tx.prepare_cached(
        "INSERT INTO services (repo, key, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT (repo, key) DO UPDATE SET doc = excluded.doc",
    )?;
    for (key, doc) in docs {
        put.execute(params![repo, key, doc])?;
    }
    Ok(())
}

/// What [`Store::interrupt_runs`] cut short, and what it queued again.
#[derive(Debug, Default, PartialEq)]
pub struct Interrupted {
    /// The `(service_key, action)` of the jobs that were running.
    pub jobs: Vec<(String, String)>,
    /// The keys of the runs cut short.
    pub runs: Vec<String>,
    /// The runs queued again in their place: (the run cut short, the new run).
    pub again: Vec<(String, String)>,
}

/// How many times a run's jobs are started in all: a run a crash cut short is queued again
/// until it has been cut short this many times (an action that brings cockpit down every time
/// stops there, `error`, for a person to look at).
pub const MAX_ATTEMPTS: u32 = 3;

/// Records a new run (`new`, keyed by `new_key()`) of the jobs of run `key` that did not end
/// `ok`, with its args, origin, callback and creation time (so it keeps its place in the queue);
/// its key, or `None` when every job had ended `ok`.
fn queue_again(
    tx: &super::db::Transaction<'_>,
    key: &str,
    new_key: &mut dyn FnMut() -> String,
) -> Result<Option<String>, StoreError> {
    let jobs: Vec<(u32, String)> = {
        let mut stmt = tx.prepare(
            "SELECT step, key FROM jobs WHERE run_key = ?1 AND state != 'ok' ORDER BY step, rowid",
        )?;
        let rows = stmt.query_map(params![key], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if jobs.is_empty() {
        return Ok(None);
    }
    let again = new_key();
    tx.execute(
        "INSERT INTO runs (key, repo, state, created, callback_url, origin, args, attempt, again_of)
         SELECT ?2, repo, 'new', created, callback_url, origin, args, attempt + 1, key
         FROM runs WHERE key = ?1",
        params![key, again],
    )?;
    let mut copy = tx.prepare_cached(
        "INSERT INTO jobs (key, run_key, step, action_name, actor_name, service_name, service_key,
                           state, args)
         SELECT ?2, ?3, ?4, action_name, actor_name, service_name, service_key, 'new', args
         FROM jobs WHERE key = ?1",
    )?;
    // Steps keep their order and are numbered again from 1 without the ones that had ended.
    let (mut last, mut number) = (None, 0u32);
    for (step, job) in jobs {
        if last != Some(step) {
            last = Some(step);
            number += 1;
        }
        copy.execute(params![job, new_key(), again, number])?;
    }
    Ok(Some(again))
}

/// An inbound event recorded before it is processed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Its id, in arrival order.
    pub id: i64,
    /// The channel (`email`, ...).
    pub channel: String,
    /// The payload handed to subscribed actions as their args.
    pub payload: serde_json::Value,
}

impl Store {
    /// Records a new repository (and the `audit` row of the command, in the same transaction);
    /// `false` if the name is taken (then nothing is written).
    pub fn insert_repo(
        &self,
        repo: &RepoRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT INTO repos (name, git_url, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![repo.name, repo.git_url, repo.created_ms],
        )?;
        if n == 1 {
            audit_tx(&tx, audit)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Every repository, by name.
    pub fn repos(&self) -> Result<Vec<RepoRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name, git_url, created_ms FROM repos ORDER BY name")?;
        let rows = stmt.query_map(params![], |row| {
            Ok(RepoRecord {
                name: row.get(0)?,
                git_url: row.get(1)?,
                created_ms: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One repository.
    pub fn repo(&self, name: &str) -> Result<Option<RepoRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT name, git_url, created_ms FROM repos WHERE name = ?1",
                params![name],
                |row| {
                    Ok(RepoRecord {
                        name: row.get(0)?,
                        git_url: row.get(1)?,
                        created_ms: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Deletes a repository and everything recorded about it (with the `audit` row of the
    /// command, in the same transaction); `false` if it did not exist.
    pub fn delete_repo(&self, name: &str, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM job_logs WHERE job_key IN
               (SELECT j.key FROM jobs j JOIN runs r ON j.run_key = r.key WHERE r.repo = ?1)",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM jobs WHERE run_key IN (SELECT key FROM runs WHERE repo = ?1)",
            params![name],
        )?;
        tx.execute("DELETE FROM runs WHERE repo = ?1", params![name])?;
        tx.execute("DELETE FROM recurring WHERE repo = ?1", params![name])?;
        tx.execute("DELETE FROM retries WHERE repo = ?1", params![name])?;
        tx.execute("DELETE FROM services WHERE repo = ?1", params![name])?;
        tx.execute("DELETE FROM repo_files WHERE repo = ?1", params![name])?;
        let n = tx.execute("DELETE FROM repos WHERE name = ?1", params![name])?;
        audit_tx(&tx, audit)?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Writes service documents and deletes others, in one transaction (with the `audit` row of
    /// the command that changed them).
    pub fn save_services(
        &self,
        repo: &str,
        upserts: &[(String, String)],
        deletes: &[String],
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        upsert_services(&tx, repo, upserts)?;
        {
            let mut del = tx.prepare_cached("DELETE FROM services WHERE repo = ?1 AND key = ?2")?;
            for key in deletes {
                del.execute(params![repo, key])?;
            }
        }
        audit_tx(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Every service document of a repository, as `(key, JSON)`.
    pub fn services(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT key, doc FROM services WHERE repo = ?1 ORDER BY key")?;
        let rows = stmt.query_map(params![repo], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a new run with all its steps and jobs, and the args its jobs get (an event's
    /// payload), so that a queued run survives a restart.
    pub fn insert_run(&self, run: &RunRecord, args: &Value) -> Result<(), StoreError> {
        self.insert_run_audited(run, args, None)
    }

    /// [`Store::insert_run`] with the `audit` row of the command that asked for the run, in the
    /// same transaction.
    pub fn insert_run_audited(
        &self,
        run: &RunRecord,
        args: &Value,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (key, repo, state, created, ended, error, callback_url, origin, args,
                               attempt, again_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run.key,
                run.repo,
                run.state,
                run.created,
                run.ended,
                run.error,
                run.callback_url,
                run.origin.to_json().to_string(),
                args.to_string(),
                run.attempt,
                run.again_of,
            ],
        )?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO jobs (key, run_key, step, action_name, actor_name, service_name,
                                   service_key, state, args)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for step in &run.steps {
                for job in &step.jobs {
                    put.execute(params![
                        job.key,
                        run.key,
                        step.number,
                        job.action_name,
                        job.actor_name,
                        job.service_name,
                        job.service_key,
                        job.state,
                        (!job.args.is_null()).then(|| job.args.to_string())
                    ])?;
                }
            }
        }
        audit_tx(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Sets a run's state (and end time and error when it ends).
    pub fn set_run_state(
        &self,
        key: &str,
        state: RunState,
        ended: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE runs SET state = ?2, ended = COALESCE(?3, ended), error = COALESCE(?4, error)
             WHERE key = ?1",
            params![key, state, ended, error],
        )?;
        Ok(())
    }

    /// Ends a run: its state, end time and error, and with `notice` its outbox rows, in one
    /// transaction (a crash leaves both or neither).
    pub fn end_run(
        &self,
        key: &str,
        state: RunState,
        ended: i64,
        error: Option<&str>,
        notice: Option<&DurableNotice>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE runs SET state = ?2, ended = ?3, error = COALESCE(?4, error) WHERE key = ?1",
            params![key, state, ended, error],
        )?;
        if let Some(notice) = notice {
            super::notify::enqueue(&tx, notice)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that a job is starting (not synced: see [`Store::set_job_group`]; a machine
    /// crash leaves it `new`, and its run is queued again with it).
    pub fn start_job(&self, job_key: &str, now_ms: i64) -> Result<(), StoreError> {
        self.lock_unsynced()?.execute(
            "UPDATE jobs SET state = ?2, started_ms = ?3 WHERE key = ?1",
            params![job_key, JobState::Running, now_ms],
        )?;
        Ok(())
    }

    /// Records a job's new state and appends its log lines (the tests' short form of
    /// [`Store::finish_job_and_save`], which the actor calls); the lines' sequence numbers.
    #[cfg(test)]
    pub fn finish_job(
        &self,
        job_key: &str,
        state: JobState,
        logs: &[LogRecord],
    ) -> Result<Vec<i64>, StoreError> {
        self.finish_job_and_save(job_key, state, logs, "", &[], crate::clock::now_ms())
    }

    /// Records a job's end at `now_ms`: its state, the rest of its log lines and the documents
    /// of `repo`'s services it changed, in one transaction; the lines' sequence numbers.
    pub fn finish_job_and_save(
        &self,
        job_key: &str,
        state: JobState,
        logs: &[LogRecord],
        repo: &str,
        services: &[(String, String)],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = ?2, ended_ms = ?3 WHERE key = ?1",
            params![job_key, state, now_ms],
        )?;
        let seqs = append(&tx, job_key, logs)?;
        upsert_services(&tx, repo, services)?;
        tx.commit()?;
        Ok(seqs)
    }

    /// Appends log lines of a running job (live logs); their sequence numbers. Not synced: a
    /// machine crash ends the job before its end is recorded, and its run is queued again.
    pub fn append_logs(&self, job_key: &str, logs: &[LogRecord]) -> Result<Vec<i64>, StoreError> {
        let conn = self.lock_unsynced()?;
        let tx = conn.transaction()?;
        let seqs = append(&tx, job_key, logs)?;
        tx.commit()?;
        Ok(seqs)
    }

    /// The log lines of run `key` after sequence number `after`, in order, with their job keys:
    /// `(seq, job, line)`, at most `limit`.
    pub fn run_logs(
        &self,
        key: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, LogRecord)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, job_key, epoch, level, log FROM job_logs
             WHERE run_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![key, after, limit as i64], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                LogRecord {
                    epoch: row.get(2)?,
                    level: row.get(3)?,
                    log: row.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The runs of a repository, newest first, without steps.
    pub fn runs(&self, repo: &str) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT key, repo, state, created, ended, error, callback_url, origin, attempt, again_of
             FROM runs WHERE repo = ?1 ORDER BY created DESC, rowid DESC",
        )?;
        let rows = stmt.query_map(params![repo], run_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One page of the runs of a repository, newest first, without steps: at most `limit`,
    /// only those in `state` when given, and only those after `after` (the place a previous
    /// page ended, as `(created, rowid)`); the place this page ends when more follow.
    pub fn runs_page(
        &self,
        repo: &str,
        state: Option<RunState>,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<RunPage, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT key, repo, state, created, ended, error, callback_url, origin, attempt, again_of,
                    rowid
             FROM runs WHERE repo = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
               AND (CAST(?3 AS BIGINT) IS NULL OR created < ?3 OR (created = ?3 AND rowid < ?4))
             ORDER BY created DESC, rowid DESC LIMIT ?5",
        )?;
        let (created, rowid) = after.unzip();
        let rows = stmt.query_map(
            params![repo, state, created, rowid, limit as i64 + 1],
            |row| Ok((run_row(row)?, row.get::<_, i64>(10)?)),
        )?;
        let mut page = rows.collect::<Result<Vec<_>, _>>()?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more
            .then(|| page.last().map(|(run, rowid)| (run.created, *rowid)))
            .flatten();
        Ok((page.into_iter().map(|(run, _)| run).collect(), next))
    }

    /// Deletes at most `limit` runs of `repo` that ended before `before` (Unix seconds), with
    /// their jobs and logs; never a run that waits or runs. How many were deleted.
    pub fn prune_runs(&self, repo: &str, before: i64, limit: usize) -> Result<usize, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let keys: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT key FROM runs WHERE repo = ?1 AND ended IS NOT NULL AND ended < ?2
                   AND state IN ('ok', 'error', 'cancelled')
                 ORDER BY ended LIMIT ?3",
            )?;
            stmt.query_map(params![repo, before, limit as i64], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        {
            let mut logs = tx.prepare_cached(
                "DELETE FROM job_logs WHERE job_key IN (SELECT key FROM jobs WHERE run_key = ?1)",
            )?;
            let mut jobs = tx.prepare_cached("DELETE FROM jobs WHERE run_key = ?1")?;
            let mut run = tx.prepare_cached("DELETE FROM runs WHERE key = ?1")?;
            for key in &keys {
                logs.execute(params![key])?;
                jobs.execute(params![key])?;
                run.execute(params![key])?;
            }
        }
        tx.commit()?;
        Ok(keys.len())
    }

    /// The state of one run (without reading its jobs).
    pub fn run_state(&self, repo: &str, key: &str) -> Result<Option<RunState>, StoreError> {
        Ok(self
            .lock()
            .prepare_cached("SELECT state FROM runs WHERE repo = ?1 AND key = ?2")?
            .query_row(params![repo, key], |row| row.get(0))
            .optional()?)
    }

    /// One run with its steps, jobs and logs.
    pub fn run(&self, repo: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        let conn = self.lock();
        let Some(mut run) = conn
            .query_row(
                "SELECT key, repo, state, created, ended, error, callback_url, origin, attempt, again_of
                 FROM runs WHERE repo = ?1 AND key = ?2",
                params![repo, key],
                run_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut jobs = conn.prepare(
            "SELECT key, step, action_name, actor_name, service_name, service_key, state, args,
                    started_ms, ended_ms
             FROM jobs WHERE run_key = ?1 ORDER BY step, rowid",
        )?;
        let mut logs =
            conn.prepare("SELECT epoch, level, log FROM job_logs WHERE job_key = ?1 ORDER BY seq")?;
        let rows = jobs.query_map(params![key], |row| {
            Ok((
                row.get::<_, u32>(1)?,
                JobRecord {
                    key: row.get(0)?,
                    action_name: row.get(2)?,
                    actor_name: row.get(3)?,
                    service_name: row.get(4)?,
                    service_key: row.get(5)?,
                    state: row.get(6)?,
                    logs: Vec::new(),
                    args: row
                        .get::<_, Option<String>>(7)?
                        .and_then(|a| serde_json::from_str(&a).ok())
                        .unwrap_or(Value::Null),
                    started_ms: row.get(8)?,
                    ended_ms: row.get(9)?,
                },
            ))
        })?;
        for row in rows {
            let (number, mut job) = row?;
            job.logs = logs
                .query_map(params![job.key], |row| {
                    Ok(LogRecord {
                        epoch: row.get(0)?,
                        level: row.get(1)?,
                        log: row.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            match run.steps.last_mut() {
                Some(step) if step.number == number => step.jobs.push(job),
                _ => run.steps.push(StepRecord {
                    number,
                    jobs: vec![job],
                }),
            }
        }
        Ok(Some(run))
    }

    /// Marks every run of `repo` still `running` as `error` (`reason`, which says why, and
    /// what became of it), its unfinished jobs too, and queues each again as a new run of its
    /// unfinished jobs (same args, origin and callback; keys from `new_key`) unless it was
    /// already started [`MAX_ATTEMPTS`] times. A run whose jobs had all ended (the crash came
    /// before its end was stored) ends as they did, `ok` when none failed. All in one transaction: a crash during recovery
    /// leaves either the run `running` (recovered again at the next start) or both.
    ///
    /// `notice` gives each cut-short run's durable notice (from its key, origin and error),
    /// written in the same transaction.
    pub fn interrupt_runs(
        &self,
        repo: &str,
        reason: &str,
        now: i64,
        notice: &dyn Fn(&str, &Origin, &str) -> Option<DurableNotice>,
        new_key: &mut dyn FnMut() -> String,
    ) -> Result<Interrupted, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Interrupted::default();
        {
            let mut stmt = tx.prepare(
                "SELECT j.service_key, j.action_name FROM jobs j JOIN runs r ON j.run_key = r.key
                 WHERE r.repo = ?1 AND r.state = 'running' AND j.state = 'running'",
            )?;
            let rows = stmt.query_map(params![repo], |row| Ok((row.get(0)?, row.get(1)?)))?;
            for row in rows {
                out.jobs.push(row?);
            }
            let mut stmt = tx.prepare(
                "SELECT key, origin, attempt FROM runs WHERE repo = ?1 AND state = 'running'",
            )?;
            let rows = stmt.query_map(params![repo], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, u32>(2)?,
                ))
            })?;
            let mut cut = Vec::new();
            for row in rows {
                cut.push(row?);
            }
            for (key, origin, attempt) in cut {
                let origin = serde_json::from_str(&origin)
                    .map(|o| Origin::from_json(&o))
                    .unwrap_or(Origin::Unknown);
                let (state, error) = if attempt >= MAX_ATTEMPTS {
                    let error = format!("{reason}; not queued again: cut short {attempt} times");
                    (RunState::Error, Some(error))
                } else if let Some(again) = queue_again(&tx, &key, new_key)? {
                    let error = format!("{reason}; queued again as run {again}");
                    out.again.push((key.clone(), again));
                    (RunState::Error, Some(error))
                } else {
                    // Every job had ended: the crash came before the run's end was stored (found
                    // by bench/crash.py). It ended as its jobs did.
                    let failed: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM jobs WHERE run_key = ?1 AND state != 'ok'",
                        params![key],
                        |row| row.get(0),
                    )?;
                    match failed {
                        0 => (RunState::Ok, None),
                        n => (RunState::Error, Some(format!("{n} failed job(s)"))),
                    }
                };
                if let Some(error) = &error
                    && let Some(notice) = notice(&key, &origin, error)
                {
                    super::notify::enqueue(&tx, &notice)?;
                }
                tx.execute(
                    "UPDATE jobs SET state = 'error' WHERE run_key = ?1
                       AND state IN ('new', 'running')",
                    params![key],
                )?;
                tx.execute(
                    "UPDATE runs SET state = ?2, error = ?3, ended = ?4 WHERE key = ?1",
                    params![key, state, error, now],
                )?;
                out.runs.push(key);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The runs of `repo` waiting to start (`new`), oldest first.
    pub fn queued_runs(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT key FROM runs WHERE repo = ?1 AND state = 'new' ORDER BY created, rowid",
        )?;
        let rows = stmt.query_map(params![repo], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many runs wait to start, across all repositories.
    pub fn queued_run_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM runs WHERE state = 'new'",
            params![],
            |row| row.get(0),
        )?;
        Ok(n as u64)
    }

    /// The args recorded with a run (`{}` when none were).
    pub fn run_args(&self, key: &str) -> Result<Value, StoreError> {
        let args: Option<String> = self
            .lock()
            .query_row(
                "SELECT args FROM runs WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(args
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_else(|| json!({})))
    }

    /// Records the process group of a running job (not synced: it matters only while the job's
    /// processes live, and they do not outlive the machine).
    pub fn set_job_group(&self, job_key: &str, pgid: i32) -> Result<(), StoreError> {
        self.lock_unsynced()?.execute(
            "UPDATE jobs SET pgid = ?2 WHERE key = ?1",
            params![job_key, pgid],
        )?;
        Ok(())
    }

    /// The process groups of the jobs of `repo` recorded as running, with their run keys.
    pub fn running_groups(&self, repo: &str) -> Result<Vec<(i32, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT j.pgid, j.run_key FROM jobs j JOIN runs r ON j.run_key = r.key
             WHERE r.repo = ?1 AND j.state = 'running' AND j.pgid IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![repo], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ends a run as cancelled: the run and every unfinished job.
    /// With `notice`, its outbox rows are written in the same transaction, and so is `audit`, the
    /// row of the command that cancelled it.
    pub fn cancel_run(
        &self,
        key: &str,
        now: i64,
        reason: &str,
        notice: Option<&DurableNotice>,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        audit_tx(&tx, audit)?;
        if let Some(notice) = notice {
            super::notify::enqueue(&tx, notice)?;
        }
        tx.execute(
            "UPDATE jobs SET state = 'cancelled' WHERE run_key = ?1 AND state IN ('new', 'running')",
            params![key],
        )?;
        tx.execute(
            "UPDATE runs SET state = 'cancelled', ended = ?2, error = ?3 WHERE key = ?1",
            params![key, now, reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The stored slots of the recurring actions of `repo`, by `(service, action)`.
    pub fn recurring(
        &self,
        repo: &str,
    ) -> Result<std::collections::HashMap<(String, String), RecurringSlot>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT service, action, last_due_ms, next_due_ms, spec FROM recurring WHERE repo = ?1",
        )?;
        let rows = stmt.query_map(params![repo], |row| {
            Ok((
                (row.get(0)?, row.get(1)?),
                RecurringSlot {
                    last_ms: row.get(2)?,
                    next_ms: row.get(3)?,
                    spec: row.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the slots of recurring actions of `repo`, in one transaction.
    pub fn set_recurring(
        &self,
        repo: &str,
        slots: &[((String, String), RecurringSlot)],
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO recurring (repo, service, action, last_due_ms, next_due_ms, spec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (repo, service, action) DO UPDATE SET
                   last_due_ms = excluded.last_due_ms, next_due_ms = excluded.next_due_ms,
                   spec = excluded.spec",
            )?;
            for ((service, action), slot) in slots {
                put.execute(params![
                    repo,
                    service,
                    action,
                    slot.last_ms,
                    slot.next_ms,
                    slot.spec
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The pending and exhausted retries of `repo`'s failed actions.
    pub fn retries(&self, repo: &str) -> Result<Vec<RetryRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT service, action, failures, next_ms, args, origin FROM retries
             WHERE repo = ?1 ORDER BY service, action",
        )?;
        let rows = stmt.query_map(params![repo], |row| {
            let args: String = row.get(4)?;
            let origin: String = row.get(5)?;
            Ok(RetryRecord {
                service: row.get(0)?,
                action: row.get(1)?,
                failures: row.get(2)?,
                next_ms: row.get(3)?,
                args: serde_json::from_str(&args).unwrap_or_else(|_| json!({})),
                origin: Origin::from_json(&serde_json::from_str(&origin).unwrap_or(Value::Null)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records (or replaces) the retry state of one failed action of `repo`.
    pub fn set_retry(&self, repo: &str, retry: &RetryRecord) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO retries (repo, service, action, failures, next_ms, args, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (repo, service, action) DO UPDATE SET failures = excluded.failures,
               next_ms = excluded.next_ms, args = excluded.args, origin = excluded.origin",
            params![
                repo,
                retry.service,
                retry.action,
                retry.failures,
                retry.next_ms,
                retry.args.to_string(),
                retry.origin.to_json().to_string()
            ],
        )?;
        Ok(())
    }

    /// Forgets the retry state of these `(service, action)`s of `repo` (they succeeded, or a
    /// person ran them).
    pub fn clear_retries(
        &self,
        repo: &str,
        actions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached(
                "DELETE FROM retries WHERE repo = ?1 AND service = ?2 AND action = ?3",
            )?;
            for (service, action) in actions {
                del.execute(params![repo, service, action])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records several events in one transaction (one sync for all); their ids in order.
    pub fn insert_events(
        &self,
        events: &[(&str, &serde_json::Value)],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.insert_events_audited(events, &[], now_ms)
    }

    /// [`Store::insert_events`] with the audit rows of the commands that brought them, in the
    /// same transaction.
    pub fn insert_events_audited(
        &self,
        events: &[(&str, &serde_json::Value)],
        audit: &[super::AuditRecord],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        for record in audit {
            super::access::insert_audit_tx(&tx, record)?;
        }
        let mut ids = Vec::with_capacity(events.len());
        for (channel, payload) in events {
            ids.push(tx.query_row(
                "INSERT INTO events (channel, payload, created_ms, processed) VALUES (?1, ?2, ?3, 0)
                 RETURNING id",
                params![channel, payload.to_string(), now_ms],
                |row| row.get(0),
            )?);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Events not yet processed, oldest first.
    pub fn pending_events(&self) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT id, channel, payload FROM events WHERE processed = 0 ORDER BY id")?;
        let rows = stmt.query_map(params![], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, payload) = row?;
            let payload =
                serde_json::from_str(&payload).map_err(|e| StoreError::Decode(e.to_string()))?;
            out.push(EventRecord {
                id,
                channel,
                payload,
            });
        }
        Ok(out)
    }

    /// True while an event is recorded and not yet processed.
    pub fn event_pending(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.lock();
        let pending = conn
            .query_row(
                "SELECT processed FROM events WHERE id = ?1",
                params![id],
                |row| row.get::<_, i64>(0),
            )
            .optional()?;
        Ok(pending == Some(0))
    }

    /// Marks several events processed in one transaction, not synced ([`Store::lock_unsynced`]):
    /// a mark a system crash loses delivers its event once more at the next start (at least
    /// once, as for a crash before the marks are written), and the next synced commit of anything
    /// makes it durable.
    pub fn mark_events_processed(&self, ids: &[i64]) -> Result<(), StoreError> {
        let conn = self.lock_unsynced()?;
        let tx = conn.transaction()?;
        {
            let mut mark = tx.prepare_cached("UPDATE events SET processed = 1 WHERE id = ?1")?;
            for id in ids {
                mark.execute(params![id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn run_row(row: &super::db::Row<'_>) -> super::db::Result<RunRecord> {
    let origin: String = row.get(7)?;
    Ok(RunRecord {
        key: row.get(0)?,
        repo: row.get(1)?,
        state: row.get(2)?,
        created: row.get(3)?,
        ended: row.get(4)?,
        error: row.get(5)?,
        callback_url: row.get(6)?,
        origin: Origin::from_json(&serde_json::from_str(&origin).unwrap_or(Value::Null)),
        attempt: row.get(8)?,
        again_of: row.get(9)?,
        steps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(key: &str) -> RunRecord {
        let job = |k: &str, service: &str| JobRecord {
            key: k.into(),
            action_name: "install".into(),
            actor_name: "node".into(),
            service_name: service.into(),
            service_key: format!("node!{service}"),
            state: JobState::New,
            logs: Vec::new(),
            args: Value::Null,
            started_ms: None,
            ended_ms: None,
        };
        RunRecord {
            key: key.into(),
            repo: "demo".into(),
            state: RunState::Running,
            created: 100,
            ended: None,
            error: None,
            callback_url: None,
            origin: Origin::Api,
            attempt: 1,
            again_of: None,
            steps: vec![
                StepRecord {
                    number: 1,
                    jobs: vec![job("j1", "a"), job("j2", "b")],
                },
                StepRecord {
                    number: 2,
                    jobs: vec![job("j3", "c")],
                },
            ],
        }
    }

    /// Every engine change that carries an audit row writes both in one transaction: a change
    /// whose row cannot be written is not made, and a row whose change fails is not written.
    #[test]
    fn a_change_and_its_audit_row_commit_or_roll_back_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let row = |action: &str| AuditRecord {
            at_ms: 1,
            door: "rest".into(),
            identity: "github:alice".into(),
            action: action.into(),
            target: "demo".into(),
            outcome: "ok".into(),
            message: String::new(),
        };
        let rows = |store: &Store| {
            let all = store
                .list_audit(&super::super::AuditQuery {
                    limit: 100,
                    ..Default::default()
                })
                .expect("audit");
            all.into_iter()
                .rev()
                .map(|r| r.record.action)
                .collect::<Vec<_>>()
        };
        let repo = RepoRecord {
            name: "demo".into(),
            git_url: None,
            created_ms: 1,
        };
        let services = [("node!a".to_string(), "{}".to_string())];
        let refuse = |table: &str| {
            let conn = store.lock();
            conn.execute_batch(&if conn.is_postgres() {
                format!(
                    "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
                       AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                     CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                       FOR EACH ROW EXECUTE FUNCTION refuse();"
                )
            } else {
                format!(
                    "CREATE TEMP TRIGGER refuse_{table} BEFORE INSERT ON {table}
                     BEGIN SELECT RAISE(ABORT, 'refused'); END;"
                )
            })
            .expect("trigger");
        };
        let allow = |table: &str| {
            let conn = store.lock();
            conn.execute_batch(&if conn.is_postgres() {
                format!("DROP TRIGGER refuse_{table} ON {table};")
            } else {
                format!("DROP TRIGGER refuse_{table};")
            })
            .expect("drop");
        };

        // The audit row cannot be written: no change is made.
        refuse("audit");
        assert!(store.insert_repo(&repo, Some(&row("repo.create"))).is_err());
        assert_eq!(store.repo("demo").expect("repo"), None);
        store.insert_repo(&repo, None).expect("unaudited");
        let save = store.save_services("demo", &services, &[], Some(&row("blueprint.execute")));
        assert!(save.is_err());
        assert!(store.services("demo").expect("services").is_empty());
        store
            .save_services("demo", &services, &[], None)
            .expect("unaudited");
        assert!(
            store
                .insert_run_audited(&run("r1"), &json!({}), Some(&row("run.create")))
                .is_err()
        );
        assert_eq!(store.run("demo", "r1").expect("run"), None);
        store.insert_run(&run("r1"), &json!({})).expect("unaudited");
        let cancel = store.cancel_run("r1", 5, "by alice", None, Some(&row("run.cancel")));
        assert!(cancel.is_err());
        let state = store.run("demo", "r1").expect("run").map(|r| r.state);
        assert_eq!(state, Some(RunState::Running));
        assert!(
            store
                .delete_repo("demo", Some(&row("repo.delete")))
                .is_err()
        );
        assert!(store.repo("demo").expect("repo").is_some());
        assert!(rows(&store).is_empty());
        allow("audit");

        // The change fails: no row is written.
        refuse("runs");
        assert!(
            store
                .insert_run_audited(&run("r2"), &json!({}), Some(&row("run.create")))
                .is_err()
        );
        allow("runs");
        refuse("services");
        let save = store.save_services("demo", &services, &[], Some(&row("service.execute")));
        assert!(save.is_err());
        allow("services");
        assert!(rows(&store).is_empty());

        // Both go through together.
        store
            .cancel_run("r1", 5, "by alice", None, Some(&row("run.cancel")))
            .expect("cancel");
        assert!(
            store
                .delete_repo("demo", Some(&row("repo.delete")))
                .expect("delete")
        );
        assert!(
            store
                .insert_repo(&repo, Some(&row("repo.create")))
                .expect("create")
        );
        assert!(
            !store
                .insert_repo(&repo, Some(&row("repo.create")))
                .expect("taken"),
            "a taken name writes no row: the door records the refusal"
        );
        assert_eq!(rows(&store), ["run.cancel", "repo.delete", "repo.create"]);
    }

    #[test]
    fn origins_round_trip_and_old_chat_origins_read() {
        for origin in [
            Origin::Api,
            Origin::Chat { chat_id: -42 },
            Origin::Event {
                channel: "email".into(),
            },
            Origin::Schedule,
            Origin::Unknown,
        ] {
            assert_eq!(Origin::from_json(&origin.to_json()), origin);
        }
        assert_eq!(
            Origin::from_json(&json!({"telegram_chat": 7})),
            Origin::Chat { chat_id: 7 }
        );
    }

    #[test]
    fn a_run_round_trips_with_steps_jobs_and_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.insert_run(&run("r1"), &json!({})).expect("insert");
        let line = LogRecord {
            epoch: 1.5,
            level: "stdout".into(),
            log: "hello".into(),
        };
        store
            .finish_job("j2", JobState::Ok, std::slice::from_ref(&line))
            .expect("finish");
        let got = store.run("demo", "r1").expect("query").expect("found");
        assert_eq!(got.steps.len(), 2);
        assert_eq!(got.steps[0].jobs[1].state, JobState::Ok);
        assert_eq!(got.steps[0].jobs[1].logs, vec![line]);
        assert_eq!(got.steps[1].jobs[0].key, "j3");
        assert_eq!(store.run("other", "r1").expect("query"), None);
    }

    #[test]
    fn a_runs_log_after_a_place_is_its_own_lines_in_order_also_those_stored_before_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.insert_run(&run("r1"), &json!({})).expect("insert");
        let mut other = run("r2");
        for step in &mut other.steps {
            for job in &mut step.jobs {
                job.key = format!("other-{}", job.key);
            }
        }
        store.insert_run(&other, &json!({})).expect("insert");
        let line = |log: &str| LogRecord {
            epoch: 1.0,
            level: "stdout".into(),
            log: log.into(),
        };
        let first = store
            .append_logs("j1", &[line("a"), line("b")])
            .expect("a b");
        store.append_logs("other-j1", &[line("x")]).expect("x");
        let old = Store::open(dir.path()).expect("second handle");
        // The database as the migration before this index left it: lines without their run
        // (and without what later migrations added).
        let before = super::super::MIGRATIONS
            .iter()
            .position(|m| m.contains("job_logs ADD COLUMN run_key"))
            .expect("the migration");
        let conn = old.lock();
        let version = if conn.is_postgres() {
            format!("DELETE FROM cockpit_schema WHERE version > {before};")
        } else {
            format!("PRAGMA user_version = {before};")
        };
        conn.execute_batch(&format!(
            "DROP INDEX job_logs_run; ALTER TABLE job_logs DROP COLUMN run_key;
             ALTER TABLE jobs DROP COLUMN started_ms; ALTER TABLE jobs DROP COLUMN ended_ms;
             ALTER TABLE mail_messages DROP COLUMN written; DROP TABLE repo_files;
             DROP INDEX mail_messages_dedup; ALTER TABLE mail_messages DROP COLUMN dedup;
             DROP TABLE app_sessions; DROP TABLE app_used_tokens; {version}"
        ))
        .expect("downgrade");
        drop(conn);
        drop((old, store));
        let store = Store::open(dir.path()).expect("migrate");
        store
            .finish_job("j3", JobState::Ok, &[line("c")])
            .expect("c");
        let logs = |after| -> Vec<(String, String)> {
            store
                .run_logs("r1", after, 10)
                .expect("logs")
                .into_iter()
                .map(|(_, job, l)| (job, l.log))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(j, l)| (j.to_string(), l.to_string()))
                .collect()
        };
        assert_eq!(logs(0), pairs(&[("j1", "a"), ("j1", "b"), ("j3", "c")]));
        assert_eq!(logs(first[0]), pairs(&[("j1", "b"), ("j3", "c")]));
        assert_eq!(store.run_logs("r1", 0, 1).expect("limit").len(), 1);
        assert_eq!(store.run_logs("r2", 0, 10).expect("other").len(), 1);
        assert_eq!(
            store.run_state("demo", "r1").expect("state"),
            Some(run("r1").state)
        );
        assert_eq!(store.run_state("other", "r1").expect("state"), None);
    }

    #[test]
    fn interrupted_runs_are_marked_error_and_their_unfinished_jobs_queued_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .insert_run(&run("r1"), &json!({"x": 1}))
            .expect("insert");
        store.finish_job("j2", JobState::Ok, &[]).expect("ok");
        store
            .finish_job("j1", JobState::Running, &[])
            .expect("running");
        let mut n = 0;
        let mut keys = || {
            n += 1;
            format!("k{n}")
        };
        let cut = store
            .interrupt_runs(
                "demo",
                "interrupted: cockpit stopped",
                200,
                &|_, _, _| None,
                &mut keys,
            )
            .expect("interrupt");
        assert_eq!(
            cut.jobs,
            vec![("node!a".to_string(), "install".to_string())]
        );
        assert_eq!(cut.runs, vec!["r1".to_string()]);
        assert_eq!(cut.again, vec![("r1".to_string(), "k1".to_string())]);
        let got = store.run("demo", "r1").expect("query").expect("found");
        assert_eq!(got.state, RunState::Error);
        assert_eq!(
            got.error.as_deref(),
            Some("interrupted: cockpit stopped; queued again as run k1")
        );
        let states: Vec<JobState> = got
            .steps
            .iter()
            .flat_map(|s| &s.jobs)
            .map(|j| j.state)
            .collect();
        assert_eq!(states, [JobState::Error, JobState::Ok, JobState::Error]);

        // The new run: the jobs that had not ended ok, steps numbered again, the same args and
        // origin, waiting in the queue.
        let again = store.run("demo", "k1").expect("query").expect("queued");
        assert_eq!((again.state, again.attempt), (RunState::New, 2));
        assert_eq!(again.again_of.as_deref(), Some("r1"));
        assert_eq!(again.origin, Origin::Api);
        assert_eq!(store.run_args("k1").expect("args"), json!({"x": 1}));
        let jobs: Vec<(u32, &str, JobState)> = again
            .steps
            .iter()
            .flat_map(|s| {
                s.jobs
                    .iter()
                    .map(move |j| (s.number, j.service_name.as_str(), j.state))
            })
            .collect();
        assert_eq!(jobs, [(1, "a", JobState::New), (2, "c", JobState::New)]);
        assert_eq!(store.queued_runs("demo").expect("queue"), ["k1"]);

        // Cut short again and again: after MAX_ATTEMPTS starts it stays error.
        let mut last = "k1".to_string();
        for attempt in 2..=MAX_ATTEMPTS {
            store
                .set_run_state(&last, RunState::Running, None, None)
                .expect("start");
            let cut = store
                .interrupt_runs(
                    "demo",
                    "interrupted: again",
                    300,
                    &|_, _, _| None,
                    &mut keys,
                )
                .expect("interrupt");
            let run = store.run("demo", &last).expect("query").expect("found");
            if attempt < MAX_ATTEMPTS {
                last = cut.again[0].1.clone();
            } else {
                assert!(cut.again.is_empty(), "{cut:?}");
                assert_eq!(
                    run.error.as_deref(),
                    Some(
                        format!("interrupted: again; not queued again: cut short {attempt} times")
                            .as_str()
                    )
                );
            }
        }
        assert!(store.queued_runs("demo").expect("queue").is_empty());

        // The crash came after the last job ended and before the run's end was stored.
        let mut late = run("r2");
        for job in late.steps.iter_mut().flat_map(|s| &mut s.jobs) {
            job.key = format!("r2-{}", job.key);
        }
        store.insert_run(&late, &json!({})).expect("insert");
        for job in ["r2-j1", "r2-j2", "r2-j3"] {
            store.finish_job(job, JobState::Ok, &[]).expect("ok");
        }
        let cut = store
            .interrupt_runs("demo", "interrupted: late", 400, &|_, _, _| None, &mut keys)
            .expect("interrupt");
        assert!(cut.again.is_empty(), "{cut:?}");
        let got = store.run("demo", "r2").expect("query").expect("found");
        assert_eq!((got.state, got.error), (RunState::Ok, None));
    }

    #[test]
    fn events_wait_until_processed_and_repos_delete_with_their_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let payload = json!({"subject": "hi"});
        let id = store
            .insert_events(&[("email", &payload)], 1)
            .expect("event")[0];
        assert_eq!(store.pending_events().expect("pending").len(), 1);
        assert!(store.event_pending(id).expect("pending"));
        store.mark_events_processed(&[id]).expect("mark");
        assert!(store.pending_events().expect("pending").is_empty());
        assert!(!store.event_pending(id).expect("processed"));
        assert!(!store.event_pending(id + 100).expect("unknown"));

        let repo = RepoRecord {
            name: "demo".into(),
            git_url: None,
            created_ms: 1,
        };
        assert!(store.insert_repo(&repo, None).expect("insert"));
        assert!(
            !store.insert_repo(&repo, None).expect("again"),
            "409 material"
        );
        store
            .save_services("demo", &[("node!a".into(), "{}".into())], &[], None)
            .expect("services");
        store.insert_run(&run("r1"), &json!({})).expect("run");
        assert!(store.delete_repo("demo", None).expect("delete"));
        assert!(store.services("demo").expect("services").is_empty());
        assert!(store.runs("demo").expect("runs").is_empty());
        assert_eq!(store.repo("demo").expect("repo"), None);
    }

    #[test]
    fn pruning_takes_only_ended_runs_older_than_the_cut_a_batch_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for (key, state, ended) in [
            ("old1", RunState::Ok, Some(100)),
            ("old2", RunState::Error, Some(200)),
            ("old3", RunState::Cancelled, Some(300)),
            ("young", RunState::Ok, Some(5_000)),
            ("waits", RunState::New, None),
            ("runs", RunState::Running, None),
        ] {
            let mut r = run(key);
            r.state = state;
            r.ended = ended;
            for job in r.steps.iter_mut().flat_map(|s| s.jobs.iter_mut()) {
                job.key = format!("{key}-{}", job.key);
            }
            store.insert_run(&r, &json!({})).expect("insert");
        }
        let line = LogRecord {
            epoch: 1.0,
            level: "stdout".into(),
            log: "gone".into(),
        };
        store
            .finish_job("old1-j1", JobState::Ok, &[line])
            .expect("log");
        assert_eq!(store.prune_runs("demo", 1_000, 2).expect("prune"), 2);
        assert_eq!(store.prune_runs("demo", 1_000, 2).expect("prune"), 1);
        assert_eq!(store.prune_runs("demo", 1_000, 2).expect("prune"), 0);
        let left: Vec<String> = store
            .runs("demo")
            .expect("runs")
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        for key in ["young", "waits", "runs"] {
            assert!(left.contains(&key.to_string()), "{left:?}");
        }
        assert!(store.run_logs("old1", 0, 10).expect("logs").is_empty());
        let jobs: i64 = store
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE run_key LIKE 'old%'",
                params![],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(jobs, 0);
    }
}
