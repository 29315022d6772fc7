//! Mail delivered by a real Postfix to the receiver: the MTA the receiver faces on the Internet.
//!
//! Ignored in the default `cargo test`: it needs root and a system Postfix configured by
//! `scripts/postfix-test.sh` (which installs Debian's package and runs this test; CI runs it
//! through `scripts/ci-extra.sh`). Postfix relays `cockpit.test` to the receiver; the test sends
//! to Postfix's own port 25 and checks what reaches the subscribed action and what Postfix logged.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::{Cockpit, eventually};

/// Postfix's log, as `scripts/postfix-test.sh` configures it.
const POSTFIX_LOG: &str = "/var/log/postfix-cockpit-test.log";

/// Runs a Postfix command; panics with its output when it fails.
fn postfix(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run postfix command");
    assert!(
        output.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops Postfix however the test ends.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("stop").output();
    }
}

/// A plain SMTP client for Postfix's port 25.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect() -> Smtp {
        let stream = TcpStream::connect("127.0.0.1:25").expect("postfix listens on 25");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
            writer,
        };
        smtp.expect("220");
        smtp.cmd("EHLO sender.test", "250");
        smtp
    }

    fn cmd(&mut self, line: &str, expected: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
        self.expect(expected);
    }

    fn expect(&mut self, expected: &str) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("reply");
            all.push_str(&line);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let last = all.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(expected),
            "expected {expected}, got {all:?}"
        );
    }

    /// One mail: `MAIL FROM:<from> params`, the recipients, the message (CRLF lines, not
    /// dot-stuffed: no line of these messages starts with a dot).
    fn send(&mut self, from: &str, params: &str, to: &[String], message: &str) {
        self.cmd(&format!("MAIL FROM:<{from}>{params}"), "250");
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"), "250");
        }
        self.cmd("DATA", "354");
        self.writer.write_all(message.as_bytes()).expect("send");
        self.cmd(".", "250");
    }
}

fn ops() -> Vec<String> {
    vec!["ops@cockpit.test".to_string()]
}

/// Every job the action wrote so far, as JSON.
fn jobs(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
        .collect()
}

