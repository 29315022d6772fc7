//! The SMTP accept loop: one tokio task per connection, so that a slow or idle client costs a
//! socket and a few kilobytes, never a thread.
//!
//! At most `max_connections` sessions run. When a client connects while all places are taken,
//! the session that has been waiting for its client the longest is cut (it gets a `421` and is
//! closed), as Postfix's stress mode cuts idle clients first; only if no session is waiting at
//! all does the newcomer get the `421`. One address (an IPv6 /64) holds at most
//! `max_connections_per_peer` sessions; beyond that it gets `421` at once. Shutdown stops accepting, ends the sessions that wait for
//! their client (sessions recording a mail finish first) and returns once all have ended.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::budget::peer_key;
use super::session::{self, Door, Slot};

/// The running sessions by connection number.
#[derive(Default)]
struct Table {
    /// Each session's slot (idle mark, cut signal).
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Open connections per peer key (until their task ends, cut or not).
    peers: Mutex<HashMap<IpAddr, usize>>,
}

impl Table {
    fn slots(&self) -> parking_lot::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock()
    }

    /// A slot for connection `id`, cutting the longest-idle session when all `max` are taken;
    /// `None` when full and no session is idle.
    fn admit(&self, id: u64, max: usize) -> Option<(Arc<Slot>, bool)> {
        let mut slots = self.slots();
        let mut cut = false;
        if slots.len() >= max {
            let oldest = slots
                .iter()
                .filter_map(|(id, slot)| slot.idle_since().map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(slot) = slots.remove(&oldest) {
                slot.cut();
                cut = true;
            }
        }
        let slot = Arc::new(Slot::default());
        slots.insert(id, slot.clone());
        Some((slot, cut))
    }

    fn leave(&self, id: u64) {
        self.slots().remove(&id);
    }

    fn peers(&self) -> parking_lot::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.peers.lock()
    }

    /// Counts a connection from `peer`; false (and not counted) when it has `max` already.
    fn enter_peer(&self, peer: IpAddr, max: usize) -> bool {
        let mut peers = self.peers();
        let open = peers.entry(peer_key(peer)).or_default();
        if *open >= max {
            return false;
        }
        *open += 1;
        true
    }

    fn leave_peer(&self, peer: IpAddr) {
        let mut peers = self.peers();
        let key = peer_key(peer);
        if let Some(open) = peers.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                peers.remove(&key);
            }
        }
    }
}

/// Uncounts a peer's connection however its task ends.
struct LeavePeer {
    /// The table.
    table: Arc<Table>,
    /// The peer.
    peer: IpAddr,
}

impl Drop for LeavePeer {
    fn drop(&mut self) {
        self.table.leave_peer(self.peer);
    }
}

/// Removes a session from the table however its task ends.
struct Leave {
    /// The table.
    table: Arc<Table>,
    /// The session's connection number.
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.table.leave(self.id);
    }
}

/// How many sessions may run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In all.
    pub max_connections: usize,
    /// From one peer (an IPv4 address or an IPv6 /64).
    pub max_per_peer: usize,
}

/// Accepts connections on `listener` until `shutdown` turns true (or its sender is dropped),
/// then waits for every session to end.
pub async fn run(
    listener: TcpListener,
    door: Arc<Door>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let table = Arc::new(Table::default());
    // Every session holds a clone; `recv` returns `None` once all are gone.
    let (running, mut all_done) = mpsc::channel::<()>(1);
    let mut stop = shutdown.clone();
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%err, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        if !table.enter_peer(peer.ip(), limits.max_per_peer) {
            door.telemetry
                .count(crate::telemetry::Count::MailConnectionsRefusedPeer, 1);
            tokio::spawn(refuse(stream, peer, PEER_FULL));
            continue;
        }
        let leave_peer = LeavePeer {
            table: table.clone(),
            peer: peer.ip(),
        };
        let Some((slot, cut)) = table.admit(id, limits.max_connections) else {
            door.telemetry
                .count(crate::telemetry::Count::MailConnectionsRefused, 1);
            tokio::spawn(async move {
                let _leave_peer = leave_peer;
                refuse(stream, peer, FULL).await;
            });
            continue;
        };
        if cut {
            door.telemetry
                .count(crate::telemetry::Count::MailConnectionsCut, 1);
            debug!(%peer, "smtp: full, cut the longest-idle connection");
        }
        let door = door.clone();
        let leave = Leave {
            table: table.clone(),
            id,
        };
        let running = running.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _running = running;
            let _leave = leave;
            let _leave_peer = leave_peer;
            let result = session::run(stream, peer.ip(), &door, &slot, shutdown).await;
            session::log_end(peer.ip(), &result);
        });
    }
    drop(listener);
    drop(running);
    let open = table.slots().len();
    if open > 0 {
        info!(open, "smtp: waiting for sessions to end");
    }
    let _ = all_done.recv().await;
}

/// The reply when every session is busy.
const FULL: &[u8] = b"421 4.7.0 Too busy, try again later\r\n";
/// The reply when the client's address has all its connections open.
const PEER_FULL: &[u8] = b"421 4.7.0 Too many connections from your host, try again later\r\n";

/// Tells a client there is no room and closes.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, reply: &'static [u8]) {
    debug!(%peer, "smtp: no room, refusing");
    let reply = stream.write_all(reply);
    let _ = tokio::time::timeout(Duration::from_secs(5), reply).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_cuts_the_session_idle_the_longest_and_never_a_busy_one() {
        let table = Table::default();
        let (first, _) = table.admit(1, 3).expect("room");
        let (second, _) = table.admit(2, 3).expect("room");
        let (third, _) = table.admit(3, 3).expect("room");
        // 2 waits for its client the longest, then 3; 1 is busy (recording a mail, say).
        second.set_idle(true);
        std::thread::sleep(Duration::from_millis(2));
        third.set_idle(true);

        let (_, cut) = table.admit(4, 3).expect("room made");
        assert!(cut);
        assert_eq!(keys(&table), [1, 3, 4]);
        let (_, cut) = table.admit(5, 3).expect("room made");
        assert!(cut);
        assert_eq!(keys(&table), [1, 4, 5]);
        // Nobody idle any more: the newcomer is refused, the busy sessions keep their place.
        assert!(table.admit(6, 3).is_none());
        assert_eq!(keys(&table), [1, 4, 5]);
        drop(first);
    }

    #[test]
    fn one_peer_gets_at_most_its_connections_and_others_are_not_affected() {
        let table = Table::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        assert!(table.enter_peer(a, 2));
        assert!(table.enter_peer(a, 2));
        assert!(!table.enter_peer(a, 2));
        assert!(table.enter_peer(b, 2));
        table.leave_peer(a);
        assert!(table.enter_peer(a, 2));
    }

    fn keys(table: &Table) -> Vec<u64> {
        let mut keys: Vec<u64> = table.slots().keys().copied().collect();
        keys.sort();
        keys
    }
}
