//! What `/health` and `/metrics` report: the state of each supervised actor and request counters.
//!
//! The supervisor writes actor states here; the HTTP layer writes request counts; both only read
//! and write small in-memory figures, so any thread may use them without going through an actor.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// The life state of one supervised actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorStatus {
    /// Running and serving messages.
    Up,
    /// Failed; a restart is scheduled.
    Restarting,
    /// Stopped for good (shutdown, or the restart limit was reached).
    Down,
}

/// One actor as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorHealth {
    /// Current state.
    pub status: ActorStatus,
    /// Restarts since the process started.
    pub restarts: u64,
    /// Why it last failed, if it ever did.
    pub last_error: Option<String>,
}

/// Upper bounds (seconds) of the request latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// How many recent observations a summary keeps per name.
const MAX_SAMPLES: usize = 10_000;

/// Request counters and the latency histogram.
#[derive(Default)]
struct Requests {
    /// Requests by (method, status).
    by_status: BTreeMap<(String, u16), u64>,
    /// Counts per bucket of [`BUCKETS`] (not cumulative), plus one for +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    /// Sum of all latencies, seconds.
    sum: f64,
    /// Number of observations.
    count: u64,
}

/// Shared health and metrics of the whole process.
#[derive(Default)]
pub struct Telemetry {
    /// Actor name to its health, written by the supervisor.
    actors: Mutex<BTreeMap<String, ActorHealth>>,
    /// HTTP request figures, written by the API server.
    requests: Mutex<Requests>,
    /// Named durations (the latest [`MAX_SAMPLES`] of each), shown as summaries with quantiles.
    samples: Mutex<BTreeMap<String, std::collections::VecDeque<f64>>>,
    /// Named counters other components bump (mail accepted, bot updates, runs...).
    counters: Mutex<BTreeMap<String, u64>>,
}

impl Telemetry {
    /// Marks an actor up (started or restarted).
    pub fn actor_up(&self, name: &str) {
        let mut actors = lock(&self.actors);
        let entry = actors.entry(name.to_string()).or_insert(ActorHealth {
            status: ActorStatus::Up,
            restarts: 0,
            last_error: None,
        });
        entry.status = ActorStatus::Up;
    }

    /// Records a failure of an actor that is going to be restarted.
    pub fn actor_failed(&self, name: &str, error: &str, status: ActorStatus) {
        let mut actors = lock(&self.actors);
        let entry = actors.entry(name.to_string()).or_insert(ActorHealth {
            status,
            restarts: 0,
            last_error: None,
        });
        entry.status = status;
        entry.last_error = Some(error.chars().take(500).collect());
    }

    /// Counts one restart of an actor.
    pub fn actor_restarted(&self, name: &str) {
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get_mut(name) {
            entry.restarts += 1;
            entry.status = ActorStatus::Up;
        }
    }

    /// Marks an actor stopped.
    pub fn actor_down(&self, name: &str) {
        if let Some(entry) = lock(&self.actors).get_mut(name) {
            entry.status = ActorStatus::Down;
        }
    }

    /// Every actor's health, by name.
    pub fn actors(&self) -> BTreeMap<String, ActorHealth> {
        lock(&self.actors).clone()
    }

    /// True when every known actor is up.
    pub fn all_up(&self) -> bool {
        lock(&self.actors)
            .values()
            .all(|a| a.status == ActorStatus::Up)
    }

    /// Records one HTTP request.
    pub fn request(&self, method: &str, status: u16, elapsed: Duration) {
        let mut r = lock(&self.requests);
        *r.by_status.entry((method.to_string(), status)).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        r.buckets[bucket] += 1;
        r.sum += secs;
        r.count += 1;
    }

    /// Adds `n` to a named counter (`cockpit_<name>_total` in `/metrics`).
    pub fn count(&self, name: &str, n: u64) {
        *lock(&self.counters).entry(name.to_string()).or_default() += n;
    }

