//! What `/health` and `/metrics` report: the state of each supervised component and the metric
//! families of the whole process.
//!
//! Metrics are typed `prometheus-client` families registered once, at construction, so every
//! metric is in the first scrape with its `# HELP` line. Every label value comes from a closed
//! set ([`Method`], HTTP status codes, actor names), so no client can make `/metrics` grow. Any
//! thread may record without going through an actor.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The state of one supervised component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorStatus {
    /// Running and serving.
    Up,
    /// Running but not fully serving: it failed and a restart is scheduled, or an outside
    /// service it depends on (the Bot API) is failing.
    Degraded,
    /// Stopped for good (shutdown, or the restart limit was reached).
    Down,
}

/// One component as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorHealth {
    /// Current state.
    pub status: ActorStatus,
    /// Restarts since the process started.
    pub restarts: u64,
    /// Why it last failed (or what its dependency last answered), if it ever did.
    pub last_error: Option<String>,
    /// When the current state began, Unix seconds.
    pub since: u64,
}

/// Upper bounds (seconds) of the request latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Upper bounds (seconds) of the chat session restart histogram buckets: fine below the 1 ms
/// target and down to 10 µs (a restart is one actor spawn: a few µs), so that `bench/run.py`
/// can read its p50 and p99 from them (with 0.1 ms as the first bound every p50 read 0.05 ms,
/// the middle of that bucket).
/// Buckets of `cockpit_mail_commit_seconds`: a synced commit takes from a fraction of a
/// millisecond (a fast disk) to tens (a busy one).
const COMMIT_BUCKETS: [f64; 10] = [
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// Buckets of `cockpit_mail_commit_mails` (at most 64 mails share a commit).
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

const RESTART_BUCKETS: [f64; 15] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.05,
    0.1, 0.25, 1.0,
];

/// The events counted by name (each one `cockpit_<name>_total`, present from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A repository actor restarted after a failure.
    RepoRestarts,
    /// A run started.
    RunsStarted,
    /// A run ended `ok`.
    RunsOk,
    /// A run ended `error`.
    RunsError,
    /// A run was cancelled.
    RunsCancelled,
    /// A Telegram update handed to a chat session.
    TelegramUpdates,
    /// A chat session restarted after a panic.
    ChatSessionRestarts,
    /// A bot message Telegram refused as MarkdownV2, sent again as plain text.
    TelegramPlainFallbacks,
    /// A mail accepted (recorded as an event).
    MailAccepted,
    /// A recipient refused (domain not accepted).
    MailRefusedRecipient,
    /// A recipient refused beyond `max_recipients`.
    MailRefusedTooManyRecipients,
    /// A message refused beyond `max_message_bytes`.
    MailRefusedTooLarge,
    /// A malformed SMTP command.
    MailRefusedSyntax,
    /// A message refused because the memory budget for messages in flight was spent.
    MailRefusedBusy,
    /// An idle SMTP connection cut to make room.
    MailConnectionsCut,
    /// An SMTP connection refused because all were busy.
    MailConnectionsRefused,
    /// A mail that could not be recorded.
    MailRecordFailures,
    /// A message refused for a bare LF in its data.
    MailRefusedBareLf,
    /// A DATA phase cut at its deadline.
    MailRefusedDataTimeout,
    /// An SMTP connection refused because its peer holds its share.
    MailConnectionsRefusedPeer,
    /// A failure notice delivered to a webhook.
    NoticesDelivered,
    /// A failed attempt to deliver a failure notice to a webhook (retried later).
    NoticeAttemptsFailed,
    /// A failure notice given up (too many attempts, too old, or its webhook is gone).
    NoticesGivenUp,
    /// A `POST /webhooks/github` refused for a missing or wrong signature.
    WebhooksRefusedSignature,
    /// A `POST /webhooks/github` whose delivery id was taken before (a replay; nothing ran).
    WebhooksReplayed,
}

