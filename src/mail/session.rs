//! One SMTP conversation over any async byte stream (a TCP connection, or an in-memory pipe in
//! the tests).
//!
//! The `mailin` engine parses the commands and keeps the SMTP state; our [`Checks`] handler
//! applies the recipient rules (accepted domains → 550, `max_recipients` → 452). The message
//! itself is read here rather than by the engine: lines are read with a length bound, the size
//! limit is enforced while reading (552, the rest is discarded), and the `250` is written only
//! after [`Deliver::deliver`] returned, i.e. after the mail is durably recorded.
//!
//! Every wait for the client is bounded by the idle timeout and ends early when the listener
//! cuts this connection (full, and this one idle the longest) or shuts down.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Deliver, ReceivedMail};
use crate::config::MailConfig;
use crate::telemetry::Telemetry;

/// The longest command line read; RFC 5321 allows 512 octets, clients stay far below this.
const MAX_COMMAND_LINE: usize = 2048;
/// The longest piece of a message line read at once (longer lines are read in pieces).
const MAX_DATA_PIECE: usize = 64 * 1024;
/// After this many refused commands the client is disconnected (as Postfix's hard error limit).
const MAX_ERRORS: u32 = 20;

/// The limits every session applies, from `[mail]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The name in the greeting.
    pub hostname: String,
    /// Accepted recipient domains, lower case; empty accepts every domain.
    pub domains: Vec<String>,
    /// Messages larger than this (after dot-unstuffing) get 552.
    pub max_message_bytes: u64,
    /// Recipients beyond this many get 452.
    pub max_recipients: u32,
    /// How long the client may stay silent.
    pub idle_timeout: Duration,
}

impl Rules {
    /// The rules of a `[mail]` section.
    pub fn from_config(config: &MailConfig) -> Rules {
        let domains: Vec<String> = config
            .domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        Rules {
            hostname: domains.first().cloned().unwrap_or_else(|| "cockpit".into()),
            domains,
            max_message_bytes: config.max_message_bytes,
            max_recipients: config.max_recipients,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        }
    }

    /// True when mail for `address` is ours to take.
    pub fn accepts(&self, address: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domains.contains(&domain)
    }
}

/// Bytes of messages held in memory at once, across all sessions, at the least: with 1 024
/// sessions of 10 MiB each a receiver could otherwise be made to hold 10 GiB.
const MIN_BUFFER_BUDGET: u64 = 256 << 20;

/// The memory budget of a receiver with these rules: at least two messages of the largest size.
pub fn buffer_budget(rules: &Rules) -> Arc<Semaphore> {
    let bytes = MIN_BUFFER_BUDGET.max(rules.max_message_bytes.saturating_mul(2));
    Arc::new(Semaphore::new(
        usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS),
    ))
}

/// What every session of one receiver shares.
pub struct Door {
    /// The limits.
    pub rules: Rules,
    /// Bytes of messages in memory (being received or recorded), across all sessions; a message
    /// that does not fit gets `452` and is discarded.
    pub buffered: Arc<Semaphore>,
    /// Where accepted mails go (the store, then the Ays actor).
    pub deliver: Arc<dyn Deliver>,
    /// Counters for `/metrics`.
    pub telemetry: Arc<Telemetry>,
}

/// A session's place in the listener's table: whether it is waiting for its client (and since
/// when), and the signal that cuts it.
#[derive(Debug, Default)]
pub struct Slot {
    /// Since when the session has been waiting for its client; `None` while it works.
    idle_since: Mutex<Option<Instant>>,
    /// Notified to cut the connection (it only listens while waiting for the client).
    cut: Notify,
}

impl Slot {
    /// Since when the session has been waiting for its client, if it is.
    pub fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock()
    }

    /// Asks the session to close (at once if it waits for its client, else at its next wait).
    pub fn cut(&self) {
        self.cut.notify_one();
    }

    /// Marks the session as waiting for its client (from now) or working.
    pub(super) fn set_idle(&self, idle: bool) {
        *self.idle_since.lock() = idle.then(Instant::now);
    }
}

/// Why a session stopped waiting for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Silent for the idle timeout.
    Idle,
    /// Cut by the listener to make room.
    Cut,
    /// The receiver shuts down.
    Shutdown,
}

