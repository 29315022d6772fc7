//! The HTTP door of a standby replica: a server whose PostgreSQL store another server holds
//! (`Store::claim`) answers `/health`, `/ready` and `/metrics` itself and forwards every other
//! request to the holder, at the URL the holder wrote to the store (`[storage] replica_url`).
//! Behind a load balancer, either replica therefore serves every route; the engine runs once.
//!
//! A forwarded request carries the holder's own checks (tokens, limits, CSRF): the standby adds
//! nothing but its own bound on the body and on the wait for the holder. When the holder does
//! not answer (it died, and this server is about to take the store over), the answer is `503`
//! with `Retry-After: 1`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::store::Store;

/// The setting where the holder of a shared store writes the URL its HTTP door is reached at.
pub const HOLDER_URL_SETTING: &str = "claimed_url";

/// The setting holding the replicas' shared key (written by the first holder): a standby
/// sends it with what it forwards, so the holder counts the client, not the standby, as the
/// peer ([`super::http::REPLICA_HEADER`]).
pub const REPLICA_KEY_SETTING: &str = "replica_key";

/// The largest request body a standby forwards (`413` beyond; the holder has its own, lower,
/// limits per route).
pub const MAX_FORWARDED_BODY: u64 = 16 * 1024 * 1024;

/// How long the holder's URL is remembered before it is read from the store again.
const HOLDER_TTL: Duration = Duration::from_secs(1);

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The holder's URL and the replicas' key as read from the store (`None`: not written yet),
/// and when.
type Looked = (Instant, Option<(String, String)>);

/// A standby's view of the holder.
#[derive(Clone)]
pub struct Standby {
    store: Store,
    client: reqwest::Client,
    /// This replica's name (`/metrics`, `/ready`).
    replica: String,
    /// The holder's URL as last read, and when.
    holder: Arc<Mutex<Option<Looked>>>,
    /// Requests being forwarded at most (each holds a connection to the holder, which takes
    /// `[api.ays] max_connections_per_ip` from one address): beyond, `503`.
    forwards: Arc<tokio::sync::Semaphore>,
}

impl Standby {
    /// A standby on `store`, named `replica`, forwarding at most `max_forwards` requests at
    /// once.
    pub fn new(
        store: Store,
        replica: String,
        max_forwards: usize,
    ) -> Result<Standby, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // No total timeout: a followed log streams for as long as its run lasts. The
            // holder's own timeouts bound the rest.
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Standby {
            store,
            client,
            replica,
            holder: Arc::default(),
            forwards: Arc::new(tokio::sync::Semaphore::new(max_forwards.max(1))),
        })
    }

    /// The holder's URL and the replicas' key (read from the store at most once a second).
    fn holder(&self) -> Option<(String, String)> {
        let mut cached = self.holder.lock();
        if let Some((at, holder)) = cached.as_ref()
            && at.elapsed() < HOLDER_TTL
        {
            return holder.clone();
        }
        let read = |key| self.store.setting(key).ok().flatten();
        let holder = read(HOLDER_URL_SETTING).zip(read(REPLICA_KEY_SETTING));
        *cached = Some((Instant::now(), holder.clone()));
        holder
    }
}

/// Every route of a standby.
pub fn routes(standby: Standby) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with = super::with(standby);
    let health = warp::path!("health")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Standby| health(&s));
    let ready = warp::path!("ready")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Standby| ready(&s));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Standby| metrics(&s));
    let forward =
        warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::ext::optional::<super::http::Peer>())
            .and(warp::body::stream())
            .and(with)
            .then(
                |method,
                 path: warp::path::FullPath,
                 query: String,
                 headers,
                 peer,
                 body,
                 s: Standby| async move {
                    let body = match super::events::read_bounded(body, MAX_FORWARDED_BODY).await {
                        Ok(body) => body,
                        Err(_) => {
                            return super::error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "request body too large (or cut short)",
                            )
                            .into_response();
                        }
                    };
                    forward(&s, method, path.as_str(), &query, headers, peer, body).await
                },
            );
    health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(forward)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                super::error(StatusCode::BAD_REQUEST, "bad request").into_response(),
            )
        })
        .unify()
}

