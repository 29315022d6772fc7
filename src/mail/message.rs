//! A received mail into an `email` event: MIME parsing with `mail-parser`, the message kept as
//! one file `<storage>/mail/<stamp>.eml` (its bytes committed in the store with the event), and
//! the payload every subscribed action gets as its job `args`:
//!
//! ```json
//! {"sender": "alice@example.org", "sender_name": "Alice", "to": ["ops@cockpit.example.com"],
//!  "cc": [], "subject": "disk full", "date": 1700000000, "message_id": "…",
//!  "text": "…", "html": null,
//!  "attachments": [{"index": 1, "name": "report.txt", "content_type": "text/plain",
//!                   "size": 42,
//!                   "extract": ["/usr/bin/cockpit", "mail-attachment", "/…/mail/….eml", "1"]}],
//!  "attachments_total": 1, "truncated": null,
//!  "raw": "/…/mail/….eml", "data_dir": "/…",
//!  "envelope": {"from": "…", "to": ["…"], "helo": "…", "peer": "192.0.2.7"}}
//! ```
//!
//! Paths are absolute (the action runs in its service's directory). Attachments are not written
//! out: a mail is one file whatever it holds, and an action that wants an attachment runs its
//! `extract` command (the same parser, [`attachment`]), which prints its decoded bytes. At most
//! `max_attachments` attachments are listed; `truncated` then says so, so a mail of 100 000 tiny
//! parts costs one file and a bounded payload.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};
use serde_json::{Value, json};

use super::{DeliverError, ReceivedMail};
use crate::store::{AuditRecord, MailRecord, Store};

/// Where and how mails are kept.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `<storage>/mail`, absolute: where each mail's file goes.
    pub root: PathBuf,
    /// The data directory, absolute (told to actions as `data_dir`).
    pub data_dir: PathBuf,
    /// Attachments listed in the payload per mail at most.
    pub max_attachments: usize,
    /// This program, for the attachments' `extract` commands.
    pub program: PathBuf,
}

impl Storage {
    /// The storage under `data_dir` (made absolute against the working directory).
    pub fn new(data_dir: &Path, max_attachments: usize) -> Storage {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        Storage {
            root: mail_root(&data_dir),
            data_dir,
            max_attachments,
            program: std::env::current_exe().unwrap_or_else(|_| "cockpit".into()),
        }
    }
}

/// The channel mail events are published on.
pub const CHANNEL: &str = "email";

/// The subcommand that prints an attachment (`cockpit mail-attachment <raw> <index>`).
pub const EXTRACT_COMMAND: &str = "mail-attachment";

/// Writes `bytes` to a new file at `path` (not synced: the store holds the durable copy).
/// Mail is private: readable by cockpit's user only.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// Writes `bytes` to `path` again (a file a crash lost or cut short).
fn rewrite(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Creates a private directory (0700), its parents too.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "application/octet-stream".into(),
    }
}

