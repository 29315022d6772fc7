//! The audit trail's vocabulary and its one writer: who ([`Door`] and identity) did what
//! ([`Action`]) to what, and how it went ([`Outcome`]). No secret, token or message body is ever
//! passed here: targets are names (a repository, `repo/blueprint.yaml`, a token id).

use super::access::Action;
use crate::store::{AuditRecord, Store};

/// Longest target or message kept (longer ones are cut at a character boundary).
const MAX_FIELD: usize = 300;

/// Where a command came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The REST API.
    Rest,
    /// The Telegram bot.
    Telegram,
    /// The SMTP receiver.
    Mail,
    /// The command line.
    Cli,
    /// The web console (`/console`).
    Console,
}

impl Door {
    /// `rest`, `telegram`, `mail`, `cli`, `console`.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Rest => "rest",
            Door::Telegram => "telegram",
            Door::Mail => "mail",
            Door::Cli => "cli",
            Door::Console => "console",
        }
    }
}

/// How a command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by the role mapping (or held for approval): why.
    Denied(String),
    /// Tried and failed: why.
    Error(String),
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_FIELD {
        return text.to_string();
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The row for one command, stamped now.
pub fn record(
    door: Door,
    identity: &str,
    action: Action,
    target: &str,
    outcome: &Outcome,
) -> AuditRecord {
    let (outcome, message) = match outcome {
        Outcome::Ok => ("ok", ""),
        Outcome::Denied(why) => ("denied", why.as_str()),
        Outcome::Error(why) => ("error", why.as_str()),
    };
    AuditRecord {
        at_ms: crate::clock::now_ms(),
        door: door.as_str().to_string(),
        identity: cut(identity),
        action: action.as_str().to_string(),
        target: cut(target),
        outcome: outcome.to_string(),
        message: cut(message),
    }
}

/// A command's audit entry as the door that took it fills it in, carried into the core with the
/// command (`client::AysClient`) so that the store writes its `ok` row in the transaction of the
/// change. Plain data: the core learns a door's name, nothing of the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Where the command came in.
    pub door: Door,
    /// Who: `github:alice`, `mail:ops@example.com`, `cli:root`.
    pub identity: String,
    /// What.
    pub action: Action,
    /// On what: `demo`, `demo/web.yaml`, `demo/node/a`, `demo/<run key>`.
    pub target: String,
}

impl Audit {
    /// An entry.
    pub fn new(door: Door, identity: &str, action: Action, target: &str) -> Audit {
        Audit {
            door,
            identity: identity.to_string(),
            action,
            target: target.to_string(),
        }
    }

    /// Its row with `outcome`, stamped now.
    pub fn row(&self, outcome: &Outcome) -> AuditRecord {
        record(
            self.door,
            &self.identity,
            self.action,
            &self.target,
            outcome,
        )
    }
}

/// Writes one row; a failure is logged (the command's own outcome stands).
pub fn write(store: &Store, record: &AuditRecord) {
    if let Err(err) = store.insert_audit(record) {
        tracing::error!(%err, action = %record.action, "cannot write the audit trail");
    }
}
