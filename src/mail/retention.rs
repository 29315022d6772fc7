//! Removes mails once they are old and no longer needed.
//!
//! A mail's file (`<root>/<ms>-<hex>.eml`; a directory `<root>/<ms>-<hex>/` of attachments if an
//! older version wrote one) and the store's copy of its bytes are removed `keep_days` after it was
//! recorded, unless the store still has the mail's event unprocessed: its runs have not been
//! handed out yet, so they will need the file. The age comes from the `<ms>` of the name (when the
//! mail was recorded), not from file times.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use super::message::CHANNEL;
use crate::store::Store;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The stem (`<ms>-<hex>`) of a mail file or attachment directory name, and its `<ms>`.
fn stem_of(name: &str) -> Option<(&str, i64)> {
    let stem = name.strip_suffix(".eml").unwrap_or(name);
    let (ms, hex) = stem.split_once('-')?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((stem, ms.parse().ok()?))
}

/// Removes, under `root` and in the store, the mails recorded more than `keep_ms` before
/// `now_ms` whose event is processed; returns how many mails' files were removed. Entries that
/// are not mail files are left alone.
pub fn sweep(store: &Store, root: &Path, now_ms: i64, keep_ms: i64) -> io::Result<usize> {
    store
        .forget_mails(now_ms.saturating_sub(keep_ms))
        .map_err(io::Error::other)?;
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let old: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (stem, ms) = stem_of(&name)?;
            (now_ms.saturating_sub(ms) > keep_ms).then(|| (stem.to_string(), entry.path()))
        })
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    let pending = pending_stems(store)?;
    let mut removed = HashSet::new();
    for (stem, path) in old {
        if pending.contains(&stem) {
            continue;
        }
        let outcome = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match outcome {
            Ok(()) => {
                removed.insert(stem);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed.len())
}

/// The stems of the mails whose `email` event is not processed yet.
fn pending_stems(store: &Store) -> io::Result<HashSet<String>> {
    let events = store.pending_events().map_err(io::Error::other)?;
    Ok(events
        .iter()
        .filter(|event| event.channel == CHANNEL)
        .filter_map(|event| event.payload["raw"].as_str())
        .filter_map(|raw| Path::new(raw).file_name()?.to_str())
        .filter_map(|name| stem_of(name).map(|(stem, _)| stem.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::ReceivedMail;
    use crate::mail::message::{Storage, record_batch};

    fn mail(subject: &str, attachment: bool) -> ReceivedMail {
        let data = if attachment {
            format!(
                "Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nhello\r\n--b--\r\n"
            )
        } else {
            format!("Subject: {subject}\r\n\r\nbody\r\n")
        };
        ReceivedMail {
            peer: [192, 0, 2, 7].into(),
            helo: "client.example".into(),
            from: "a@example.org".into(),
            to: vec!["ops@cockpit.test".into()],
            data: data.into_bytes(),
        }
    }

    #[test]
    fn old_mails_of_processed_events_go_and_pending_or_recent_ones_stay() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let storage = Storage::new(tmp.path(), 8);
        let keep = 7 * DAY_MS;
        let day = |n: i64| n * DAY_MS;
        let record = |subject: &str, at: i64| {
            record_batch(&store, &storage, &[&mail(subject, true)], at)
                .expect("recorded")
                .pop()
                .expect("outcome")
        };
        let (old_done, _) = record("old, processed", day(1));
        let (_old_pending, _) = record("old, pending", day(2));
        let (recent_done, _) = record("recent, processed", day(9));
        store
            .mark_events_processed(&[old_done, recent_done])
            .expect("mark");
        std::fs::write(storage.root.join("notes.txt"), "not a mail").expect("write");

        let now = day(10);
        assert_eq!(sweep(&store, &storage.root, now, keep).expect("sweep"), 1);
        assert_eq!(
            store.mail_files().expect("kept").len(),
            2,
            "and its bytes in the store"
        );
        let mut left: Vec<String> = std::fs::read_dir(&storage.root)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        left.sort();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(
            left.iter().all(|n| !n.starts_with(&day(1).to_string())),
            "{left:?}"
        );
        assert!(left.contains(&"notes.txt".to_string()));

        // Once processed, the old pending one goes too; nothing is left to remove after that.
        let pending: Vec<i64> = store
            .pending_events()
            .expect("pending")
            .iter()
            .map(|e| e.id)
            .collect();
        store.mark_events_processed(&pending).expect("mark");
        assert_eq!(sweep(&store, &storage.root, now, keep).expect("sweep"), 1);
        assert_eq!(store.mail_files().expect("kept").len(), 1);
        assert_eq!(sweep(&store, &storage.root, now, keep).expect("sweep"), 0);
    }

    #[test]
    fn only_mail_names_are_recognised() {
        assert_eq!(stem_of("1700-00ff.eml"), Some(("1700-00ff", 1700)));
        assert_eq!(stem_of("1700-00ff"), Some(("1700-00ff", 1700)));
        assert_eq!(stem_of("notes.txt"), None);
        assert_eq!(stem_of("x-00ff.eml"), None);
        assert_eq!(stem_of("1700-zz.eml"), None);
    }
}
