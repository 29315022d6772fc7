//! Per-peer rate limits for the routes anyone may call that cost the server more than an answer
//! (`/oauth/authorize` writes a pending login, `/oauth/callback` may call a provider with our
//! client secret): a token bucket per peer IP, in bounded memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::time::Instant;
use warp::{Filter, Rejection};

use super::http::Peer;

/// Peers remembered at most; beyond, the idle ones (full buckets) are forgotten, and if that is
/// not enough, all of them (a limiter that forgets fails open, never grows).
const MAX_PEERS: usize = 10_000;

/// A request refused by a rate limit (429 with `Retry-After`); names the limited route.
#[derive(Debug)]
pub struct RateLimited(pub &'static str);

impl warp::reject::Reject for RateLimited {}

/// One peer's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests it may still make at once.
    tokens: f64,
    /// When `tokens` was computed.
    at: Instant,
}

/// A token bucket per peer IP.
#[derive(Debug)]
pub struct RateLimiter {
    /// What is limited, for the refusal's message.
    name: &'static str,
    /// Requests a peer may make at once.
    burst: f64,
    /// Requests a peer regains per second.
    per_sec: f64,
    /// The buckets of the peers seen lately.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `burst` requests at once, then `per_minute` a minute, per peer IP.
    pub fn new(name: &'static str, burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter {
            name,
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may make one more request now (and counts it).
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_PEERS && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
            if buckets.len() >= MAX_PEERS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }

    /// Peers remembered now.
    pub fn peers(&self) -> usize {
        self.buckets.lock().len()
    }
}

/// Passes a request whose peer is within `limiter`'s rate; refuses with [`RateLimited`].
pub fn limit(limiter: Arc<RateLimiter>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::ext::optional::<Peer>()
        .and_then(move |peer: Option<Peer>| {
            let limiter = limiter.clone();
            async move {
                match peer {
                    Some(Peer(addr)) if !limiter.allow(addr.ip()) => {
                        Err(warp::reject::custom(RateLimited(limiter.name)))
                    }
                    _ => Ok(()),
                }
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000 + n))
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let limiter = RateLimiter::new("test", 3, 60);
        assert!((0..3).all(|_| limiter.allow(ip(2))));
        assert!(!limiter.allow(ip(2)), "burst spent");
        assert!(limiter.allow(ip(3)), "another peer has its own bucket");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!limiter.allow(ip(2)), "one a second: not yet");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(limiter.allow(ip(2)), "one regained");
        assert!(!limiter.allow(ip(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_whatever_the_number_of_peers() {
        let limiter = RateLimiter::new("test", 2, 60);
        for n in 0..(MAX_PEERS as u32 * 3) {
            limiter.allow(ip(n));
        }
        assert!(limiter.peers() <= MAX_PEERS);
    }
}
