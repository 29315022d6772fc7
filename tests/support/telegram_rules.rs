//! What Telegram refuses, as the Bot API applies it: tdlib's MarkdownV2 parser (the rules of
//! <https://core.telegram.org/bots/api#markdownv2-style>) and the limits on texts, captions and
//! inline keyboards. Each check returns the visible text, or the `description` Telegram answers
//! with its 400.
//!
//! Pure and dependency-free (serde_json only), so that the fake Bot API and the property tests
//! apply the very same rules. Written from Telegram's documented behaviour, independently of the
//! renderer in `src/bot/`, so that one checks the other.
#![allow(dead_code)]

use serde_json::Value;

/// The longest message text, in characters after entity parsing.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The longest caption, in characters after entity parsing.
pub const MAX_CAPTION_CHARS: usize = 1024;
/// The most buttons an inline keyboard may hold.
pub const MAX_BUTTONS: usize = 100;
/// The longest callback data, in bytes.
pub const MAX_CALLBACK_BYTES: usize = 64;

/// The entities MarkdownV2 knows, named as tdlib names them in its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
    BlockQuote,
}

impl Entity {
    fn name(self) -> &'static str {
        match self {
            Entity::Bold => "Bold",
            Entity::Italic => "Italic",
            Entity::Underline => "Underline",
            Entity::Strikethrough => "Strikethrough",
            Entity::Spoiler => "Spoiler",
            Entity::Code => "Code",
            Entity::Pre => "Pre",
            Entity::TextUrl => "TextUrl",
            Entity::CustomEmoji => "CustomEmoji",
            Entity::BlockQuote => "BlockQuote",
        }
    }

    /// Inside code only `` ` `` (and the escape `\`) is special.
    fn is_code(self) -> bool {
        matches!(self, Entity::Code | Entity::Pre)
    }
}

/// An entity opened and not yet closed.
struct Open {
    entity: Entity,
    /// Where its marker starts in the input (tdlib reports this offset).
    byte_offset: usize,
}

fn reserved(c: u8) -> String {
    format!(
        "Character '{}' is reserved and must be escaped with the preceding '\\'",
        c as char
    )
}

/// Parses MarkdownV2 as Telegram does: the visible text, or tdlib's error (without the
/// "Bad Request: can't parse entities: " prefix).
pub fn parse_markdown_v2(input: &str) -> Result<String, String> {
    let b = input.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut stack: Vec<Open> = Vec::new();
    let mut in_quote = false;
    let mut line_start = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // `\` before any ASCII character makes it plain, in code too.
        if c == b'\\' && (1..=126).contains(&at(i + 1)) {
            let escaped = at(i + 1);
            out.push(escaped);
            if escaped != b'\r' {
                line_start = escaped == b'\n';
            }
            i += 2;
            continue;
        }
        let in_code = stack.last().is_some_and(|o| o.entity.is_code());
        let special = if in_code {
            c == b'`'
        } else {
            b"_*[]()~`>#+-=|{}.!\n".contains(&c)
        };
        if !special {
            out.push(c);
            // Continuation bytes of a UTF-8 character change nothing.
            if c & 0xC0 != 0x80 && c != b'\r' {
                line_start = false;
            }
            i += 1;
            continue;
        }
        let closes = match stack.last() {
            None => false,
            Some(_) if in_quote && c == b'\n' && at(i + 1) != b'>' => true,
            Some(top) => match top.entity {
                Entity::Bold => c == b'*',
                Entity::Italic => c == b'_' && at(i + 1) != b'_',
                Entity::Underline => c == b'_' && at(i + 1) == b'_',
                Entity::Strikethrough => c == b'~',
                Entity::Spoiler => c == b'|' && at(i + 1) == b'|',
                Entity::Code => c == b'`',
                Entity::Pre => c == b'`' && at(i + 1) == b'`' && at(i + 2) == b'`',
                Entity::TextUrl | Entity::CustomEmoji => c == b']',
                Entity::BlockQuote => false,
            },
        };
        if !closes {
            let byte_offset = i;
            let entity = match c {
                b'_' if at(i + 1) == b'_' => {
                    i += 2;
                    Entity::Underline
                }
                b'_' => {
                    i += 1;
                    Entity::Italic
                }
                b'*' => {
                    i += 1;
                    Entity::Bold
                }
                b'~' => {
                    i += 1;
                    Entity::Strikethrough
                }
                b'|' if at(i + 1) == b'|' => {
                    i += 2;
                    Entity::Spoiler
                }
                b'[' => {
                    i += 1;
                    Entity::TextUrl
                }
                b'!' if at(i + 1) == b'[' => {
                    i += 2;
                    Entity::CustomEmoji
                }
                b'`' if at(i + 1) == b'`' && at(i + 2) == b'`' => {
                    i += 3;
                    // An optional language up to the first space, then one line break skipped.
                    let mut end = i;
                    while end < b.len() && !b[end].is_ascii_whitespace() && b[end] != b'`' {
                        end += 1;
                    }
                    if end != i && end < b.len() && b[end] != b'`' {
                        i = end;
                    }
                    if matches!(at(i), b'\n' | b'\r') {
                        if matches!(at(i + 1), b'\n' | b'\r') && at(i) != at(i + 1) {
                            i += 2;
                        } else {
                            i += 1;
                        }
                    }
                    Entity::Pre
                }
                b'`' => {
                    i += 1;
                    Entity::Code
                }
                b'\n' => {
                    out.push(b'\n');
                    line_start = true;
                    i += 1;
                    continue;
                }
                b'>' if line_start => {
                    i += 1;
                    if in_quote {
                        // The `>` continuing a quote on its next line.
                        continue;
                    }
                    in_quote = true;
                    Entity::BlockQuote
                }
                other => return Err(reserved(other)),
            };
            stack.push(Open {
                entity,
                byte_offset,
            });
            continue;
        }
        // The end of the innermost entity.
        let Some(mut top) = stack.pop() else {
            return Err(reserved(c));
        };
        if c == b'\n' && top.entity != Entity::BlockQuote {
            // Only `||` right before the line end (an expandable quote) may be open here.
            let expandable = top.entity == Entity::Spoiler && top.byte_offset + 2 == i;
            if !expandable {
                return Err(format!(
                    "Can't find end of {} entity at byte offset {}",
                    top.entity.name(),
                    top.byte_offset
                ));
            }
            top = match stack.pop() {
                Some(quote) if quote.entity == Entity::BlockQuote => quote,
                Some(other) => {
                    return Err(format!(
                        "Can't find end of {} entity at byte offset {}",
                        other.entity.name(),
                        other.byte_offset
                    ));
                }
                None => return Err(reserved(c)),
            };
        }
        match top.entity {
            Entity::Bold | Entity::Italic | Entity::Code | Entity::Strikethrough => i += 1,
            Entity::Underline | Entity::Spoiler => i += 2,
            Entity::Pre => i += 3,
            Entity::TextUrl | Entity::CustomEmoji => {
                i += 1;
                if at(i) == b'(' {
                    let url_start = i + 1;
                    let mut j = url_start;
                    let mut url = Vec::new();
                    while j < b.len() && b[j] != b')' {
                        if b[j] == b'\\' && (1..=126).contains(&at(j + 1)) {
                            url.push(b[j + 1]);
                            j += 2;
                        } else {
                            url.push(b[j]);
                            j += 1;
                        }
                    }
                    if j >= b.len() {
                        return Err(format!(
                            "Can't find end of a URL at byte offset {url_start}"
                        ));
                    }
                    if top.entity == Entity::CustomEmoji && !url.starts_with(b"tg://emoji?id=") {
                        return Err("Custom emoji URL must have scheme tg".into());
                    }
                    i = j + 1;
                } else if top.entity == Entity::CustomEmoji {
                    return Err("Custom emoji entity must contain a tg://emoji URL".into());
                }
            }
            Entity::BlockQuote => {
                in_quote = false;
                out.push(b'\n');
                line_start = true;
                i += 1;
            }
        }
    }
    if in_quote {
        // A quote ends with the text (possibly as `||`-expandable).
        if stack.last().is_some_and(|o| o.entity == Entity::Spoiler)
            && stack.last().map(|o| o.byte_offset + 2) == Some(b.len())
        {
            stack.pop();
        }
        if stack.last().is_some_and(|o| o.entity == Entity::BlockQuote) {
            stack.pop();
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "Can't find end of {} entity at byte offset {}",
            open.entity.name(),
            open.byte_offset
        ));
    }
    // Cutting a multi-byte character in two is not something the parser can produce from
    // valid UTF-8 input (escapes are ASCII), so this is lossless.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The text a user would read, or Telegram's refusal, for a `parse_mode` (`None` = plain).
