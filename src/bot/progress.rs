//! The run messages a chat is shown while its runs go on: the message that said "Run X
//! started" (with its Cancel button) is edited with the run's progress (steps done, the last
//! lines of output), at most once per [`EVERY`] per message and only when its text changed, so
//! the bot stays well within Telegram's edit limits; when the run ends it is edited one last time
//! (without the button).
//!
//! Sessions record the message once Telegram took it ([`Tracked`]); the bot supervisor edits
//! them on its progress tick and when a run ends. The texts are built here (no IO).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Button;
use super::render;
use crate::client::views::RunView;
use crate::store::{JobState, RunState};

/// How often a run's message may be edited (Telegram allows about one message a second per
/// chat, and far fewer edits per minute in groups).
pub const EVERY: Duration = Duration::from_secs(3);

/// How many runs' messages are followed at most (the oldest are dropped beyond).
const MAX_TRACKED: usize = 1000;

/// How many of the last output lines the message shows.
const LAST_LINES: usize = 5;

/// The longest output line shown (longer ones are cut).
const LINE_CHARS: usize = 120;

/// A run message being followed.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The run's repository.
    pub repo: String,
    /// The chat.
    pub chat_id: i64,
    /// The message to edit.
    pub message_id: i64,
    /// The text it shows now (escaped), so an unchanged text is not sent again.
    pub shown: String,
    /// When it was recorded (the oldest go first beyond [`MAX_TRACKED`]).
    pub since: Instant,
}

/// The run messages being followed, by run key; shared by the sessions (which add) and the bot
/// supervisor (which edits and removes).
#[derive(Clone, Default)]
pub struct RunMessages(Arc<Mutex<HashMap<String, Tracked>>>);

impl RunMessages {
    /// Follows run `run`'s message.
    pub fn track(&self, run: &str, repo: &str, chat_id: i64, message_id: i64, shown: String) {
        let mut map = self.0.lock();
        if map.len() >= MAX_TRACKED
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, t)| t.since)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            run.to_string(),
            Tracked {
                repo: repo.to_string(),
                chat_id,
                message_id,
                shown,
                since: Instant::now(),
            },
        );
    }

    /// Every followed run.
    pub fn all(&self) -> Vec<(String, Tracked)> {
        self.0
            .lock()
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect()
    }

    /// Records the text a run's message shows now.
    pub fn shown(&self, run: &str, text: &str) {
        if let Some(t) = self.0.lock().get_mut(run) {
            t.shown = text.to_string();
        }
    }

    /// Stops following a run; what was followed.
    pub fn take(&self, run: &str) -> Option<Tracked> {
        self.0.lock().remove(run)
    }
}

/// The Cancel button of a running run's message.
pub fn cancel_button(run: &str) -> Vec<Vec<Button>> {
    vec![vec![Button {
        label: "Cancel".into(),
        data: format!("/run cancel {run}"),
    }]]
}

/// The first text of a run's message (escaped).
pub fn started(run: &str, steps: usize) -> String {
    render::escape(&format!(
        "Run {run} started: {steps} step(s). I will tell you when it ends."
    ))
}

/// A run's message for its current state (escaped, well under one message).
pub fn text(repo: &str, run: &RunView) -> String {
    let jobs: Vec<_> = run.steps.iter().flat_map(|s| &s.jobs).collect();
    let done = jobs
        .iter()
        .filter(|j| matches!(j.state, JobState::Ok | JobState::Error))
        .count();
    let failed = jobs.iter().filter(|j| j.state == JobState::Error).count();
    let steps_done = run
        .steps
        .iter()
        .filter(|s| {
            s.jobs
                .iter()
                .all(|j| matches!(j.state, JobState::Ok | JobState::Error))
        })
        .count();
    let mut out = format!(
        "Run {} in {repo}: {}. Steps done: {steps_done}/{}; jobs done: {done}/{}",
        run.key,
        run.state,
        run.steps.len(),
        jobs.len()
    );
    if failed > 0 {
        out.push_str(&format!(" ({failed} failed)"));
    }
    out.push('.');
    // The last lines across the run's jobs, in the order they were printed.
    let mut lines: Vec<(f64, &str)> = jobs
        .iter()
        .flat_map(|j| j.logs.iter().map(|l| (l.epoch, l.log.as_str())))
        .collect();
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let last: Vec<&str> = lines
        .iter()
        .rev()
        .take(LAST_LINES)
        .rev()
        .map(|(_, l)| *l)
        .collect();
    if !last.is_empty() {
        out.push_str("\nLast lines:");
        for line in last {
            let cut: String = line.chars().take(LINE_CHARS).collect();
            out.push_str(&format!("\n  {cut}"));
        }
    }
    if run.state != RunState::Running && run.state != RunState::New {
        out.push_str(&format!("\nDetails: /run inspect {}", run.key));
    }
    render::escape(&out)
}
