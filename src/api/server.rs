//! The `ApiServer` actor: serves the warp routes on the listener bound at start
//! (`[api.ays] host:port`), on a task it owns.
//!
//! The serving task is tied to the actor's state: when the actor stops (shutdown) it stops
//! accepting and in-flight requests finish; when it fails (a panic drops the state without
//! `post_stop`), the [`ServerGuard`] drop ends the task, and the restarted actor serves on a
//! fresh handle of the same bound socket (no port is ever released and re-bound).

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use crate::actors::{Shared, names};
use crate::api;

/// Messages of the API server.
pub enum ApiServerMsg {
    /// Fault injection: panics inside the handler.
    Crash,
}

/// The API server actor.
pub struct ApiServer;

/// Stops the serving task when dropped, whichever way the actor ends.
pub struct ServerGuard {
    /// Fires the graceful shutdown of the warp server.
    shutdown: Option<oneshot::Sender<()>>,
    /// The serving task.
    task: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Actor for ApiServer {
    type Msg = ApiServerMsg;
    type State = ServerGuard;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listener = shared
            .listeners
            .api()
            .map_err(|err| format!("[api.ays] cannot listen: {err}"))?;
        let addr = listener.local_addr()?;
        shared
            .faults
            .join(names::API_SERVER, myself, || ApiServerMsg::Crash);
        let (tx, rx) = oneshot::channel::<()>();
        let routes = api::routes(shared.clone());
        let config = &shared.config.api;
        let limits = api::http::Limits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            replica_key: shared.replica_key.clone(),
            trusted_proxies: config.trusted_proxies.clone().into(),
        };
        let task = tokio::spawn(api::http::serve(
            listener,
            warp::service(routes),
            limits,
            async move {
                let _ = rx.await;
            },
        ));
        info!(%addr, "api server listening");
        Ok(ServerGuard {
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
            let _ = tx.send(());
        }
        if let Some(task) = state.task.take() {
            // In-flight requests finish; a stuck client cannot hold shutdown forever.
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
            ApiServerMsg::Crash => panic!("fault injection: api_server crashed on request"),
        }
    }
}