impl Stop {
    fn reply(self) -> &'static str {
        match self {
            Stop::Idle => "421 4.4.2 Idle timeout, closing connection\r\n",
            Stop::Cut => "421 4.7.0 Too many connections, closing idle ones\r\n",
            Stop::Shutdown => "421 4.3.2 Shutting down, try again later\r\n",
        }
    }
}

/// What one read brought.
enum Input {
    /// A line ending in LF.
    Line,
    /// The length bound was reached before a LF.
    TooLong,
    /// The client closed the connection.
    Eof,
    /// The wait ended.
    Stop(Stop),
}

/// How a `DATA` transfer ended.
enum Data {
    /// The message, dot-unstuffed, with its share of the receiver's memory budget.
    Complete(Vec<u8>, Option<OwnedSemaphorePermit>),
    /// Larger than the limit; it was read to its end and discarded.
    TooBig,
    /// The messages being received or recorded already fill the memory budget; this one was
    /// read to its end and discarded, the client may retry later.
    Busy,
    /// The client closed the connection.
    Eof,
    /// The wait ended.
    Stop(Stop),
}

/// The envelope being built, shared between the engine's handler and this driver.
#[derive(Debug, Default)]
struct Envelope {
    /// HELO/EHLO name.
    helo: String,
    /// `MAIL FROM`.
    from: String,
    /// Accepted recipients.
    to: Vec<String>,
    /// Accepted recipients of the current transaction (reset by `MAIL FROM`).
    accepted: u32,
}

/// The `mailin` handler: the recipient rules.
struct Checks<'a> {
    /// The limits.
    rules: &'a Rules,
    /// Where the envelope is collected.
    envelope: &'a Mutex<Envelope>,
    /// Refusal counters.
    telemetry: &'a Telemetry,
}

impl Checks<'_> {
    fn envelope(&self) -> parking_lot::MutexGuard<'_, Envelope> {
        self.envelope.lock()
    }
}

impl Handler for Checks<'_> {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        self.envelope().accepted = 0;
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut envelope = self.envelope();
        if envelope.accepted >= self.rules.max_recipients {
            self.telemetry.count("mail_refused_too_many_recipients", 1);
            return Response::custom(452, "4.5.3 Too many recipients".into());
        }
        if !self.rules.accepts(to) {
            self.telemetry.count("mail_refused_recipient", 1);
            return Response::custom(
                550,
                "5.7.1 Recipient domain not served here (no relaying)".into(),
            );
        }
        envelope.accepted += 1;
        mailin::response::OK
    }

    fn data_start(&mut self, domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut envelope = self.envelope();
        envelope.helo = domain.to_string();
        envelope.from = from.to_string();
        envelope.to = to.to_vec();
        mailin::response::OK
    }
}

