//! A received mail into an `email` event: MIME parsing with `mail-parser`, the raw message and
//! the attachments written under `<storage>/mail/<id>/`, and the payload every subscribed action
//! gets as its job `args`:
//!
//! ```json
//! {"sender": "alice@example.org", "sender_name": "Alice", "to": ["ops@cockpit.example.com"],
//!  "cc": [], "subject": "disk full", "date": 1700000000, "message_id": "…",
//!  "text": "…", "html": null,
//!  "attachments": [{"name": "report.txt", "path": "/…/mail/…/1-report.txt",
//!                   "content_type": "text/plain", "size": 42}],
//!  "raw": "/…/mail/…/message.eml",
//!  "envelope": {"from": "…", "to": ["…"], "helo": "…", "peer": "192.0.2.7"}}
//! ```
//!
//! File names in the mail never choose where a file goes: each attachment is written as
//! `<n>-<safe name>` inside the mail's own directory.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};
use serde_json::{Value, json};

use super::{DeliverError, ReceivedMail};
use crate::store::Store;

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
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Mail is private: readable by cockpit's user only.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// Flushes everything written to the filesystem holding `dir` (files, directories, their
/// entries) with one `syncfs`: a batch of mails costs one sync, not one per file.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: `syncfs` only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// Parses `mail`, writes `message.eml` and its attachments into `dir` (created; not yet synced),
/// and returns the event payload. A message `mail-parser` cannot make sense of still gets a payload (envelope
/// and raw file only).
pub fn save(mail: &ReceivedMail, dir: &Path) -> io::Result<Value> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    let raw = dir.join("message.eml");
    write_new(&raw, &mail.data)?;
    let parsed = MessageParser::default().parse(&mail.data[..]);
    let mut attachments = Vec::new();
    if let Some(message) = &parsed {
        for (i, part) in message.attachments().enumerate() {
            let original = part.attachment_name().unwrap_or_default();
            let path = dir.join(format!("{}-{}", i + 1, safe_name(original)));
            write_new(&path, part.contents())?;
            attachments.push(json!({
                "name": original,
                "path": path,
                "content_type": content_type(part),
                "size": part.contents().len(),
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
        "raw": raw,
        "envelope": {
            "from": mail.from,
            "to": mail.to,
            "helo": mail.helo,
            "peer": mail.peer.to_string(),
        },
    }))
}

/// Records mails durably, together: each one's files under `<mail_root>/<now_ms>-<random>/`, one
/// filesystem sync for all, then all their `email` events in one SQLite transaction. Returns, per
/// mail and in order, its event id and payload, or why it was not recorded (then nothing of it is
/// left behind, and its sender is told to retry).
pub fn record_batch(
    store: &Store,
    mail_root: &Path,
    mails: &[&ReceivedMail],
    now_ms: i64,
) -> Vec<Result<(i64, Value), DeliverError>> {
    let mut saved = Vec::with_capacity(mails.len());
    for mail in mails {
        let dir = mail_root.join(format!("{now_ms}-{:016x}", rand::random::<u64>()));
        let payload = save(mail, &dir).map_err(|err| {
            let _ = std::fs::remove_dir_all(&dir);
            DeliverError::Record(format!("{}: {err}", dir.display()))
        });
        saved.push((dir, payload));
    }
    let written: Vec<(&str, &Value)> = saved
        .iter()
        .filter_map(|(_, payload)| payload.as_ref().ok().map(|p| (CHANNEL, p)))
        .collect();
    let committed = if written.is_empty() {
        Ok(Vec::new())
    } else {
        sync_filesystem(mail_root)
            .map_err(|err| DeliverError::Record(format!("{}: {err}", mail_root.display())))
            .and_then(|()| {
                store
                    .insert_events(&written, now_ms)
                    .map_err(|err| DeliverError::Record(err.to_string()))
            })
    };
    let mut ids = match committed {
        Ok(ids) => ids.into_iter(),
        Err(DeliverError::Record(why)) => {
            return saved
                .into_iter()
                .map(|(dir, payload)| {
                    let _ = std::fs::remove_dir_all(&dir);
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
        let dir = tmp.path().join("m1");
        let payload = save(&mail(MIXED), &dir).expect("save");

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
        assert_eq!(files, ["1-evil", "2-df.bin", "message.eml"]);
        assert_eq!(
            std::fs::read(dir.join("message.eml")).expect("raw"),
            mail(MIXED).data
        );
    }

    #[test]
    fn a_plain_mail_without_headers_still_gets_a_payload() {
        let tmp = tempfile::tempdir().expect("tmp");
        let payload = save(&mail("just a line\n"), &tmp.path().join("m")).expect("save");
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
        let (id, payload) = record_batch(&store, &root, &[&mail(MIXED)], 5)
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
        let outcomes = record_batch(&store, &blocked, &[&mail(MIXED)], 6);
        assert!(matches!(outcomes.as_slice(), [Err(_)]), "nothing recorded");
        assert_eq!(store.pending_events().expect("pending").len(), 1);
    }

    #[test]
    fn a_batch_is_recorded_together_each_mail_with_its_own_event_and_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let root = mail_root(tmp.path());
        let mails = [mail(MIXED), mail(MIXED), mail(MIXED)];
        let outcomes = record_batch(&store, &root, &mails.iter().collect::<Vec<_>>(), 7);
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
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 3);
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
