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
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::warn;

use super::RepoMsg;
use crate::runner::{self, ActionJob};

/// A job ready to execute.
pub struct PreparedJob {
    /// The job key.
    pub key: String,
    /// The process to run.
    pub job: ActionJob,
}

/// Aborts a task when dropped (a failed actor's state is dropped without `post_stop`).
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
                let started = move |pgid| {
                    let _ = repo.cast(RepoMsg::JobStarted {
                        run,
                        job: key,
                        pgid,
                    });
                };
                (
                    job.key,
                    runner::run_action_reporting(job.job, started).await,
                )
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
