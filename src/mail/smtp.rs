//! The SMTP protocol without IO: one command line in, one reply out, and the envelope built on
//! the way. `smtp-proto` (Stalwart's parser) reads the command and its parameters; this module
//! keeps the state (greeting, transaction) and applies our rules, with an RFC 3463 enhanced
//! status code on every reply.
//!
//! What the receiver offers in `EHLO`: `PIPELINING`, `SIZE <max_message_bytes>`, `8BITMIME`,
//! `ENHANCEDSTATUSCODES`, `SMTPUTF8`. The null reverse-path `<>` is taken (bounces), DSN
//! parameters (`RET`, `ENVID`, `NOTIFY`, `ORCPT`) are accepted and ignored, other parameters
//! get `555`; `RCPT TO:<Postmaster>` is always taken (RFC 5321 §4.5.1).

use std::time::Duration;

use super::budget::Backlog;
use crate::config::MailConfig;
use crate::telemetry::Count;
use std::borrow::Cow;

use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};

/// MAIL flags we accept; any other parsed flag is an extension we did not offer (555).
const MAIL_FLAGS: u64 = smtp_proto::MAIL_BODY_7BIT
    | smtp_proto::MAIL_BODY_8BITMIME
    | smtp_proto::MAIL_SMTPUTF8
    | smtp_proto::MAIL_RET_FULL
    | smtp_proto::MAIL_RET_HDRS;

/// RCPT flags we accept (DSN's `NOTIFY`); any other is an extension we did not offer (555).
const RCPT_FLAGS: u64 = smtp_proto::RCPT_NOTIFY_SUCCESS
    | smtp_proto::RCPT_NOTIFY_FAILURE
    | smtp_proto::RCPT_NOTIFY_DELAY
    | smtp_proto::RCPT_NOTIFY_NEVER;

/// The text of the `452` while too much work waits for the engine.
const BACKLOG_FULL: &str = "4.3.1 Too much mail waiting to be processed, try again later";

/// One reply, ready to send, and the counter it bumps when it refuses something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code (`250`, `550`, ...).
    pub code: u16,
    /// The whole reply, CRLF-terminated (several lines for `EHLO`).
    pub text: String,
    /// The refusal counter, if this refuses something worth counting.
    pub counter: Option<Count>,
}

impl Reply {
    fn new(code: u16, text: impl AsRef<str>) -> Reply {
        Reply {
            code,
            text: format!("{code} {}\r\n", text.as_ref()),
            counter: None,
        }
    }

    fn counted(mut self, counter: Count) -> Reply {
        self.counter = Some(counter);
        self
    }

    /// True for a permanent refusal (5xx); the driver disconnects after too many.
    pub fn is_error(&self) -> bool {
        self.code >= 500
    }
}

/// What the driver does after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// The client may send the message: the driver checks it has room, replies `354` (or
    /// refuses) and reads the data itself.
    Data,
    /// Send the reply and close the connection.
    Close(Reply),
}

/// The envelope of a transaction, handed to the driver with the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The HELO/EHLO name.
    pub helo: String,
    /// The reverse-path; empty for the null reverse-path `<>` (a bounce).
    pub from: String,
    /// The accepted forward-paths.
    pub to: Vec<String>,
    /// The client greeted with `EHLO` (`ESMTP` in the trace header).
    pub esmtp: bool,
    /// The client asked for `SMTPUTF8` (`UTF8ESMTP` in the trace header).
    pub smtputf8: bool,
}

/// The state of one SMTP conversation.
#[derive(Debug)]
pub struct Protocol<'a> {
    /// The limits and our name.
    rules: &'a Rules,
    /// The name the client gave, once it greeted.
    helo: Option<String>,
    /// The client greeted with `EHLO`.
    esmtp: bool,
    /// The transaction in progress: its reverse-path, once `MAIL` was accepted.
    from: Option<String>,
    /// `MAIL` carried `SMTPUTF8`.
    smtputf8: bool,
    /// The accepted recipients of the transaction.
    to: Vec<String>,
}

