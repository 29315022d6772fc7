//! The Telegram door: only this module knows teloxide and Telegram.
//!
//! - [`commands`], [`render`]: command parsing and rendering (pure).
//! - [`telegram`]: the Bot API through teloxide: long polling, outbound sends with throttling and
//!   retries, downloads.
//! - [`supervisor`]: the `TelegramBot` actor: one chat session per chat, the poller, and the
//!   core's notices turned into chat messages.
//! - [`session`]: the `ChatSession` actor: one chat's commands, through the AYS client.

pub mod commands;
pub mod progress;
pub mod render;
pub mod session;
pub mod supervisor;
pub mod telegram;
pub mod views;

/// Who a logged-in Telegram user is to `[access]`: the identity and groups their login provider
/// gave at the last check; for a login recorded before identities existed (always an
/// ItsYou.online member of `[oauth].organization`), `itsyouonline:<username>` in that group.
pub fn principal(
    user: &crate::store::AuthorizedUser,
    config: &crate::config::Config,
) -> crate::auth::access::Principal {
    if !user.identity.is_empty() {
        // Who the login provider said they are, with the groups of its last check.
        return crate::auth::access::Principal::new(user.identity.clone(), user.groups.clone());
    }
    // A login recorded before identities existed: an ItsYou.online member of the organization.
    crate::auth::access::Principal::new(
        format!("itsyouonline:{}", user.username),
        vec![config.oauth.organization.clone()],
    )
}

/// One update from a user, as the chat session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The Telegram update id (for at-least-once bookkeeping).
    pub update_id: i64,
    /// The chat to answer in.
    pub chat_id: i64,
    /// The Telegram user id: the identity.
    pub user_id: i64,
    /// The Telegram username (or first name), for display only.
    pub username: String,
    /// What the user sent.
    pub kind: IncomingKind,
}

/// What a user sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingKind {
    /// A text message (commands included).
    Text(String),
    /// An inline keyboard button press; its data is command text.
    Callback {
        /// The callback query id, to answer it.
        id: String,
        /// The button's data.
        data: String,
        /// The message the button is on (a list's ‹ › edit it in place).
        message_id: Option<i64>,
    },
    /// An uploaded document.
    Document {
        /// Telegram's file id.
        file_id: String,
        /// The file name the user gave it.
        file_name: Option<String>,
        /// Its size in bytes.
        size: u32,
    },
}

/// A button of an inline keyboard: its label and the command text it sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    /// What the user sees.
    pub label: String,
    /// The command text the press sends (at most 64 bytes, Telegram's limit).
    pub data: String,
}

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A message (MarkdownV2, already escaped), with an optional keyboard.
    Message {
        /// The chat.
        chat_id: i64,
        /// The text; split at 4096 characters when sent.
        text: String,
        /// Rows of buttons.
        keyboard: Vec<Vec<Button>>,
    },
    /// A new text and keyboard for a message already sent (a list's next page). Sent as a new
    /// message when the old one cannot be edited or the text needs more than one message.
    Edit {
        /// The chat.
        chat_id: i64,
        /// The message to change.
        message_id: i64,
        /// The text (MarkdownV2, already escaped).
        text: String,
        /// Rows of buttons.
        keyboard: Vec<Vec<Button>>,
    },
    /// A file (a long blueprint), with a caption.
    Document {
        /// The chat.
        chat_id: i64,
        /// The file's name.
        file_name: String,
        /// Its content.
        content: Vec<u8>,
        /// The caption (MarkdownV2, already escaped; at most 1024 characters shown).
        caption: String,
    },
    /// A message whose id is wanted once it is sent (a run's message, edited with its progress).
    Tracked {
        /// The chat.
        chat_id: i64,
        /// The text (MarkdownV2, already escaped; one message long).
        text: String,
        /// Rows of buttons.
        keyboard: Vec<Vec<Button>>,
        /// Called with the message's id once Telegram took it.
        on_sent: OnSent,
    },
    /// The answer to a button press (stops the client's spinner).
    AnswerCallback {
        /// The callback query id.
        id: String,
    },
}

/// What to do with a sent message's id (see [`Outgoing::Tracked`]).
#[derive(Clone)]
pub struct OnSent(pub std::sync::Arc<dyn Fn(i64) + Send + Sync>);

impl std::fmt::Debug for OnSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnSent")
    }
}

impl PartialEq for OnSent {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OnSent {}

impl Outgoing {
    /// A plain text message (escaped here).
    pub fn text(chat_id: i64, text: &str) -> Outgoing {
        Outgoing::Message {
            chat_id,
            text: render::escape(text),
            keyboard: Vec::new(),
        }
    }
}
