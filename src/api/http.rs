//! The HTTP/1.1 connection layer under the warp routes: what `warp::serve` does not give.
//!
//! `warp::serve` (0.4) hands each connection to hyper without a timer, so a client that never
//! finishes its request head, or an idle keep-alive connection, holds a socket (a file
//! descriptor) forever, and nothing caps how many it may hold. [`serve`] accepts the
//! connections itself and drives each with hyper's HTTP/1 builder:
//!
//! - **header timeout**: a connection must deliver a complete request head within
//!   `header_timeout` of opening, and again of its last response (hyper restarts the same timer
//!   while a keep-alive connection waits for its next request), or it is closed;
//! - **per-peer cap**: one IP address holds at most `max_connections_per_ip` connections; further ones are
//!   closed at once, so one attacker cannot take the whole budget;
//! - **global cap**: at `max_connections` the oldest connection is dropped to make room, so a
//!   new client always gets in;
//! - every request carries its [`Peer`] (rate limits and JWT fairness key on it), `HEAD` is
//!   answered as the `GET` of the same route without a body, and a `405` names the allowed
//!   methods in `Allow` (from the OpenAPI document);
//! - a malformed request or a broken connection is the client's doing: logged at debug.
//!
//! HTTP/2 is not offered (no client of this API needs it, and its streams would need their own
//! limits).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tower_service::Service;
use tracing::{debug, warn};
use warp::http::{HeaderValue, Method, Request, StatusCode};
use warp::reply::Response;

/// The peer of the connection a request came on (put into every request's extensions; warp's
/// own `addr::remote` is only filled by `warp::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The bounds of the connection layer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; at the cap the oldest is dropped for a new one.
    pub max_connections: usize,
    /// Open connections per peer IP at most; beyond it new ones are closed at once.
    pub max_connections_per_ip: usize,
    /// How long a connection may take to send a request head (first, or next on keep-alive).
    pub header_timeout: Duration,
    /// The replicas' shared key (PostgreSQL replicas): a request carrying it in
    /// [`REPLICA_HEADER`] was forwarded by a standby, and its peer is the `X-Forwarded-For`
    /// the standby wrote (rate limits and the verifiers' shares then count the client, not
    /// the standby).
    pub replica_key: Option<Arc<str>>,
    /// The load balancers in front (`[api.ays] trusted_proxies`): a request from one is the
    /// client's its `X-Forwarded-For` names, and one may hold any number of connections.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Limits {
    /// Whether `ip` is a trusted proxy's.
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The header a standby proves itself with when it forwards a request.
pub const REPLICA_HEADER: &str = "x-cockpit-replica";

/// The client a standby forwarded `request` for, when the request proves it comes from a
/// standby (`key`, compared in constant time); the header is removed either way.
fn forwarded_for(request: &mut Request<Incoming>, key: Option<&str>) -> Option<IpAddr> {
    let proof = request.headers_mut().remove(REPLICA_HEADER)?;
    let key = key?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        proof.as_bytes(),
        key.as_bytes(),
    )) {
        return None;
    }
    request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
}

/// The client a trusted proxy (`peer`) forwarded `request` for: the rightmost address of its
/// `X-Forwarded-For` that is not a trusted proxy's (each proxy appends the address it saw, so
/// what a client wrote itself stays to the left of it). `None` when `peer` is not trusted or
/// the header names nobody usable (the proxy itself is then the peer).
fn behind_proxy(headers: &warp::http::HeaderMap, peer: IpAddr, limits: &Limits) -> Option<IpAddr> {
    if !limits.trusts(peer) {
        return None;
    }
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let entry = entry.trim();
        let ip = entry
            .parse::<IpAddr>()
            .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
            .ok()?;
        if !limits.trusts(ip) {
            return Some(ip);
        }
    }
    None
}