impl<'a> Protocol<'a> {
    /// A new conversation under `rules`.
    pub fn new(rules: &'a Rules) -> Protocol<'a> {
        Protocol {
            rules,
            helo: None,
            esmtp: false,
            from: None,
            smtputf8: false,
            to: Vec::new(),
        }
    }

    /// The greeting sent when the client connects.
    pub fn greeting(&self) -> String {
        format!("220 {} ESMTP Cockpit\r\n", self.rules.hostname)
    }

    /// Ends the transaction: the envelope of the message just received (the driver calls this
    /// after reading `DATA`, whatever became of the message).
    pub fn take_envelope(&mut self) -> Envelope {
        let envelope = Envelope {
            helo: self.helo.clone().unwrap_or_default(),
            from: self.from.take().unwrap_or_default(),
            to: std::mem::take(&mut self.to),
            esmtp: self.esmtp,
            smtputf8: self.smtputf8,
        };
        self.smtputf8 = false;
        envelope
    }

    fn reset(&mut self) {
        self.from = None;
        self.smtputf8 = false;
        self.to.clear();
    }

    /// Answers one command line (ending in LF).
    pub fn command(&mut self, line: &[u8]) -> Step {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(err) => return Step::Reply(parse_error(err)),
        };
        match request {
            Request::Ehlo { host } => {
                self.reset();
                self.helo = Some(printable(&host));
                self.esmtp = true;
                Step::Reply(Reply {
                    code: 250,
                    text: format!(
                        "250-{} greets {}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
                         250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
                        self.rules.hostname,
                        printable(&host),
                        self.rules.max_message_bytes
                    ),
                    counter: None,
                })
            }
            Request::Helo { host } => {
                self.reset();
                self.helo = Some(printable(&host));
                self.esmtp = false;
                Step::Reply(Reply::new(250, &self.rules.hostname))
            }
            Request::Mail { from } => Step::Reply(self.mail(&from)),
            Request::Rcpt { to } => Step::Reply(self.rcpt(&to, line)),
            Request::Data => {
                if self.from.is_none() {
                    Step::Reply(Reply::new(503, "5.5.1 Error: need MAIL command"))
                } else if self.to.is_empty() {
                    Step::Reply(Reply::new(554, "5.5.1 Error: no valid recipients"))
                } else if self.rules.backlog.full() {
                    // The recipients were taken before the backlog filled; the client retries
                    // the whole transaction later.
                    self.reset();
                    Step::Reply(Reply::new(452, BACKLOG_FULL).counted(Count::MailRefusedBusy))
                } else {
                    Step::Data
                }
            }
            Request::Rset => {
                self.reset();
                Step::Reply(Reply::new(250, "2.0.0 OK"))
            }
            Request::Noop { .. } => Step::Reply(Reply::new(250, "2.0.0 OK")),
            Request::Quit => Step::Close(Reply::new(221, "2.0.0 Bye")),
            Request::Vrfy { .. } => Step::Reply(Reply::new(
                252,
                "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => Step::Reply(Reply::new(
                214,
                "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY",
            )),
            Request::StartTls
            | Request::Auth { .. }
            | Request::Bdat { .. }
            | Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => Step::Reply(
                Reply::new(502, "5.5.1 Error: command not implemented")
                    .counted(Count::MailRefusedSyntax),
            ),
        }
    }

    fn mail(&mut self, from: &MailFrom<Cow<'_, str>>) -> Reply {
        if self.helo.is_none() {
            return Reply::new(503, "5.5.1 Error: send HELO/EHLO first");
        }
        if self.from.is_some() {
            return Reply::new(503, "5.5.1 Error: nested MAIL command");
        }
        if let Some(unoffered) = unoffered_mail_parameter(from) {
            return Reply::new(555, format!("5.5.4 Unsupported option: {unoffered}"))
                .counted(Count::MailRefusedSyntax);
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Reply::new(553, "5.6.7 Must declare SMTPUTF8 to send UTF8 address")
                .counted(Count::MailRefusedSyntax);
        }
        if from.size as u64 > self.rules.max_message_bytes {
            return Reply::new(552, "5.3.4 Message size exceeds fixed maximum message size")
                .counted(Count::MailRefusedTooLarge);
        }
        self.from = Some(from.address.to_string());
        self.smtputf8 = smtputf8;
        self.to.clear();
        Reply::new(250, "2.1.0 OK")
    }

