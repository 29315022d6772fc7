//! A received mail into an `email` event: MIME parsing with `mail-parser`, the raw message
//! written as one file `<storage>/mail/<stamp>.eml`, its attachments (if it has any) in
//! `<storage>/mail/<stamp>/`, and the payload every subscribed action gets as its job `args`:
//!
//! ```json
//! {"sender": "alice@example.org", "sender_name": "Alice", "to": ["ops@cockpit.example.com"],
//!  "cc": [], "subject": "disk full", "date": 1700000000, "message_id": "…",
//!  "text": "…", "html": null,
//!  "attachments": [{"name": "report.txt", "path": "/…/mail/…/1-report.txt",
//!                   "content_type": "text/plain", "size": 42}],
//!  "attachments_total": 1, "truncated": null,
//!  "raw": "/…/mail/….eml", "data_dir": "/…",
//!  "envelope": {"from": "…", "to": ["…"], "helo": "…", "peer": "192.0.2.7"}}
//! ```
//!
//! Paths are absolute (the action runs in its service's directory). File names in the mail
//! never choose where a file goes: each attachment is written as `<n>-<safe name>` inside the
//! mail's own directory. At most `max_attachments` attachments, and at most
//! `max_attachment_bytes` in all, are saved; `truncated` then says what was left out and why,
//! so a mail of 100 000 tiny parts costs a bounded number of files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};
use serde_json::{Value, json};

use super::{DeliverError, ReceivedMail};
use crate::store::Store;

/// Where and how mails are kept.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `<storage>/mail`, absolute: where each mail's file (and attachment directory) goes.
    pub root: PathBuf,
    /// The data directory, absolute (told to actions as `data_dir`).
    pub data_dir: PathBuf,
    /// Attachments saved per mail at most.
    pub max_attachments: usize,
    /// Bytes of attachments saved per mail at most.
    pub max_attachment_bytes: u64,
}

impl Storage {
    /// The storage under `data_dir` (made absolute against the working directory).
    pub fn new(data_dir: &Path, max_attachments: usize, max_attachment_bytes: u64) -> Storage {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        Storage {
            root: mail_root(&data_dir),
            data_dir,
            max_attachments,
            max_attachment_bytes,
        }
    }
}

/// The channel mail events are published on.
pub const CHANNEL: &str = "email";

/// The longest file name kept from an attachment (before the `<n>-` prefix).
const MAX_NAME: usize = 100;

/// A file name that stays inside its directory: the last path component of `name`, with only
/// `A-Z a-z 0-9 . _ -` kept (others become `_`), no leading dot, at most [`MAX_NAME`] bytes;
/// `attachment` when nothing is left.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed: String = cleaned
        .trim_start_matches('.')
        .chars()
        .take(MAX_NAME)
        .collect();
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '_') {
        "attachment".into()
    } else {
        trimmed
    }
}

/// Writes `bytes` to a new file at `path` (made durable by [`sync_filesystem`] afterwards).
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

/// Creates a private directory (0700), its parents too.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
}

/// Flushes everything written to the filesystem holding `dir` (files, directories, their
/// entries) with one `syncfs`: a batch of mails costs one sync, not one per file.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    nix::unistd::syncfs(&handle).map_err(io::Error::from)
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

/// The event payload of `mail`, whose raw file is `raw` and whose attachments go into
/// `attachment_dir`; each attachment to save is handed to `write` (path, contents), at most
/// `storage`'s caps. A message `mail-parser` cannot make sense of still gets a payload
/// (envelope and raw file only). No IO of its own.
pub fn describe(
    mail: &ReceivedMail,
    raw: &Path,
    attachment_dir: &Path,
    storage: &Storage,
    mut write: impl FnMut(&Path, &[u8]) -> io::Result<()>,
) -> io::Result<Value> {
    let parsed = MessageParser::default().parse(&mail.data[..]);
    let mut attachments = Vec::new();
    let mut total = 0usize;
    let mut saved_bytes: u64 = 0;
    let mut truncated: Option<String> = None;
    if let Some(message) = &parsed {
        for (i, part) in message.attachments().enumerate() {
            total += 1;
            if truncated.is_some() {
                continue;
            }
            let contents = part.contents();
            if attachments.len() >= storage.max_attachments {
                truncated = Some(format!(
                    "only the first {} attachments are saved ([mail] max_attachments)",
                    storage.max_attachments
                ));
                continue;
            }
            if saved_bytes + contents.len() as u64 > storage.max_attachment_bytes {
                truncated = Some(format!(
                    "attachments beyond {} bytes in all are not saved",
                    storage.max_attachment_bytes
                ));
                continue;
            }
            saved_bytes += contents.len() as u64;
            let original = part.attachment_name().unwrap_or_default();
            let path = attachment_dir.join(format!("{}-{}", i + 1, safe_name(original)));
            write(&path, contents)?;
            attachments.push(json!({
                "name": original,
                "path": path,
                "content_type": content_type(part),
                "size": contents.len(),
            }));
        }
    }
    let header = |f: fn(&Message<'_>) -> Value| parsed.as_ref().map_or(Value::Null, f);
    let sender_addr = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first());
    Ok(json!({
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
    }))
}