    /// Records one duration of a named summary (`cockpit_<name>_seconds` in `/metrics`, with
    /// the 0.5 and 0.99 quantiles of the latest observations).
    pub fn observe(&self, name: &str, elapsed: Duration) {
        let mut samples = lock(&self.samples);
        let list = samples.entry(name.to_string()).or_default();
        if list.len() == MAX_SAMPLES {
            list.pop_front();
        }
        list.push_back(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let actors = self.actors();
        out.push_str("# HELP cockpit_actor_restarts_total Restarts of each supervised actor.\n");
        out.push_str("# TYPE cockpit_actor_restarts_total counter\n");
        for (name, a) in &actors {
            let _ = writeln!(
                out,
                "cockpit_actor_restarts_total{{actor=\"{name}\"}} {}",
                a.restarts
            );
        }
        out.push_str(
            "# HELP cockpit_actor_up Whether each supervised actor is up (1) or not (0).\n",
        );
        out.push_str("# TYPE cockpit_actor_up gauge\n");
        for (name, a) in &actors {
            let up = u8::from(a.status == ActorStatus::Up);
            let _ = writeln!(out, "cockpit_actor_up{{actor=\"{name}\"}} {up}");
        }
        let r = lock(&self.requests);
        out.push_str("# HELP cockpit_http_requests_total HTTP requests by method and status.\n");
        out.push_str("# TYPE cockpit_http_requests_total counter\n");
        for ((method, status), n) in &r.by_status {
            let _ = writeln!(
                out,
                "cockpit_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP cockpit_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE cockpit_http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += r.buckets[i];
            let _ = writeln!(
                out,
                "cockpit_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "cockpit_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            r.count
        );
        let _ = writeln!(out, "cockpit_http_request_duration_seconds_sum {}", r.sum);
        let _ = writeln!(
            out,
            "cockpit_http_request_duration_seconds_count {}",
            r.count
        );
        drop(r);
        for (name, n) in lock(&self.counters).iter() {
            let _ = writeln!(out, "# TYPE cockpit_{name}_total counter");
            let _ = writeln!(out, "cockpit_{name}_total {n}");
        }
        for (name, list) in lock(&self.samples).iter() {
            let mut sorted: Vec<f64> = list.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let _ = writeln!(out, "# TYPE cockpit_{name}_seconds summary");
            for q in [0.5, 0.99] {
                let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
                let _ = writeln!(
                    out,
                    "cockpit_{name}_seconds{{quantile=\"{q}\"}} {}",
                    sorted[at]
                );
            }
            let _ = writeln!(
                out,
                "cockpit_{name}_seconds_sum {}",
                sorted.iter().sum::<f64>()
            );
            let _ = writeln!(out, "cockpit_{name}_seconds_count {}", sorted.len());
        }
        out
    }
}

/// Takes a lock; these maps hold plain numbers, so a panic elsewhere leaves them usable.
fn lock<T>(m: &Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_and_requests_show_in_the_exposition() {
        let t = Telemetry::default();
        t.actor_up("oauth_cache");
        t.actor_failed("oauth_cache", "boom", ActorStatus::Restarting);
        assert!(!t.all_up());
        t.actor_restarted("oauth_cache");
        assert!(t.all_up());
        t.request("GET", 200, Duration::from_micros(700));
        t.request("GET", 200, Duration::from_secs(3));
        t.count("mail_accepted", 2);
        for ms in [1, 2, 3, 4, 100] {
            t.observe("chat_session_restart", Duration::from_millis(ms));
        }
        let text = t.render();
        assert!(
            text.contains("cockpit_actor_restarts_total{actor=\"oauth_cache\"} 1"),
            "{text}"
        );
        assert!(text.contains("cockpit_http_requests_total{method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("cockpit_http_request_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("cockpit_http_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("cockpit_mail_accepted_total 2"));
        assert!(text.contains("cockpit_chat_session_restart_seconds{quantile=\"0.5\"} 0.003"));
        assert!(text.contains("cockpit_chat_session_restart_seconds{quantile=\"0.99\"} 0.1"));
        assert!(text.contains("cockpit_chat_session_restart_seconds_count 5"));
    }
}
