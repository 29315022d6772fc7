//! Entry points for the fuzz targets in `fuzz/` (`bench/fuzz.sh` runs them): whole SMTP
//! conversations and MIME into the event payload, on bytes an attacker chooses. Not part of the
//! API; they only panic when an invariant breaks.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::budget::Budget;
use super::message::{Storage, describe};
use super::session::{self, Door, Rules, Slot};
use super::smtp::{Protocol, Step};
use super::{Deliver, DeliverError, ReceivedMail};
use crate::telemetry::Telemetry;

/// Takes every mail, records nothing.
struct Discard;

impl Deliver for Discard {
    fn deliver(&self, _mail: ReceivedMail) -> BoxFuture<'static, Result<i64, DeliverError>> {
        Box::pin(async { Ok(1) })
    }
}

fn rules() -> Rules {
    Rules {
        hostname: "cockpit.test".into(),
        domains: vec!["cockpit.test".into()],
        max_message_bytes: 4096,
        max_recipients: 5,
        idle_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(60),
        backlog: Default::default(),
    }
}

/// One SMTP conversation: `input` is everything the client sends, then it closes. The session
/// must end (it never waits: the input is all there) without panicking, and its replies must
/// be well-formed reply lines.
pub async fn smtp_session(input: &[u8]) {
    let door = Door {
        rules: rules(),
        buffered: Budget::new(8192, 6000),
        deliver: Arc::new(Discard),
        telemetry: Arc::new(Telemetry::default()),
    };
    let (mut client, server) = tokio::io::duplex(1 << 22);
    client.write_all(input).await.expect("in-memory write");
    client.shutdown().await.expect("in-memory shutdown");
    let (_stop, shutdown) = watch::channel(false);
    let slot = Slot::default();
    let peer: IpAddr = [192, 0, 2, 7].into();
    let ended: io::Result<()> = session::run(server, peer, &door, &slot, shutdown).await;
    drop(ended);
    let mut replies = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut client, &mut replies)
        .await
        .expect("in-memory read");
    for line in replies.split_inclusive(|b| *b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        assert!(
            line.len() >= 6 && line[..3].iter().all(u8::is_ascii_digit),
            "{line:?}"
        );
    }
    assert_eq!(
        door.buffered.used(),
        0,
        "every byte of the budget given back"
    );
}

/// The protocol alone, line by line: every reply well-formed whatever the state.
pub fn smtp_protocol(input: &[u8]) {
    let rules = rules();
    let mut protocol = Protocol::new(&rules);
    for line in input.split_inclusive(|b| *b == b'\n') {
        match protocol.command(line) {
            Step::Reply(reply) | Step::Close(reply) => {
                assert!((200..600).contains(&reply.code), "{reply:?}");
                let code = reply.code.to_string();
                for line in reply.text.split_inclusive('\n') {
                    assert!(line.ends_with("\r\n"), "{reply:?}");
                    assert!(line.starts_with(&code), "{reply:?}");
                    assert!(!line[..line.len() - 2].contains('\r'), "{reply:?}");
                }
            }
            Step::Data => {
                protocol.take_envelope();
            }
        }
    }
}

/// MIME into the event payload: never a panic, at most the cap of attachments listed.
pub fn mime_event(input: &[u8]) {
    let mail = ReceivedMail {
        peer: [192, 0, 2, 7].into(),
        helo: "client.example".into(),
        from: "a@example.org".into(),
        to: vec!["ops@cockpit.test".into()],
        data: input.to_vec(),
    };
    let storage = Storage {
        root: "/nonexistent/mail".into(),
        data_dir: "/nonexistent".into(),
        max_attachments: 4,
        program: "/nonexistent/cockpit".into(),
    };
    let payload = describe(&mail, Path::new("/nonexistent/mail/1-0.eml"), &storage);
    let listed = payload["attachments"].as_array().map_or(0, Vec::len);
    assert!(listed <= storage.max_attachments);
    serde_json::to_vec(&payload).expect("payload serialises");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input in `fuzz/seeds/<target>/`: the seeds and each crash the fuzzers found (kept
    /// there once fixed, so they run with every `cargo test`).
    fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("seeds")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("seed");
                (path.display().to_string(), bytes)
            })
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{dir:?}");
        inputs
    }

    #[tokio::test]
    async fn the_smtp_seeds_and_past_crashes_pass() {
        for (name, input) in inputs("smtp_session") {
            println!("{name}");
            smtp_protocol(&input);
            smtp_session(&input).await;
        }
    }

    #[test]
    fn the_mime_seeds_and_past_crashes_pass() {
        for (name, input) in inputs("mime_event") {
            println!("{name}");
            mime_event(&input);
        }
    }
}