impl Count {
    /// Every counted event, in exposition order.
    pub const ALL: [Count; 25] = [
        Count::RepoRestarts,
        Count::RunsStarted,
        Count::RunsOk,
        Count::RunsError,
        Count::RunsCancelled,
        Count::TelegramUpdates,
        Count::ChatSessionRestarts,
        Count::TelegramPlainFallbacks,
        Count::MailAccepted,
        Count::MailRefusedRecipient,
        Count::MailRefusedTooManyRecipients,
        Count::MailRefusedTooLarge,
        Count::MailRefusedSyntax,
        Count::MailRefusedBusy,
        Count::MailConnectionsCut,
        Count::MailConnectionsRefused,
        Count::MailRecordFailures,
        Count::MailRefusedBareLf,
        Count::MailRefusedDataTimeout,
        Count::MailConnectionsRefusedPeer,
        Count::NoticesDelivered,
        Count::NoticeAttemptsFailed,
        Count::NoticesGivenUp,
        Count::WebhooksRefusedSignature,
        Count::WebhooksReplayed,
    ];

    /// The metric name without the `_total` suffix.
    pub fn name(self) -> &'static str {
        match self {
            Count::RepoRestarts => "cockpit_repo_restarts",
            Count::RunsStarted => "cockpit_runs_started",
            Count::RunsOk => "cockpit_runs_ok",
            Count::RunsError => "cockpit_runs_error",
            Count::RunsCancelled => "cockpit_runs_cancelled",
            Count::TelegramUpdates => "cockpit_telegram_updates",
            Count::ChatSessionRestarts => "cockpit_chat_session_restarts",
            Count::TelegramPlainFallbacks => "cockpit_telegram_plain_fallbacks",
            Count::MailAccepted => "cockpit_mail_accepted",
            Count::MailRefusedRecipient => "cockpit_mail_refused_recipient",
            Count::MailRefusedTooManyRecipients => "cockpit_mail_refused_too_many_recipients",
            Count::MailRefusedTooLarge => "cockpit_mail_refused_too_large",
            Count::MailRefusedSyntax => "cockpit_mail_refused_syntax",
            Count::MailRefusedBusy => "cockpit_mail_refused_busy",
            Count::MailConnectionsCut => "cockpit_mail_connections_cut",
            Count::MailConnectionsRefused => "cockpit_mail_connections_refused",
            Count::MailRecordFailures => "cockpit_mail_record_failures",
            Count::MailRefusedBareLf => "cockpit_mail_refused_bare_lf",
            Count::MailRefusedDataTimeout => "cockpit_mail_refused_data_timeout",
            Count::MailConnectionsRefusedPeer => "cockpit_mail_connections_refused_peer",
            Count::NoticesDelivered => "cockpit_notices_delivered",
            Count::NoticeAttemptsFailed => "cockpit_notice_attempts_failed",
            Count::NoticesGivenUp => "cockpit_notices_given_up",
            Count::WebhooksRefusedSignature => "cockpit_webhooks_refused_signature",
            Count::WebhooksReplayed => "cockpit_webhooks_replayed",
        }
    }

    /// The `# HELP` text (the encoder adds the final period).
    fn help(self) -> &'static str {
        match self {
            Count::RepoRestarts => "Repository actors restarted after a failure",
            Count::RunsStarted => "Runs started",
            Count::RunsOk => "Runs that ended ok",
            Count::RunsCancelled => "Runs cancelled",
            Count::RunsError => "Runs that ended in error",
            Count::TelegramUpdates => "Telegram updates handed to chat sessions",
            Count::ChatSessionRestarts => "Chat sessions restarted after a panic",
            Count::TelegramPlainFallbacks => {
                "Bot messages Telegram refused as MarkdownV2, sent again as plain text"
            }
            Count::MailAccepted => "Mails accepted and recorded as events",
            Count::MailRefusedRecipient => "Recipients refused (550, domain not accepted)",
            Count::MailRefusedTooManyRecipients => "Recipients refused beyond max_recipients (452)",
            Count::MailRefusedTooLarge => "Messages refused beyond max_message_bytes (552)",
            Count::MailRefusedSyntax => "Malformed SMTP commands",
            Count::MailRefusedBusy => {
                "Messages refused because the memory for messages in flight was spent (452)"
            }
            Count::MailConnectionsCut => "Idle SMTP connections cut to make room (421)",
            Count::MailConnectionsRefused => "SMTP connections refused while all were busy (421)",
            Count::MailRecordFailures => "Accepted mails that could not be recorded",
            Count::MailRefusedBareLf => "Messages refused for a bare LF in their data",
            Count::MailRefusedDataTimeout => "DATA phases cut at their deadline",
            Count::MailConnectionsRefusedPeer => {
                "SMTP connections refused because their peer holds its share"
            }
            Count::NoticesDelivered => "Failure notices delivered to webhooks",
            Count::NoticeAttemptsFailed => {
                "Failed attempts to deliver a failure notice to a webhook (retried)"
            }
            Count::NoticesGivenUp => "Failure notices given up undelivered",
            Count::WebhooksRefusedSignature => {
                "GitHub webhooks refused for a missing or wrong signature (401)"
            }
            Count::WebhooksReplayed => "GitHub webhooks whose delivery id was seen before",
        }
    }
}

