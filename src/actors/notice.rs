//! Notices: the door-neutral stream of what happens in the core (a run started or ended, a job
//! ended, an event arrived, a login finished). The core publishes them and knows no reader; any
//! door subscribes and decides what to tell whom (the Telegram bot tells the chat that started a
//! run how it ended). Adding a subscriber never touches the core.
//!
//! The stream is a bounded broadcast: a subscriber that falls more than [`CAPACITY`] notices
//! behind loses the oldest ones (it is told how many) instead of holding memory for them.
//! Notices are for telling people; nothing durable depends on them.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::{JobState, Origin, RunState};

/// How many notices a subscriber may be behind before it loses the oldest.
pub const CAPACITY: usize = 4096;

/// Something that happened in the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A run started.
    RunStarted {
        /// Its repository.
        repo: String,
        /// Its key.
        run: String,
        /// Who asked for it.
        origin: Origin,
    },
    /// A job printed a line (stored first: `seq` is its place in the run's log).
    JobLog {
        /// Its repository.
        repo: String,
        /// Its run.
        run: String,
        /// The job.
        job: String,
        /// The line's sequence number (increasing within the run).
        seq: i64,
        /// The line.
        line: crate::store::LogRecord,
    },
    /// A job of a run ended.
    JobEnded {
        /// Its repository.
        repo: String,
        /// Its run.
        run: String,
        /// Its key.
        job: String,
        /// The service (`role!name`).
        service: String,
        /// The action.
        action: String,
        /// `ok` or `error`.
        state: JobState,
    },
    /// A run ended.
    RunEnded {
        /// Its repository.
        repo: String,
        /// Its key.
        run: String,
        /// `ok` or `error`.
        state: RunState,
        /// Why it failed.
        error: Option<String>,
        /// Who asked for it.
        origin: Origin,
    },
    /// An inbound event was handed to the repositories.
    EventReceived {
        /// The stored event id (none for events that were not recorded).
        id: Option<i64>,
        /// The channel.
        channel: String,
    },
    /// A chat's OAuth login finished (completed in a browser, through the HTTP door).
    LoginFinished {
        /// The chat that asked for the login.
        chat_id: i64,
        /// How it ended.
        outcome: LoginOutcome,
    },
}

/// How a chat's login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Someone logged in at the provider: the chat waits for the one-time `/start <code>` the
    /// login page showed them (the chat is not authorized by the browser alone).
    Completed,
    /// The user cancelled at the provider.
    Cancelled,
    /// The user is not a member of the organization.
    NotMember {
        /// The organization.
        organization: String,
    },
    /// Something failed (the details are in the server log).
    Failed,
}

/// The publishing end; cloning it shares the stream.
#[derive(Clone)]
pub struct Notices {
    /// The broadcast sender.
    sender: broadcast::Sender<Arc<Notice>>,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Notices {
    /// Publishes a notice to every current subscriber (none is fine).
    pub fn publish(&self, notice: Notice) {
        let _ = self.sender.send(Arc::new(notice));
    }

    /// A new subscription: every notice published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.sender.subscribe()
    }
}

/// The durable form of a failure notice, for the subscribers that must get it even across a
/// crash (the HTTP webhooks of `[notify]`): written to the store's outbox in the transaction
/// that ends the run. `None` when the run did not fail or nobody subscribed.
pub fn durable(
    config: &crate::config::Config,
    ended: &RunEnd<'_>,
) -> Option<crate::store::DurableNotice> {
    if !matches!(ended.state, RunState::Error | RunState::Cancelled)
        || config.notify.webhooks.is_empty()
    {
        return None;
    }
    let body = serde_json::json!({
        "event": "run.ended",
        "repo": ended.repo,
        "run": ended.run,
        "state": ended.state,
        "error": ended.error,
        "origin": ended.origin.to_json(),
        "ended": crate::clock::now_secs(),
    });
    Some(crate::store::DurableNotice {
        targets: config
            .notify
            .webhooks
            .iter()
            .map(|w| w.url.clone())
            .collect(),
        body: body.to_string(),
        cap: config.notify.max_outbox,
        at_ms: crate::clock::now_ms(),
    })
}

/// What [`durable`] needs to know about a run that ended.
pub struct RunEnd<'a> {
    /// Its repository.
    pub repo: &'a str,
    /// Its key.
    pub run: &'a str,
    /// How it ended.
    pub state: RunState,
    /// Why.
    pub error: Option<&'a str>,
    /// Who asked for it.
    pub origin: &'a Origin,
}
