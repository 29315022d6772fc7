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
    for (name, value) in &headers {
        // `Host` too: the holder sees the name the client used (its same-origin rule compares
        // it with `Origin`). A client's own replica proof is not passed on.
        if !HOP_BY_HOP.contains(&name.as_str()) && name != super::http::REPLICA_HEADER {
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
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
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
