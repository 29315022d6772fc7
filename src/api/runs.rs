//! Run control under `/ays/repository/{repo}/aysrun/{key}/...` (behind the same JWT guard as the
//! rest of `/ays`): `POST .../cancel`, and `GET .../logs`, the run's log as Server-Sent Events:
//! the lines stored so far, then (with `?follow=true`) each line as the job prints it, until the
//! run ends. Each line's event id is its place in the run's log, so a client that reconnects
//! with `Last-Event-ID` gets exactly the lines it missed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use warp::reply::Response;
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
pub fn routes(shared: Shared, feeds: Arc<Feeds>) -> Vec<BoxedFilter<(Job,)>> {
    let cancel = warp::path!(String / "aysrun" / String / "cancel")
        .and(warp::post())
        .map(|repo, key| Job::change(move |audit| cancel_run(audit, repo, key)))
        .boxed();
    let logs = warp::path!(String / "aysrun" / String / "logs")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(super::with(shared))
        .and(warp::any().map(move || Arc::clone(&feeds)))
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
    feeds: Arc<Feeds>,
) -> Response {
    // An id this server did not send (not a line number) resumes from the start.
    let last: Option<i64> = last
        .and_then(|id| id.trim().parse().ok())
        .filter(|id| *id >= 0);
    let follow = query.get("follow").is_some_and(|v| v == "true" || v == "1");
    // Subscribed to the run's feed before the first read: no line falls between the two.
    let batches = follow.then(|| feeds.follow(&shared, &(repo.clone(), key.clone())));
    let after = last.unwrap_or(0);
    match AysClient.run_logs(&repo, key.clone(), after).await {
        Ok((lines, state)) => {
            let mut first = Vec::new();
            let mut follower = Follower {
                repo,
                key,
                last: after,
                batches,
                feeds,
                shared,
            };
            follower.write_lines(&mut first, lines);
            if state.is_final() || !follow {
                write_end(&mut first, state);
                follower.batches = None;
            }
            let body = follower.stream(Bytes::from(first));
            let mut response = warp::reply::stream(body).into_response();
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}

/// How long a run's feed gathers the lines after the first of a burst before it hands them to
/// the clients: a burst leaves in one write per client instead of one write per line.
const COALESCE: Duration = Duration::from_millis(100);

/// How many batches a client may be behind its run's feed before it reads the store instead.
const BACKLOG: usize = 64;

/// How long a stream stays silent before it sends a comment (proxies and clients see it alive,
/// and a feed nobody follows any more notices it).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `event:log` for one line, as Server-Sent Events (its id is its place in the run's log).
fn write_line(out: &mut Vec<u8>, line: &LogLineView) {
    out.extend_from_slice(b"event:log\ndata:");
    // A view of plain strings and numbers: serialising it cannot fail.
    let _ = serde_json::to_writer(&mut *out, line);
    out.extend_from_slice(format!("\nid:{}\n\n", line.seq).as_bytes());
}

/// `event:end` with the run's final state.
fn write_end(out: &mut Vec<u8>, state: RunState) {
    out.extend_from_slice(b"event:end\ndata:");
    let _ = serde_json::to_writer(&mut *out, &json!({"state": state}));
    out.extend_from_slice(b"\n\n");
}

/// The runs being followed: one feed per run, shared by every client that follows it.
#[derive(Default)]
pub struct Feeds {
    /// Each followed run's batch sender.
    runs: Mutex<HashMap<RunId, broadcast::Sender<Arc<Batch>>>>,
}

impl Feeds {
    /// Subscribes to the feed of a run, starting it when nobody follows the run yet.
    fn follow(self: &Arc<Self>, shared: &Shared, run: &RunId) -> broadcast::Receiver<Arc<Batch>> {
        let mut runs = self.runs.lock();
        if let Some(sender) = runs.get(run) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(BACKLOG);
        runs.insert(run.clone(), sender.clone());
        let feed = Feed {
            run: run.clone(),
            last: 0,
            notices: shared.notices.subscribe(),
            sender,
            feeds: Arc::clone(self),
        };
        tokio::spawn(feed.run());
        receiver
    }

    /// Forgets the feed of `run` when it is `sender` and nobody follows it any more, or when
    /// `ended`: whether it was forgotten.
    fn forget(&self, run: &RunId, sender: &broadcast::Sender<Arc<Batch>>, ended: bool) -> bool {
        let mut runs = self.runs.lock();
        if !ended && sender.receiver_count() > 0 {
            return false;
        }
        if runs.get(run).is_some_and(|s| s.same_channel(sender)) {
            runs.remove(run);
        }
        true
    }

    /// How many runs are followed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.lock().len()
    }
}

/// Lines of one run formatted once as Server-Sent Events, for every client that follows it.
#[derive(Debug, Default)]
struct Batch {
    /// The events of the lines (then the end event, when the run ended).
    text: Bytes,
    /// Each line's place in the run's log and where its event ends in `text`.
    lines: Vec<(i64, usize)>,
    /// The run ended with this state (its event closes `text`).
    end: Option<RunState>,
}

impl Batch {
    /// What a client that has sent every line up to `last` still needs of this batch.
    fn after(&self, last: i64) -> Bytes {
        let start = self
            .lines
            .iter()
            .take_while(|(seq, _)| *seq <= last)
            .last()
            .map_or(0, |(_, end)| *end);
        self.text.slice(start..)
    }

    /// The place in the log of its last line.
    fn last(&self) -> Option<i64> {
        self.lines.last().map(|(seq, _)| *seq)
    }
}

/// A batch being gathered.
#[derive(Default)]
struct Gathering {
    text: Vec<u8>,
    lines: Vec<(i64, usize)>,
    end: Option<RunState>,
}

impl Gathering {
    fn push(&mut self, line: &LogLineView) {
        write_line(&mut self.text, line);
        self.lines.push((line.seq, self.text.len()));
    }

    fn finish(self) -> Batch {
        Batch {
            text: Bytes::from(self.text),
            lines: self.lines,
            end: self.end,
        }
    }
}

/// A run: its repository and its key.
type RunId = (String, String);

/// The task that turns the core's notices about one run into batches for its followers.
struct Feed {
    /// The run.
    run: RunId,
    /// The place in the log of the last line handed on.
    last: i64,
    /// The core's notices.
    notices: broadcast::Receiver<Arc<Notice>>,
    /// To the followers.
    sender: broadcast::Sender<Arc<Batch>>,
    /// Where it is registered.
    feeds: Arc<Feeds>,
}

impl Feed {
    async fn run(mut self) {
        loop {
            let notice = match tokio::time::timeout(KEEP_ALIVE, self.notices.recv()).await {
                Ok(notice) => notice,
                Err(_) => {
                    if self.feeds.forget(&self.run, &self.sender, false) {
                        return;
                    }
                    continue;
                }
            };
            let mut batch = Gathering::default();
            self.take(notice, &mut batch).await;
            if !batch.lines.is_empty() && batch.end.is_none() {
                tokio::time::sleep(COALESCE).await;
                while batch.end.is_none() {
                    let notice = match self.notices.try_recv() {
                        Ok(notice) => Ok(notice),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    };
                    self.take(notice, &mut batch).await;
                }
            }
            let ended = batch.end.is_some();
            if ended {
                // Forgotten first: a client that comes after this reads the end in the store.
                self.feeds.forget(&self.run, &self.sender, true);
            }
            if !batch.lines.is_empty() || ended {
                // No follower left is not an error: the next check forgets the feed.
                let _ = self.sender.send(Arc::new(batch.finish()));
            }
            if ended {
                return;
            }
        }
    }

    /// Adds what one notice (or the channel's state) means for the run to `batch`.
    async fn take(&mut self, notice: Result<Arc<Notice>, RecvError>, batch: &mut Gathering) {
        match notice {
            Ok(notice) => match &*notice {
                Notice::JobLog {
                    run,
                    job,
                    seq,
                    line,
                    ..
                } if *run == self.run.1 && *seq > self.last => {
                    self.last = *seq;
                    batch.push(&LogLineView::new(*seq, job.clone(), line.clone()));
                }
                Notice::RunEnded { run, state, .. } if *run == self.run.1 => {
                    let state = *state;
                    // Lines whose notices were lost to a lag are in the store.
                    self.catch_up(batch).await;
                    write_end(&mut batch.text, state);
                    batch.end = Some(state);
                }
                _ => {}
            },
            Err(RecvError::Lagged(_)) => {
                // The notices that were lost may have named this run: the store has its lines
                // and its state.
                if let Some(state) = self.catch_up(batch).await
                    && state.is_final()
                {
                    write_end(&mut batch.text, state);
                    batch.end = Some(state);
                }
            }
            Err(RecvError::Closed) => {
                let state = self.catch_up(batch).await.unwrap_or(RunState::Error);
                write_end(&mut batch.text, state);
                batch.end = Some(state);
            }
        }
    }

    /// Adds the lines stored after the last one handed on to `batch`; the run's state.
    async fn catch_up(&mut self, batch: &mut Gathering) -> Option<RunState> {
        let (repo, key) = &self.run;
        let (lines, state) = AysClient
            .run_logs(repo, key.clone(), self.last)
            .await
            .ok()?;
        for line in lines {
            if line.seq > self.last {
                self.last = line.seq;
                batch.push(&line);
            }
        }
        Some(state)
    }
}

/// One client following a run's log.
struct Follower {
    /// The repository.
    repo: String,
    /// The run.
    key: String,
    /// The place in the log of the last line sent.
    last: i64,
    /// The run's feed; none once the end is sent.
    batches: Option<broadcast::Receiver<Arc<Batch>>>,
    /// Where feeds are found (a feed that closed without the end is looked up again).
    feeds: Arc<Feeds>,
    /// The core's handles, for a new feed.
    shared: Shared,
}

impl Follower {
    /// `first` (the lines already read, and the end if the run ended), then what the feed hands
    /// on until the run ends.
    fn stream(self, first: Bytes) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Sync {
        let first = (!first.is_empty()).then_some(first);
        futures::stream::unfold((self, first), |(mut me, first)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (me, None)));
            }
            let next = me.next().await?;
            Some((Ok(next), (me, None)))
        })
    }

    /// The next chunk of the stream: lines, a keep-alive comment, or the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let batches = self.batches.as_mut()?;
            match tokio::time::timeout(KEEP_ALIVE, batches.recv()).await {
                Err(_) => return Some(Bytes::from_static(b":\n\n")),
                Ok(Ok(batch)) => {
                    let text = batch.after(self.last);
                    self.last = self.last.max(batch.last().unwrap_or(self.last));
                    if batch.end.is_some() {
                        self.batches = None;
                    }
                    if !text.is_empty() {
                        return Some(text);
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => {
                    // Too slow for the feed: the store has the lines this client missed.
                    let mut text = Vec::new();
                    if let Some(state) = self.catch_up(&mut text).await
                        && state.is_final()
                    {
                        write_end(&mut text, state);
                        self.batches = None;
                    }
                    if !text.is_empty() {
                        return Some(Bytes::from(text));
                    }
                }
                Ok(Err(RecvError::Closed)) => {
                    // The feed stopped without the end (the server is stopping, or it was
                    // forgotten in a race with this client): a new feed, then the store.
                    let run = (self.repo.clone(), self.key.clone());
                    self.batches = Some(self.feeds.follow(&self.shared, &run));
                    let mut text = Vec::new();
                    let state = self.catch_up(&mut text).await;
                    if state.is_none_or(|state| state.is_final()) {
                        write_end(&mut text, state.unwrap_or(RunState::Error));
                        self.batches = None;
                    }
                    if !text.is_empty() {
                        return Some(Bytes::from(text));
                    }
                }
            }
        }
    }

    /// Writes the lines stored after the last one sent; the run's state.
    async fn catch_up(&mut self, out: &mut Vec<u8>) -> Option<RunState> {
        let (lines, state) = AysClient
            .run_logs(&self.repo, self.key.clone(), self.last)
            .await
            .ok()?;
        self.write_lines(out, lines);
        Some(state)
    }

    /// Writes `lines` after the last one sent.
    fn write_lines(&mut self, out: &mut Vec<u8>, lines: Vec<LogLineView>) {
        for line in lines {
            if line.seq > self.last {
                self.last = line.seq;
                write_line(out, &line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, log: &str) -> LogLineView {
        LogLineView {
            seq,
            job: "j".into(),
            epoch: 1.5,
            level: "stdout".into(),
            log: log.into(),
        }
    }

    #[test]
    fn a_line_and_the_end_are_the_events_warp_wrote_before() {
        let mut out = Vec::new();
        write_line(&mut out, &line(7, "a \"quoted\"\nline"));
        write_end(&mut out, RunState::Ok);
        let by_warp = format!(
            "{}{}",
            warp::sse::Event::default()
                .id("7")
                .event("log")
                .json_data(line(7, "a \"quoted\"\nline"))
                .expect("json"),
            warp::sse::Event::default()
                .event("end")
                .json_data(json!({"state": RunState::Ok}))
                .expect("json"),
        );
        assert_eq!(String::from_utf8(out).expect("utf-8"), by_warp);
    }

    #[test]
    fn a_client_gets_only_the_lines_of_a_batch_after_the_last_it_sent() {
        let mut batch = Gathering::default();
        for (seq, log) in [(3, "three"), (5, "five"), (9, "nine")] {
            batch.push(&line(seq, log));
        }
        let batch = batch.finish();
        let text = |last| String::from_utf8(batch.after(last).to_vec()).expect("utf-8");
        assert_eq!(
            text(0),
            String::from_utf8(batch.text.to_vec()).expect("utf-8")
        );
        assert!(text(3).starts_with("event:log\ndata:{\"job\":\"j\",\"epoch\":1.5,\"level\":\"stdout\",\"log\":\"five\"}\nid:5\n\n"), "{}", text(3));
        assert!(text(4).contains("\"five\"") && !text(4).contains("\"three\""));
        assert!(
            text(5).starts_with("event:log")
                && text(5).contains("\"nine\"")
                && !text(5).contains("\"five\"")
        );
        assert_eq!(text(9), "");
        assert_eq!(text(100), "");
        assert_eq!(batch.last(), Some(9));
    }

    #[tokio::test]
    async fn a_feed_nobody_follows_is_forgotten_and_an_ended_one_at_once() {
        let feeds = Arc::new(Feeds::default());
        let run: RunId = ("r".into(), "k".into());
        let (sender, receiver) = broadcast::channel::<Arc<Batch>>(BACKLOG);
        feeds.runs.lock().insert(run.clone(), sender.clone());
        assert!(!feeds.forget(&run, &sender, false), "a follower is left");
        assert_eq!(feeds.len(), 1);
        drop(receiver);
        assert!(feeds.forget(&run, &sender, false));
        assert_eq!(feeds.len(), 0);
        // An ended feed is forgotten even while followed; another run's sender is not removed.
        let (other, _kept) = broadcast::channel::<Arc<Batch>>(BACKLOG);
        feeds.runs.lock().insert(run.clone(), other.clone());
        assert!(feeds.forget(&run, &sender, true));
        assert_eq!(feeds.len(), 1, "only the feed's own entry goes");
        assert!(feeds.forget(&run, &other, true));
        assert_eq!(feeds.len(), 0);
    }
}