fn health(standby: &Standby) -> Response {
    let database = match standby.store.ping() {
        Ok(()) => "up".to_string(),
        Err(err) => err.to_string(),
    };
    let up = database == "up";
    let body = serde_json::json!({
        "status": if up { "ok" } else { "down" },
        "actors": {},
        "database": database,
        "role": "standby",
        "replica": standby.replica,
    });
    let code = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

/// Ready when the database answers and the holder is known: every request is then served,
/// forwarded.
fn ready(standby: &Standby) -> Response {
    let database = match standby.store.ping() {
        Ok(()) => "up".to_string(),
        Err(err) => err.to_string(),
    };
    let holder = standby.holder().map(|(url, _)| url);
    let ready = database == "up" && holder.is_some();
    let body = serde_json::json!({
        "ready": ready,
        "role": "standby",
        "replica": standby.replica,
        "checks": {
            "database": database,
            "holder": holder.as_deref().unwrap_or("unknown"),
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

/// The `cockpit_replica` gauge: this replica's name and `role` (`active`: it holds the
/// store; `standby`).
pub fn replica_metric(replica: &str, role: &str) -> String {
    format!(
        "# HELP cockpit_replica This replica and its role: active (holds the store) or standby.\n\
         # TYPE cockpit_replica gauge\n\
         cockpit_replica{{replica=\"{replica}\",role=\"{role}\"}} 1\n"
    )
}

fn metrics(standby: &Standby) -> Response {
    let text = replica_metric(&standby.replica, "standby");
    warp::reply::with_header(
        text,
        "content-type",
        crate::telemetry::Telemetry::CONTENT_TYPE,
    )
    .into_response()
}

/// The header names a message's `Connection` header lists: they belong to that connection too
/// (RFC 9110 §7.6.1), lower case.
fn connection_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(warp::http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Whether `name` is not passed on: a hop-by-hop header, or one `Connection` named.
fn hop_by_hop(name: &warp::http::HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|c| c == name.as_str())
}

/// Sends the request to the holder and streams its answer back.
async fn forward(
    standby: &Standby,
    method: warp::http::Method,
    path: &str,
    query: &str,
    headers: HeaderMap,
    peer: Option<super::http::Peer>,
    body: Vec<u8>,
) -> Response {
    let unavailable = |why: String| super::retry_later(StatusCode::SERVICE_UNAVAILABLE, why);
    let Ok(permit) = standby.forwards.clone().try_acquire_owned() else {
        return unavailable("this standby forwards as many requests as it may; retry".into());
    };
    let Some((holder, key)) = standby.holder() else {
        return unavailable("this replica is a standby and the active one is not known yet".into());
    };
    let mut url = format!("{}{path}", holder.trim_end_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let mut outgoing = HeaderMap::new();
    let connection = connection_headers(&headers);
    for (name, value) in &headers {
        // `Host` too: the holder sees the name the client used (its same-origin rule compares
        // it with `Origin`). A client's own replica proof is not passed on.
        if !hop_by_hop(name, &connection) && name != super::http::REPLICA_HEADER {
            outgoing.append(name.clone(), value.clone());
        }
    }
    // Who the holder should count this request against: the peer this standby saw.
    if let Some(super::http::Peer(peer)) = peer
        && let (Ok(ip), Ok(key)) = (
            HeaderValue::from_str(&peer.ip().to_string()),
            HeaderValue::from_str(&key),
        )
    {
        outgoing.append("x-forwarded-for", ip);
        outgoing.insert(super::http::REPLICA_HEADER, key);
    }
    let request = standby
        .client
        .request(method, &url)
        .headers(outgoing)
        .body(body);
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(%holder, %err, "the active replica does not answer");
            return unavailable(
                "this replica is a standby and the active one does not answer; retry".into(),
            );
        }
    };
    let status = answer.status();
    let mut reply_headers = HeaderMap::new();
    let connection = connection_headers(answer.headers());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name, &connection) && name != "content-length" {
            reply_headers.append(name.clone(), value.clone());
        }
    }
    // The answer streams (a followed log lasts as long as its run) through a small channel:
    // the body the client reads must be `Sync`, reqwest's stream is not.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let _permit = permit;
        let mut stream = answer.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other);
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = warp::reply::stream(body).into_response();
    *response.status_mut() = status;
    *response.headers_mut() = reply_headers;
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use parking_lot::Mutex;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;
    use warp::Filter;
    use warp::Reply as _;
    use warp::http::{HeaderMap, Method, StatusCode};

    use super::{HOLDER_URL_SETTING, MAX_FORWARDED_BODY, REPLICA_KEY_SETTING, Standby, routes};
    use crate::api::http::{self as connection, REPLICA_HEADER};
    use crate::store::Store;

    /// The replicas' key the tests write to the store.
    const KEY: &str = "the-replicas-key";

    /// One request as the holder received it.
    #[derive(Debug)]
    struct Received {
        method: Method,
        /// The path and, after `?`, the query.
        target: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// A holder: a real HTTP server on a local port that records every request it is sent.
    /// `/hold` answers `200` at once with `first ` but ends its body (with `last`) only when
    /// `release` is notified; any other path is answered `201` with `x-holder: recorded`.
    struct Holder {
        url: String,
        received: Arc<Mutex<Vec<Received>>>,
        release: Arc<Notify>,
    }

    impl Holder {
        /// The targets (path and query) of the requests received so far, in order.
        fn targets(&self) -> Vec<String> {
            self.received
                .lock()
                .iter()
                .map(|r| r.target.clone())
                .collect()
        }
    }

    /// Starts a [`Holder`] on an ephemeral port of 127.0.0.1 (bound before this returns, so it
    /// is reachable at once).
    async fn holder() -> Holder {
        let received = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let record = received.clone();
        let held = release.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method, path: warp::path::FullPath, query: String, headers, body| {
                    let mut target = path.as_str().to_owned();
                    if !query.is_empty() {
                        target = format!("{target}?{query}");
                    }
                    let hold = target == "/hold";
                    record.lock().push(Received {
                        method,
                        target,
                        headers,
                        body,
                    });
                    if !hold {
                        let reply = warp::reply::with_header("recorded", "x-holder", "recorded");
                        return warp::reply::with_status(reply, StatusCode::CREATED)
                            .into_response();
                    }
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(2);
                    let release = held.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(Ok(Bytes::from_static(b"first "))).await;
                        release.notified().await;
                        let _ = tx.send(Ok(Bytes::from_static(b"last"))).await;
                    });
                    warp::reply::stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
                        .into_response()
                },
            );
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the holder");
        let addr = listener.local_addr().expect("the holder's address");
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        Holder {
            url: format!("http://{addr}"),
            received,
            release,
        }
    }

    /// A standby's HTTP door on a local port, over a store of its own.
    struct Door {
        /// `http://127.0.0.1:PORT`.
        url: String,
        client: reqwest::Client,
        _store: Store,
        _dir: tempfile::TempDir,
    }

    impl Door {
        /// A request of `method` to `path` (with its query) on the door.
        fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
            self.client.request(method, format!("{}{path}", self.url))
        }
    }

    /// How a door is served.
    enum Serving {
        /// Through the server's own connection layer (`http::serve`), which puts each
        /// request's [`connection::Peer`] in it.
        WithPeer,
        /// By `warp::serve` alone: no request carries a `Peer`.
        WithoutPeer,
    }

    /// Serves `routes` of a standby on a fresh store holding the replicas' key and, when given,
    /// the holder's URL; at most `max_forwards` requests forwarded at once.
    async fn door(holder: Option<&str>, max_forwards: usize, serving: Serving) -> Door {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("open the store");
        store
            .set_setting(REPLICA_KEY_SETTING, KEY)
            .expect("write the replicas' key");
        if let Some(url) = holder {
            store
                .set_setting(HOLDER_URL_SETTING, url)
                .expect("write the holder's URL");
        }
        let standby = Standby::new(store.clone(), "b".into(), max_forwards).expect("a standby");
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the standby");
        let addr: SocketAddr = listener.local_addr().expect("the standby's address");
        match serving {
            Serving::WithPeer => {
                // As a standby's server has them: no replica key, so a client's
                // `x-cockpit-replica` is removed before the routes see it.
                let limits = connection::Limits {
                    max_connections: 64,
                    max_connections_per_ip: 64,
                    header_timeout: Duration::from_secs(10),
                    replica_key: None,
                    trusted_proxies: Vec::new().into(),
                };
                tokio::spawn(connection::serve(
                    listener,
                    warp::service(routes(standby)),
                    limits,
                    std::future::pending(),
                ));
            }
            Serving::WithoutPeer => {
                tokio::spawn(warp::serve(routes(standby)).incoming(listener).run());
            }
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client");
        Door {
            url: format!("http://{addr}"),
            client,
            _store: store,
            _dir: dir,
        }
    }

    /// Asserts `response` is a `503` telling the client to retry in a second.
    fn assert_retry_later(response: &reqwest::Response, what: &str) {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{what}: Retry-After"
        );
    }

    /// The JSON body of `response`.
    async fn json(response: reqwest::Response) -> serde_json::Value {
        response.json().await.expect("a JSON body")
    }

    #[tokio::test]
    async fn until_the_holder_is_known_requests_are_503_and_the_standby_is_not_ready() {
        let door = door(None, 4, Serving::WithPeer).await;

        for method in [Method::GET, Method::POST] {
            let response = door
                .request(method.clone(), "/ays/repositories?page=1")
                .body(if method == Method::POST { "{}" } else { "" })
                .send()
                .await
                .expect("an answer");
            assert_retry_later(&response, &format!("{method} with no holder known"));
        }

        let ready = door
            .request(Method::GET, "/ready")
            .send()
            .await
            .expect("an answer to /ready");
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready = json(ready).await;
        assert_eq!(ready["ready"], false, "{ready}");
        assert_eq!(ready["role"], "standby", "{ready}");
        assert_eq!(ready["checks"]["holder"], "unknown", "{ready}");
        assert_eq!(ready["checks"]["database"], "up", "{ready}");

        let health = door
            .request(Method::GET, "/health")
            .send()
            .await
            .expect("an answer to /health");
        assert_eq!(health.status(), StatusCode::OK);
        let health = json(health).await;
        assert_eq!(health["role"], "standby", "{health}");
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["replica"], "b", "{health}");
    }

    #[tokio::test]
    async fn a_holder_that_does_not_answer_is_503_with_retry_after_within_the_connect_timeout() {
        // A port bound but not listening: connections to it are refused, and no other test
        // can take it while this socket holds it.
        let reserved = tokio::net::TcpSocket::new_v4().expect("a socket");
        reserved
            .bind(([127, 0, 0, 1], 0).into())
            .expect("bind a port nobody listens on");
        let dead = format!("http://{}", reserved.local_addr().expect("its address"));
        let door = door(Some(&dead), 4, Serving::WithPeer).await;

        let started = Instant::now();
        let response = door
            .request(Method::POST, "/ays/runs")
            .body("{}")
            .send()
            .await
            .expect("an answer");
        let took = started.elapsed();
        assert_retry_later(&response, "a dead holder");
        assert!(
            took < Duration::from_secs(2),
            "a refused connection is answered at once, not after {took:?}"
        );
        let ready = json(
            door.request(Method::GET, "/ready")
                .send()
                .await
                .expect("an answer to /ready"),
        )
        .await;
        assert_eq!(ready["checks"]["holder"], dead.as_str(), "{ready}");
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_413_and_never_reaches_the_holder() {
        // With a content-length, and chunked (17 chunks of 1 MiB, no content-length).
        let bodies: [fn() -> reqwest::Body; 2] = [
            || reqwest::Body::from(vec![b'x'; MAX_FORWARDED_BODY as usize + 1]),
            || {
                let chunks = (0..17).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 1 << 20])));
                reqwest::Body::wrap_stream(futures::stream::iter(chunks))
            },
        ];
        for (n, body) in bodies.iter().enumerate() {
            let holder = holder().await;
            let door = door(Some(&holder.url), 4, Serving::WithPeer).await;
            let response = door
                .request(Method::POST, "/ays/too-large")
                .body(body())
                .send()
                .await
                .expect("an answer");
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "body {n}");

            // The holder is reachable: what is within the bound gets there, the rest did not.
            let response = door
                .request(Method::POST, "/ays/small")
                .body("small")
                .send()
                .await
                .expect("an answer");
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(holder.targets(), ["/ays/small"], "body {n}");
        }
    }

    #[tokio::test]
    async fn a_body_at_the_bound_is_forwarded_whole() {
        let holder = holder().await;
        let door = door(Some(&holder.url), 4, Serving::WithPeer).await;

        let chunks = (0..16).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 1 << 20])));
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let response = door
            .request(Method::PUT, "/ays/at-the-bound")
            .body(body)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::CREATED);
        let received = holder.received.lock();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body.len() as u64, MAX_FORWARDED_BODY);
    }

    #[tokio::test]
    async fn beyond_max_forwards_a_request_is_503_until_a_forwarded_one_ends() {
        let holder = holder().await;
        let door = door(Some(&holder.url), 1, Serving::WithPeer).await;

        // The first is forwarded; the holder keeps its body open.
        let mut first = door
            .request(Method::GET, "/hold")
            .send()
            .await
            .expect("the first answer");
        assert_eq!(first.status(), StatusCode::OK);
        let start = first
            .chunk()
            .await
            .expect("the first chunk")
            .expect("a first chunk");
        assert_eq!(start.as_ref(), b"first ");

        let second = door
            .request(Method::GET, "/second")
            .send()
            .await
            .expect("the second answer");
        assert_retry_later(&second, "a second request while one is forwarded");
        assert_eq!(
            holder.targets(),
            ["/hold"],
            "the second never reached the holder"
        );

        // The first ends: its permit goes with its body.
        holder.release.notify_one();
        let rest = first.bytes().await.expect("the rest of the first body");
        assert_eq!(rest.as_ref(), b"last");

        let third = door
            .request(Method::GET, "/third")
            .send()
            .await
            .expect("the third answer");
        assert_eq!(third.status(), StatusCode::CREATED);
        assert_eq!(holder.targets(), ["/hold", "/third"]);
    }

    /// The hop-by-hop headers a client sends in the tests below, with a value each.
    const HOP_BY_HOP_SENT: [(&str, &str); 7] = [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "named by Connection"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic eDp5"),
    ];

    /// `request` with every header of [`HOP_BY_HOP_SENT`].
    fn with_hop_by_hop(mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (name, value) in HOP_BY_HOP_SENT {
            request = request.header(name, value);
        }
        request
    }

    #[tokio::test]
    async fn the_holder_receives_the_request_as_sent_with_the_peer_and_the_store_s_key() {
        let holder = holder().await;
        let door = door(Some(&holder.url), 4, Serving::WithPeer).await;

        // A client's own replica header: only the store's key reaches the holder.
        let request = door
            .request(Method::POST, "/ays/things/run?flag=1&name=a%20b")
            .header("host", "cockpit.example:8443")
            .header("x-custom", "kept")
            .header(REPLICA_HEADER, "forged")
            .body("the body");
        let response = with_hop_by_hop(request).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response
                .headers()
                .get("x-holder")
                .and_then(|v| v.to_str().ok()),
            Some("recorded"),
            "the holder's headers come back"
        );
        assert_eq!(response.text().await.expect("the body"), "recorded");

        let received = holder.received.lock();
        assert_eq!(received.len(), 1);
        let got = &received[0];
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.target, "/ays/things/run?flag=1&name=a%20b");
        assert_eq!(got.body.as_ref(), b"the body");
        let all = |name: &str| -> Vec<&str> {
            got.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("a text header"))
                .collect()
        };
        assert_eq!(all("host"), ["cockpit.example:8443"]);
        assert_eq!(all("x-custom"), ["kept"]);
        assert_eq!(all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(all(REPLICA_HEADER), [KEY]);
        for (name, _) in HOP_BY_HOP_SENT {
            assert_eq!(all(name), Vec::<&str>::new(), "{name} is not passed on");
        }
    }

    #[tokio::test]
    async fn without_a_peer_a_client_s_replica_header_is_dropped_and_no_key_is_added() {
        let holder = holder().await;
        let door = door(Some(&holder.url), 4, Serving::WithoutPeer).await;

        // Even the right key: the standby vouches only for a peer it saw.
        let request = door
            .request(Method::GET, "/ays/things")
            .header(REPLICA_HEADER, KEY);
        let response = with_hop_by_hop(request).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::CREATED);

        let received = holder.received.lock();
        assert_eq!(received.len(), 1);
        let headers = &received[0].headers;
        assert!(
            headers.get(REPLICA_HEADER).is_none(),
            "a client's replica header is dropped: {headers:?}"
        );
        assert!(
            headers.get("x-forwarded-for").is_none(),
            "no peer, no x-forwarded-for: {headers:?}"
        );
        for (name, _) in HOP_BY_HOP_SENT {
            assert!(headers.get(name).is_none(), "{name} is not passed on");
        }
    }
}