/// An HTTP method as a metric and log label: the known methods; every other string is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `OPTIONS`.
    Options,
    /// Anything else a client sent.
    Other,
}

impl Method {
    /// The label for a method string as received.
    pub fn of(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "other",
        }
    }
}

impl EncodeLabelValue for Method {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of `cockpit_http_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The method, from a closed set.
    method: Method,
    /// The status code (a number below 1000).
    status: u16,
}

/// Labels of the per-actor families; actor names come from the supervisor's fixed list (and
/// `repo:<name>` entries for repositories, one per repository that exists).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActorLabels {
    /// The registered actor name.
    actor: String,
}

/// The metric families, registered once.
struct Metrics {
    /// Everything below, for the exposition.
    registry: Registry,
    /// `cockpit_http_requests_total{method,status}`.
    requests: Family<RequestLabels, Counter>,
    /// `cockpit_http_request_duration_seconds`.
    duration: Histogram,
    /// `cockpit_actor_restarts_total{actor}`.
    restarts: Family<ActorLabels, Counter>,
    /// `cockpit_actor_up{actor}`.
    up: Family<ActorLabels, Gauge>,
    /// The named counters, in the order of [`Count::ALL`].
    counts: Vec<Counter>,
    /// `cockpit_chat_session_restart_seconds`.
    chat_session_restart: Histogram,
    /// `cockpit_mail_commit_seconds`.
    mail_commit: Histogram,
    /// `cockpit_mail_commit_mails`.
    mail_batch: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let restarts = Family::<ActorLabels, Counter>::default();
        registry.register(
            "cockpit_actor_restarts",
            "Restarts of each supervised actor",
            restarts.clone(),
        );
        let up = Family::<ActorLabels, Gauge>::default();
        registry.register(
            "cockpit_actor_up",
            "Whether each supervised actor is up (1) or not (0)",
            up.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        // An empty family is left out of the exposition: start the commonest series at 0 so the
        // family (and its `# HELP`) is there from the first scrape.
        let _ = requests.get_or_create(&RequestLabels {
            method: Method::Get,
            status: 200,
        });
        registry.register(
            "cockpit_http_requests",
            "HTTP requests by method and status",
            requests.clone(),
        );
        let duration = Histogram::new(BUCKETS);
        registry.register(
            "cockpit_http_request_duration_seconds",
            "HTTP request latency",
            duration.clone(),
        );
        let counts = Count::ALL
            .iter()
            .map(|count| {
                let counter = Counter::default();
                registry.register(count.name(), count.help(), counter.clone());
                counter
            })
            .collect();
        let chat_session_restart = Histogram::new(RESTART_BUCKETS);
        registry.register(
            "cockpit_chat_session_restart_seconds",
            "Time to restart a chat session after a panic",
            chat_session_restart.clone(),
        );
        let mail_commit = Histogram::new(COMMIT_BUCKETS);
        registry.register(
            "cockpit_mail_commit_seconds",
            "Time to commit and sync one batch of received mails (their 250 waits for it)",
            mail_commit.clone(),
        );
        let mail_batch = Histogram::new(BATCH_BUCKETS);
        registry.register(
            "cockpit_mail_commit_mails",
            "Received mails per commit (group commit)",
            mail_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            restarts,
            up,
            counts,
            chat_session_restart,
            mail_commit,
            mail_batch,
        }
    }
}

/// Shared health and metrics of the whole process.
#[derive(Default)]
pub struct Telemetry {
    /// Component name to its health, written by the supervisor (and by components about the
    /// outside services they depend on).
    actors: Mutex<BTreeMap<String, ActorHealth>>,
    /// The metric families.
    metrics: Metrics,
}

