//! The SMTP accept loop: one tokio task per connection, so that a slow or idle client costs a
//! socket and a few kilobytes, never a thread.
//!
//! At most `max_connections` sessions run. When a client connects while all places are taken,
//! the session that has been waiting for its client the longest is cut (it gets a `421` and is
//! closed), as Postfix's stress mode cuts idle clients first; only if no session is waiting at
//! all does the newcomer get the `421`. Shutdown stops accepting, ends the sessions that wait for
//! their client (sessions recording a mail finish first) and returns once all have ended.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::session::{self, Door, Slot};

/// The running sessions by connection number.
#[derive(Default)]
struct Table {
    /// Each session's slot (idle mark, cut signal).
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
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

/// Accepts connections on `listener` until `shutdown` turns true (or its sender is dropped),
/// then waits for every session to end.
pub async fn run(
    listener: TcpListener,
    door: Arc<Door>,
    max_connections: usize,
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
        let Some((slot, cut)) = table.admit(id, max_connections) else {
            door.telemetry.count("mail_connections_refused", 1);
            tokio::spawn(refuse(stream, peer));
            continue;
        };
        if cut {
            door.telemetry.count("mail_connections_cut", 1);
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

/// Tells a client there is no room (every session is busy) and closes.
async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    debug!(%peer, "smtp: full and nobody idle, refusing");
    let reply = stream.write_all(b"421 4.7.0 Too busy, try again later\r\n");
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

    fn keys(table: &Table) -> Vec<u64> {
        let mut keys: Vec<u64> = table.slots().keys().copied().collect();
        keys.sort();
        keys
    }
}
