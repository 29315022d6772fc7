//! The SMTP receiver end to end: the real binary, a real SMTP client (lettre) or raw bytes over
//! TCP, and real shell actions subscribed to the `email` channel.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart, SinglePart};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use serde_json::{Value, json};
use support::api::{Api, repo_path, template};
use support::{Cockpit, eventually};

/// `[mail]` on a free port for `cockpit.test`, plus `extra` keys.
fn mail_config(extra: &str) -> String {
    format!(
        "[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = 0\ndomain = [\"cockpit.test\"]\n{extra}\n"
    )
}

/// A lettre client for the cockpit's SMTP port (plain SMTP: the receiver offers no TLS).
fn smtp(cockpit: &Cockpit) -> SmtpTransport {
    let (host, port) = cockpit.mail.rsplit_once(':').expect("mail address");
    SmtpTransport::builder_dangerous(host)
        .port(port.parse().expect("port"))
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

/// Sends with lettre off the async runtime; the SMTP code of the answer to DATA, or the error.
async fn send(transport: SmtpTransport, message: Message) -> Result<u16, String> {
    tokio::task::spawn_blocking(move || {
        transport
            .send(&message)
            .map(|response| u16::from(response.code()))
            .map_err(|err| err.to_string())
    })
    .await
    .expect("send task")
}

/// A simple mail to `ops@cockpit.test`.
fn simple(subject: &str) -> Message {
    Message::builder()
        .from("Alice <alice@example.org>".parse().expect("from"))
        .to("ops@cockpit.test".parse().expect("to"))
        .subject(subject)
        .body(String::from("hello"))
        .expect("message")
}

/// `(id, processed)` of every recorded event, read straight from the database.
fn events(data_dir: &Path) -> Vec<(i64, bool)> {
    support::db::rows(data_dir, "SELECT id, processed FROM events ORDER BY id")
        .into_iter()
        .map(|row| {
            let id = row[0].as_deref().and_then(|v| v.parse().ok()).expect("id");
            (id, row[1].as_deref() != Some("0"))
        })
        .collect()
}

/// Creates repository `inbox` with a `mailer__ops` service whose `onmail` action, subscribed
/// to `email`, writes its job JSON (stdin) to `job_file`.
async fn subscribe(api: &Api, job_file: &Path) {
    let script = format!("cat > '{0}.tmp' && mv '{0}.tmp' '{0}'", job_file.display());
    subscribe_repo(api, "inbox", &script).await;
}

/// Creates repository `repo` with a `mailer__ops` service whose `onmail` action (`script`) is
/// subscribed to `email`.
async fn subscribe_repo(api: &Api, repo: &str, script: &str) {
    subscribe_repo_at(api, Path::new(""), repo, script).await;
}

/// [`subscribe_repo`] for a cockpit whose working directory is `cwd`.
async fn subscribe_repo_at(api: &Api, cwd: &Path, repo: &str, script: &str) {
    let (status, view) = api.post("", json!({"name": repo})).await;
    assert_eq!(status, 201, "{view}");
    template(
        &cwd.join(repo_path(&view)),
        "mailer",
        "",
        &[("onmail", script)],
    );
    let blueprint = "mailer__ops:\neventfilters:\n  - {channel: email, action: onmail}\n";
    let path = format!("/{repo}/blueprint");
    let (status, body) = api
        .post(&path, json!({"name": "mail.yaml", "content": blueprint}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.post(&format!("{path}/mail.yaml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// Crashes repository `repo`'s actor (fault injection) and waits until it is down.
async fn crash_repository(cockpit: &mut Cockpit, repo: &str) {
    let crashed = reqwest::Client::new()
        .post(format!("{}/debug/crash/repo:{repo}", cockpit.api))
        .send()
        .await
        .expect("crash");
    assert_eq!(crashed.status().as_u16(), 202);
    cockpit
        .wait_for_log("repository actor failed", Duration::from_secs(10))
        .expect("the repository actor is down");
}

/// Waits for the action's job file; returns the job JSON.
async fn job(job_file: &Path) -> Value {
    eventually(Duration::from_secs(30), "the subscribed action", || async {
        let text = std::fs::read_to_string(job_file).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await
}

/// A raw SMTP client over TCP, for what a well-behaved client library would not send.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Raw {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends raw bytes.
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends a line and checks the last line of the reply starts with `expected`.
    fn cmd(&mut self, line: &str, expected: &str) {
        self.send(format!("{line}\r\n").as_bytes());
        self.expect(expected);
    }

    /// Reads one (possibly multi-line) reply and checks its last line.
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
            "expected {expected:?}, got {all:?}"
        );
    }
}

#[tokio::test]
async fn a_mail_with_an_attachment_runs_the_subscribed_action_with_the_mail_as_args() {
    let cockpit = Cockpit::start(&mail_config(""));
    let api = Api::new(&cockpit);
    let job_file = cockpit.dir.path().join("job.json");
    subscribe(&api, &job_file).await;

    // The envelope names only our recipient, as a sending MTA does for the cc'd domain's MX.
    let envelope = lettre::address::Envelope::new(
        Some("alice@example.org".parse().expect("from")),
        vec!["ops@cockpit.test".parse().expect("to")],
    )
    .expect("envelope");
    let message = Message::builder()
        .envelope(envelope)
        .from("Alice <alice@example.org>".parse().expect("from"))
        .to("ops@cockpit.test".parse().expect("to"))
        .cc("boss@example.org".parse().expect("cc"))
        .subject("disk full on node-3")
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(String::from("Node 3 is full.")))
                .singlepart(
                    Attachment::new("../df.txt".into())
                        .body(String::from("/dev/sda1 100%"), ContentType::TEXT_PLAIN),
                ),
        )
        .expect("message");
    assert_eq!(send(smtp(&cockpit), message).await, Ok(250));

    let job = job(&job_file).await;
    assert_eq!(job["action"], "onmail");
    assert_eq!(job["service"]["key"], "mailer!ops");
    let args = &job["args"];
    assert_eq!(args["subject"], "disk full on node-3");
    assert_eq!(args["sender"], "alice@example.org");
    assert_eq!(args["sender_name"], "Alice");
    assert_eq!(args["to"], json!(["ops@cockpit.test"]));
    assert_eq!(args["cc"], json!(["boss@example.org"]));
    assert!(
        args["date"].as_i64().is_some_and(|d| d > 1_600_000_000),
        "{args}"
    );
    assert_eq!(
        args["text"].as_str().map(str::trim),
        Some("Node 3 is full.")
    );
    assert_eq!(args["envelope"]["from"], "alice@example.org");
    let attachment = &args["attachments"][0];
    assert_eq!(attachment["index"], 1);
    assert_eq!(attachment["name"], "../df.txt");
    assert_eq!(attachment["content_type"], "text/plain");
    assert_eq!(attachment["size"], 14);
    // The attachment is not a file of its own: its `extract` command prints it.
    let extract: Vec<String> = serde_json::from_value(attachment["extract"].clone()).expect("argv");
    let output = std::process::Command::new(&extract[0])
        .args(&extract[1..])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("extract");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"/dev/sda1 100%");
    // One private file per mail, under the data dir.
    let raw = PathBuf::from(args["raw"].as_str().expect("raw"));
    let mail_dir = cockpit.data_dir().join("mail");
    assert_eq!(raw.parent(), Some(mail_dir.as_path()));
    assert_eq!(std::fs::read_dir(&mail_dir).expect("mail dir").count(), 1);
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    };
    assert_eq!((mode(&raw), mode(&mail_dir)), (0o600, 0o700));
    eventually(
        Duration::from_secs(10),
        "the event marked processed",
        || async { (events(&cockpit.data_dir()) == [(1, true)]).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn refused_recipients_sizes_and_garbage_get_their_codes_and_nothing_is_recorded() {
    let cockpit = Cockpit::start(&mail_config("max_message_bytes = 2048\nmax_recipients = 2"));
    let mut raw = Raw::connect(&cockpit.mail);
    raw.expect("220");
    raw.cmd("EHLO client.test", "250");
    raw.cmd("MAIL FROM:<alice@example.org>", "250");
    raw.cmd("RCPT TO:<someone@relay-me.example>", "550");
    raw.cmd("RCPT TO:<a@cockpit.test>", "250");
    raw.cmd("RCPT TO:<b@cockpit.test>", "250");
    raw.cmd("RCPT TO:<c@cockpit.test>", "452");
    raw.cmd("DATA", "354");
    raw.send(b"Subject: too big\r\n\r\n");
    for _ in 0..100 {
        raw.send(b"0123456789012345678901234567890123456789\r\n");
    }
    raw.cmd(".", "552");
    raw.send(b"\x00\xff\xfe\x16\x03\x01 not smtp at all\r\n");
    raw.expect("500");
    raw.cmd("NOOP", "250");

    assert_eq!(events(&cockpit.data_dir()), [], "nothing recorded");
    assert!(!cockpit.data_dir().join("mail").exists());

    // The receiver keeps serving, on that connection and to a new client.
    raw.cmd("MAIL FROM:<alice@example.org>", "250");
    raw.cmd("QUIT", "221");
    assert_eq!(send(smtp(&cockpit), simple("still here")).await, Ok(250));
    assert_eq!(events(&cockpit.data_dir()).len(), 1);

    let metrics = reqwest::get(format!("{}/metrics", cockpit.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for counter in [
        "cockpit_mail_accepted_total 1",
        "cockpit_mail_refused_recipient_total 1",
        "cockpit_mail_refused_too_many_recipients_total 1",
        "cockpit_mail_refused_too_large_total 1",
        "cockpit_mail_refused_syntax_total 1",
        // One mail committed (the other was refused before DATA): one commit holding it.
        "cockpit_mail_commit_mails_sum 1",
        "cockpit_mail_commit_mails_count 1",
        "cockpit_mail_commit_seconds_count 1",
    ] {
        assert!(metrics.contains(counter), "{counter} in\n{metrics}");
    }
}

#[tokio::test]
async fn hundreds_of_idle_connections_never_stop_a_new_sender() {
    // Blocked senders would wait for idle clients to time out (60 s here); a prompt delivery is
    // one well under that, however noisy the machine.
    let cockpit = Cockpit::start(&mail_config(
        "max_connections = 400\nidle_timeout_secs = 60\nmax_connections_per_peer = 1000",
    ));
    let connect = |n: usize| -> Vec<Raw> {
        (0..n)
            .map(|_| {
                let mut raw = Raw::connect(&cockpit.mail);
                raw.expect("220");
                raw
            })
            .collect()
    };

    // Below the limit: 300 silent clients each hold a session, and a sender is served at once.
    let mut idle = connect(300);
    let started = Instant::now();
    assert_eq!(send(smtp(&cockpit), simple("first")).await, Ok(250));
    let first = started.elapsed();

    // Beyond the limit: the clients idle the longest are cut to make room.
    idle.extend(connect(200));
    idle[0].expect("421 4.7.0");
    let started = Instant::now();
    assert_eq!(send(smtp(&cockpit), simple("second")).await, Ok(250));
    let second = started.elapsed();

    assert!(
        first < Duration::from_secs(15) && second < Duration::from_secs(15),
        "delivered in {first:?} and {second:?}"
    );
    assert_eq!(events(&cockpit.data_dir()).len(), 2);
    // The most recent idle client is still connected and served.
    idle.last_mut().expect("client").cmd("NOOP", "250");
}

#[tokio::test]
async fn a_mail_acknowledged_just_before_kill_dash_9_runs_its_action_after_restart() {
    // The subscribed repository's actor is crashed and restarts only after a minute, so the
    // event is recorded and acknowledged but cannot be processed before the kill.
    let mut cockpit = Cockpit::start(&mail_config(
        "[debug]\nfault_injection = true\n[supervisor]\nbackoff_initial_ms = 60000\nbackoff_max_ms = 60000",
    ));
    let api = Api::new(&cockpit);
    let job_file = cockpit.dir.path().join("job.json");
    subscribe(&api, &job_file).await;
    crash_repository(&mut cockpit, "inbox").await;

    assert_eq!(
        send(smtp(&cockpit), simple("survives kill -9")).await,
        Ok(250)
    );
    assert_eq!(
        events(&cockpit.data_dir()),
        [(1, false)],
        "recorded, not yet processed"
    );
    cockpit.signal(libc::SIGKILL);
    assert!(cockpit.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!job_file.exists());

    let dir = std::mem::replace(&mut cockpit.dir, tempfile::tempdir().expect("tmp"));
    let text = std::fs::read_to_string(&cockpit.config).expect("config");
    let again = Cockpit::start_in(dir, &text);
    let job_file = again.dir.path().join("job.json");
    let job = job(&job_file).await;
    assert_eq!(job["args"]["subject"], "survives kill -9");
    eventually(
        Duration::from_secs(10),
        "the event marked processed",
        || async { (events(&again.data_dir()) == [(1, true)]).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_receiver_is_restarted_after_a_crash_and_closes_sessions_on_shutdown() {
    let mut cockpit = Cockpit::start(&mail_config("[debug]\nfault_injection = true"));
    let crashed = reqwest::Client::new()
        .post(format!("{}/debug/crash/mail_receiver", cockpit.api))
        .send()
        .await
        .expect("crash");
    assert_eq!(crashed.status().as_u16(), 202);
    cockpit
        .wait_for_log("actor restarted", Duration::from_secs(10))
        .expect("restarted");
    // Same address after the restart.
    let code = eventually(Duration::from_secs(10), "mail served again", || {
        let transport = smtp(&cockpit);
        async move { send(transport, simple("after the crash")).await.ok() }
    })
    .await;
    assert_eq!(code, 250);

    let mut waiting = Raw::connect(&cockpit.mail);
    waiting.expect("220");
    waiting.cmd("EHLO client.test", "250");
    cockpit.signal(libc::SIGTERM);
    waiting.expect("421 4.3.2");
    let mut rest = Vec::new();
    let _ = waiting.reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the 421");
    let status = cockpit.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_repository_that_was_down_gets_the_mail_when_back_and_nobody_runs_it_twice() {
    // `inbox`'s actor is crashed and comes back after a second; `other` is up all along.
    let mut cockpit = Cockpit::start(&mail_config(
        "[debug]\nfault_injection = true\n[supervisor]\nbackoff_initial_ms = 1000\nbackoff_max_ms = 1000",
    ));
    let api = Api::new(&cockpit);
    let log = cockpit.dir.path().join("runs.log");
    for repo in ["inbox", "other"] {
        subscribe_repo(&api, repo, &format!("echo {repo} >> '{}'", log.display())).await;
    }
    crash_repository(&mut cockpit, "inbox").await;

    assert_eq!(send(smtp(&cockpit), simple("while down")).await, Ok(250));
    let runs = || {
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    eventually(
        Duration::from_secs(30),
        "both repositories ran it",
        || async { (runs() == ["inbox", "other"]).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the event marked processed",
        || async { (events(&cockpit.data_dir()) == [(1, true)]).then_some(()) },
    )
    .await;

    // After a restart nothing is delivered again.
    cockpit.signal(libc::SIGTERM);
    assert_eq!(
        cockpit
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let dir = std::mem::replace(&mut cockpit.dir, tempfile::tempdir().expect("tmp"));
    let text = std::fs::read_to_string(&cockpit.config).expect("config");
    let again = Cockpit::start_in(dir, &text);
    let log = again.dir.path().join("runs.log");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(lines.lines().count(), 2, "{lines}");
}

#[tokio::test]
async fn a_bounce_from_the_null_sender_reaches_the_action_with_absolute_paths_under_a_relative_data_dir()
 {
    // The data dir is relative to cockpit's working directory; the action runs elsewhere (its
    // service's directory) and must still be able to open what it is given.
    let dir = tempfile::tempdir().expect("tmp");
    let absolute = format!("path = \"{}\"", dir.path().join("data").display());
    let text = format!("{}{}", support::base_config(dir.path()), mail_config(""))
        .replace(&absolute, "path = \"data\"");
    assert!(text.contains("path = \"data\""), "{text}");
    let cockpit = Cockpit::start_in_cwd(dir, &text);
    let api = Api::new(&cockpit);
    let job_file = cockpit.dir.path().join("job.json");
    // The action itself opens the raw mail by the path it was given.
    let script = format!(
        "cat > '{0}.tmp' && grep -o '\"raw\":\"[^\"]*\"' '{0}.tmp' | cut -d'\"' -f4 | xargs head -c 13 > '{0}.head' && mv '{0}.tmp' '{0}'",
        job_file.display()
    );
    subscribe_repo_at(&api, cockpit.dir.path(), "inbox", &script).await;

    let mut raw = Raw::connect(&cockpit.mail);
    raw.expect("220");
    raw.cmd("EHLO mailer-daemon.example", "250");
    raw.cmd("MAIL FROM:<> SIZE=200 BODY=8BITMIME", "250 2.1.0");
    raw.cmd("RCPT TO:<ops@cockpit.test> NOTIFY=NEVER", "250 2.1.5");
    raw.cmd("DATA", "354");
    raw.send(b"From: MAILER-DAEMON@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nbounced\r\n");
    raw.cmd(".", "250 2.0.0");
    raw.cmd("QUIT", "221 2.0.0");

    let job = job(&job_file).await;
    let args = &job["args"];
    assert_eq!(args["envelope"]["from"], "");
    assert_eq!(args["subject"], "Undelivered Mail Returned to Sender");
    let data_dir = PathBuf::from(args["data_dir"].as_str().expect("data_dir"));
    assert!(data_dir.is_absolute(), "{data_dir:?}");
    assert_eq!(data_dir, cockpit.data_dir());
    let raw_path = PathBuf::from(args["raw"].as_str().expect("raw"));
    assert!(
        raw_path.is_absolute() && raw_path.starts_with(data_dir.join("mail")),
        "{raw_path:?}"
    );
    let head = std::fs::read_to_string(cockpit.dir.path().join("job.json.head")).expect("head");
    assert_eq!(
        head, "Return-Path: ",
        "the action read the mail through its path"
    );
    let stored = std::fs::read_to_string(&raw_path).expect("raw");
    assert!(
        stored.starts_with("Return-Path: <>\r\nReceived: from mailer-daemon.example ([127.0.0.1])"),
        "{stored}"
    );
}

#[tokio::test]
async fn one_address_gets_at_most_its_connections_and_the_rest_get_421() {
    let cockpit = Cockpit::start(&mail_config("max_connections_per_peer = 2"));
    let mut first = Raw::connect(&cockpit.mail);
    first.expect("220");
    let mut second = Raw::connect(&cockpit.mail);
    second.expect("220");
    let mut third = Raw::connect(&cockpit.mail);
    third.expect("421 4.7.0 Too many connections from your host");
    first.cmd("QUIT", "221");
    // The place is free again once the first session has ended.
    let code = eventually(Duration::from_secs(10), "a place again", || async {
        let mut next = Raw::connect(&cockpit.mail);
        let mut line = String::new();
        next.reader.read_line(&mut line).ok()?;
        line.starts_with("220").then_some(())
    })
    .await;
    assert_eq!(code, ());
    second.cmd("NOOP", "250");
}

#[tokio::test]
async fn too_many_waiting_runs_get_452_nothing_is_recorded_for_them_and_mail_flows_again_once_drained()
 {
    let cockpit = Cockpit::start(&mail_config("max_queued_runs = 3"));
    let api = Api::new(&cockpit);
    let gate = cockpit.dir.path().join("gate");
    let log = cockpit.dir.path().join("runs.log");
    // A slow action: each run waits for the gate.
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo ran >> '{}'",
        gate.display(),
        log.display()
    );
    subscribe_repo(&api, "inbox", &script).await;

    let mut accepted = 0;
    let mut refusal = None;
    for n in 0..10 {
        match send(smtp(&cockpit), simple(&format!("mail {n}"))).await {
            Ok(250) => accepted += 1,
            Ok(other) => panic!("mail {n}: {other}"),
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 452 once 3 runs wait");
    assert!(refusal.contains("4.3.1"), "{refusal}");
    // Three waiting, one running, and a batch in flight at most.
    assert!((1..=5).contains(&accepted), "{accepted} accepted");
    assert_eq!(
        events(&cockpit.data_dir()).len(),
        accepted,
        "nothing recorded for it"
    );

    std::fs::write(&gate, "").expect("open the gate");
    eventually(Duration::from_secs(30), "mail accepted again", || {
        let transport = smtp(&cockpit);
        async move { (send(transport, simple("after")).await == Ok(250)).then_some(()) }
    })
    .await;
    let runs = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually(
        Duration::from_secs(30),
        "every accepted mail ran",
        || async { (runs() == accepted + 1).then_some(()) },
    )
    .await;
    assert_eq!(events(&cockpit.data_dir()).len(), accepted + 1);
}