/// The connection: the bounded reads and the replies.
struct Conn<'a, R, W> {
    /// The client's bytes.
    reader: BufReader<R>,
    /// Our replies.
    writer: W,
    /// Marks our waits and carries the cut signal.
    slot: &'a Slot,
    /// Turns true when the receiver shuts down (a dropped sender means the same).
    shutdown: watch::Receiver<bool>,
    /// How long the client may stay silent.
    idle_timeout: Duration,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<'_, R, W> {
    /// Reads up to `max` bytes ending in LF into `buf`, waiting at most the idle timeout.
    async fn read_line(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Input> {
        buf.clear();
        self.slot.set_idle(true);
        let shutdown = &mut self.shutdown;
        let mut limited = (&mut self.reader).take(max as u64);
        let read = limited.read_until(b'\n', buf);
        let outcome = tokio::select! {
            read = tokio::time::timeout(self.idle_timeout, read) => match read {
                Err(_) => Ok(Input::Stop(Stop::Idle)),
                Ok(Err(err)) => Err(err),
                Ok(Ok(0)) => Ok(Input::Eof),
                Ok(Ok(_)) if buf.ends_with(b"\n") => Ok(Input::Line),
                Ok(Ok(n)) if n >= max => Ok(Input::TooLong),
                Ok(Ok(_)) => Ok(Input::Eof),
            },
            () = self.slot.cut.notified() => Ok(Input::Stop(Stop::Cut)),
            _ = shutdown.wait_for(|stop| *stop) => Ok(Input::Stop(Stop::Shutdown)),
        };
        self.slot.set_idle(false);
        outcome
    }

    /// Reads a message up to its `.` line: dot-unstuffed, at most `max` bytes kept, each kept
    /// byte taken from `budget` first.
    async fn read_data(&mut self, max: u64, budget: &Arc<Semaphore>) -> io::Result<Data> {
        let mut body = Vec::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut over_budget = false;
        let mut size: u64 = 0;
        let mut at_line_start = true;
        let mut piece = Vec::new();
        loop {
            match self.read_line(&mut piece, MAX_DATA_PIECE).await? {
                Input::Line | Input::TooLong => {}
                Input::Eof => return Ok(Data::Eof),
                Input::Stop(stop) => return Ok(Data::Stop(stop)),
            }
            let mut bytes = &piece[..];
            if at_line_start {
                if bytes == b".\r\n" || bytes == b".\n" {
                    break;
                }
                if let Some(rest) = bytes.strip_prefix(b".") {
                    bytes = rest;
                }
            }
            at_line_start = piece.ends_with(b"\n");
            size += bytes.len() as u64;
            if size > max || over_budget {
                body = Vec::new();
                held = None;
                continue;
            }
            let share = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            match budget.clone().try_acquire_many_owned(share) {
                Ok(permit) => match held.as_mut() {
                    Some(held) => held.merge(permit),
                    None => held = Some(permit),
                },
                Err(_) => {
                    over_budget = true;
                    body = Vec::new();
                    held = None;
                    continue;
                }
            }
            body.extend_from_slice(bytes);
        }
        Ok(if size > max {
            Data::TooBig
        } else if over_budget {
            Data::Busy
        } else {
            Data::Complete(body, held)
        })
    }

    async fn reply(&mut self, response: &Response) -> io::Result<()> {
        let bytes = response.buffer()?;
        self.say(&bytes).await
    }

    async fn say(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }
}

/// Serves one SMTP connection until the client quits, misbehaves too often, stays idle, is cut,
/// or the receiver shuts down. I/O errors end the session (and are returned); nothing the client
/// sends can panic it.
pub async fn run<S>(
    stream: S,
    peer: IpAddr,
    door: &Door,
    slot: &Slot,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, write) = tokio::io::split(stream);
    let mut conn = Conn {
        reader: BufReader::new(read),
        writer: write,
        slot,
        shutdown,
        idle_timeout: door.rules.idle_timeout,
    };
    let envelope = Mutex::new(Envelope::default());
    let checks = Checks {
        rules: &door.rules,
        envelope: &envelope,
        telemetry: &door.telemetry,
    };
    let mut session = SessionBuilder::new(door.rules.hostname.clone()).build(peer, checks);
    conn.reply(&session.greeting()).await?;
    let mut errors = 0;
    let mut line = Vec::new();
    loop {
        match conn.read_line(&mut line, MAX_COMMAND_LINE).await? {
            Input::Line => {}
            Input::Eof => return Ok(()),
            Input::TooLong => {
                door.telemetry.count("mail_refused_syntax", 1);
                return conn.say(b"500 5.5.2 Line too long, closing\r\n").await;
            }
            Input::Stop(stop) => return conn.say(stop.reply().as_bytes()).await,
        }
        // The engine wants CRLF; accept a bare LF from sloppy clients.
        if !line.ends_with(b"\r\n") {
            line.pop();
            line.extend_from_slice(b"\r\n");
        }
        let response = session.process(&line);
        if response.code == 354 {
            conn.reply(&response).await?;
            let data = conn
                .read_data(door.rules.max_message_bytes, &door.buffered)
                .await?;
            // Brings the engine back to "after HELO"; the reply to the message is ours.
            let _ = session.process(b".\r\n");
            match data {
                Data::Complete(data, held) => {
                    let mail = take_mail(&envelope, peer, data);
                    let reply = accept(door, mail).await;
                    // Recorded (or refused): its memory is free again.
                    drop(held);
                    conn.say(reply.as_bytes()).await?;
                }
                Data::Busy => {
                    door.telemetry.count("mail_refused_busy", 1);
                    warn!(%peer, "mail deferred: the receiver's memory budget is full");
                    conn.say(b"452 4.3.1 Insufficient system storage, try again later\r\n")
                        .await?;
                }
                Data::TooBig => {
                    door.telemetry.count("mail_refused_too_large", 1);
                    info!(%peer, limit = door.rules.max_message_bytes, "mail refused: too large");
                    conn.say(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
                        .await?;
                }
                Data::Eof => return Ok(()),
                Data::Stop(stop) => return conn.say(stop.reply().as_bytes()).await,
            }
            continue;
        }
        if response.is_error && response.code >= 500 {
            errors += 1;
            if matches!(response.code, 500 | 502) {
                door.telemetry.count("mail_refused_syntax", 1);
            }
            if errors >= MAX_ERRORS {
                conn.reply(&response).await?;
                return conn
                    .say(b"421 4.7.0 Too many errors, closing connection\r\n")
                    .await;
            }
        }
        match response.action {
            Action::Reply => conn.reply(&response).await?,
            Action::Close => return conn.reply(&response).await,
            Action::NoReply => {}
            // STARTTLS is not offered, so the engine never asks for it.
            Action::UpgradeTls => conn.say(b"454 4.7.0 TLS not available\r\n").await?,
        }
    }
}

