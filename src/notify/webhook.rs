//! The `WebhookNotifier` actor: delivers the store's outbox of failure notices to the webhooks of
//! `[notify] webhooks`, on a task it owns.
//!
//! Each delivery is `POST <url>` with the notice's JSON as body and GitHub's signature scheme:
//! `X-Cockpit-Signature-256: sha256=<hex of HMAC-SHA256(secret, body)>`, plus
//! `X-Cockpit-Event: run.ended` and `X-Cockpit-Delivery: <outbox id>` (the same id on every
//! attempt, so a receiver can drop a duplicate). A `2xx` removes the row; anything else (another
//! status, a timeout, a refused connection, a redirect: none is followed) counts an attempt and
//! the row is due again after an exponential backoff (`retry_min_ms` doubling up to
//! `retry_max_ms`). After `max_attempts`, or once older than `max_age_secs`, it is given up (a
//! warning and `cockpit_notices_given_up_total`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hmac::{Hmac, Mac};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::actors::notice::Notice;
use crate::actors::{AbortOnDrop, Shared, names};
use crate::clock;
use crate::config::NotifyConfig;
use crate::store::{OutboxRow, RunState};
use crate::telemetry::Count;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Cockpit-Signature-256";

/// How many rows one round delivers at once (concurrently).
const BATCH: usize = 32;

/// How long the task sleeps when nothing is due and no run fails (a store error, a clock
/// jump: the outbox is looked at again at least this often).
const IDLE: Duration = Duration::from_secs(60);