#[tokio::test]
#[ignore = "needs root and Postfix: run scripts/postfix-test.sh"]
async fn mail_relayed_by_postfix_reaches_the_subscribed_action() {
    let cockpit = Cockpit::start(
        "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n",
    );
    let api = Api::new(&cockpit);
    let jobs_dir = cockpit.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).expect("jobs dir");
    let script = format!(
        "f=$(mktemp '{0}/job.XXXXXX') && cat > \"$f\" && mv \"$f\" \"$f.json\"",
        jobs_dir.display()
    );
    let (status, view) = api.post("", json!({"name": "inbox"})).await;
    assert_eq!(status, 201, "{view}");
    template(&repo_path(&view), "mailer", "", &[("onmail", &script)]);
    let blueprint = "mailer__ops:\neventfilters:\n  - {channel: email, action: onmail}\n";
    let (status, body) = api
        .post(
            "/inbox/blueprint",
            json!({"name": "mail.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.post("/inbox/blueprint/mail.yaml", json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Postfix relays cockpit.test to this receiver, and only there.
    let port = cockpit.mail.rsplit_once(':').expect("mail address").1;
    std::fs::write(
        "/etc/postfix/cockpit_transport",
        format!("cockpit.test smtp:[127.0.0.1]:{port}\n"),
    )
    .expect("transport");
    let log_start = std::fs::metadata(POSTFIX_LOG).map_or(0, |m| m.len());
    let _ = Command::new("postfix").arg("stop").output();
    postfix(&["postfix", "start"]);
    let _running = Running;
    eventually(Duration::from_secs(20), "postfix on port 25", || async {
        TcpStream::connect("127.0.0.1:25").ok().map(|_| ())
    })
    .await;

    let big_line = format!("{}\r\n", "0123456789".repeat(7));
    let big_body = big_line.repeat(5 * 1024 * 1024 / big_line.len() + 1);
    let many: Vec<String> = (1..=150).map(|n| format!("r{n}@cockpit.test")).collect();
    let mut smtp = Smtp::connect();
    smtp.send(
        "alice@example.org",
        "",
        &ops(),
        "From: alice@example.org\r\nTo: ops@cockpit.test\r\nSubject: plain\r\n\r\nplain body\r\n",
    );
    smtp.send(
        "jos\u{e9}@example.org",
        " SMTPUTF8",
        &ops(),
        "From: jos\u{e9}@example.org\r\nTo: ops@cockpit.test\r\nSubject: Gr\u{fc}\u{df}e \u{2713} \u{65e5}\u{672c}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nutf-8 subject\r\n",
    );
    smtp.send(
        "alice@example.org",
        " BODY=8BITMIME",
        &ops(),
        "From: alice@example.org\r\nTo: ops@cockpit.test\r\nSubject: eight bit\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e\r\n",
    );
    smtp.send(
        "alice@example.org",
        "",
        &ops(),
        "From: alice@example.org\r\nTo: ops@cockpit.test\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
         see attached\r\n--b1\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; \
         filename=\"report.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gYXR0YWNobWVudA==\r\n--b1--\r\n",
    );
    smtp.send(
        "",
        "",
        &ops(),
        "From: MAILER-DAEMON@example.org\r\nTo: ops@cockpit.test\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n",
    );
    smtp.send(
        "alice@example.org",
        "",
        &ops(),
        &format!("From: alice@example.org\r\nTo: ops@cockpit.test\r\nSubject: five megabytes\r\n\r\n{big_body}"),
    );
    smtp.send(
        "alice@example.org",
        "",
        &many,
        "From: alice@example.org\r\nTo: undisclosed-recipients:;\r\nSubject: many recipients\r\n\r\nhi all\r\n",
    );
    smtp.cmd("QUIT", "221");

    // Postfix splits the 150 recipients into transactions of 50: 9 mails reach the action.
    let jobs = eventually(Duration::from_secs(120), "nine jobs", || async {
        let jobs = jobs(&jobs_dir);
        (jobs.len() >= 9).then_some(jobs)
    })
    .await;
    let by_subject = |subject: &str| -> Vec<&Value> {
        jobs.iter()
            .map(|job| &job["args"])
            .filter(|args| args["subject"] == subject)
            .collect()
    };
    let one = |subject: &str| -> &Value {
        let found = by_subject(subject);
        assert_eq!(found.len(), 1, "{subject}: {found:?}");
        found[0]
    };
    let plain = one("plain");
    assert_eq!(plain["envelope"]["from"], "alice@example.org");
    assert_eq!(plain["envelope"]["to"], json!(["ops@cockpit.test"]));
    assert_eq!(plain["text"].as_str().map(str::trim), Some("plain body"));
    let raw = std::fs::read_to_string(plain["raw"].as_str().expect("raw")).expect("raw file");
    assert!(
        raw.starts_with("Return-Path: <alice@example.org>\r\nReceived: from postfix.test"),
        "{raw}"
    );

    let utf8 = one("Gr\u{fc}\u{df}e \u{2713} \u{65e5}\u{672c}");
    assert_eq!(utf8["envelope"]["from"], "jos\u{e9}@example.org");
    assert_eq!(utf8["sender"], "jos\u{e9}@example.org");

    let eight = one("eight bit");
    assert_eq!(
        eight["text"].as_str().map(str::trim),
        Some("caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e")
    );

    let attachment = one("attachment");
    assert_eq!(attachment["attachments"][0]["name"], "report.txt");
    let extract: Vec<String> =
        serde_json::from_value(attachment["attachments"][0]["extract"].clone()).expect("argv");
    let output = std::process::Command::new(&extract[0])
        .args(&extract[1..])
        .output()
        .expect("extract");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello attachment");

    let bounce = one("Undelivered Mail Returned to Sender");
    assert_eq!(bounce["envelope"]["from"], "");

    let big = one("five megabytes");
    let size = std::fs::metadata(big["raw"].as_str().expect("raw"))
        .expect("raw")
        .len();
    assert!(size > 5 * 1024 * 1024, "{size}");

    let recipients: BTreeSet<String> = by_subject("many recipients")
        .iter()
        .flat_map(|args| {
            args["envelope"]["to"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|to| to.as_str().map(String::from))
        .collect();
    assert_eq!(recipients, many.iter().cloned().collect::<BTreeSet<_>>());

    // Postfix's log: every recipient delivered to the receiver, nothing bounced.
    let log = eventually(Duration::from_secs(30), "postfix logged all", || async {
        let text = std::fs::read(POSTFIX_LOG).ok()?;
        let text = String::from_utf8_lossy(&text[log_start as usize..]).into_owned();
        let sent = text
            .lines()
            .filter(|l| l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")))
            .filter(|l| l.contains("status=sent (250 2.0.0 OK: queued as"))
            .count();
        (sent >= 6 + 150).then_some(text)
    })
    .await;
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("status=deferred"), "{log}");
}
