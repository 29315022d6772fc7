//! Failure notices that must outlive a crash, and what the doors remember about them: the
//! outbox of notices for HTTP webhooks (written in the transaction that ends the run), the chats
//! that asked to hear about a repository, and the GitHub delivery ids already taken (replays).

use super::db::{OptionalExtension, params};

use super::{Store, StoreError};

/// A notice to be delivered durably: one body for each of several subscribers (named by the
/// door that delivers them; the webhook notifier names them by URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableNotice {
    /// Who gets it.
    pub targets: Vec<String>,
    /// What they get (JSON text).
    pub body: String,
    /// How many undelivered notices the outbox keeps; the oldest beyond it are dropped.
    pub cap: u32,
    /// When it was written (Unix ms; the first delivery is due then).
    pub at_ms: i64,
}

/// One undelivered notice for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its id (increasing; also the delivery id the receiver can deduplicate on).
    pub id: i64,
    /// Its subscriber.
    pub target: String,
    /// Its body.
    pub body: String,
    /// When it was written (Unix ms).
    pub created_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Writes a notice's rows inside a transaction, then trims the outbox to its cap (oldest first);
/// how many were dropped.
pub(super) fn enqueue(
    tx: &super::db::Transaction<'_>,
    notice: &DurableNotice,
) -> Result<usize, StoreError> {
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO notify_outbox (target, body, created_ms, attempts, next_ms)
             VALUES (?1, ?2, ?3, 0, ?3)",
        )?;
        for target in &notice.targets {
            put.execute(params![target, notice.body, notice.at_ms])?;
        }
    }
    let dropped = tx.execute(
        "DELETE FROM notify_outbox WHERE id NOT IN
           (SELECT id FROM notify_outbox ORDER BY id DESC LIMIT ?1)",
        params![notice.cap],
    )?;
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "notice outbox full: the oldest undelivered notices were dropped"
        );
    }
    Ok(dropped)
}