/// Messages of the notifier.
pub enum NotifierMsg {
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The webhook notifier actor.
pub struct WebhookNotifier;

/// Its state: the delivery task, aborted with it.
pub struct NotifierState {
    /// The task delivering the outbox.
    _task: AbortOnDrop,
}

impl Actor for WebhookNotifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(shared.config.notify.timeout_ms))
            .connect_timeout(Duration::from_millis(shared.config.notify.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cockpit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        shared
            .faults
            .join(names::NOTIFIER, myself.clone(), || NotifierMsg::Crash);
        info!(
            webhooks = shared.config.notify.webhooks.len(),
            "webhook notifier started"
        );
        let task = tokio::spawn(run(shared, http));
        Ok(NotifierState {
            _task: AbortOnDrop(task),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NotifierMsg::Crash => panic!("fault injection: notifier crashed on request"),
        }
    }
}

/// True for the notices after which the outbox may have a new row.
fn is_failure(notice: &Notice) -> bool {
    matches!(
        notice,
        Notice::RunEnded {
            state: RunState::Error | RunState::Cancelled,
            ..
        }
    )
}

/// Delivers what is due, then sleeps until the next row is due or a run fails.
async fn run(shared: Shared, http: reqwest::Client) {
    let mut notices = shared.notices.subscribe();
    let mut listening = true;
    loop {
        let wait = match deliver_due(&shared, &http).await {
            Ok(true) => Duration::ZERO, // a full batch: there may be more
            Ok(false) => match shared.store.outbox_next_due() {
                Ok(Some(next)) => {
                    Duration::from_millis(next.saturating_sub(clock::now_ms()).max(0) as u64)
                        .min(IDLE)
                }
                Ok(None) => IDLE,
                Err(err) => {
                    warn!(%err, "cannot read the notice outbox");
                    Duration::from_secs(1)
                }
            },
            Err(err) => {
                warn!(%err, "cannot read the notice outbox");
                Duration::from_secs(1)
            }
        };
        if wait.is_zero() {
            continue;
        }
        let woken = async {
            while listening {
                match notices.recv().await {
                    Ok(notice) if is_failure(&notice) => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => listening = false,
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = woken => {}
        }
    }
}

/// One round: every row due now (at most [`BATCH`]) is attempted at once. True when the batch
/// was full.
async fn deliver_due(
    shared: &Shared,
    http: &reqwest::Client,
) -> Result<bool, crate::store::StoreError> {
    let due = shared.store.outbox_due(clock::now_ms(), BATCH)?;
    let full = due.len() == BATCH;
    let attempts = due.into_iter().map(|row| async move {
        let outcome = attempt(shared, http, &row).await;
        (row, outcome)
    });
    for (row, outcome) in futures::future::join_all(attempts).await {
        settle(shared, &row, outcome)?;
    }
    Ok(full)
}

/// What an attempt came to.
enum Outcome {
    /// The receiver answered `2xx`.
    Delivered,
    /// It did not (why, for the log; never a secret).
    Failed(String),
    /// Its webhook is no longer configured.
    Orphaned,
}

/// POSTs one row to its webhook.
async fn attempt(shared: &Shared, http: &reqwest::Client, row: &OutboxRow) -> Outcome {
    let Some(hook) = shared
        .config
        .notify
        .webhooks
        .iter()
        .find(|w| w.url == row.target)
    else {
        return Outcome::Orphaned;
    };
    let sent = http
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(hook.secret.expose(), row.body.as_bytes()),
        )
        .header("X-Cockpit-Event", "run.ended")
        .header("X-Cockpit-Delivery", row.id.to_string())
        .body(row.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => Outcome::Failed(format!("answered {}", response.status().as_u16())),
        Err(err) if err.is_timeout() => Outcome::Failed("timed out".into()),
        Err(err) if err.is_connect() => Outcome::Failed("cannot connect".into()),
        Err(_) => Outcome::Failed("request failed".into()),
    }
}

/// Records an attempt's outcome: removed when delivered or given up, else due again later.
fn settle(
    shared: &Shared,
    row: &OutboxRow,
    outcome: Outcome,
) -> Result<(), crate::store::StoreError> {
    let config = &shared.config.notify;
    let store = &shared.store;
    match outcome {
        Outcome::Delivered => {
            store.outbox_remove(row.id)?;
            shared.telemetry.count(Count::NoticesDelivered, 1);
            info!(id = row.id, url = %row.target, "failure notice delivered");
        }
        Outcome::Orphaned => {
            store.outbox_remove(row.id)?;
            shared.telemetry.count(Count::NoticesGivenUp, 1);
            warn!(id = row.id, url = %row.target, "failure notice given up: its webhook is no longer configured");
        }
        Outcome::Failed(why) => {
            shared.telemetry.count(Count::NoticeAttemptsFailed, 1);
            let attempts = row.attempts + 1;
            let now = clock::now_ms();
            let age_ms = now.saturating_sub(row.created_ms);
            if attempts >= config.max_attempts
                || age_ms >= (config.max_age_secs as i64).saturating_mul(1000)
            {
                store.outbox_remove(row.id)?;
                shared.telemetry.count(Count::NoticesGivenUp, 1);
                warn!(id = row.id, url = %row.target, attempts, %why, "failure notice given up");
            } else {
                let delay = retry_delay(config, attempts);
                let next = now.saturating_add(delay.as_millis() as i64);
                store.outbox_retry_at(row.id, next, &why)?;
                warn!(id = row.id, url = %row.target, attempts, %why, retry_in_ms = delay.as_millis() as u64, "failure notice not delivered; retrying");
            }
        }
    }
    Ok(())
}

/// The delay after the `attempts`-th failed attempt (1-based): `retry_min_ms`, doubling, at most
/// `retry_max_ms`.
pub fn retry_delay(config: &NotifyConfig, attempts: u32) -> Duration {
    let max = Duration::from_millis(config.retry_max_ms);
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(config.retry_min_ms))
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(max)
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, as GitHub signs its webhooks.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: u64, max: u64) -> NotifyConfig {
        NotifyConfig {
            webhooks: Vec::new(),
            timeout_ms: 1000,
            retry_min_ms: min,
            retry_max_ms: max,
            max_attempts: 10,
            max_age_secs: 60,
            max_outbox: 10,
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let c = config(100, 1000);
        let delays: Vec<u128> = (1..=6).map(|n| retry_delay(&c, n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn signatures_match_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
