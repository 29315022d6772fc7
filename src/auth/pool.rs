//! The REST API's token verifier: a cache of accepted tokens in front of a bounded pool of
//! verifying threads.
//!
//! Verification is pure and costs about half a millisecond of CPU (ES384), so it runs on a few
//! plain threads rather than behind one actor's mailbox, with every queue bounded:
//!
//! - a token accepted before and still before its `exp` is a hash lookup ([`TokenCache`]); a
//!   refused token is never cached;
//! - a token whose header is not ES384 is refused before it costs a thread;
//! - one peer has at most `per_peer` verifications queued or running: beyond, [`Overload::Peer`]
//!   (429), so one client flooding junk tokens only delays itself;
//! - the queue holds at most `queue` jobs: beyond, [`Overload::Busy`] (503);
//! - a job whose caller has gone (the client hung up) is dropped unverified.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use parking_lot::{Mutex, RwLock};

use tokio::sync::oneshot;

use super::{AuthError, JwtRules, Verified};

/// How many accepted tokens are remembered at most.
const CACHE_CAPACITY: usize = 10_000;

/// Accepted tokens until their `exp`: read by every request, written by the verifying threads.
#[derive(Default)]
pub struct TokenCache {
    /// Token → who it speaks for and until when.
    tokens: RwLock<HashMap<String, Verified>>,
}

impl TokenCache {
    /// The cached verification of `token`, if it is still valid at `now`.
    pub fn fresh(&self, token: &str, now: u64) -> Option<Verified> {
        let tokens = self.tokens.read();
        tokens.get(token).filter(|hit| now < hit.exp).cloned()
    }

    /// Remembers an accepted token; at capacity the expired entries go, and if that is not
    /// enough, all of them (the cache is only a shortcut).
    fn insert(&self, token: &str, verified: Verified, now: u64) {
        let mut tokens = self.tokens.write();
        if tokens.len() >= CACHE_CAPACITY {
            tokens.retain(|_, v| now < v.exp);
            if tokens.len() >= CACHE_CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(token.to_string(), verified);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.tokens.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a token was not verified now: the server is too busy, the client may retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    /// This peer has its share of verifications waiting already (429).
    #[error("too many token verifications from this client at once; retry")]
    Peer,
    /// The verification queue is full, or the pool is gone (503).
    #[error("the token verifier is busy; retry")]
    Busy,
}

/// The outcome of [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is refused (401).
    #[error(transparent)]
    Refused(#[from] AuthError),
    /// The token was not looked at (429/503 with `Retry-After`).
    #[error(transparent)]
    Overloaded(#[from] Overload),
}

/// One verification waiting for a thread.
struct Job {
    /// The raw token.
    token: String,
    /// Gets the outcome; closed when the caller has gone.
    reply: oneshot::Sender<Result<Verified, AuthError>>,
}

/// The size of the pool and its queues.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Verifying threads.
    pub workers: usize,
    /// Jobs waiting at most.
    pub queue: usize,
    /// Jobs queued or running per peer IP at most.
    pub per_peer: usize,
}

impl Default for PoolSize {
    fn default() -> PoolSize {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        PoolSize {
            workers,
            queue: 64 * workers,
            per_peer: 4 * workers,
        }
    }
}

/// The verifier: cache, queue and threads.
pub struct Verifier {
    /// Accepted tokens until their `exp`.
    cache: Arc<TokenCache>,
    /// Where jobs wait for a thread (bounded).
    queue: SyncSender<Job>,
    /// Jobs queued or running per peer IP (entries at zero are removed).
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    /// The sizes.
    size: PoolSize,
}

impl Verifier {
    /// Starts `size.workers` threads that verify with `rules`; they end when the verifier is
    /// dropped.
    pub fn start(rules: JwtRules, size: PoolSize) -> std::io::Result<Arc<Verifier>> {
        let (queue, jobs) = sync_channel::<Job>(size.queue.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        let cache = Arc::new(TokenCache::default());
        let rules = Arc::new(rules);
        for n in 0..size.workers.max(1) {
            let (jobs, rules, cache) = (jobs.clone(), rules.clone(), cache.clone());
            std::thread::Builder::new()
                .name(format!("jwt-verify-{n}"))
                .spawn(move || work(&jobs, &rules, &cache))?;
        }
        Ok(Arc::new(Verifier {
            cache,
            queue,
            per_peer: Mutex::new(HashMap::new()),
            size,
        }))
    }

    /// The accepted-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies `token` for a request from `peer` at `now` (Unix seconds).
    pub async fn verify(
        &self,
        token: &str,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        if let Some(hit) = self.cache.fresh(token, now) {
            return Ok(hit);
        }
        // Not even an ES384 token: refused without a thread.
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.alg == jsonwebtoken::Algorithm::ES384 => {}
            _ => return Err(AuthError::Invalid.into()),
        }
        let _slot = match peer {
            Some(ip) => Some(self.peer_slot(ip)?),
            None => None,
        };
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            token: token.to_string(),
            reply,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                return Err(Overload::Busy.into());
            }
        }
        match outcome.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Overload::Busy.into()),
        }
    }

    /// Takes one of `peer`'s slots until the guard is dropped.
    fn peer_slot(&self, ip: IpAddr) -> Result<PeerSlot<'_>, Overload> {
        let mut held = self.per_peer.lock();
        let count = held.entry(ip).or_insert(0);
        if *count >= self.size.per_peer {
            return Err(Overload::Peer);
        }
        *count += 1;
        Ok(PeerSlot { verifier: self, ip })
    }
}

