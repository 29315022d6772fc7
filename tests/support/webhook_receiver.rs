//! A webhook receiver over real HTTP, as an operator's endpoint would be: it checks every
//! delivery's `X-Cockpit-Signature-256` against its own secret (HMAC-SHA256 over the raw body,
//! computed here, not by cockpit's code), records what came, and answers with the statuses it
//! is told to (to exercise retries).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use warp::Filter;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The body, parsed.
    pub body: serde_json::Value,
    /// `X-Cockpit-Delivery`.
    pub id: String,
    /// `X-Cockpit-Event`.
    pub event: String,
    /// Whether the signature was right for the receiver's secret.
    pub signed: bool,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    deliveries: Vec<Delivery>,
    /// Statuses to answer next, in order; 200 once empty (unless `always`).
    script: VecDeque<u16>,
    /// Answer this to everything (overrides `script`) while set.
    always: Option<u16>,
}

/// The receiver.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// The secret it checks signatures with.
    pub secret: String,
}

/// HMAC-SHA256 of `body` under `secret`, hex (as GitHub documents the scheme).
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start(secret: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let receiver = Receiver {
            state: Arc::default(),
            url,
            secret: secret.to_string(),
        };
        let me = receiver.clone();
        let route = warp::path!("hook")
            .and(warp::post())
            .and(warp::header::optional::<String>("x-cockpit-signature-256"))
            .and(warp::header::optional::<String>("x-cockpit-delivery"))
            .and(warp::header::optional::<String>("x-cockpit-event"))
            .and(warp::body::bytes())
            .map(
                move |sig: Option<String>,
                      id: Option<String>,
                      event: Option<String>,
                      body: bytes::Bytes| {
                    let expected = format!("sha256={}", hmac_hex(&me.secret, &body));
                    let signed = sig.as_deref() == Some(expected.as_str());
                    let mut state = me.state.lock().expect("state");
                    let status = match state.always {
                        Some(status) => status,
                        None => state.script.pop_front().unwrap_or(200),
                    };
                    let status = if signed { status } else { 401 };
                    state.deliveries.push(Delivery {
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                        id: id.unwrap_or_default(),
                        event: event.unwrap_or_default(),
                        signed,
                        status,
                    });
                    warp::reply::with_status(
                        "",
                        warp::http::StatusCode::from_u16(status).expect("status"),
                    )
                },
            );
        tokio::spawn(warp::serve(route).incoming(listener).run());
        receiver
    }

    /// Answers these statuses to the next deliveries, then 200.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("state")
            .script
            .extend(statuses.iter().copied());
    }

    /// Answers `status` to everything until called with `None`.
    pub fn answer_always(&self, status: Option<u16>) {
        self.state.lock().expect("state").always = status;
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().expect("state").deliveries.clone()
    }
}
