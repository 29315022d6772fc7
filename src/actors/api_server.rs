//! The `ApiServer` actor: binds `[api.ays] host:port` itself (a taken port is a clear startup
//! error, never a panic) and serves the warp routes on a task it owns.
//!
//! The serving task is tied to the actor's state: when the actor stops (shutdown) the listener
//! closes and in-flight requests finish; when it fails (a panic drops the state without
//! `post_stop`), the [`ServerGuard`] drop closes the listener so the restarted actor can bind again.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use super::Shared;
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

/// How long a restarted server retries binding while the failed one releases the port.
const REBIND_FOR: Duration = Duration::from_secs(2);

pub(crate) async fn bind(addr: &str, retry: bool) -> std::io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err)
                if retry
                    && err.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

impl Actor for ApiServer {
    type Msg = ApiServerMsg;
    type State = ServerGuard;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let api = &shared.config.api;
        let wanted = format!("{}:{}", api.host, api.port);
        // After a restart the port is ours: retry while the old listener closes.
        let restarted = shared.addresses().api.is_some();
        let wanted = match shared.addresses().api {
            Some(previous) if api.port == 0 => previous.to_string(),
            _ => wanted,
        };
        let listener = bind(&wanted, restarted)
            .await
            .map_err(|err| format!("[api.ays] cannot listen on {wanted}: {err}"))?;
        let addr = listener.local_addr()?;
        shared.set_address(|a| a.api = Some(addr));
        let (tx, rx) = oneshot::channel::<()>();
        let routes = api::routes(shared.clone());
        let limits = api::http::Limits {
            max_connections: api.max_connections,
            max_connections_per_ip: api.max_connections_per_ip,
            header_timeout: Duration::from_millis(api.header_timeout_ms),
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
