//! The SMTP door: only this module knows SMTP and MIME.
//!
//! - [`smtp`]: the protocol without IO (`smtp-proto` parses each command; the state, the rules
//!   and the replies with their enhanced status codes are ours).
//! - [`session`]: one SMTP conversation over any async stream: reads the lines (bounded), asks
//!   [`smtp`] for the replies, reads `DATA` itself (CRLF-only ends, size and memory bounds, a
//!   deadline) and replies `250` only once the mail was handed to a [`Deliver`] that recorded it
//!   durably.
//! - [`budget`]: the memory budget for messages in flight and each peer's share of it.
//! - [`listener`]: the tokio accept loop: one task per connection, at most `max_connections`
//!   (and `max_connections_per_peer` from one address), the longest-idle client cut first when
//!   full, idle timeouts, clean shutdown.
//! - [`message`]: MIME parsing (`mail-parser`) into the `email` event payload; each mail one
//!   file under the data dir, its attachments (capped in number) saved with safe names.
//! - [`retention`]: removes a mail's files `keep_days` after its event was processed.
//!
//! The `MailReceiver` actor (`actors::mail_receiver`) binds the port and owns the listener.

pub mod budget;
#[doc(hidden)]
pub mod fuzzing;
pub mod listener;
pub mod message;
pub mod receiver;
pub mod retention;
pub mod session;
pub mod smtp;
pub mod standby;

use std::net::IpAddr;

use futures::future::BoxFuture;

/// A mail as the client handed it over: the envelope and the raw message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The client's address.
    pub peer: IpAddr,
    /// The name the client gave in HELO/EHLO.
    pub helo: String,
    /// `MAIL FROM` (the envelope sender).
    pub from: String,
    /// The accepted `RCPT TO` addresses (the envelope recipients).
    pub to: Vec<String>,
    /// The message as sent, dot-unstuffed, lines ending in CRLF, after our `Return-Path:` and
    /// `Received:` trace headers.
    pub data: Vec<u8>,
}

/// Why a mail could not be recorded; the client gets a 4xx and retries later.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Writing the attachments or the event failed.
    #[error("cannot record the mail: {0}")]
    Record(String),
}

/// Where accepted mails go. `deliver` must return only once the mail is durably recorded: its
/// `Ok` is what turns into the `250` reply to `DATA`.
pub trait Deliver: Send + Sync + 'static {
    /// Records the mail; returns the id it was recorded under.
    fn deliver(&self, mail: ReceivedMail) -> BoxFuture<'static, Result<i64, DeliverError>>;
}