fn visible(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    match parse_mode {
        None | Some("") => Ok(text.to_string()),
        Some("MarkdownV2") => parse_markdown_v2(text)
            .map_err(|err| format!("Bad Request: can't parse entities: {err}")),
        Some(other) => Err(format!("Bad Request: unsupported parse_mode {other}")),
    }
}

/// A message text (`sendMessage`, `editMessageText`): its visible text, or the refusal.
pub fn check_text(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    let shown = visible(text, parse_mode)?;
    if shown.trim().is_empty() {
        return Err("Bad Request: message text is empty".into());
    }
    if shown.chars().count() > MAX_TEXT_CHARS {
        return Err("Bad Request: message is too long".into());
    }
    Ok(shown)
}

/// An edited message text: as [`check_text`], with the edit's own error for a long text.
pub fn check_edit_text(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    check_text(text, parse_mode).map_err(|err| {
        if err == "Bad Request: message is too long" {
            "Bad Request: MESSAGE_TOO_LONG".into()
        } else {
            err
        }
    })
}

/// A caption (may be empty): its visible text, or the refusal.
pub fn check_caption(caption: &str, parse_mode: Option<&str>) -> Result<String, String> {
    let shown = visible(caption, parse_mode)?;
    if shown.chars().count() > MAX_CAPTION_CHARS {
        return Err("Bad Request: message caption is too long".into());
    }
    Ok(shown)
}

/// A `reply_markup` (JSON, or absent): the inline keyboard's limits.
pub fn check_markup(markup: &Value) -> Result<(), String> {
    if markup.is_null() {
        return Ok(());
    }
    let Some(rows) = markup["inline_keyboard"].as_array() else {
        return Err("Bad Request: can't parse reply keyboard markup JSON object".into());
    };
    let mut buttons = 0;
    for row in rows {
        let Some(row) = row.as_array() else {
            return Err("Bad Request: can't parse inline keyboard button".into());
        };
        for button in row {
            buttons += 1;
            if button["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
                return Err(
                    "Bad Request: text buttons are unallowed in the inline keyboard".into(),
                );
            }
            match button["callback_data"].as_str() {
                Some(data) if (1..=MAX_CALLBACK_BYTES).contains(&data.len()) => {}
                Some(_) => return Err("Bad Request: BUTTON_DATA_INVALID".into()),
                None if button["url"].is_string() => {}
                None => {
                    return Err(
                        "Bad Request: text buttons are unallowed in the inline keyboard".into(),
                    );
                }
            }
        }
    }
    if buttons > MAX_BUTTONS {
        return Err("Bad Request: reply markup is too long".into());
    }
    Ok(())
}