impl Store {
    /// Writes a notice to the outbox on its own (when no run ends with it).
    pub fn enqueue_notice(&self, notice: &DurableNotice) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        enqueue(&tx, notice)?;
        tx.commit()?;
        Ok(())
    }

    /// Notices due for delivery at `now_ms`, oldest first, at most `limit`.
    pub fn outbox_due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, target, body, created_ms, attempts FROM notify_outbox
             WHERE next_ms <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit as i64], |row| {
            Ok(OutboxRow {
                id: row.get(0)?,
                target: row.get(1)?,
                body: row.get(2)?,
                created_ms: row.get(3)?,
                attempts: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next undelivered notice is due (Unix ms), if there is one.
    pub fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT MIN(next_ms) FROM notify_outbox", params![], |row| {
                row.get(0)
            })
            .optional()?
            .flatten())
    }

    /// How many notices wait for delivery.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.lock()
                .query_row("SELECT COUNT(*) FROM notify_outbox", params![], |row| {
                    row.get(0)
                })?;
        Ok(n as u64)
    }

    /// A notice is delivered (or given up): it leaves the outbox.
    pub fn outbox_remove(&self, id: i64) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM notify_outbox WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// An attempt failed: counted, and the next one is due at `next_ms`.
    pub fn outbox_retry_at(&self, id: i64, next_ms: i64, error: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE notify_outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, next_ms, error],
        )?;
        Ok(())
    }

    /// Subscribes (`on`) or unsubscribes chat `chat_id` to the failure notices of `repo`; whether
    /// anything changed.
    pub fn set_notify_chat(&self, chat_id: i64, repo: &str, on: bool) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = if on {
            conn.execute(
                "INSERT INTO notify_chats (chat_id, repo) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
                params![chat_id, repo],
            )?
        } else {
            conn.execute(
                "DELETE FROM notify_chats WHERE chat_id = ?1 AND repo = ?2",
                params![chat_id, repo],
            )?
        };
        Ok(n > 0)
    }

    /// The chats subscribed to the failure notices of `repo`.
    pub fn notify_chats(&self, repo: &str) -> Result<Vec<i64>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT chat_id FROM notify_chats WHERE repo = ?1 ORDER BY chat_id")?;
        let rows = stmt.query_map(params![repo], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The repositories chat `chat_id` is subscribed to.
    pub fn notify_repos(&self, chat_id: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT repo FROM notify_chats WHERE chat_id = ?1 ORDER BY repo")?;
        let rows = stmt.query_map(params![chat_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an event that came with a delivery id (a GitHub webhook), in one transaction with
    /// the id: `None` when the id was taken before (a replay; nothing recorded). Ids older than
    /// `keep_ms` are pruned, and at most `cap` are kept.
    pub fn insert_event_once(
        &self,
        delivery: &str,
        channel: &str,
        payload: &serde_json::Value,
        now_ms: i64,
        keep_ms: i64,
        cap: u32,
    ) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE received_ms < ?1",
            params![now_ms.saturating_sub(keep_ms)],
        )?;
        let fresh = tx.execute(
            "INSERT INTO webhook_deliveries (id, received_ms) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            params![delivery, now_ms],
        )?;
        if fresh == 0 {
            return Ok(None);
        }
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE id NOT IN
               (SELECT id FROM webhook_deliveries ORDER BY received_ms DESC, id DESC LIMIT ?1)",
            params![cap],
        )?;
        let id: i64 = tx.query_row(
            "INSERT INTO events (channel, payload, created_ms, processed) VALUES (?1, ?2, ?3, 0)
             RETURNING id",
            params![channel, payload.to_string(), now_ms],
            |row| row.get(0),
        )?;
        tx.commit()?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notice(targets: &[&str], body: &str, cap: u32, at_ms: i64) -> DurableNotice {
        DurableNotice {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            body: body.into(),
            cap,
            at_ms,
        }
    }

    #[test]
    fn the_outbox_survives_a_reopen_retries_later_and_keeps_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .enqueue_notice(&notice(&["a", "b"], "{}", 3, 1_000))
            .expect("enqueue");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let due = store.outbox_due(1_000, 10).expect("due");
        assert_eq!(
            due.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        store
            .outbox_retry_at(due[0].id, 5_000, "503")
            .expect("retry");
        store.outbox_remove(due[1].id).expect("delivered");
        assert!(store.outbox_due(4_999, 10).expect("due").is_empty());
        assert_eq!(store.outbox_next_due().expect("next"), Some(5_000));
        let again = store.outbox_due(5_000, 10).expect("due");
        assert_eq!(again[0].attempts, 1);
        // Beyond the cap the oldest go.
        store
            .enqueue_notice(&notice(&["c", "d", "e"], "{}", 3, 2_000))
            .expect("enqueue");
        let all = store.outbox_due(i64::MAX, 10).expect("all");
        assert_eq!(
            all.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
            ["c", "d", "e"]
        );
    }

    #[test]
    fn a_delivery_id_is_taken_once_and_pruned_by_age_and_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let payload = json!({"a": 1});
        let first = store
            .insert_event_once("d1", "github", &payload, 1_000, 10_000, 2)
            .expect("insert");
        assert!(first.is_some());
        assert_eq!(
            store
                .insert_event_once("d1", "github", &payload, 2_000, 10_000, 2)
                .expect("replay"),
            None
        );
        assert_eq!(store.pending_events().expect("pending").len(), 1);
        // Past its age the id is forgotten.
        assert!(
            store
                .insert_event_once("d1", "github", &payload, 20_000, 10_000, 2)
                .expect("old")
                .is_some()
        );
        // At most `cap` ids are kept.
        for id in ["d2", "d3", "d4"] {
            store
                .insert_event_once(id, "github", &payload, 21_000, 10_000, 2)
                .expect("insert");
        }
        let kept: i64 = store
            .lock()
            .query_row("SELECT COUNT(*) FROM webhook_deliveries", params![], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(kept, 2);
    }

    #[test]
    fn chats_subscribe_per_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(store.set_notify_chat(1, "r", true).expect("on"));
        assert!(!store.set_notify_chat(1, "r", true).expect("again"));
        store.set_notify_chat(2, "r", true).expect("on");
        store.set_notify_chat(3, "other", true).expect("on");
        assert_eq!(store.notify_chats("r").expect("chats"), [1, 2]);
        assert!(store.set_notify_chat(1, "r", false).expect("off"));
        assert_eq!(store.notify_chats("r").expect("chats"), [2]);
    }
}
