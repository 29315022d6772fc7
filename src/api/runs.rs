//! Run control under `/ays/repository/{repo}/aysrun/{key}/...` (behind the same JWT guard as the
//! rest of `/ays`): `POST .../cancel`, and `GET .../logs`, the run's log as Server-Sent Events:
//! the lines stored so far, then (with `?follow=true`) each line as the job prints it, until the
//! run ends. Each line's event id is its place in the run's log, so a client that reconnects
//! with `Last-Event-ID` gets exactly the lines it missed.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Reply};

use super::auth::Job;
use super::reply::respond;
use super::schemas::{AuthFailures, Error, RepoFailures, Run};
use crate::actors::Shared;
use crate::actors::notice::Notice;
use crate::client::views::LogLineView;
use crate::client::{Audit, AysClient};
use crate::store::RunState;

/// The run-control routes, relative to `/ays/repository`.
pub fn routes(shared: Shared) -> Vec<BoxedFilter<(Job,)>> {
    let cancel = warp::path!(String / "aysrun" / String / "cancel")
        .and(warp::post())
        .map(|repo, key| Job::change(move |audit| cancel_run(audit, repo, key)))
        .boxed();
    let logs = warp::path!(String / "aysrun" / String / "logs")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(super::with(shared))
        .then(run_logs)
        .map(Job::Done)
        .boxed();
    let rerun = warp::path!(String / "aysrun" / String / "rerun")
        .and(warp::post())
        .map(|repo, key| Job::change(move |audit| rerun_run(audit, repo, key)))
        .boxed();
    vec![cancel, logs, rerun]
}

/// Plan the actions of a run again, with the same args, as a new run: it starts at once, or
/// waits behind the run in progress (state `new`).
#[utoipa::path(post, path = "/ays/repository/{repo}/aysrun/{key}/rerun", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"),
        ("key" = String, Path, description = "Key of the run to run again")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 201, description = "The new run", body = Run),
        (status = 422, description = "The run's services are gone", body = super::schemas::Problems),
        AuthFailures, RepoFailures))]
pub(crate) async fn rerun_run(audit: Option<Audit>, repo: String, key: String) -> Response {
    respond(
        AysClient
            .rerun(&repo, key, crate::store::Origin::Api, audit)
            .await,
        StatusCode::CREATED,
    )
}

/// Cancel a running or queued run: its jobs get SIGTERM, then SIGKILL after 5 s; the run ends
/// `cancelled` and the repository is free for the next run at once.
#[utoipa::path(post, path = "/ays/repository/{repo}/aysrun/{key}/cancel", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"),
        ("key" = String, Path, description = "Run key")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The run, cancelled", body = Run),
        (status = 409, description = "The run has ended", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn cancel_run(audit: Option<Audit>, repo: String, key: String) -> Response {
    respond(
        AysClient
            .cancel_run(&repo, key, "the REST API", audit)
            .await,
        StatusCode::OK,
    )
}

/// A run's log as Server-Sent Events: event `log` per line (its id is the line's place in the
/// log, data `{job, epoch, level, log}`), then `end` with `{state}`. With `follow=true` the
/// stream stays open and delivers each line as a job prints it until the run ends;
/// `Last-Event-ID` resumes after a line.
#[utoipa::path(get, path = "/ays/repository/{repo}/aysrun/{key}/logs", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"),
        ("key" = String, Path, description = "Run key"),
        ("follow" = Option<String>, Query, description = "`true`: stream until the run ends"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this line (an id this server sent; anything else starts from the first line)")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The log as an event stream", content_type = "text/event-stream", body = String),
        AuthFailures, RepoFailures))]