/// Writes `mail` as `<root>/<stem>.eml` and its attachments into `<root>/<stem>/` (created only
/// when there is one; nothing synced yet); returns the event payload.
pub fn save(mail: &ReceivedMail, stem: &str, storage: &Storage) -> io::Result<Value> {
    let raw = storage.root.join(format!("{stem}.eml"));
    let dir = storage.root.join(stem);
    write_new(&raw, &mail.data)?;
    let mut made_dir = false;
    describe(mail, &raw, &dir, storage, |path, contents| {
        if !made_dir {
            create_private_dir(&dir)?;
            made_dir = true;
        }
        write_new(path, contents)
    })
}

/// Removes what [`save`] may have written for `stem`.
fn remove(storage: &Storage, stem: &str) {
    let _ = std::fs::remove_file(storage.root.join(format!("{stem}.eml")));
    let _ = std::fs::remove_dir_all(storage.root.join(stem));
}

/// Records mails durably, together: each one's file `<root>/<now_ms>-<random>.eml` (and its
/// attachments), one filesystem sync for all, then all their `email` events in one SQLite
/// transaction. Returns, per mail and in order, its event id and payload, or why it was not
/// recorded (then nothing of it is left behind, and its sender is told to retry).
pub fn record_batch(
    store: &Store,
    storage: &Storage,
    mails: &[&ReceivedMail],
    now_ms: i64,
) -> Vec<Result<(i64, Value), DeliverError>> {
    let root = &storage.root;
    if let Err(err) = create_private_dir(root) {
        return mails
            .iter()
            .map(|_| Err(DeliverError::Record(format!("{}: {err}", root.display()))))
            .collect();
    }
    let mut saved = Vec::with_capacity(mails.len());
    for mail in mails {
        let stem = format!("{now_ms}-{:016x}", rand::random::<u64>());
        let payload = save(mail, &stem, storage).map_err(|err| {
            remove(storage, &stem);
            DeliverError::Record(format!("{}/{stem}: {err}", root.display()))
        });
        saved.push((stem, payload));
    }
    let written: Vec<(&str, &Value)> = saved
        .iter()
        .filter_map(|(_, payload)| payload.as_ref().ok().map(|p| (CHANNEL, p)))
        .collect();
    // The audit trail names the sender and the recipients, never the message.
    let audit: Vec<_> = written
        .iter()
        .map(|(_, payload)| {
            let envelope = &payload["envelope"];
            let from = envelope["from"].as_str().unwrap_or_default();
            let to: Vec<&str> = envelope["to"]
                .as_array()
                .map(|to| to.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            crate::auth::audit::record(
                crate::auth::audit::Door::Mail,
                &format!("mail:{from}"),
                crate::auth::access::Action::MailReceive,
                &to.join(","),
                &crate::auth::audit::Outcome::Ok,
            )
        })
        .collect();
    let committed = if written.is_empty() {
        Ok(Vec::new())
    } else {
        sync_filesystem(root)
            .map_err(|err| DeliverError::Record(format!("{}: {err}", root.display())))
            .and_then(|()| {
                store
                    .insert_events_audited(&written, &audit, now_ms)
                    .map_err(|err| DeliverError::Record(err.to_string()))
            })
    };
    let mut ids = match committed {
        Ok(ids) => ids.into_iter(),
        Err(DeliverError::Record(why)) => {
            return saved
                .into_iter()
                .map(|(stem, payload)| {
                    remove(storage, &stem);
                    payload.and(Err(DeliverError::Record(why.clone())))
                })
                .collect();
        }
    };
    saved
        .into_iter()
        .map(|(_, payload)| {
            let payload = payload?;
            let id = ids
                .next()
                .ok_or_else(|| DeliverError::Record("an event id is missing".into()))?;
            Ok((id, payload))
        })
        .collect()
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
            max_attachment_bytes: 1 << 20,
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
    fn a_mime_mail_becomes_a_payload_with_its_attachments_saved_inside_its_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let storage = storage(tmp.path());
        let dir = tmp.path().join("m1");
        let payload = save(&mail(MIXED), "m1", &storage).expect("save");

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

        let attachments = payload["attachments"].as_array().expect("attachments");
        assert_eq!(attachments.len(), 2);
        assert_eq!(attachments[0]["name"], "../../../etc/cron.d/evil");
        assert_eq!(attachments[0]["path"], json!(dir.join("1-evil")));
        assert_eq!(attachments[0]["content_type"], "text/plain");
        assert_eq!(attachments[1]["path"], json!(dir.join("2-df.bin")));
        assert_eq!(attachments[1]["size"], 4);
        assert_eq!(
            std::fs::read(dir.join("2-df.bin")).expect("df"),
            [0, 1, 2, 3]
        );
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["1-evil", "2-df.bin"]);
        assert_eq!(payload["raw"], json!(tmp.path().join("m1.eml")));
        assert_eq!(payload["attachments_total"], 2);
        assert_eq!(payload["truncated"], Value::Null);
        assert_eq!(
            std::fs::read(tmp.path().join("m1.eml")).expect("raw"),
            mail(MIXED).data
        );
    }

    #[test]
    fn a_plain_mail_without_headers_still_gets_a_payload() {
        let tmp = tempfile::tempdir().expect("tmp");
        let payload = save(&mail("just a line\n"), "m", &storage(tmp.path())).expect("save");
        let files: Vec<_> = std::fs::read_dir(tmp.path()).expect("dir").collect();
        assert_eq!(files.len(), 1, "one file, no directory");
        assert_eq!(payload["sender"], "bounce@example.org", "envelope sender");
        assert_eq!(payload["subject"], Value::Null);
        assert_eq!(payload["date"], Value::Null);
        assert_eq!(payload["html"], Value::Null);
        assert_eq!(payload["attachments"], json!([]));
    }

    #[test]
    fn recording_stores_the_event_and_nothing_when_the_files_cannot_be_written() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        let (id, payload) = record_batch(&store, &storage(&root), &[&mail(MIXED)], 5)
            .pop()
            .expect("one outcome")
            .expect("record");
        let pending = store.pending_events().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        assert_eq!(pending[0].channel, "email");
        assert_eq!(pending[0].payload, payload);

        // A mail root that cannot be created (a file is in the way): nothing is recorded.
        let blocked = tmp.path().join("blocked");
        std::fs::write(&blocked, "").expect("file");
        let outcomes = record_batch(&store, &storage(&blocked), &[&mail(MIXED)], 6);
        assert!(matches!(outcomes.as_slice(), [Err(_)]), "nothing recorded");
        assert_eq!(store.pending_events().expect("pending").len(), 1);
    }

    #[test]
    fn a_batch_is_recorded_together_each_mail_with_its_own_event_and_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        let mails = [mail(MIXED), mail(MIXED), mail(MIXED)];
        let outcomes = record_batch(
            &store,
            &storage(&root),
            &mails.iter().collect::<Vec<_>>(),
            7,
        );
        let ids: Vec<i64> = outcomes
            .into_iter()
            .map(|outcome| {
                let (id, payload) = outcome.expect("recorded");
                let raw = payload["raw"].as_str().expect("raw path");
                assert!(std::path::Path::new(raw).exists(), "{raw}");
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
        // Each mail: its file and its attachments' directory.
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 6);
    }

    #[test]
    fn a_mail_of_many_tiny_parts_leaves_a_bounded_number_of_files_and_says_why() {
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
            .pop()
            .expect("one outcome")
            .expect("recorded");
        assert_eq!(payload["attachments_total"], 5000);
        assert_eq!(payload["attachments"].as_array().map(Vec::len), Some(32));
        assert_eq!(
            payload["truncated"],
            "only the first 32 attachments are saved ([mail] max_attachments)"
        );
        let files = walk(&root);
        assert_eq!(files, 1 + 1 + 32, "the mail, its directory, 32 attachments");

        // The byte cap holds as well.
        let small = Storage {
            max_attachment_bytes: 10,
            ..storage(&root)
        };
        let (_, payload) = record_batch(&store, &small, &[&mail(&text)], 10)
            .pop()
            .expect("one outcome")
            .expect("recorded");
        assert_eq!(payload["attachments"].as_array().map(Vec::len), Some(10));
        assert_eq!(
            payload["truncated"],
            "attachments beyond 10 bytes in all are not saved"
        );
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

    #[test]
    fn safe_names_never_leave_the_directory() {
        for (name, safe) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("/absolute/path.txt", "path.txt"),
            ("..", "attachment"),
            (".hidden", "hidden"),
            ("", "attachment"),
            ("a b;c$(rm).txt", "a_b_c__rm_.txt"),
            ("résumé.doc", "r_sum_.doc"),
            ("dir/", "attachment"),
            ("\u{0}\u{0}", "attachment"),
        ] {
            assert_eq!(safe_name(name), safe, "{name:?}");
        }
        assert_eq!(safe_name(&"x".repeat(500)).len(), MAX_NAME);
    }
}
