//! The memory budget for messages in flight: bytes of messages being received or recorded,
//! across all sessions, and each peer's share of it.
//!
//! Without the share, a handful of clients trickling unfinished messages could hold the whole
//! budget and every other sender would get `452` for as long as they liked. A peer is an IPv4
//! address or an IPv6 /64 (one host usually owns a whole /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};

/// The key a peer is counted under: its IPv4 address or its IPv6 /64.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

/// Bytes held, in total and per peer.
#[derive(Debug, Default)]
struct Counts {
    /// Across all peers.
    total: u64,
    /// Per peer key; a peer holding nothing has no entry.
    by_peer: HashMap<IpAddr, u64>,
}

/// The budget shared by every session of one receiver.
#[derive(Debug)]
pub struct Budget {
    /// Bytes all peers may hold together.
    limit: u64,
    /// Bytes one peer may hold.
    share: u64,
    /// What is held now.
    counts: Mutex<Counts>,
}

impl Budget {
    /// A budget of `limit` bytes of which one peer may hold `share`.
    pub fn new(limit: u64, share: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            share: share.min(limit),
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock()
    }

    /// True when `peer` holds so much that a new message of up to `room` bytes would not fit
    /// in its share: a new `DATA` from it is refused. A peer holding nothing is never full.
    pub fn peer_full(&self, peer: IpAddr, room: u64) -> bool {
        self.counts()
            .by_peer
            .get(&peer_key(peer))
            .is_some_and(|held| held.saturating_add(room) > self.share)
    }

    /// Bytes held now (for tests and metrics).
    pub fn used(&self) -> u64 {
        self.counts().total
    }

    /// An empty holding for one message from `peer`, to grow with [`Held::take`].
    pub fn hold(self: &Arc<Budget>, peer: IpAddr) -> Held {
        Held {
            budget: self.clone(),
            peer: peer_key(peer),
            bytes: 0,
        }
    }
}

/// The bytes one message holds; given back when dropped.
#[derive(Debug)]
pub struct Held {
    /// The budget they come from.
    budget: Arc<Budget>,
    /// Whose they are.
    peer: IpAddr,
    /// How many.
    bytes: u64,
}

impl Held {
    /// Takes `n` more bytes; false (and nothing taken) when the budget or the peer's share would
    /// be exceeded.
    pub fn take(&mut self, n: u64) -> bool {
        let budget = &self.budget;
        let mut counts = budget.counts();
        let peer = counts.by_peer.get(&self.peer).copied().unwrap_or(0);
        if counts.total.saturating_add(n) > budget.limit || peer.saturating_add(n) > budget.share {
            return false;
        }
        counts.total += n;
        counts.by_peer.insert(self.peer, peer + n);
        self.bytes += n;
        true
    }

    /// Gives everything back (the message was discarded).
    pub fn release(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut counts = self.budget.counts();
        counts.total = counts.total.saturating_sub(self.bytes);
        if let Some(peer) = counts.by_peer.get_mut(&self.peer) {
            *peer = peer.saturating_sub(self.bytes);
            if *peer == 0 {
                counts.by_peer.remove(&self.peer);
            }
        }
        self.bytes = 0;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether too much work waits for the engine: runs not started and mail events not yet turned
/// into runs, past `[mail] max_queued_runs`. While it is full, `RCPT` and `DATA` answer `452`, so
/// a flood of mail for a slow action waits at the senders (who retry) instead of in our store.
/// The recorder thread sets it from the store after each batch and every second; sessions only
/// read it (no store access on the SMTP path).
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// True while the waiting work is at or past the bound.
    full: Arc<AtomicBool>,
    /// The bound (`[mail] max_queued_runs`); 0 means none.
    limit: u64,
}

impl Backlog {
    /// A backlog refusing mail once `limit` items wait.
    pub fn new(limit: u64) -> Backlog {
        Backlog {
            full: Arc::default(),
            limit,
        }
    }

    /// True while new mail is to be deferred.
    pub fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Records how much work waits now; true when that turned the backlog full or not full.
    pub fn update(&self, waiting: u64) -> bool {
        let full = self.limit > 0 && waiting >= self.limit;
        self.full.swap(full, Ordering::Relaxed) != full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_full_from_its_limit_and_reports_changes() {
        let backlog = Backlog::new(3);
        let shared = backlog.clone();
        assert!(!shared.full());
        assert!(!backlog.update(2));
        assert!(backlog.update(3));
        assert!(shared.full());
        assert!(!backlog.update(7));
        assert!(backlog.update(0));
        assert!(!shared.full());
        let unbounded = Backlog::default();
        assert!(!unbounded.update(u64::MAX));
        assert!(!unbounded.full());
    }

    #[test]
    fn a_peer_holds_at_most_its_share_and_everything_comes_back() {
        let budget = Budget::new(300, 100);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let mut first = budget.hold(a);
        let mut second = budget.hold(a);
        assert!(first.take(60));
        assert!(!second.take(60), "a's share is 100");
        assert!(second.take(40));
        assert!(budget.peer_full(a, 1));
        assert!(!budget.peer_full(b, 100), "b holds nothing");
        let mut other = budget.hold(b);
        assert!(other.take(100));
        drop(first);
        assert!(!budget.peer_full(a, 60));
        assert!(budget.peer_full(a, 61));
        drop(second);
        drop(other);
        assert_eq!(budget.used(), 0);
        assert!(budget.counts().by_peer.is_empty());
    }

    #[test]
    fn the_total_bounds_all_peers_together() {
        let budget = Budget::new(150, 100);
        let mut a = budget.hold([192, 0, 2, 1].into());
        let mut b = budget.hold([192, 0, 2, 2].into());
        assert!(a.take(100));
        assert!(!b.take(60));
        assert!(b.take(50));
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(peer_key(one), peer_key(other));
        assert_ne!(peer_key(one), peer_key(elsewhere));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(peer_key(mapped), IpAddr::from([192, 0, 2, 1]));
    }
}
