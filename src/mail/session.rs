//! One SMTP conversation over any async byte stream (a TCP connection, or an in-memory pipe in
//! the tests).
//!
//! [`Protocol`] (no IO) answers the commands and builds the envelope. The message itself is
//! read here: lines are read with a length bound, the message ends only on `<CRLF>.<CRLF>` (a
//! bare LF gets `550 5.5.2` and the connection is closed, as Postfix's
//! `smtpd_forbid_bare_newline`, so no mail can smuggle a second one past a relay), the size
//! limit is enforced while reading (552, the rest is discarded), every byte kept is taken from
//! the receiver's memory [`Budget`] (and from the client's share of it) first, the whole transfer
//! has a deadline, and the `250` is written only after [`Deliver::deliver`] returned, i.e. after
//! the mail is durably recorded. The stored message starts with our `Return-Path:` and
//! `Received:` trace headers (RFC 5321 §4.4).
//!
//! Every wait for the client is bounded by the idle timeout and ends early when the listener
//! cuts this connection (full, and this one idle the longest) or shuts down.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::budget::{Budget, Held};
use super::smtp::{Envelope, Protocol, Step};
use super::{Deliver, ReceivedMail};
use crate::telemetry::Telemetry;

/// The longest command line read; RFC 5321 allows 512 octets, clients stay far below this.
const MAX_COMMAND_LINE: usize = 2048;
/// The longest piece of a message line read at once (longer lines are read in pieces).
const MAX_DATA_PIECE: usize = 64 * 1024;
/// After this many refused commands the client is disconnected (as Postfix's hard error limit).
pub(crate) const MAX_ERRORS: u32 = 20;

pub use super::smtp::Rules;

/// Bytes of messages held in memory at once, across all sessions, at the least: with 1 024
/// sessions of 10 MiB each a receiver could otherwise be made to hold 10 GiB.
const MIN_BUFFER_BUDGET: u64 = 256 << 20;
/// One peer may hold this fraction of the budget (but always one maximal message).
const PEER_SHARE_DIVISOR: u64 = 8;

/// The memory budget of a receiver with these rules: at least two messages of the largest size;
/// one peer may hold an eighth of it, or one maximal message if that is more.
pub fn buffer_budget(rules: &Rules) -> Arc<Budget> {
    let limit = MIN_BUFFER_BUDGET.max(rules.max_message_bytes.saturating_mul(2));
    let share = (limit / PEER_SHARE_DIVISOR).max(rules.max_message_bytes);
    Budget::new(limit, share)
}

/// What every session of one receiver shares.
pub struct Door {
    /// The limits.
    pub rules: Rules,
    /// Bytes of messages in memory (being received or recorded), across all sessions and per
    /// peer; a message that does not fit gets `452` and is discarded.
    pub buffered: Arc<Budget>,
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
    /// The `DATA` transfer took longer than its deadline.
    DataTimeout,
    /// Cut by the listener to make room.
    Cut,
    /// The receiver shuts down.
    Shutdown,
}

