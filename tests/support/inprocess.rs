//! Cockpit in the test's own process: [`cockpit::server::run`] on sockets bound to port 0 with a
//! shutdown channel, as mini-redis tests its server. Faster to start than the binary and lets a
//! test hold the server's handles; the end-to-end tests of the binary stay for what only a
//! process shows (signals, exit codes, `kill -9`).
//!
//! The actor registry (`ractor`'s names) is process-wide, so in-process servers of one test
//! binary run one at a time: [`InProcess::start`] waits for the previous one to stop.

use std::sync::OnceLock;

use cockpit::config::Config;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};
use tokio::task::JoinHandle;

/// One server at a time per test binary.
fn turn() -> std::sync::Arc<Mutex<()>> {
    static TURN: OnceLock<std::sync::Arc<Mutex<()>>> = OnceLock::new();
    TURN.get_or_init(Default::default).clone()
}

/// A server running in this process.
pub struct InProcess {
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    /// Data dir and config live here.
    pub dir: tempfile::TempDir,
    /// Completing it shuts the server down.
    shutdown: Option<oneshot::Sender<()>>,
    /// The server.
    task: Option<JoinHandle<Result<(), cockpit::server::ServerError>>>,
    /// Held while it runs.
    _turn: OwnedMutexGuard<()>,
}

impl InProcess {
    /// Starts a server on `base_config + extra`, the API on a free port.
    pub async fn start(extra: &str) -> InProcess {
        let turn = turn().lock_owned().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("{}{}", super::base_config(dir.path()), extra);
        let config = Config::parse(&text).expect("config");
        let listeners = cockpit::server::bind(&config).expect("bind");
        let api = format!(
            "http://{}",
            listeners
                .api
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .expect("api address")
        );
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(cockpit::server::run(config, listeners, async move {
            let _ = stop.await;
        }));
        let health = format!("{api}/health");
        for _ in 0..200 {
            if reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        InProcess {
            api,
            dir,
            shutdown: Some(shutdown),
            task: Some(task),
            _turn: turn,
        }
    }

    /// Shuts the server down and returns how it ended.
    pub async fn stop(mut self) -> Result<(), cockpit::server::ServerError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }
}