impl Telemetry {
    /// Marks an actor up (started or restarted).
    pub fn actor_up(&self, name: &str) {
        let mut actors = lock(&self.actors);
        let entry = entry(&mut actors, name, ActorStatus::Up);
        set_status(entry, ActorStatus::Up);
        drop(actors);
        self.actor_gauges(name, true);
    }

    /// Records a failure of an actor (`Degraded` while a restart is scheduled, or `Down`).
    pub fn actor_failed(&self, name: &str, error: &str, status: ActorStatus) {
        let mut actors = lock(&self.actors);
        let entry = entry(&mut actors, name, status);
        set_status(entry, status);
        entry.last_error = Some(error.chars().take(500).collect());
        drop(actors);
        self.actor_gauges(name, status == ActorStatus::Up);
    }

    /// Counts one restart of an actor.
    pub fn actor_restarted(&self, name: &str) {
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get_mut(name) {
            entry.restarts += 1;
            set_status(entry, ActorStatus::Up);
            drop(actors);
            self.actor_gauges(name, true);
            self.metrics.restarts.get_or_create(&label(name)).inc();
        }
    }

    /// Marks an actor stopped.
    pub fn actor_down(&self, name: &str) {
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get_mut(name) {
            set_status(entry, ActorStatus::Down);
            drop(actors);
            self.actor_gauges(name, false);
        }
    }

    /// A running component reports that an outside service it needs fails (`error` names the
    /// host and the cause, never a secret): it shows `degraded` with the error and since when.
    pub fn dependency_failed(&self, name: &str, error: &str) {
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get_mut(name)
            && entry.status != ActorStatus::Down
        {
            set_status(entry, ActorStatus::Degraded);
            entry.last_error = Some(error.chars().take(500).collect());
        }
    }

    /// A running component reports that the outside service it needs answers again.
    pub fn dependency_ok(&self, name: &str) {
        let mut actors = lock(&self.actors);
        if let Some(entry) = actors.get_mut(name)
            && entry.status == ActorStatus::Degraded
        {
            set_status(entry, ActorStatus::Up);
        }
    }

    /// Every component's health, by name.
    pub fn actors(&self) -> BTreeMap<String, ActorHealth> {
        lock(&self.actors).clone()
    }

    /// The state of the whole process: `Down` if any component is down, else `Degraded` if any
    /// is degraded, else `Up`.
    pub fn overall(&self) -> ActorStatus {
        let actors = lock(&self.actors);
        let statuses = || actors.values().map(|a| a.status);
        if statuses().any(|s| s == ActorStatus::Down) {
            ActorStatus::Down
        } else if statuses().any(|s| s == ActorStatus::Degraded) {
            ActorStatus::Degraded
        } else {
            ActorStatus::Up
        }
    }

    /// True when every known component is up.
    pub fn all_up(&self) -> bool {
        self.overall() == ActorStatus::Up
    }

    /// Records one HTTP request; `method` is mapped to a closed set of labels.
    pub fn request(&self, method: &str, status: u16, elapsed: Duration) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                method: Method::of(method),
                status: status.min(999),
            })
            .inc();
        self.metrics.duration.observe(elapsed.as_secs_f64());
    }

    /// Adds `n` to a counted event (`cockpit_<name>_total` in `/metrics`).
    pub fn count(&self, what: Count, n: u64) {
        if let Some(counter) = Count::ALL
            .iter()
            .position(|c| *c == what)
            .and_then(|i| self.metrics.counts.get(i))
        {
            counter.inc_by(n);
        }
    }

    /// Records how long a chat session took to restart after a panic.
    pub fn chat_session_restarted(&self, elapsed: Duration) {
        self.metrics
            .chat_session_restart
            .observe(elapsed.as_secs_f64());
    }

    /// Records one commit of received mails: how long it took (synced) and how many it held.
    pub fn mail_committed(&self, elapsed: Duration, mails: usize) {
        self.metrics.mail_commit.observe(elapsed.as_secs_f64());
        self.metrics.mail_batch.observe(mails as f64);
    }

    /// The Prometheus text exposition (version 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.metrics.registry);
        out
    }

    /// The `Content-Type` of [`Telemetry::render`].
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    fn actor_gauges(&self, name: &str, up: bool) {
        let labels = label(name);
        self.metrics.up.get_or_create(&labels).set(i64::from(up));
        // Present from the actor's first start, at 0.
        let _ = self.metrics.restarts.get_or_create(&labels);
    }
}

