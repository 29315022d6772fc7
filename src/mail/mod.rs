//! The SMTP door: only this module knows SMTP and MIME.
//!
//! - [`session`]: one SMTP conversation over any async stream. The `mailin` engine (`Session`,
//!   `Handler`) answers the commands; this module reads the lines (bounded), applies the
//!   recipient and size limits, reads `DATA` itself and replies `250` only once the mail was
//!   handed to a [`Deliver`] that recorded it durably.
//! - [`listener`]: the tokio accept loop: one task per connection, at most `max_connections`,
//!   the longest-idle client cut first when full, idle timeouts, clean shutdown.
//! - [`message`]: MIME parsing (`mail-parser`) into the `email` event payload, attachments saved
//!   under the data dir with safe names.
//!
//! - [`receiver`]: the `MailReceiver` actor: owns the accept loop on the bound socket and hands
//!   recorded mails to the AYS engine through its client.

pub mod listener;
pub mod message;
pub mod receiver;
pub mod session;

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
    /// The message as sent, dot-unstuffed, lines ending in CRLF.
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
