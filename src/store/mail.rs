//! Received mails: each one's bytes, committed in the same transaction as its `email` event, so
//! one commit (one WAL sync) makes a whole batch of mails and their events durable. The mail's
//! file under the data directory is written from these bytes (and again at start if a crash lost
//! it); the rows go when the mail's retention time is over.

use super::db::{OptionalExtension as _, params};

use super::{Store, StoreError};

/// A mail to record.
#[derive(Debug, Clone, Copy)]
pub struct MailRecord<'a> {
    /// Its event payload, as JSON text.
    pub payload: &'a str,
    /// The name of its file in the mail directory.
    pub file: &'a str,
    /// The message as received.
    pub data: &'a [u8],
    /// What recognises the same mail delivered again (its Message-ID and envelope, hashed);
    /// `None` for a mail without a Message-ID.
    pub dedup: Option<&'a str>,
}

/// A recorded mail's file, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFile {
    /// Its event.
    pub event_id: i64,
    /// The name of its file in the mail directory.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Store {
    /// Records mails and their events (on `channel`) in one transaction; per mail in order, its
    /// event id and whether it is new: a mail whose `dedup` key is kept already (the same mail
    /// delivered again) records nothing and gets the first one's event id.
    pub fn insert_mails(
        &self,
        channel: &str,
        mails: &[MailRecord<'_>],
        audit: &[super::AuditRecord],
        now_ms: i64,
    ) -> Result<Vec<(i64, bool)>, StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        for record in audit {
            super::access::insert_audit_tx(&tx, record)?;
        }
        let mut ids = Vec::with_capacity(mails.len());
        {
            let mut event = tx.prepare_cached(
                "INSERT INTO events (channel, payload, created_ms, processed) VALUES (?1, ?2, ?3, 0)
                 RETURNING id",
            )?;
            let mut message = tx.prepare_cached(
                "INSERT INTO mail_messages (event_id, file, created_ms, data, written, dedup)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?;
            let mut seen =
                tx.prepare_cached("SELECT event_id FROM mail_messages WHERE dedup = ?1")?;
            for mail in mails {
                if let Some(key) = mail.dedup
                    && let Some(id) = seen
                        .query_map(params![key], |row| row.get::<_, i64>(0))?
                        .next()
                        .transpose()?
                {
                    ids.push((id, false));
                    continue;
                }
                let id: i64 =
                    event.query_row(params![channel, mail.payload, now_ms], |row| row.get(0))?;
                message.execute(params![id, mail.file, now_ms, mail.data, mail.dedup])?;
                ids.push((id, true));
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Every mail kept, oldest first (the tests' view; a start wants [`Store::mail_files_wanted`]).
    #[cfg(test)]
    pub(crate) fn mail_files(&self) -> Result<Vec<MailFile>, StoreError> {
        self.query_mail_files(
            "SELECT event_id, file, length(data) FROM mail_messages ORDER BY event_id",
        )
    }

    /// The kept mails whose file should be there, oldest first: those written for an action
    /// ([`Store::mark_mail_written`]) and those whose event is still pending (delivered at start,
    /// they may start runs).
    pub fn mail_files_wanted(&self) -> Result<Vec<MailFile>, StoreError> {
        self.query_mail_files(
            "SELECT event_id, file, length(data) FROM mail_messages
             WHERE written = 1 OR event_id IN (SELECT id FROM events WHERE processed = 0)
             ORDER BY event_id",
        )
    }

    /// Notes that the file of event `event_id`'s mail was written for an action, so a start
    /// after a system crash writes it again. Not synced: the action's run is committed (synced)
    /// after it, and that commit makes this one durable too.
    pub fn mark_mail_written(&self, event_id: i64) -> Result<(), StoreError> {
        self.lock_unsynced()?.execute(
            "UPDATE mail_messages SET written = 1 WHERE event_id = ?1",
            params![event_id],
        )?;
        Ok(())
    }

    fn query_mail_files(&self, sql: &str) -> Result<Vec<MailFile>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![], |row| {
            Ok(MailFile {
                event_id: row.get(0)?,
                file: row.get(1)?,
                size: row.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The bytes of the mail of event `event_id`, if it is kept.
    pub fn mail_data(&self, event_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT data FROM mail_messages WHERE event_id = ?1",
                params![event_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Forgets the mails recorded before `before_ms` whose event is processed; how many.
    pub fn forget_mails(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM mail_messages WHERE created_ms < ?1
             AND event_id NOT IN (SELECT id FROM events WHERE processed = 0)",
            params![before_ms],
        )?)
    }

    /// How much work waits: runs not started yet, and events not yet turned into runs.
    pub fn waiting_work(&self) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT (SELECT COUNT(*) FROM runs WHERE state = 'new')
                  + (SELECT COUNT(*) FROM events WHERE processed = 0)",
            params![],
            |row| row.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mails_are_kept_with_their_events_until_old_and_processed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let payload = json!({"subject": "x"}).to_string();
        let ids = store
            .insert_mails(
                "email",
                &[
                    MailRecord {
                        payload: &payload,
                        file: "1-a.eml",
                        data: b"one",
                        dedup: Some("k1"),
                    },
                    MailRecord {
                        payload: &payload,
                        file: "1-b.eml",
                        data: b"three",
                        dedup: None,
                    },
                ],
                &[],
                1,
            )
            .expect("insert");
        assert!(ids.iter().all(|(_, new)| *new));
        let ids: Vec<i64> = ids.into_iter().map(|(id, _)| id).collect();
        // The same mail again, in a batch with another: nothing new for it.
        let again = store
            .insert_mails(
                "email",
                &[
                    MailRecord {
                        payload: &payload,
                        file: "1-c.eml",
                        data: b"one",
                        dedup: Some("k1"),
                    },
                    MailRecord {
                        payload: &payload,
                        file: "1-d.eml",
                        data: b"two",
                        dedup: None,
                    },
                ],
                &[],
                1,
            )
            .expect("again");
        assert_eq!(again[0], (ids[0], false));
        assert!(again[1].1);
        store
            .forget_mails(i64::MAX)
            .expect("none processed yet: nothing goes");
        store
            .mark_events_processed(&[again[1].0])
            .expect("processed");
        assert_eq!(store.forget_mails(2).expect("forget the other"), 1);
        assert_eq!(ids.len(), 2);
        assert_eq!(store.pending_events().expect("pending").len(), 2);
        assert_eq!(store.waiting_work().expect("waiting"), 2);
        assert_eq!(
            store.mail_files().expect("files"),
            [
                MailFile {
                    event_id: ids[0],
                    file: "1-a.eml".into(),
                    size: 3
                },
                MailFile {
                    event_id: ids[1],
                    file: "1-b.eml".into(),
                    size: 5
                }
            ]
        );
        assert_eq!(
            store.mail_data(ids[1]).expect("data").as_deref(),
            Some(&b"three"[..])
        );
        store.mark_events_processed(&ids[..1]).expect("mark");
        assert_eq!(store.waiting_work().expect("waiting"), 1);
        // Too recent, then old: only the processed one goes.
        assert_eq!(store.forget_mails(1).expect("forget"), 0);
        assert_eq!(store.forget_mails(2).expect("forget"), 1);
        assert_eq!(store.mail_data(ids[0]).expect("data"), None);
        assert!(store.mail_data(ids[1]).expect("data").is_some());
    }
}