/// One verification of a peer, queued or running.
struct PeerSlot<'a> {
    verifier: &'a Verifier,
    ip: IpAddr,
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.verifier.per_peer.lock();
        if let Some(count) = held.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    crate::clock::since_epoch().as_secs()
}

/// A verifying thread: takes jobs until the verifier is dropped.
fn work(jobs: &Mutex<Receiver<Job>>, rules: &JwtRules, cache: &TokenCache) {
    loop {
        let job = {
            let jobs = jobs.lock();
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if job.reply.is_closed() {
            continue;
        }
        let now = now_secs();
        // A panic in the crypto library must not cost the pool a thread.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rules.verify(&job.token, now)
        }))
        .unwrap_or(Err(AuthError::Invalid));
        if let Ok(verified) = &result {
            cache.insert(&job.token, verified.clone(), now);
        }
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PRIVATE: &str = include_str!("../../tests/support/keys/test_p384.pem");
    const PUBLIC: &str = include_str!("../../tests/support/keys/test_p384.pub.pem");

    fn rules() -> JwtRules {
        JwtRules::new(PUBLIC, "itsyouonline", "org").expect("rules")
    }

    fn token(exp: u64, scope: &str) -> String {
        crate::auth::mint_token(
            PRIVATE,
            &json!({"iss": "itsyouonline", "exp": exp, "scope": [scope], "username": "ann"}),
        )
        .expect("mint")
    }

    fn size(workers: usize, queue: usize, per_peer: usize) -> PoolSize {
        PoolSize {
            workers,
            queue,
            per_peer,
        }
    }

    #[tokio::test]
    async fn accepted_tokens_are_cached_until_exp_and_refusals_never_are() {
        let verifier = Verifier::start(rules(), size(1, 4, 4)).expect("start");
        let now = now_secs();
        let good = token(now + 1_000, "user:memberof:org");
        let who = verifier.verify(&good, None, now).await.map(|v| v.user);
        assert_eq!(who, Ok("ann".to_string()));
        assert_eq!(verifier.cache().len(), 1);
        assert!(verifier.cache().fresh(&good, now + 999).is_some());
        assert!(
            verifier.cache().fresh(&good, now + 1_000).is_none(),
            "ends at exp"
        );

        let outsider = token(now + 1_000, "user:memberof:other");
        for _ in 0..2 {
            assert_eq!(
                verifier.verify(&outsider, None, now).await,
                Err(AuthError::Unauthorized.into())
            );
        }
        assert_eq!(
            verifier.verify("junk", None, now).await,
            Err(AuthError::Invalid.into())
        );
        assert_eq!(verifier.cache().len(), 1, "a refused token is never cached");
    }

    #[tokio::test]
    async fn a_peer_over_its_share_and_a_full_queue_are_overload_not_refusal() {
        // No thread takes jobs while the only worker is held by the first verifications.
        let verifier = Verifier::start(rules(), size(1, 1, 2)).expect("start");
        let now = now_secs();
        let peer = Some(IpAddr::from([127, 0, 0, 2]));
        let tokens: Vec<String> = (0..4)
            .map(|n| token(now + 1_000 + n, "user:memberof:org"))
            .collect();
        let held = verifier.peer_slot(IpAddr::from([127, 0, 0, 2]));
        let held_too = verifier.peer_slot(IpAddr::from([127, 0, 0, 2]));
        assert!(held.is_ok() && held_too.is_ok());
        assert_eq!(
            verifier.verify(&tokens[0], peer, now).await,
            Err(Overload::Peer.into())
        );
        drop((held, held_too));
        // Another peer is unaffected by the first one's share.
        let other = Some(IpAddr::from([127, 0, 0, 3]));
        assert!(verifier.verify(&tokens[1], other, now).await.is_ok());
        assert!(verifier.per_peer.lock().is_empty());
    }

    #[test]
    fn a_job_whose_caller_has_gone_is_dropped_unverified() {
        let now = now_secs();
        let (queue, jobs) = sync_channel::<Job>(4);
        let (gone, outcome) = oneshot::channel();
        drop(outcome);
        let abandoned = token(now + 1_000, "user:memberof:org");
        queue
            .send(Job {
                token: abandoned.clone(),
                reply: gone,
            })
            .expect("queue");
        let (waiting, mut outcome) = oneshot::channel();
        let wanted = token(now + 2_000, "user:memberof:org");
        queue
            .send(Job {
                token: wanted.clone(),
                reply: waiting,
            })
            .expect("queue");
        drop(queue);
        let cache = TokenCache::default();
        work(&Mutex::new(jobs), &rules(), &cache);
        assert!(
            cache.fresh(&abandoned, now).is_none(),
            "verified for nobody"
        );
        assert!(cache.fresh(&wanted, now).is_some());
        assert!(matches!(outcome.try_recv(), Ok(Ok(_))));
    }
}