/// The event payload of `mail`, whose file is `raw`: at most `storage.max_attachments`
/// attachments listed. A message `mail-parser` cannot make sense of still gets a payload
/// (envelope and raw file only). No IO.
pub fn describe(mail: &ReceivedMail, raw: &Path, storage: &Storage) -> Value {
    let parsed = MessageParser::default().parse(&mail.data[..]);
    let mut attachments = Vec::new();
    let mut total = 0usize;
    let mut truncated: Option<String> = None;
    if let Some(message) = &parsed {
        for (i, part) in message.attachments().enumerate() {
            total += 1;
            if attachments.len() >= storage.max_attachments {
                truncated.get_or_insert_with(|| {
                    format!(
                        "only the first {} attachments are listed ([mail] max_attachments)",
                        storage.max_attachments
                    )
                });
                continue;
            }
            let index = (i + 1).to_string();
            attachments.push(json!({
                "index": i + 1,
                "name": part.attachment_name(),
                "content_type": content_type(part),
                "size": part.contents().len(),
                "extract": [storage.program, EXTRACT_COMMAND, raw, index],
            }));
        }
    }
    let header = |f: fn(&Message<'_>) -> Value| parsed.as_ref().map_or(Value::Null, f);
    let sender_addr = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first());
    json!({
        "sender": sender_addr
            .and_then(|a| a.address())
            .unwrap_or(mail.from.as_str()),
        "sender_name": sender_addr.and_then(|a| a.name()),
        "to": addresses(parsed.as_ref().and_then(|m| m.to())),
        "cc": addresses(parsed.as_ref().and_then(|m| m.cc())),
        "subject": header(|m| m.subject().into()),
        "date": header(|m| m.date().map(|d| d.to_timestamp()).into()),
        "message_id": header(|m| m.message_id().into()),
        "text": header(|m| m.body_text(0).map(|t| t.into_owned()).into()),
        "html": header(|m| match m.html_part(0).map(|p| &p.body) {
            Some(PartType::Html(html)) => Value::from(html.as_ref()),
            _ => Value::Null,
        }),
        "attachments": attachments,
        "attachments_total": total,
        "truncated": truncated,
        "raw": raw,
        "data_dir": storage.data_dir,
        "envelope": {
            "from": mail.from,
            "to": mail.to,
            "helo": mail.helo,
            "peer": mail.peer.to_string(),
        },
    })
}

/// The decoded contents of attachment `index` (from 1, as in the payload) of the message
/// `data`; `None` when it has no such attachment.
pub fn attachment(data: &[u8], index: usize) -> Option<Vec<u8>> {
    let message = MessageParser::default().parse(data)?;
    let part = message.attachments().nth(index.checked_sub(1)?)?;
    Some(part.contents().to_vec())
}

/// A mail made ready to be recorded by its sender's own task (MIME parsing, the payload's JSON,
/// the audit entry), so the one thread that commits does nothing else.
#[derive(Debug)]
pub struct Prepared {
    /// The message as received.
    pub data: Vec<u8>,
    /// The name of its file in the mail directory: `<now_ms>-<random>.eml`.
    pub file: String,
    /// Its `email` event payload.
    pub payload: Value,
    /// The payload as JSON text, as stored.
    pub json: String,
    /// Its audit entry: the sender and the recipients, never the message.
    pub audit: AuditRecord,
    /// What recognises this mail delivered again ([`dedup_key`]).
    pub dedup: Option<String>,
}

/// The same mail delivered again (a sender that never saw the first `250`, because the
/// connection or the server that gave it died, sends it again, perhaps to another replica) has
/// the same Message-ID, envelope sender and recipients: their SHA-256, hex. `None` without a
/// Message-ID (nothing tells two such mails apart).
pub fn dedup_key(message_id: Option<&str>, from: &str, to: &[String]) -> Option<String> {
    use sha2::Digest as _;
    let id = message_id.filter(|id| !id.is_empty())?;
    let mut to = to.to_vec();
    to.sort();
    let mut hash = sha2::Sha256::new();
    for part in [id, from, &to.join(",")] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    Some(hex::encode(hash.finalize()))
}

/// Works out everything about `mail` that recording needs, without IO.
pub fn prepare(mail: ReceivedMail, storage: &Storage, now_ms: i64) -> Prepared {
    let file = format!("{now_ms}-{:016x}.eml", rand::random::<u64>());
    let payload = describe(&mail, &storage.root.join(&file), storage);
    let audit = crate::auth::audit::record(
        crate::auth::audit::Door::Mail,
        &format!("mail:{}", mail.from),
        crate::auth::access::Action::MailReceive,
        &mail.to.join(","),
        &crate::auth::audit::Outcome::Ok,
    );
    let dedup = dedup_key(payload["message_id"].as_str(), &mail.from, &mail.to);
    Prepared {
        json: payload.to_string(),
        data: mail.data,
        file,
        payload,
        audit,
        dedup,
    }
}