impl Stop {
    fn reply(self) -> &'static str {
        match self {
            Stop::Idle => "421 4.4.2 Idle timeout, closing connection\r\n",
            Stop::DataTimeout => "421 4.4.2 Message transfer took too long, closing connection\r\n",
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
    /// The message (trace headers first), dot-unstuffed, with its share of the memory budget.
    Complete(Vec<u8>, Held),
    /// Larger than the limit; it was read to its end and discarded.
    TooBig,
    /// The messages being received or recorded already fill the memory budget (or this
    /// client's share of it); this one was read to its end and discarded, the client may retry.
    Busy,
    /// A line ended in a bare LF: refused, and the connection is closed.
    BareLf,
    /// The client closed the connection.
    Eof,
    /// The wait ended.
    Stop(Stop),
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
    /// Reads up to `max` bytes ending in LF into `buf`, waiting at most the idle timeout and
    /// never past `deadline`.
    async fn read_line(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        deadline: Option<Instant>,
    ) -> io::Result<Input> {
        buf.clear();
        self.slot.set_idle(true);
        let shutdown = &mut self.shutdown;
        let mut limited = (&mut self.reader).take(max as u64);
        let read = limited.read_until(b'\n', buf);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let outcome = tokio::select! {
            read = tokio::time::timeout(self.idle_timeout, read) => match read {
                Err(_) => Ok(Input::Stop(Stop::Idle)),
                Ok(Err(err)) => Err(err),
                Ok(Ok(0)) => Ok(Input::Eof),
                Ok(Ok(_)) if buf.ends_with(b"\n") => Ok(Input::Line),
                Ok(Ok(n)) if n >= max => Ok(Input::TooLong),
                Ok(Ok(_)) => Ok(Input::Eof),
            },
            () = tokio::time::sleep_until(deadline.unwrap_or(far)) => Ok(Input::Stop(Stop::DataTimeout)),
            () = self.slot.cut.notified() => Ok(Input::Stop(Stop::Cut)),
            _ = shutdown.wait_for(|stop| *stop) => Ok(Input::Stop(Stop::Shutdown)),
        };
        self.slot.set_idle(false);
        outcome
    }

    /// Reads a message up to its `<CRLF>.<CRLF>`: dot-unstuffed, after `trace`, at most `max`
    /// bytes kept, each kept byte taken from `held` first, all before `deadline`.
    async fn read_data(
        &mut self,
        trace: String,
        max: u64,
        mut held: Held,
        deadline: Instant,
    ) -> io::Result<Data> {
        let mut body = Vec::new();
        let mut over_budget = !held.take(trace.len() as u64);
        if !over_budget {
            body.extend_from_slice(trace.as_bytes());
        }
        let mut size: u64 = 0;
        let mut at_line_start = true;
        let mut piece = Vec::new();
        // A piece ending in CR whose LF comes with the next piece is still a CRLF.
        let mut ended_in_cr = false;
        loop {
            match self
                .read_line(&mut piece, MAX_DATA_PIECE, Some(deadline))
                .await?
            {
                Input::Line | Input::TooLong => {}
                Input::Eof => return Ok(Data::Eof),
                Input::Stop(stop) => return Ok(Data::Stop(stop)),
            }
            if piece.ends_with(b"\n") {
                let crlf = piece.ends_with(b"\r\n") || (piece.len() == 1 && ended_in_cr);
                if !crlf {
                    return Ok(Data::BareLf);
                }
            }
            ended_in_cr = piece.ends_with(b"\r");
            let mut bytes = &piece[..];
            if at_line_start {
                if bytes == b".\r\n" {
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
                held.release();
                continue;
            }
            if !held.take(bytes.len() as u64) {
                over_budget = true;
                body = Vec::new();
                held.release();
                continue;
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
    let mut protocol = Protocol::new(&door.rules);
    conn.say(protocol.greeting().as_bytes()).await?;
    let mut errors = 0;
    let mut line = Vec::new();
    loop {
        match conn.read_line(&mut line, MAX_COMMAND_LINE, None).await? {
            Input::Line => {}
            Input::Eof => return Ok(()),
            Input::TooLong => {
                door.telemetry
                    .count(crate::telemetry::Count::MailRefusedSyntax, 1);
                return conn.say(b"500 5.5.2 Line too long, closing\r\n").await;
            }
            Input::Stop(stop) => return conn.say(stop.reply().as_bytes()).await,
        }
        let reply = match protocol.command(&line) {
            Step::Data => {
                if door.buffered.peer_full(peer, door.rules.max_message_bytes) {
                    door.telemetry
                        .count(crate::telemetry::Count::MailRefusedBusy, 1);
                    warn!(%peer, "DATA deferred: this client holds its whole share of the memory budget");
                    conn.say(b"452 4.3.1 Insufficient system storage, try again later\r\n")
                        .await?;
                    continue;
                }
                conn.say(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let envelope = protocol.take_envelope();
                let trace =
                    trace_headers(&envelope, peer, &door.rules.hostname, crate::clock::now());
                let deadline = Instant::now() + door.rules.data_timeout;
                let held = door.buffered.hold(peer);
                let data = conn
                    .read_data(trace, door.rules.max_message_bytes, held, deadline)
                    .await?;
                match data {
                    Data::Complete(data, held) => {
                        let mail = ReceivedMail {
                            peer,
                            helo: envelope.helo,
                            from: envelope.from,
                            to: envelope.to,
                            data,
                        };
                        let reply = accept(door, mail).await;
                        // Recorded (or refused): its memory is free again.
                        drop(held);
                        conn.say(reply.as_bytes()).await?;
                    }
                    Data::Busy => {
                        door.telemetry
                            .count(crate::telemetry::Count::MailRefusedBusy, 1);
                        warn!(%peer, "mail deferred: the receiver's memory budget is full");
                        conn.say(b"452 4.3.1 Insufficient system storage, try again later\r\n")
                            .await?;
                    }
                    Data::TooBig => {
                        door.telemetry
                            .count(crate::telemetry::Count::MailRefusedTooLarge, 1);
                        info!(%peer, limit = door.rules.max_message_bytes, "mail refused: too large");
                        conn.say(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
                            .await?;
                    }
                    Data::BareLf => {
                        door.telemetry
                            .count(crate::telemetry::Count::MailRefusedBareLf, 1);
                        info!(%peer, "mail refused: bare LF in the message");
                        return conn.say(b"550 5.5.2 Error: bare <LF> received\r\n").await;
                    }
                    Data::Eof => return Ok(()),
                    Data::Stop(stop) => {
                        if stop == Stop::DataTimeout {
                            door.telemetry
                                .count(crate::telemetry::Count::MailRefusedDataTimeout, 1);
                        }
                        return conn.say(stop.reply().as_bytes()).await;
                    }
                }
                continue;
            }
            Step::Close(reply) => return conn.say(reply.text.as_bytes()).await,
            Step::Reply(reply) => reply,
        };
        if let Some(counter) = reply.counter {
            door.telemetry.count(counter, 1);
        }
        if reply.is_error() {
            errors += 1;
            if errors >= MAX_ERRORS {
                conn.say(reply.text.as_bytes()).await?;
                return conn
                    .say(b"421 4.7.0 Too many errors, closing connection\r\n")
                    .await;
            }
        }
        conn.say(reply.text.as_bytes()).await?;
    }
}

/// The `Return-Path:` and `Received:` headers put in front of a message (RFC 5321 §4.4).
pub fn trace_headers(envelope: &Envelope, peer: IpAddr, hostname: &str, now: SystemTime) -> String {
    let with = match (envelope.smtputf8, envelope.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let helo = if envelope.helo.is_empty() {
        "unknown"
    } else {
        &envelope.helo
    };
    let mut received =
        format!("Received: from {helo} ([{peer}])\r\n\tby {hostname} (Cockpit) with {with}");
    if let [only] = envelope.to.as_slice() {
        received.push_str(&format!("\r\n\tfor <{}>", only.replace(['\r', '\n'], "")));
    }
    let from = envelope.from.replace(['\r', '\n'], "");
    format!(
        "Return-Path: <{from}>\r\n{received}; {}\r\n",
        rfc5322_date(now)
    )
}

/// `Fri, 27 Nov 2026 11:08:40 +0000`.
pub fn rfc5322_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(month - 1).clamp(0, 11) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Records a mail; the reply to `DATA`: 250 only once it is recorded, else 451 (retry later).
async fn accept(door: &Door, mail: ReceivedMail) -> String {
    let (peer, bytes, recipients) = (mail.peer, mail.data.len(), mail.to.len());
    match door.deliver.deliver(mail).await {
        Ok(id) => {
            door.telemetry
                .count(crate::telemetry::Count::MailAccepted, 1);
            info!(%peer, event = id, bytes, recipients, "mail accepted");
            format!("250 2.0.0 OK: queued as {id}\r\n")
        }
        Err(err) => {
            door.telemetry
                .count(crate::telemetry::Count::MailRecordFailures, 1);
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
    use crate::mail::smtp::Step;
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

    /// The message after our `Return-Path:` and `Received:` headers.
    fn without_trace(data: &[u8]) -> &[u8] {
        let mut rest = data;
        while rest.starts_with(b"Return-Path:")
            || rest.starts_with(b"Received:")
            || rest.starts_with(b"\t")
        {
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
        }
        rest
    }

    fn rules() -> Rules {
        Rules {
            hostname: "cockpit.test".into(),
            domains: vec!["cockpit.test".into()],
            max_message_bytes: 1024,
            max_recipients: 2,
            idle_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(120),
            backlog: Default::default(),
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
        async fn connect_with_budget(rules: Rules, recorder: Recorder, budget: u64) -> Client {
            let recorder = Arc::new(recorder);
            let door = Arc::new(Door {
                buffered: Budget::new(budget, budget),
                rules,
                deliver: recorder.clone(),
                telemetry: Arc::new(Telemetry::default()),
            });
            Client::connect_to(door, recorder, [192, 0, 2, 7].into()).await
        }

        /// Starts a session from `peer` on a shared door whose deliverer is `recorder`.
        async fn connect_to(door: Arc<Door>, recorder: Arc<Recorder>, peer: IpAddr) -> Client {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            let (shutdown, signal) = watch::channel(false);
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
            without_trace(&mails[0].data),
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
        c.cmd("MAIL FROM:alice-without-brackets", "501 5.5.4").await;
        c.cmd("STARTTLS", "502 5.5.1").await;
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "502 5.5.1").await;
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
    async fn too_much_waiting_work_defers_new_recipients_and_data_with_452_until_it_drains() {
        let backlog = crate::mail::budget::Backlog::new(10);
        let busy = Rules {
            backlog: backlog.clone(),
            ..rules()
        };
        let mut c = Client::connect(busy, Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        backlog.update(10);
        c.cmd(
            "RCPT TO:<two@cockpit.test>",
            "452 4.3.1 Too much mail waiting",
        )
        .await;
        // Not a reason to relay: other domains still get 550.
        c.cmd("RCPT TO:<x@elsewhere.org>", "550 5.7.1").await;
        // The recipient taken before: the transaction is deferred as a whole at DATA.
        c.cmd("DATA", "452 4.3.1").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "503 5.5.1").await;
        backlog.update(9);
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(b"Subject: later\r\n\r\nhi\r\n").await;
        c.cmd(".", "250").await;
        assert_eq!(c.mails().len(), 1, "only the mail sent after it drained");
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
    fn the_protocol_answers_random_bytes_in_every_state_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let rules = rules();
        let mut protocol = Protocol::new(&rules);
        let prefixes: [&[u8]; 8] = [
            b"",
            b"HELO ",
            b"EHLO ",
            b"MAIL FROM:<",
            b"RCPT TO:<",
            b"AUTH PLAIN ",
            b"MAIL FROM:<> SIZE=",
            b"RCPT TO:<a@cockpit.test> NOTIFY=",
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
                protocol.command(line);
            }
            let mut line = prefixes[rng.random_range(0..prefixes.len())].to_vec();
            for _ in 0..rng.random_range(0..40) {
                line.push(rng.random());
            }
            line.extend_from_slice(b"\r\n");
            match protocol.command(&line) {
                Step::Reply(reply) | Step::Close(reply) => {
                    assert!((200..600).contains(&reply.code), "{line:?} got {reply:?}");
                    assert!(reply.text.ends_with("\r\n"));
                }
                Step::Data => {}
            }
            protocol.command(b"RSET\r\n");
        }
    }

    /// Waits (without time passing) until `done` holds.
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never settled");
    }

    #[tokio::test]
    async fn ehlo_names_us_and_offers_the_extensions_an_mx_needs() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.send(b"EHLO client.example\r\n").await;
        assert_eq!(
            c.reply().await,
            "250-cockpit.test greets client.example\r\n250-PIPELINING\r\n250-SIZE 1024\r\n\
             250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
        );
        c.cmd("HELO client.example", "250 cockpit.test").await;
    }

    #[tokio::test]
    async fn the_null_reverse_path_is_taken_and_the_event_has_an_empty_sender() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO mailer-daemon.example", "250").await;
        c.cmd("MAIL FROM:<>", "250 2.1.0").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250 2.1.5").await;
        c.cmd("DATA", "354").await;
        c.cmd(
            "Subject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n.",
            "250 2.0.0",
        )
        .await;
        let mails = c.mails();
        assert_eq!(mails[0].from, "");
        assert!(mails[0].data.starts_with(b"Return-Path: <>\r\n"));
    }

    #[tokio::test]
    async fn size_is_checked_at_mail_and_unknown_parameters_get_555() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<a@example.org> SIZE=2000", "552 5.3.4")
            .await;
        c.cmd("MAIL FROM:<a@example.org> FOO=bar", "555 5.5.4")
            .await;
        c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME", "555 5.5.4")
            .await;
        c.cmd("MAIL FROM:<a@example.org> SIZE=x", "501 5.5.4").await;
        c.cmd(
            "MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159",
            "250 2.1.0",
        )
        .await;
        c.cmd("RCPT TO:<ops@cockpit.test> XFOO", "555 5.5.4").await;
        c.cmd(
            "RCPT TO:<ops@cockpit.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops@cockpit.test",
            "250 2.1.5",
        )
        .await;
        c.cmd("RCPT TO:<Postmaster>", "250 2.1.5").await;
        c.cmd("DATA", "354").await;
        c.cmd("Subject: x\r\n\r\nbody\r\n.", "250").await;
        assert_eq!(c.mails()[0].to, ["ops@cockpit.test", "Postmaster"]);
    }

    #[tokio::test]
    async fn postmaster_quoted_local_parts_and_utf8_addresses_are_taken_as_the_rfcs_say() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<\"john doe\"@example.org>", "250 2.1.0")
            .await;
        c.cmd("RCPT TO:<>", "501 5.1.3").await;
        c.cmd("RCPT TO:<postmaster>", "250 2.1.5").await;
        c.cmd("RCPT TO:<\"ops team\"@cockpit.test>", "250 2.1.5")
            .await;
        c.cmd("RCPT TO:<jos\u{e9}@cockpit.test>", "553 5.6.7").await;
        c.cmd("DATA", "354").await;
        c.cmd("Subject: x\r\n\r\nbody\r\n.", "250").await;
        c.cmd("MAIL FROM:<jos\u{e9}@example.org>", "553 5.6.7")
            .await;
        c.cmd("MAIL FROM:<jos\u{e9}@example.org> SMTPUTF8", "250 2.1.0")
            .await;
        c.cmd("RCPT TO:<d\u{e9}j\u{e0}@cockpit.test>", "250 2.1.5")
            .await;
        c.cmd("DATA", "354").await;
        c.cmd("Subject: caf\u{e9}\r\n\r\nbody\r\n.", "250").await;
        let mails = c.mails();
        assert_eq!(mails[0].from, "john doe@example.org");
        assert_eq!(mails[0].to, ["Postmaster", "ops team@cockpit.test"]);
        assert_eq!(mails[1].from, "jos\u{e9}@example.org");
        assert_eq!(mails[1].to, ["d\u{e9}j\u{e0}@cockpit.test"]);
        let data = String::from_utf8_lossy(&mails[1].data);
        assert!(data.contains("with UTF8SMTP"), "{data}");
    }

    #[tokio::test]
    async fn every_reply_but_the_greetings_carries_an_enhanced_status_code() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        let lines = [
            "MAIL FROM:<a@example.org>",
            "EHLO client.example",
            "RCPT TO:<a@cockpit.test>",
            "DATA",
            "MAIL FROM:<a@example.org>",
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<a@elsewhere.org>",
            "RCPT TO:<a@cockpit.test>",
            "RCPT TO:<b@cockpit.test>",
            "RCPT TO:<c@cockpit.test>",
            "RCPT TO:bad",
            "VRFY ops",
            "HELP",
            "NOOP",
            "RSET",
            "DATA",
            "BDAT 10 LAST",
            "STARTTLS",
            "BOGUS",
            "QUIT",
        ];
        for line in lines {
            c.send(format!("{line}\r\n").as_bytes()).await;
            let reply = c.reply().await;
            if line.starts_with("EHLO") {
                continue;
            }
            let last = reply.lines().last().unwrap_or_default();
            let status = last.get(4..).unwrap_or_default();
            let parts: Vec<&str> = status
                .split(' ')
                .next()
                .unwrap_or_default()
                .split('.')
                .collect();
            assert!(
                parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    && last.get(..1) == Some(parts[0]),
                "{line}: {reply:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_stored_message_starts_with_return_path_and_received() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.cmd("Subject: x\r\n\r\nbody\r\n.", "250").await;
        let data = String::from_utf8(c.mails()[0].data.clone()).expect("utf-8");
        assert!(
            data.starts_with(
                "Return-Path: <alice@example.org>\r\nReceived: from client.example ([192.0.2.7])\r\n\
                 \tby cockpit.test (Cockpit) with ESMTP\r\n\tfor <ops@cockpit.test>; "
            ),
            "{data}"
        );
        assert!(
            data.ends_with(" +0000\r\nSubject: x\r\n\r\nbody\r\n"),
            "{data}"
        );
    }

    #[test]
    fn trace_dates_are_rfc_5322_and_envelopes_cannot_add_headers() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            rfc5322_date(at(1_700_000_000)),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        let envelope = Envelope {
            helo: String::new(),
            from: "a@b\r\nX-Evil: 1".into(),
            to: vec!["x@y".into(), "z@y".into()],
            esmtp: false,
            smtputf8: false,
        };
        let trace = trace_headers(&envelope, [192, 0, 2, 1].into(), "mx.test", at(0));
        assert_eq!(
            trace,
            "Return-Path: <a@bX-Evil: 1>\r\nReceived: from unknown ([192.0.2.1])\r\n\
             \tby mx.test (Cockpit) with SMTP; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[tokio::test]
    async fn a_bare_lf_dot_lf_does_not_end_data_and_a_bare_lf_is_refused() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        // A smuggling attempt: `\n.\n` then a second, spoofed transaction.
        c.send(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<ceo@cockpit.test>\r\n")
            .await;
        c.expect("550 5.5.2 Error: bare <LF> received").await;
        assert!(c.closed().await);
        assert!(c.mails().is_empty());
    }

    #[tokio::test]
    async fn data_ends_on_crlf_dot_crlf_even_when_the_crlf_is_split_across_reads() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(b"Subject: one\r").await;
        tokio::task::yield_now().await;
        c.send(b"\n\r\nline\r\n.").await;
        tokio::task::yield_now().await;
        c.send(b"\r\n").await;
        c.expect("250").await;
        assert_eq!(
            without_trace(&c.mails()[0].data),
            b"Subject: one\r\n\r\nline\r\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_data_transfer_that_trickles_past_its_deadline_is_cut() {
        let mut c = Client::connect(rules(), Recorder::default()).await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<alice@example.org>", "250").await;
        c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        c.cmd("DATA", "354").await;
        // One line every 20 s never trips the 30 s idle timeout; the 120 s deadline does.
        for _ in 0..6 {
            c.send(b"X-Trickle: x\r\n").await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        c.expect("421 4.4.2 Message transfer took too long").await;
        assert!(c.closed().await);
        assert!(c.mails().is_empty());
    }

    #[tokio::test]
    async fn slow_senders_from_one_peer_hold_only_its_share_and_a_normal_sender_gets_through() {
        // 3 000 bytes in all, 2 000 per peer; messages up to 1 024 bytes.
        let recorder = Arc::new(Recorder::default());
        let door = Arc::new(Door {
            buffered: Budget::new(3000, 2000),
            rules: rules(),
            deliver: recorder.clone(),
            telemetry: Arc::new(Telemetry::default()),
        });
        let attacker: IpAddr = [198, 51, 100, 1].into();
        let mut slow = Vec::new();
        for n in 0..4 {
            let mut c = Client::connect_to(door.clone(), recorder.clone(), attacker).await;
            c.cmd("EHLO attacker.example", "250").await;
            c.cmd("MAIL FROM:<a@attacker.example>", "250").await;
            c.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
            if n < 2 {
                let before = door.buffered.used();
                c.cmd("DATA", "354").await;
                c.send(&[b'x'; 600]).await;
                c.send(b"\r\n").await;
                settle(|| door.buffered.used() > before + 600).await;
            } else {
                // It holds about 1 500 bytes: another message of up to 1 024 would not fit.
                assert!(door.buffered.used() > 1200, "{}", door.buffered.used());
                c.cmd("DATA", "452 4.3.1").await;
            }
            slow.push(c);
        }
        let mut normal =
            Client::connect_to(door.clone(), recorder.clone(), [192, 0, 2, 9].into()).await;
        normal.cmd("EHLO client.example", "250").await;
        normal.cmd("MAIL FROM:<alice@example.org>", "250").await;
        normal.cmd("RCPT TO:<ops@cockpit.test>", "250").await;
        normal.cmd("DATA", "354").await;
        normal.send(&[b'y'; 900]).await;
        normal.cmd("\r\n.", "250").await;
        assert_eq!(recorder.mails.lock().len(), 1);
        drop(slow);
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