fn label(name: &str) -> ActorLabels {
    ActorLabels {
        actor: name.to_string(),
    }
}

fn entry<'a>(
    actors: &'a mut BTreeMap<String, ActorHealth>,
    name: &str,
    status: ActorStatus,
) -> &'a mut ActorHealth {
    actors.entry(name.to_string()).or_insert(ActorHealth {
        status,
        restarts: 0,
        last_error: None,
        since: now_secs(),
    })
}

fn set_status(entry: &mut ActorHealth, status: ActorStatus) {
    if entry.status != status {
        entry.status = status;
        entry.since = now_secs();
    }
}

fn now_secs() -> u64 {
    crate::clock::since_epoch().as_secs()
}

/// Takes a lock (`parking_lot` locks do not poison).
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
        t.actor_failed("oauth_cache", "boom", ActorStatus::Degraded);
        assert!(!t.all_up());
        t.actor_restarted("oauth_cache");
        assert!(t.all_up());
        t.request("GET", 200, Duration::from_micros(700));
        t.request("GET", 200, Duration::from_secs(3));
        t.count(Count::MailAccepted, 2);
        t.chat_session_restarted(Duration::from_millis(3));
        let text = t.render();
        for line in [
            "# HELP cockpit_actor_restarts_total Restarts of each supervised actor.",
            "cockpit_actor_restarts_total{actor=\"oauth_cache\"} 1",
            "cockpit_actor_up{actor=\"oauth_cache\"} 1",
            "cockpit_http_requests_total{method=\"GET\",status=\"200\"} 2",
            "cockpit_http_request_duration_seconds_bucket{le=\"0.001\"} 1",
            "cockpit_http_request_duration_seconds_bucket{le=\"+Inf\"} 2",
            "cockpit_http_request_duration_seconds_count 2",
            "cockpit_mail_accepted_total 2",
            "cockpit_chat_session_restart_seconds_bucket{le=\"0.005\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn every_family_has_help_from_the_start() {
        let text = Telemetry::default().render();
        for count in Count::ALL {
            let name = format!("{}_total", count.name());
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
            assert!(text.contains(&format!("\n{name} 0\n")), "{text}");
        }
        assert!(
            text.contains("# HELP cockpit_http_requests_total "),
            "{text}"
        );
        assert!(
            text.contains("cockpit_http_requests_total{method=\"GET\",status=\"200\"} 0"),
            "{text}"
        );
        assert!(text.contains("# HELP cockpit_http_request_duration_seconds "));
    }

    #[test]
    fn odd_methods_share_one_label() {
        let t = Telemetry::default();
        t.request("GET", 200, Duration::ZERO);
        let before = t.render().len();
        for i in 0..2000 {
            t.request(&format!("X{}", "M".repeat(i % 50)), 400, Duration::ZERO);
        }
        let text = t.render();
        assert!(
            text.contains("cockpit_http_requests_total{method=\"other\",status=\"400\"} 2000"),
            "{text}"
        );
        assert!(text.len() < before + 200, "{text}");
    }

    #[test]
    fn a_dependency_failure_degrades_a_component_until_it_answers() {
        let t = Telemetry::default();
        t.actor_up("telegram_bot");
        t.dependency_failed("telegram_bot", "api.telegram.org: connection refused");
        let bot = &t.actors()["telegram_bot"];
        assert_eq!(bot.status, ActorStatus::Degraded);
        assert_eq!(
            bot.last_error.as_deref(),
            Some("api.telegram.org: connection refused")
        );
        assert_eq!(t.overall(), ActorStatus::Degraded);
        t.dependency_ok("telegram_bot");
        assert_eq!(t.overall(), ActorStatus::Up);
        t.actor_down("telegram_bot");
        t.dependency_failed("telegram_bot", "x");
        assert_eq!(t.actors()["telegram_bot"].status, ActorStatus::Down);
    }
}
