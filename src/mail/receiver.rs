//! The `MailReceiver` actor: runs the SMTP accept loop ([`crate::mail::listener`]) on the
//! listener bound at start (`[mail] host:port`), on a task it owns.
//!
//! Each accepted mail is recorded (its bytes and its `email` event in the store) before the
//! client gets its `250`; then the event is handed to the AYS engine through the client, which
//! writes the mail's file under `<storage>/mail/` before the first subscribed action runs, and
//! marks the event processed. If the engine is not there (restarting) or the process dies first,
//! the event stays pending and the engine processes it when it starts.
//!
//! As with the API server, the accept loop is tied to the actor's state: stopping the actor
//! stops accepting and ends the sessions; a failure (whose state is dropped without
//! `post_stop`) ends the loop through [`ReceiverGuard`]'s `Drop`, and the restarted actor
//! accepts on a fresh handle of the same bound socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::budget::Backlog;
use super::message::Storage;
use super::session::{self, Door, Rules};
use super::{Deliver, DeliverError, ReceivedMail, listener, message, retention};
use crate::actors::{Shared, names};
use crate::client::{AysClient, BeforeRun};
use crate::clock::now_ms;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Messages of the mail receiver.
pub enum MailReceiverMsg {
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The mail receiver actor.
pub struct MailReceiver;

/// Stops the accept loop when dropped, whichever way the actor ends.
pub struct ReceiverGuard {
    /// Turning it true (or dropping it) stops the loop and its sessions.
    shutdown: Option<watch::Sender<bool>>,
    /// The accept loop.
    task: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for ReceiverGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

/// A mail waiting to be recorded, with where its event id goes.
type Pending = (
    message::Prepared,
    oneshot::Sender<Result<i64, DeliverError>>,
);

/// Records mails in the store and hands them to the `Ays` actor.
///
/// Each sender's own task prepares its mail ([`message::prepare`]: MIME parsing, the payload's
/// JSON, the audit entry). Recording is group commit: one thread takes every mail waiting at that
/// moment and commits them together ([`message::commit`]: one transaction, so one sync, for all
/// of them and their events), so ten senders cost about one sync, not ten. Each sender gets its
/// `250` once its own mail is durable. Then, while it commits the next batch, a second thread
/// hands the events to the engine, each with the work of writing its mail's file
/// ([`message::write_for_action`]), which the engine does before the first run the event starts:
/// a mail no action subscribes to never gets a file (the store holds it), and no action gets a
/// mail whose file is not written yet.
///
/// (Committing unsynced and syncing the WAL on another thread while the next batch commits was
/// measured slower: smaller batches, more commits, on a machine short of CPU rather than of disk;
/// BENCHMARKS.md, SMTP.)
///
/// The recording thread also removes old mails ([`retention::sweep`]) at start and then every
/// hour, and sets the door's [`Backlog`] after each batch and every second. Both threads end when
/// the receiver (and so this) is dropped.
struct Recorder {
    /// Feeds the recording thread.
    queue: std::sync::mpsc::Sender<Pending>,
    /// Where mails are kept, and what their payloads say.
    storage: Arc<Storage>,
}

/// At most this many mails share one commit.
const MAX_BATCH: usize = 64;

/// At most this many committed batches wait to be handed to the engine; past it the recording
/// thread waits (and so do the senders).
const PUBLISH_QUEUE: usize = 16;

/// Mails larger than this are prepared on a blocking thread rather than the sender's task.
const PREPARE_INLINE_BYTES: usize = 256 * 1024;

/// How often old mails' files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How often the work waiting for the engine is counted when no mail comes (it is counted
/// after every batch as well).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

impl Recorder {
    fn start(
        store: Store,
        storage: Storage,
        keep_days: u32,
        backlog: Backlog,
        telemetry: Arc<Telemetry>,
    ) -> Recorder {
        let storage = Arc::new(storage);
        let (queue, waiting) = std::sync::mpsc::channel::<Pending>();
        let root = Arc::new(storage.root.clone());
        let (publish, committed) = std::sync::mpsc::sync_channel::<Vec<Recorded>>(PUBLISH_QUEUE);
        let (publisher, publisher_root) = (store.clone(), root.clone());
        std::thread::spawn(move || {
            for batch in committed {
                for mail in batch {
                    hand_over(&publisher, &publisher_root, mail);
                }
            }
        });
        std::thread::spawn(move || {
            let keep_ms = i64::from(keep_days) * retention::DAY_MS;
            let mut swept: Option<std::time::Instant> = None;
            loop {
                if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                    match retention::sweep(&store, &root, now_ms(), keep_ms) {
                        Ok(0) => {}
                        Ok(removed) => info!(removed, "old mails removed"),
                        Err(err) => warn!(%err, "cannot remove old mails"),
                    }
                    swept = Some(std::time::Instant::now());
                }
                measure_backlog(&store, &backlog);
                let first = match waiting.recv_timeout(BACKLOG_EVERY) {
                    Ok(first) => first,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let mut batch = vec![first];
                batch.extend(waiting.try_iter().take(MAX_BATCH - 1));
                let (mails, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let started = std::time::Instant::now();
                let committed = message::commit(&store, &mails, now_ms());
                telemetry.mail_committed(started.elapsed(), mails.len());
                match committed {
                    Ok(ids) => {
                        for (done, (id, _)) in senders.into_iter().zip(&ids) {
                            let _ = done.send(Ok(*id));
                        }
                        // The bytes stay behind: the store has them, the engine needs none. A
                        // mail delivered again is answered, and starts nothing again.
                        let recorded = ids.into_iter().zip(mails).filter(|((_, new), _)| *new).map(
                            |((id, _), mail)| Recorded {
                                id,
                                file: mail.file,
                                payload: mail.payload,
                            },
                        );
                        if publish.send(recorded.collect()).is_err() {
                            break;
                        }
                    }
                    Err(err) => {
                        warn!(%err, mails = senders.len(), "mails not recorded; their senders retry");
                        for done in senders {
                            let _ = done.send(Err(DeliverError::Record(err.to_string())));
                        }
                    }
                }
            }
        });
        Recorder { queue, storage }
    }
}

/// A recorded mail, as the engine is told of it.
struct Recorded {
    /// Its event id.
    id: i64,
    /// The name of its file in the mail directory.
    file: String,
    /// Its event payload.
    payload: serde_json::Value,
}

/// Hands a recorded mail's event to the engine, with the writing of its file for its actions.
fn hand_over(store: &Store, root: &Arc<std::path::PathBuf>, mail: Recorded) {
    let (store, root, file, id) = (store.clone(), root.clone(), mail.file, mail.id);
    let write = BeforeRun::new(move || message::write_for_action(&store, &root, id, &file));
    // If the engine is restarting it finds the event pending when it starts.
    if !AysClient.event_before_run(Some(id), message::CHANNEL, mail.payload, Some(write)) {
        warn!(
            event = id,
            "the AYS engine is not running; the mail event waits in the store"
        );
    }
}

/// Tells the sessions whether too much work waits for the engine.
fn measure_backlog(store: &Store, backlog: &Backlog) {
    match store.waiting_work() {
        Ok(waiting) => {
            if backlog.update(waiting) {
                if backlog.full() {
                    warn!(
                        waiting,
                        "too much work waits for the engine: new mail gets 452"
                    );
                } else {
                    info!(waiting, "the engine caught up: mail is accepted again");
                }
            }
        }
        Err(err) => warn!(%err, "cannot count the work waiting for the engine"),
    }
}

impl Deliver for Recorder {
    fn deliver(&self, mail: ReceivedMail) -> BoxFuture<'static, Result<i64, DeliverError>> {
        let queue = self.queue.clone();
        let storage = self.storage.clone();
        Box::pin(async move {
            let prepared = if mail.data.len() <= PREPARE_INLINE_BYTES {
                message::prepare(mail, &storage, now_ms())
            } else {
                tokio::task::spawn_blocking(move || message::prepare(mail, &storage, now_ms()))
                    .await
                    .map_err(|err| DeliverError::Record(err.to_string()))?
            };
            let stopped = || DeliverError::Record("the recorder has stopped".into());
            let (done, outcome) = oneshot::channel();
            queue.send((prepared, done)).map_err(|_| stopped())?;
            outcome.await.map_err(|_| stopped())?
        })
    }
}

impl Actor for MailReceiver {
    type Msg = MailReceiverMsg;
    type State = ReceiverGuard;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mail = &shared.config.mail;
        let listener = shared
            .listeners
            .mail()
            .map_err(|err| format!("[mail] cannot listen: {err}"))?;
        let addr = listener.local_addr()?;
        shared
            .faults
            .join(names::MAIL_RECEIVER, myself, || MailReceiverMsg::Crash);
        let rules = Rules::from_config(mail);
        let door = Arc::new(Door {
            buffered: session::buffer_budget(&rules),
            deliver: Arc::new(Recorder::start(
                shared.store.clone(),
                Storage::new(&shared.config.storage.path, mail.max_attachments as usize),
                mail.keep_days,
                rules.backlog.clone(),
                shared.telemetry.clone(),
            )),
            telemetry: shared.telemetry.clone(),
            rules,
        });
        let (tx, rx) = watch::channel(false);
        let limits = listener::Limits {
            max_connections: mail.max_connections as usize,
            max_per_peer: mail.max_connections_per_peer as usize,
        };
        let task = tokio::spawn(listener::run(listener, door, limits, rx));
        info!(%addr, domains = ?mail.domains, "mail receiver listening");
        if mail.domains.is_empty() {
            warn!("[mail].domain is not set: mail for any domain is accepted (never relayed)");
        }
        Ok(ReceiverGuard {
            shutdown: Some(tx),
            task: Some(task),
            addr,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(tx) = state.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = state.task.take() {
            // Sessions recording a mail finish; a stuck one cannot hold shutdown forever.
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailReceiverMsg::Crash => panic!("fault injection: mail_receiver crashed on request"),
        }
    }
}