/// The mail of the transaction that just ended.
fn take_mail(envelope: &Mutex<Envelope>, peer: IpAddr, data: Vec<u8>) -> ReceivedMail {
    let mut envelope = envelope.lock();
    ReceivedMail {
        peer,
        helo: envelope.helo.clone(),
        from: std::mem::take(&mut envelope.from),
        to: std::mem::take(&mut envelope.to),
        data,
    }
}

/// Records a mail; the reply to `DATA`: 250 only once it is recorded, else 451 (retry later).
async fn accept(door: &Door, mail: ReceivedMail) -> String {
    let (peer, bytes, recipients) = (mail.peer, mail.data.len(), mail.to.len());
    match door.deliver.deliver(mail).await {
        Ok(id) => {
            door.telemetry.count("mail_accepted", 1);
            info!(%peer, event = id, bytes, recipients, "mail accepted");
            format!("250 2.0.0 OK: queued as {id}\r\n")
        }
        Err(err) => {
            door.telemetry.count("mail_record_failures", 1);
            warn!(%peer, %err, "mail not recorded; the sender will retry");
            "451 4.3.0 Local error in processing, try again later\r\n".into()
        }
    }
}

/// Logs how a session ended.
pub fn log_end(peer: IpAddr, result: &io::Result<()>) {
    if let Err(err) = result {
        debug!(%peer, %err, "smtp session ended with an I/O error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::DeliverError;
    use futures::future::BoxFuture;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    /// A `Deliver` that keeps what it gets, or fails when told to.
    #[derive(Default)]
    struct Recorder {
        mails: Mutex<Vec<ReceivedMail>>,
        fail: bool,
    }

    impl Deliver for Recorder {
        fn deliver(&self, mail: ReceivedMail) -> BoxFuture<'static, Result<i64, DeliverError>> {
            let result = if self.fail {
                Err(DeliverError::Record("disk full".into()))
            } else {
                let mut mails = self.mails.lock();
                mails.push(mail);
                Ok(mails.len() as i64)
            };
            Box::pin(async move { result })
        }
    }

    fn rules() -> Rules {
        Rules {
            hostname: "cockpit.test".into(),
            domains: vec!["cockpit.test".into()],
            max_message_bytes: 1024,
            max_recipients: 2,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// The client end of an in-memory SMTP session.
    struct Client {
        reader: BufReader<ReadHalf<DuplexStream>>,
        writer: WriteHalf<DuplexStream>,
        /// Keeps the session's shutdown signal open (and lets a test fire it).
        shutdown: watch::Sender<bool>,
        recorder: Arc<Recorder>,
        session: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Client {
        /// Starts a session with these rules; the greeting is checked.
        async fn connect(rules: Rules, recorder: Recorder) -> Client {
            Client::connect_with_budget(rules, recorder, 1 << 20).await
        }

        /// Starts a session whose receiver may hold `budget` bytes of messages at once.
        async fn connect_with_budget(rules: Rules, recorder: Recorder, budget: usize) -> Client {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            let recorder = Arc::new(recorder);
            let door = Door {
                buffered: Arc::new(Semaphore::new(budget)),
                rules,
                deliver: recorder.clone(),
                telemetry: Arc::new(Telemetry::default()),
            };
            let (shutdown, signal) = watch::channel(false);
            let peer: IpAddr = [192, 0, 2, 7].into();
            let session = tokio::spawn(async move {
                let slot = Slot::default();
                run(theirs, peer, &door, &slot, signal).await
            });
            let (read, writer) = tokio::io::split(ours);
            let mut client = Client {
                reader: BufReader::new(read),
                writer,
                shutdown,
                recorder,
                session,
            };
            client.expect("220 cockpit.test ESMTP").await;
            client
        }

        /// Sends one line and checks that the (last line of the) reply starts with `expected`.
        async fn cmd(&mut self, line: &str, expected: &str) {
            self.send(line.as_bytes()).await;
            self.send(b"\r\n").await;
            self.expect(expected).await;
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).await.expect("send");
        }

        /// Reads one reply (all its lines) and checks its last line starts with `expected`.
        async fn expect(&mut self, expected: &str) {
            let reply = self.reply().await;
            let last = reply.lines().last().unwrap_or_default().to_string();
            assert!(
                last.starts_with(expected),
                "expected {expected:?}, got {reply:?}"
            );
        }

        async fn reply(&mut self) -> String {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                let n = self.reader.read_line(&mut line).await.expect("reply");
                all.push_str(&line);
                // A multi-line reply continues with "250-"; the last line is "250 ".
                if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        }

        /// True once the server closed the connection.
        async fn closed(&mut self) -> bool {
            let mut rest = String::new();
            matches!(self.reader.read_line(&mut rest).await, Ok(0))
        }

        fn mails(&self) -> Vec<ReceivedMail> {
            self.recorder.mails.lock().clone()
        }
    }

    #[tokio::test]
    async fn a_mail_to_the_accepted_domain_is_recorded_then_acknowledged() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("RCPT TO:<someone@elsewhere.org>", "550 5.7.1").await;
        c.cmd("RCPT TO:<Team@COCKPIT.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(b"Subject: hello\r\n\r\nfirst line\r\n..a dotted line\r\n")
            .await;
        c.cmd(".", "250 2.0.0 OK: queued as 1").await;
        c.cmd("QUIT", "221").await;

        let mails = c.mails();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].helo, "client.example");
        assert_eq!(mails[0].from, "alice@example.org");
        assert_eq!(mails[0].to, ["ops@cockpit.test", "Team@COCKPIT.test"]);
        assert_eq!(
            mails[0].data,
            b"Subject: hello\r\n\r\nfirst line\r\n.a dotted line\r\n"
        );
    }

    #[tokio::test]
    async fn recipients_beyond_the_limit_get_452_and_the_count_restarts_with_each_mail() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("HELO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<a@cockpit.test>", "250").await;
        c.cmd("RCPT TO:<b@cockpit.test>", "250").await;
        c.cmd("RCPT TO:<c@cockpit.test>", "452 4.5.3").await;
        c.cmd("RSET", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<c@cockpit.test>", "250").await;
    }

    #[tokio::test]
    async fn an_oversized_mail_gets_552_nothing_is_recorded_and_the_session_goes_on() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        for _ in 0..50 {
            c.send(b"0123456789012345678901234567890123456789\r\n")
                .await;
        }
        c.cmd(".", "552 5.3.4").await;
        assert!(c.mails().is_empty());

        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.cmd("small\r\n.", "250").await;
        assert_eq!(c.mails().len(), 1);
    }

    #[tokio::test]
    async fn a_mail_beyond_the_memory_budget_gets_452_and_the_next_one_fits_again() {
        // The receiver may hold 300 bytes of messages; this one is 420 (its limit is 1 024).
        let mut c = Client::connect_with_budget(rules(), Recorder::default(), 300).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        for _ in 0..10 {
            c.send(b"0123456789012345678901234567890123456789\r\n")
                .await;
        }
        c.cmd(".", "452 4.3.1").await;
        assert!(c.mails().is_empty());

        // Nothing stays taken: a small one, twice, is accepted.
        for _ in 0..2 {
            c.cmd("MAIL FROM:<alice@example.org>", "250").await;
            c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
            c.cmd("DATA", "354").await;
            c.cmd("small enough\r\n.", "250").await;
        }
        assert_eq!(c.mails().len(), 2);
    }

    #[tokio::test]
    async fn garbage_and_out_of_order_commands_get_5xx_and_the_session_goes_on() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("\u{1}\u{7f}garbage \u{ff}\u{fe}", "500").await;
        c.send(b"\xff\xfe\x00\x01 binary\r\n").await;
        c.expect("500").await;
        c.cmd("MAIL FROM:<alice@example.org>", "503").await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("DATA", "503").await;
        c.cmd("MAIL FROM:alice-without-brackets", "500").await;
        c.cmd("STARTTLS", "503").await;
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "503").await;
        c.cmd("NOOP", "250").await;
    }

    #[tokio::test]
    async fn a_client_that_keeps_failing_is_disconnected() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        for _ in 0..MAX_ERRORS {
            c.cmd("BOGUS", "500").await;
        }
        c.expect("421 4.7.0 Too many errors").await;
        assert!(c.closed().await);
    }

    #[tokio::test]
    async fn a_line_without_end_is_refused_and_the_connection_closed() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.send(&[b'x'; MAX_COMMAND_LINE + 10]).await;
        c.expect("500 5.5.2 Line too long").await;
        assert!(c.closed().await);
        assert!(c.session.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn when_recording_fails_the_sender_gets_451_and_retries() {
        let failing = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let mut c = Client::connect(rules(), failing).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.cmd("Subject: x\r\n\r\nbody\r\n.", "451 4.3.0").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
    }

    #[tokio::test]
    async fn no_domain_configured_accepts_every_recipient() {
        let open = Rules {
            domains: Vec::new(),
            ..rules()
        };
        let mut c = Client::connect(open, Recorder::default()).await;
        c.cmd("HELO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<anyone@anywhere.org>", "250").await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_disconnected_after_the_idle_timeout() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("HELO client.example", "250").await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        c.expect("421 4.4.2 Idle timeout").await;
        assert!(c.closed().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_stalling_inside_data_is_disconnected_and_nothing_is_recorded() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("HELO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(b"Subject: half a mail\r\n").await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        c.expect("421 4.4.2").await;
        assert!(c.mails().is_empty());
    }

    #[tokio::test]
    async fn shutdown_closes_a_waiting_session_with_421() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("HELO client.example", "250").await;
        let _ = c.shutdown.send(true);
        c.expect("421 4.3.2 Shutting down").await;
        assert!(c.closed().await);
    }

    #[test]
    fn the_engine_answers_random_bytes_in_every_state_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let rules = rules();
        let telemetry = Telemetry::default();
        let envelope = Mutex::new(Envelope::default());
        let checks = Checks {
            rules: &rules,
            envelope: &envelope,
            telemetry: &telemetry,
        };
        let mut session = SessionBuilder::new("cockpit.test").build([192, 0, 2, 7].into(), checks);
        let prefixes: [&[u8]; 8] = [
            b"",
            b"HELO ",
            b"EHLO ",
            b"MAIL FROM:<",
            b"RCPT TO:<",
            b"AUTH PLAIN ",
            b"AUTH ",
            b"VRFY ",
        ];
        let states: [&[&[u8]]; 3] = [
            &[],
            &[b"EHLO client.example\r\n"],
            &[
                b"EHLO client.example\r\n",
                b"MAIL FROM:<a@example.org>\r\n",
                b"RCPT TO:<ops@cockpit.test>\r\n",
            ],
        ];
        for round in 0..3000 {
            for line in states[round % states.len()] {
                session.process(line);
            }
            let mut line = prefixes[rng.random_range(0..prefixes.len())].to_vec();
            for _ in 0..rng.random_range(0..40) {
                line.push(rng.random());
            }
            line.extend_from_slice(b"\r\n");
            let response = session.process(&line);
            assert!(
                (200..600).contains(&response.code),
                "{line:?} got {}",
                response.code
            );
            session.process(b"RSET\r\n");
        }
    }

    #[test]
    fn domains_match_case_insensitively_and_need_an_at() {
        let rules = rules();
        assert!(rules.accepts("ops@cockpit.test"));
        assert!(rules.accepts("ops@Cockpit.Test."));
        assert!(!rules.accepts("ops@cockpit.test.evil.org"));
        assert!(!rules.accepts("ops@evil.org@x"));
        assert!(!rules.accepts("postmaster"));
    }
}