/// The open connections: who holds them and how to drop the oldest.
#[derive(Default)]
struct Registry {
    /// Identifier of the next connection (grows, so the smallest open one is the oldest).
    next: u64,
    /// Open connections by age: their peer IP and the switch that drops them.
    open: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    /// Open connections per peer IP (entries at zero are removed).
    per_ip: HashMap<IpAddr, usize>,
}

/// What the registry decided for a new connection.
enum Admission {
    /// Serve it; `drop_rx` fires when it must go to make room.
    Admitted {
        id: u64,
        drop_rx: oneshot::Receiver<()>,
    },
    /// Its peer holds `max_connections_per_ip` already.
    PeerFull,
}

impl Registry {
    fn admit(&mut self, ip: IpAddr, limits: &Limits) -> Admission {
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        if held >= limits.max_connections_per_ip && !limits.trusts(ip) {
            return Admission::PeerFull;
        }
        if self.open.len() >= limits.max_connections.max(1)
            && let Some((_, (_, drop_tx))) = self.open.pop_first()
        {
            // Its task removes the per-IP count when it ends.
            let _ = drop_tx.send(());
        }
        let id = self.next;
        self.next += 1;
        let (drop_tx, drop_rx) = oneshot::channel();
        self.open.insert(id, (ip, drop_tx));
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Admission::Admitted { id, drop_rx }
    }