/// Records prepared mails durably, together: their bytes, `email` events and audit entries in
/// one SQLite transaction, so one sync for the whole batch. Per mail in order, its event id and
/// whether it is new (not the same mail delivered again); on an error nothing of the batch is
/// recorded (its senders are told to retry).
pub fn commit(
    store: &Store,
    mails: &[Prepared],
    now_ms: i64,
) -> Result<Vec<(i64, bool)>, DeliverError> {
    let records: Vec<MailRecord<'_>> = mails
        .iter()
        .map(|mail| MailRecord {
            payload: &mail.json,
            file: &mail.file,
            data: &mail.data,
            dedup: mail.dedup.as_deref(),
        })
        .collect();
    let audit: Vec<AuditRecord> = mails.iter().map(|mail| mail.audit.clone()).collect();
    store
        .insert_mails(CHANNEL, &records, &audit, now_ms)
        .map_err(|err| DeliverError::Record(err.to_string()))
}

/// Writes the file of event `event_id`'s mail (`file`, under `root`, created if missing) from the
/// store's copy, for an action that is to get the mail, and notes that it did so
/// ([`Store::mark_mail_written`]). Not synced: the store holds the bytes durably, and [`restore`]
/// writes the file again at start if a system crash lost it. Mails no action subscribes to never
/// get a file.
pub fn write_for_action(
    store: &Store,
    root: &Path,
    event_id: i64,
    file: &str,
) -> Result<(), String> {
    let path = root.join(file);
    let data = store
        .mail_data(event_id)
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("mail {event_id} is no longer kept"))?;
    let written = match write_new(&path, &data) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            create_private_dir(root).and_then(|()| write_new(&path, &data))
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        written => written,
    };
    if let Err(err) = written {
        let _ = std::fs::remove_file(&path);
        return Err(format!("{}: {err}", path.display()));
    }
    store
        .mark_mail_written(event_id)
        .map_err(|err| err.to_string())
}

/// The tests' short form of what the recorder and an action's run do with a batch: prepare,
/// commit, write the files. Per mail, its event id and payload.
#[cfg(test)]
pub(crate) fn record_batch(
    store: &Store,
    storage: &Storage,
    mails: &[&ReceivedMail],
    now_ms: i64,
) -> Result<Vec<(i64, Value)>, DeliverError> {
    let prepared: Vec<Prepared> = mails
        .iter()
        .map(|mail| prepare((*mail).clone(), storage, now_ms))
        .collect();
    let ids: Vec<i64> = commit(store, &prepared, now_ms)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (id, mail) in ids.iter().zip(&prepared) {
        write_for_action(store, &storage.root, *id, &mail.file).map_err(DeliverError::Record)?;
    }
    Ok(ids
        .into_iter()
        .zip(prepared)
        .map(|(id, mail)| (id, mail.payload))
        .collect())
}

/// Writes again, from the store, every kept mail whose file should be there (it was written for
/// an action, or its event is still pending and may start runs) and is missing or not of its
/// recorded size (the files are not synced when written: a system crash can lose them, the
/// store's copy it cannot); how many. Called at start, before anything can hand a mail to an
/// action.
pub fn restore(store: &Store, root: &Path) -> io::Result<usize> {
    let files = store.mail_files_wanted().map_err(io::Error::other)?;
    let mut restored = 0;
    for kept in files {
        // Only a name, never a path: the file stays in `root` whatever the row says.
        let Some(name) = Path::new(&kept.file).file_name() else {
            continue;
        };
        let path = root.join(name);
        let fine = std::fs::metadata(&path).is_ok_and(|m| m.len() == kept.size);
        if fine {
            continue;
        }
        let Some(data) = store.mail_data(kept.event_id).map_err(io::Error::other)? else {
            continue;
        };
        create_private_dir(root)?;
        rewrite(&path, &data)?;
        restored += 1;
    }
    if restored > 0 {
        File::open(root)?.sync_all()?;
    }
    Ok(restored)
}

