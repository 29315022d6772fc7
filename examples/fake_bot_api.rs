//! The fake Telegram Bot API of the tests as a standalone server, for `bench/run.py`: both
//! Cockpit and the Python peer are measured against it.
//!
//! `cargo run --release --example fake_bot_api -- TOKEN` prints `bot_api=http://… control=http://…`
//! and serves until killed. The control side:
//! - `POST /queue {"from": 1, "to": 10000, "text": "/help"}` queues one message per chat id;
//! - `GET /stats` → `{"sent": <sendMessage calls>, "seconds": <first served batch → last call>}`;
//! - `POST /reset` forgets the recorded calls and timings.

#[path = "../tests/support/fake_telegram.rs"]
mod fake_telegram;

use serde::Deserialize;
use serde_json::json;
use warp::Filter;

#[derive(Deserialize)]
struct Queue {
    from: i64,
    to: i64,
    text: String,
}

#[tokio::main]
async fn main() {
    let token = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "123456:BENCH-token".to_string());
    let fake = fake_telegram::FakeTelegram::start(&token).await;

    let queue_fake = fake.clone();
    let queue = warp::path!("queue")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |q: Queue| {
            for chat in q.from..=q.to {
                queue_fake.send_text(chat, &q.text);
            }
            warp::reply::json(&json!({"queued": (q.to - q.from + 1).max(0)}))
        });
    let stats_fake = fake.clone();
    let stats = warp::path!("stats").and(warp::get()).map(move || {
        let (sent, seconds) = stats_fake.throughput();
        warp::reply::json(&json!({"sent": sent, "seconds": seconds}))
    });
    let reset_fake = fake.clone();
    let reset = warp::path!("reset").and(warp::post()).map(move || {
        reset_fake.reset();
        warp::reply::json(&json!({"reset": true}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the control port");
    let control = listener.local_addr().expect("control address");
    println!("bot_api={} control=http://{control}", fake.url);
    warp::serve(queue.or(stats).or(reset))
        .incoming(listener)
        .run()
        .await;
}