    fn release(&mut self, id: u64, ip: IpAddr) {
        self.open.remove(&id);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Release {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    ip: IpAddr,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.registry.lock().release(self.id, self.ip);
    }
}

/// Serves `service` (the routes, as `warp::service(routes)`) on `listener` until `shutdown`
/// resolves, then stops accepting, lets in-flight requests finish (idle connections close at
/// once) and returns when every connection is gone.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; `recv` returns `None` once all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of descriptors or a connection reset before accept: wait a little
                    // rather than spin.
                    debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admission = registry.lock().admit(peer.ip(), &limits);
        let Admission::Admitted { id, drop_rx } = admission else {
            debug!(%peer, "connection refused: this peer holds its maximum");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let release = Release {
            registry: registry.clone(),
            id,
            ip: peer.ip(),
        };
        let service = service.clone();
        let (limits_here, header_timeout) = (limits.clone(), limits.header_timeout);
        let mut stop_rx = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _release = release;
            let _alive = alive;
            let handler = hyper::service::service_fn(move |request| {
                answer(service.clone(), Peer(peer), limits_here.clone(), request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), handler);
            let mut connection = std::pin::pin!(connection);
            let mut drop_rx = drop_rx;
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = &mut drop_rx => {
                    debug!(%peer, "connection dropped: the server is at its connection cap");
                    return;
                }
                () = async { let _ = stop_rx.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

/// One request: the peer in its extensions, `HEAD` as `GET`, `Allow` on a `405`.
async fn answer<S>(
    mut service: S,
    peer: Peer,
    limits: Limits,
    mut request: Request<Incoming>,
) -> Result<Response, Infallible>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    let client = forwarded_for(&mut request, limits.replica_key.as_deref())
        .or_else(|| behind_proxy(request.headers(), peer.0.ip(), &limits));
    let peer = match client {
        Some(client) => Peer(SocketAddr::new(client, 0)),
        None => peer,
    };
    // hyper remembers the request was `HEAD` and sends the headers without the body.
    if request.method() == Method::HEAD {
        *request.method_mut() = Method::GET;
    }
    let path = request.uri().path().to_string();
    // The request's log line (written inside the routes) names its peer through this span.
    let span = tracing::info_span!("http", peer = %peer.0);
    request.extensions_mut().insert(peer);
    let mut response = tracing::Instrument::instrument(service.call(request), span).await?;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = super::paths::allowed_methods(&path)
        && let Ok(value) = HeaderValue::from_str(&allow)
    {
        response.headers_mut().insert("allow", value);
    }
    Ok(response)
}

/// Raises this process's soft limit on open files to its hard limit (connections are files);
/// returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Some(hard);
        }
        warn!(soft, hard, "cannot raise the open-file limit");
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_connections_per_ip: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_ip,
            header_timeout: Duration::from_secs(1),
            replica_key: None,
            trusted_proxies: Vec::new().into(),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_peer_is_capped_and_the_oldest_connection_makes_room_at_the_global_cap() {
        let mut registry = Registry::default();
        let limits = limits(3, 2);
        let mut admitted = Vec::new();
        for _ in 0..2 {
            match registry.admit(ip(2), &limits) {
                Admission::Admitted { id, drop_rx } => admitted.push((id, drop_rx)),
                Admission::PeerFull => panic!("under the per-peer cap"),
            }
        }
        assert!(matches!(
            registry.admit(ip(2), &limits),
            Admission::PeerFull
        ));
        let Admission::Admitted { .. } = registry.admit(ip(3), &limits) else {
            panic!("another peer gets in");
        };
        // At the global cap: the oldest (peer .2, id 0) is told to go.
        let Admission::Admitted { .. } = registry.admit(ip(4), &limits) else {
            panic!("a new peer gets in at the global cap");
        };
        let (oldest, mut drop_rx) = admitted.remove(0);
        assert_eq!(drop_rx.try_recv(), Ok(()));
        registry.release(oldest, ip(2));
        assert_eq!(registry.per_ip.get(&ip(2)), Some(&1));
        let (second, mut kept) = admitted.remove(0);
        assert!(kept.try_recv().is_err(), "only the oldest goes");
        registry.release(second, ip(2));
        assert_eq!(registry.per_ip.get(&ip(2)), None, "no entry left at zero");
    }

    /// Limits trusting `proxies`.
    fn behind(proxies: &[&str]) -> Limits {
        Limits {
            trusted_proxies: proxies
                .iter()
                .map(|p| p.parse().expect("a network"))
                .collect::<Vec<ipnet::IpNet>>()
                .into(),
            ..limits(100, 2)
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_client_cannot_name_itself() {
        let limits = behind(&["10.0.0.0/24", "192.0.2.9/32"]);
        let client = |peer: &str, forwarded: &[&str]| {
            let mut headers = warp::http::HeaderMap::new();
            for value in forwarded {
                headers.append(
                    "x-forwarded-for",
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            behind_proxy(&headers, peer.parse().expect("ip"), &limits).map(|ip| ip.to_string())
        };
        // The balancer appends the address it saw.
        assert_eq!(
            client("10.0.0.5", &["203.0.113.7"]).as_deref(),
            Some("203.0.113.7")
        );
        // What the client wrote itself is to the left: it does not count.
        assert_eq!(
            client("10.0.0.5", &["198.51.100.1, 203.0.113.7"]).as_deref(),
            Some("203.0.113.7")
        );
        // Two trusted hops (a second balancer, two header lines): the first untrusted from the
        // right, so the client behind both.
        assert_eq!(
            client("10.0.0.5", &["203.0.113.7", "192.0.2.9"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client("10.0.0.5", &["[2001:db8::1]:4711"]).as_deref(),
            Some("2001:db8::1")
        );
        // Not a trusted proxy: its header is the client's own word.
        assert_eq!(client("203.0.113.50", &["198.51.100.1"]), None);
        // Nobody usable named: the proxy itself is the peer.
        assert_eq!(client("10.0.0.5", &[]), None);
        assert_eq!(client("10.0.0.5", &["unknown"]), None);
        assert_eq!(client("10.0.0.5", &["10.0.0.7"]), None);
    }

    #[test]
    fn a_trusted_proxy_is_not_held_to_the_per_peer_cap() {
        let mut registry = Registry::default();
        let limits = behind(&["127.0.0.9/32"]);
        for n in 0..5 {
            assert!(
                matches!(registry.admit(ip(9), &limits), Admission::Admitted { .. }),
                "the balancer's connection {n}"
            );
        }
        for _ in 0..2 {
            let _ = registry.admit(ip(2), &limits);
        }
        assert!(matches!(
            registry.admit(ip(2), &limits),
            Admission::PeerFull
        ));
    }
}