pub(crate) async fn run_logs(
    repo: String,
    key: String,
    query: HashMap<String, String>,
    last: Option<String>,
    shared: Shared,
) -> Response {
    // An id this server did not send (not a line number) resumes from the start.
    let last: Option<i64> = last
        .and_then(|id| id.trim().parse().ok())
        .filter(|id| *id >= 0);
    let follow = query.get("follow").is_some_and(|v| v == "true" || v == "1");
    // Subscribed before the first read: no line falls between the two.
    let notices = shared.notices.subscribe();
    let after = last.unwrap_or(0);
    match AysClient.run_logs(&repo, key.clone(), after).await {
        Ok((lines, state)) => {
            let following = Follow {
                repo,
                key,
                last: after,
                pending: VecDeque::new(),
                notices,
                ended: false,
            };
            let stream = following.start(lines, state, follow);
            warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
        }
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}

/// How long a client following a log gathers the lines after the first of a burst.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// A client following a run's log.
struct Follow {
    /// The repository.
    repo: String,
    /// The run.
    key: String,
    /// The last sequence number sent.
    last: i64,
    /// Events ready to send.
    pending: VecDeque<Event>,
    /// The core's notices.
    notices: broadcast::Receiver<Arc<Notice>>,
    /// The end event is queued: nothing follows it.
    ended: bool,
}

impl Follow {
    /// The stream: `lines` (already read), then what follows until the run ends (or at once,
    /// when the run has ended or the client does not follow).
    fn start(
        mut self,
        lines: Vec<LogLineView>,
        state: RunState,
        follow: bool,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        self.push_lines(lines);
        if state.is_final() || !follow {
            self.push_end(state);
        }
        futures::stream::unfold(self, |mut me| async move {
            loop {
                if let Some(event) = me.pending.pop_front() {
                    return Some((Ok(event), me));
                }
                if me.ended {
                    return None;
                }
                me.wait().await;
            }
        })
    }

    fn push_lines(&mut self, lines: Vec<LogLineView>) {
        for line in lines {
            if line.seq <= self.last {
                continue;
            }
            self.last = line.seq;
            let event = Event::default()
                .id(line.seq.to_string())
                .event("log")
                .json_data(&line);
            if let Ok(event) = event {
                self.pending.push_back(event);
            }
        }
    }

    fn push_end(&mut self, state: RunState) {
        let event = Event::default()
            .event("end")
            .json_data(json!({"state": state}));
        if let Ok(event) = event {
            self.pending.push_back(event);
        }
        self.ended = true;
    }

    /// Reads what was stored after the last line sent (after a gap, and at the end).
    async fn catch_up(&mut self) -> Option<RunState> {
        match AysClient
            .run_logs(&self.repo, self.key.clone(), self.last)
            .await
        {
            Ok((lines, state)) => {
                self.push_lines(lines);
                Some(state)
            }
            Err(_) => None,
        }
    }

    /// Waits for the next notice about this run and queues what it means, then what follows it
    /// within [`COALESCE`]: lines come in bursts, and a burst leaves in one write (hyper writes
    /// the events that are ready together) instead of one write and one wake-up per line.
    async fn wait(&mut self) {
        let first = self.notices.recv().await;
        self.take(first).await;
        // A notice about another run, or the end: nothing to gather.
        if self.ended || self.pending.is_empty() {
            return;
        }
        tokio::time::sleep(COALESCE).await;
        while !self.ended {
            match self.notices.try_recv() {
                Ok(notice) => self.take(Ok(notice)).await,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => self.take(Err(RecvError::Lagged(n))).await,
                Err(TryRecvError::Closed) => self.take(Err(RecvError::Closed)).await,
            }
        }
    }

    /// Queues what one notice (or the channel's state) means for this client.
    async fn take(&mut self, notice: Result<Arc<Notice>, RecvError>) {
        match notice {
            Ok(notice) => match &*notice {
                Notice::JobLog {
                    run,
                    job,
                    seq,
                    line,
                    ..
                } if *run == self.key => {
                    self.push_lines(vec![LogLineView::new(*seq, job.clone(), line.clone())]);
                }
                Notice::RunEnded { run, state, .. } if *run == self.key => {
                    let state = *state;
                    self.catch_up().await;
                    self.push_end(state);
                }
                _ => {}
            },
            Err(RecvError::Lagged(_)) => {
                if let Some(state) = self.catch_up().await
                    && state.is_final()
                {
                    self.push_end(state);
                }
            }
            Err(RecvError::Closed) => {
                let state = self.catch_up().await.unwrap_or(RunState::Error);
                self.push_end(state);
            }
        }
    }
}