    fn rcpt(&mut self, to: &RcptTo<Cow<'_, str>>, line: &[u8]) -> Reply {
        if self.from.is_none() {
            return Reply::new(503, "5.5.1 Error: need MAIL command");
        }
        if to.flags & !RCPT_FLAGS != 0 {
            return Reply::new(555, "5.5.4 Unsupported option").counted(Count::MailRefusedSyntax);
        }
        // The parser gives `<Postmaster>` and `<>` alike as an empty address.
        let address = if to.address.is_empty() {
            if contains(line, b"<>") {
                return Reply::new(501, "5.1.3 Bad recipient address syntax")
                    .counted(Count::MailRefusedSyntax);
            }
            "Postmaster".to_string()
        } else {
            to.address.to_string()
        };
        if !self.smtputf8 && !address.is_ascii() {
            return Reply::new(553, "5.6.7 Must declare SMTPUTF8 to send UTF8 address")
                .counted(Count::MailRefusedSyntax);
        }
        if self.to.len() >= self.rules.max_recipients as usize {
            return Reply::new(452, "4.5.3 Error: too many recipients")
                .counted(Count::MailRefusedTooManyRecipients);
        }
        if !is_postmaster(&address) && !self.rules.accepts(&address) {
            return Reply::new(550, "5.7.1 Recipient domain not served here (no relaying)")
                .counted(Count::MailRefusedRecipient);
        }
        if self.rules.backlog.full() {
            return Reply::new(452, BACKLOG_FULL).counted(Count::MailRefusedBusy);
        }
        self.to.push(address);
        Reply::new(250, "2.1.5 OK")
    }
}

/// The first parameter of `MAIL` that we did not offer in `EHLO`, by name.
fn unoffered_mail_parameter(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
        return Some("BODY=BINARYMIME");
    }
    if from.flags & smtp_proto::MAIL_REQUIRETLS != 0 {
        return Some("REQUIRETLS");
    }
    if from.flags & !MAIL_FLAGS != 0 {
        return Some("deliver-by or conneg");
    }
    [
        (from.trans_id.is_some(), "TRANSID"),
        (from.by != 0, "BY"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
        (from.auth.is_some(), "AUTH"),
        (from.hold_for != 0, "HOLDFOR"),
        (from.hold_until != 0, "HOLDUNTIL"),
        (from.mt_priority != 0, "MT-PRIORITY"),
    ]
    .into_iter()
    .find_map(|(present, name)| present.then_some(name))
}

/// `Postmaster` with no domain, any case (RFC 5321 §4.5.1).
fn is_postmaster(address: &str) -> bool {
    address.eq_ignore_ascii_case("postmaster")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the client sent, safe to echo: printable ASCII only, at most 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// The reply to a line the parser refused.
fn parse_error(err: ParseError) -> Reply {
    match err {
        ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } => {
            Reply::new(500, "5.5.2 Error: command not recognized")
        }
        ParseError::InvalidSenderAddress => Reply::new(501, "5.1.7 Bad sender address syntax"),
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3 Bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => Reply::new(501, format!("5.5.4 Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            Reply::new(501, format!("5.5.4 Invalid {param} parameter"))
        }
        ParseError::UnsupportedParameter { param } => Reply::new(
            555,
            format!("5.5.4 Unsupported option: {}", printable(&param)),
        ),
        ParseError::ResponseTooLong | ParseError::InvalidResponse { .. } => {
            Reply::new(500, "5.5.2 Error: command not recognized")
        }
    }
    .counted(Count::MailRefusedSyntax)
}
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
    /// How long a whole `DATA` transfer may take.
    pub data_timeout: Duration,
    /// Whether too much work waits for the engine (then `RCPT` and `DATA` get `452`).
    pub backlog: Backlog,
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
            data_timeout: Duration::from_secs(config.data_timeout_secs),
            backlog: Backlog::new(config.max_queued_runs),
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
