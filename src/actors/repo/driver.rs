//! The driver of one run: a task that executes the run's steps in order, each step's jobs in
//! parallel (bounded by the shared worker semaphore), and reports every job back to the
//! repository actor as a message. The actor owns all state; the driver owns only the waiting.
//!
//! Also here: the run's HTTP callback, retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use ractor::{ActorRef, call};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tracing::warn;

use super::RepoMsg;
use crate::runner::{self, ActionJob, LogLine};

/// A job ready to execute.
pub struct PreparedJob {
    /// The job key.
    pub key: String,
    /// The process to run.
    pub job: ActionJob,
}

/// Executes a run's steps in order, each step's jobs in parallel, and reports back.
pub async fn drive(repo: ActorRef<RepoMsg>, run: String, steps: usize, workers: Arc<Semaphore>) {
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
            let repo = repo.clone();
            let run = run.clone();
            async move {
                let _permit = workers.acquire_owned().await;
                let key = job.key.clone();
                let (live, lines) = mpsc::channel(LIVE_LINES);
                let forwarder =
                    tokio::spawn(forward_lines(repo.clone(), run.clone(), key.clone(), lines));
                let started = move |pgid| {
                    let _ = repo.cast(RepoMsg::JobStarted {
                        run,
                        job: key,
                        pgid,
                    });
                };
                let outcome = runner::run_action_live(job.job, started, Some(live)).await;
                // Every live line is with the actor before the job's end is.
                let _ = forwarder.await;
                (job.key, outcome)
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

/// How many live lines of one job may wait for the actor (the job's output waits beyond).
const LIVE_LINES: usize = 1024;

/// Hands a job's live lines to the actor in batches (whatever has arrived, up to 256 at once),
/// until the job's output ends.
async fn forward_lines(
    repo: ActorRef<RepoMsg>,
    run: String,
    job: String,
    mut lines: mpsc::Receiver<LogLine>,
) {
    let mut batch = Vec::new();
    while lines.recv_many(&mut batch, 256).await > 0 {
        let message = RepoMsg::JobLines {
            run: run.clone(),
            job: job.clone(),
            lines: std::mem::take(&mut batch),
        };
        if repo.cast(message).is_err() {
            return;
        }
    }
}

/// How a run callback is retried: 1 s, 2 s, 4 s between the attempts.
fn callback_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .with_max_times(3)
}

/// POSTs a run's result to its callback URL, retrying with backoff.
pub async fn post_callback(http: reqwest::Client, url: String, body: Value) {
    let run = body["key"].as_str().unwrap_or_default().to_string();
    let attempt = || async {
        let response = http.post(&url).json(&body).send().await?;
        response.error_for_status().map(|_| ())
    };
    let result = attempt
        .retry(callback_backoff())
        .notify(|err: &reqwest::Error, wait: Duration| {
            let retry_in_ms = wait.as_millis() as u64;
            warn!(%run, error = %described(err), retry_in_ms, "run callback failed");
        })
        .await;
    if let Err(err) = result {
        warn!(%run, error = %described(&err), "run callback given up");
    }
}

/// A callback failure in words, without its URL (it may carry a secret).
fn described(err: &reqwest::Error) -> String {
    if let Some(status) = err.status() {
        format!("refused with {status}")
    } else if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// A random key for runs and jobs: 16 hex characters.
pub fn random_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