/// `<storage>/mail`: where mails are kept.
pub fn mail_root(storage: &Path) -> PathBuf {
    storage.join("mail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(data: &str) -> ReceivedMail {
        ReceivedMail {
            peer: [192, 0, 2, 7].into(),
            helo: "client.example".into(),
            from: "bounce@example.org".into(),
            to: vec!["ops@cockpit.test".into()],
            data: data.replace('\n', "\r\n").into_bytes(),
        }
    }

    fn storage(root: &Path) -> Storage {
        Storage {
            root: root.to_path_buf(),
            data_dir: root.parent().unwrap_or(root).to_path_buf(),
            max_attachments: 32,
            program: "/usr/bin/cockpit".into(),
        }
    }

    const MIXED: &str = "From: Alice <alice@example.org>
To: ops@cockpit.test, Team <team@cockpit.test>
Cc: boss@example.org
Subject: disk full on node-3
Date: Tue, 14 Nov 2023 22:13:20 +0000
Message-ID: <m1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"b1\"

--b1
Content-Type: multipart/alternative; boundary=\"b2\"

--b2
Content-Type: text/plain; charset=utf-8

Node 3 is full.
--b2
Content-Type: text/html; charset=utf-8

<p>Node 3 is <b>full</b>.</p>
--b2--
--b1
Content-Type: text/plain
Content-Disposition: attachment; filename=\"../../../etc/cron.d/evil\"

* * * * * root rm -rf /
--b1
Content-Type: application/octet-stream
Content-Disposition: attachment; filename=\"df.bin\"
Content-Transfer-Encoding: base64

AAECAw==
--b1--
";

    #[test]
    fn a_mime_mail_becomes_a_payload_listing_its_attachments_which_extract_decoded() {
        let tmp = tempfile::tempdir().expect("tmp");
        let raw = tmp.path().join("m1.eml");
        let payload = describe(&mail(MIXED), &raw, &storage(tmp.path()));

        assert_eq!(payload["sender"], "alice@example.org");
        assert_eq!(payload["sender_name"], "Alice");
        assert_eq!(
            payload["to"],
            json!(["ops@cockpit.test", "team@cockpit.test"])
        );
        assert_eq!(payload["cc"], json!(["boss@example.org"]));
        assert_eq!(payload["subject"], "disk full on node-3");
        assert_eq!(payload["date"], 1_700_000_000);
        assert_eq!(payload["message_id"], "m1@example.org");
        assert_eq!(
            payload["text"].as_str().map(str::trim),
            Some("Node 3 is full.")
        );
        assert_eq!(
            payload["html"].as_str().map(str::trim),
            Some("<p>Node 3 is <b>full</b>.</p>")
        );
        assert_eq!(payload["envelope"]["from"], "bounce@example.org");
        assert_eq!(payload["envelope"]["peer"], "192.0.2.7");
        assert_eq!(payload["raw"], json!(raw));
        assert_eq!(payload["attachments_total"], 2);
        assert_eq!(payload["truncated"], Value::Null);
        let data = mail(MIXED).data;
        let evil = attachment(&data, 1).expect("attachment 1");
        assert_eq!(
            String::from_utf8_lossy(&evil).trim(),
            "* * * * * root rm -rf /"
        );
        assert_eq!(attachment(&data, 2).as_deref(), Some(&[0u8, 1, 2, 3][..]));
        assert_eq!(
            payload["attachments"],
            json!([
                {"index": 1, "name": "../../../etc/cron.d/evil", "content_type": "text/plain",
                 "size": evil.len(), "extract": ["/usr/bin/cockpit", "mail-attachment", raw, "1"]},
                {"index": 2, "name": "df.bin", "content_type": "application/octet-stream",
                 "size": 4, "extract": ["/usr/bin/cockpit", "mail-attachment", raw, "2"]},
            ])
        );
        assert_eq!(attachment(&data, 0), None);
        assert_eq!(attachment(&data, 3), None);
        assert_eq!(attachment(b"\xff\xfe", 1), None);
    }

    #[test]
    fn a_plain_mail_without_headers_still_gets_a_payload() {
        let tmp = tempfile::tempdir().expect("tmp");
        let payload = describe(
            &mail("just a line\n"),
            &tmp.path().join("m.eml"),
            &storage(tmp.path()),
        );
        assert_eq!(payload["sender"], "bounce@example.org", "envelope sender");
        assert_eq!(payload["subject"], Value::Null);
        assert_eq!(payload["date"], Value::Null);
        assert_eq!(payload["html"], Value::Null);
        assert_eq!(payload["attachments"], json!([]));
    }

    #[test]
    fn a_mail_gets_its_file_only_for_an_action_and_a_start_writes_again_only_those_wanted() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        // Recorded and written for an action.
        let (id, payload) = record_batch(&store, &storage(&root), &[&mail(MIXED)], 5)
            .expect("record")
            .pop()
            .expect("one outcome");
        let pending = store.pending_events().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        assert_eq!(pending[0].channel, "email");
        assert_eq!(pending[0].payload, payload);
        assert_eq!(store.mail_data(id).expect("data"), Some(mail(MIXED).data));
        let raw = payload["raw"].as_str().expect("raw");
        assert_eq!(std::fs::read(raw).expect("raw file"), mail(MIXED).data);

        // Recorded only: no file, until the start finds its event pending.
        let quiet = prepare(mail("Subject: quiet\n\nx\n"), &storage(&root), 6);
        let quiet_id = commit(&store, std::slice::from_ref(&quiet), 6).expect("commit")[0].0;
        assert!(!root.join(&quiet.file).exists());
        std::fs::remove_file(raw).expect("a crash lost it");
        assert_eq!(restore(&store, &root).expect("restore"), 2, "both wanted");
        assert_eq!(std::fs::read(raw).expect("raw file"), mail(MIXED).data);
        // Once processed, a mail no action got is not written again; one an action got is.
        store.mark_events_processed(&[id, quiet_id]).expect("mark");
        std::fs::remove_file(raw).expect("lost again");
        std::fs::remove_file(root.join(&quiet.file)).expect("lost");
        assert_eq!(restore(&store, &root).expect("restore"), 1);
        assert!(Path::new(raw).is_file());
        assert!(!root.join(&quiet.file).exists());

        // A mail root that cannot be created (a file is in the way): the action's file is not
        // written, the mail stays in the store, and the file comes once the way is clear.
        let blocked = tmp.path().join("blocked");
        std::fs::write(&blocked, "").expect("file");
        assert!(write_for_action(&store, &blocked, quiet_id, &quiet.file).is_err());
        assert_eq!(
            store.mail_data(quiet_id).expect("data"),
            Some(quiet.data.clone())
        );
        std::fs::remove_file(&blocked).expect("clear the way");
        write_for_action(&store, &blocked, quiet_id, &quiet.file).expect("written");
        assert_eq!(
            std::fs::read(blocked.join(&quiet.file)).expect("file"),
            quiet.data
        );
        // Written twice (two repositories' actions): the same file.
        write_for_action(&store, &blocked, quiet_id, &quiet.file).expect("again");
    }

    #[test]
    fn the_same_mail_delivered_again_is_answered_and_records_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let storage = storage(&mail_root(tmp.path()));
        let first = prepare(mail(MIXED), &storage, 1);
        assert!(first.dedup.is_some(), "MIXED has a Message-ID");
        let again = prepare(mail(MIXED), &storage, 2);
        let other_envelope = prepare(
            ReceivedMail {
                to: vec!["someone@cockpit.test".into()],
                ..mail(MIXED)
            },
            &storage,
            3,
        );
        let no_id = prepare(mail("Subject: no id\n\nbody\n"), &storage, 4);
        assert_eq!(no_id.dedup, None);
        let no_id_again = prepare(mail("Subject: no id\n\nbody\n"), &storage, 5);
        let ids = commit(&store, std::slice::from_ref(&first), 1).expect("first");
        let later = commit(&store, &[again, other_envelope, no_id, no_id_again], 2).expect("later");
        assert_eq!(
            later[0],
            (ids[0].0, false),
            "the same mail: the first one's event"
        );
        assert!(later[1..].iter().all(|(_, new)| *new), "{later:?}");
        assert_eq!(store.pending_events().expect("pending").len(), 4);
        // The key hashes the envelope too, its recipients in any order.
        let to = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            dedup_key(Some("<a@b>"), "x@y", &to(&["1@z", "2@z"])),
            dedup_key(Some("<a@b>"), "x@y", &to(&["2@z", "1@z"]))
        );
        assert_ne!(
            dedup_key(Some("<a@b>"), "x@y", &to(&["1@z"])),
            dedup_key(Some("<a@b>"), "", &to(&["1@z"]))
        );
    }

    #[test]
    fn a_batch_is_recorded_together_each_mail_with_its_own_event_and_one_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        // Three mails of the same text to three envelopes: three mails.
        let mails: Vec<ReceivedMail> = (0..3)
            .map(|i| ReceivedMail {
                to: vec![format!("ops{i}@cockpit.test")],
                ..mail(MIXED)
            })
            .collect();
        let outcomes = record_batch(
            &store,
            &storage(&root),
            &mails.iter().collect::<Vec<_>>(),
            7,
        )
        .expect("recorded");
        let ids: Vec<i64> = outcomes
            .into_iter()
            .map(|(id, payload)| {
                let raw = payload["raw"].as_str().expect("raw path");
                assert!(std::path::Path::new(raw).is_file(), "{raw}");
                id
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let pending: Vec<i64> = store
            .pending_events()
            .expect("pending")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(pending, ids);
        // Each mail: one file, attachments or not.
        assert_eq!(walk(&root), 3);
    }

    #[test]
    fn a_mail_of_many_tiny_parts_is_one_file_and_a_bounded_payload_that_says_why() {
        let mut text = String::from(
            "From: a@example.org\nSubject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n",
        );
        for i in 0..5000 {
            text.push_str(&format!(
                "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"p{i}\"\n\nx\n"
            ));
        }
        text.push_str("--b--\n");
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("mail");
        let store = Store::open(tmp.path()).expect("store");
        let (_, payload) = record_batch(&store, &storage(&root), &[&mail(&text)], 9)
            .expect("recorded")
            .pop()
            .expect("one outcome");
        assert_eq!(payload["attachments_total"], 5000);
        assert_eq!(payload["attachments"].as_array().map(Vec::len), Some(32));
        assert_eq!(payload["attachments"][31]["name"], "p31");
        assert_eq!(
            payload["truncated"],
            "only the first 32 attachments are listed ([mail] max_attachments)"
        );
        assert_eq!(walk(&root), 1, "the mail's file only");
        // Those not listed can still be extracted.
        let unlisted = attachment(&mail(&text).data, 4000).expect("attachment 4000");
        assert_eq!(String::from_utf8_lossy(&unlisted).trim(), "x");
    }

    #[test]
    fn files_a_crash_lost_or_cut_are_written_again_from_the_store() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        let mails = [mail(MIXED), mail("Subject: two\n\nsecond\n"), mail("x\n")];
        let outcomes = record_batch(
            &store,
            &storage(&root),
            &mails.iter().collect::<Vec<_>>(),
            7,
        )
        .expect("recorded");
        let raws: Vec<PathBuf> = outcomes
            .into_iter()
            .map(|(_, payload)| PathBuf::from(payload["raw"].as_str().expect("raw")))
            .collect();
        std::fs::remove_file(&raws[0]).expect("lose");
        std::fs::write(&raws[1], b"Subj").expect("cut");
        assert_eq!(restore(&store, &root).expect("restore"), 2);
        for (raw, mail) in raws.iter().zip(&mails) {
            assert_eq!(std::fs::read(raw).expect("file"), mail.data);
        }
        assert_eq!(restore(&store, &root).expect("restore"), 0);
    }

    /// Files and directories under `dir`, recursively.
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                if path.is_dir() { 1 + walk(&path) } else { 1 }
            })
            .sum()
    }
}
