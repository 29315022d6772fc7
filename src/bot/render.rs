//! Message rendering for Telegram: MarkdownV2 escaping, and splitting at the 4096-character
//! limit into parts that Telegram's parser accepts one by one. No IO; the escapers are
//! teloxide's.

/// Telegram's limit on one message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Escapes text for MarkdownV2 so that user data never turns into markup (teloxide's own).
pub fn escape(text: &str) -> String {
    teloxide::utils::markdown::escape(text)
}

/// Escapes text for the inside of a MarkdownV2 code block (only `` ` `` and `\`).
pub fn escape_code(text: &str) -> String {
    teloxide::utils::markdown::escape_code(text)
}

/// One piece of a MarkdownV2 text as Telegram's parser reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    /// One visible character: as written (`\.` for an escaped dot) and as shown.
    Char { raw: &'a str, shown: char },
    /// The start of an entity as written (a pre block's with its language and line break) and
    /// the marker that ends it.
    Open { raw: &'a str, close: &'static str },
    /// The end of the innermost entity.
    Close { raw: &'a str },
}

/// Reads MarkdownV2 into pieces, following Telegram's rules for what the renderer writes:
/// escapes, pre blocks (with an optional language), inline code, bold, italic, underline,
/// strikethrough and spoilers. Anything else (a stray reserved character, a link) is read as a
/// plain character: Telegram refuses such a text, and the sender falls back to plain text.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::with_capacity(text.len());
    let mut open: Vec<&'static str> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        let len = c.len_utf8();
        let in_code = matches!(open.last(), Some(&"`") | Some(&"```"));
        // `\` before any ASCII character makes it plain, inside code too.
        if c == '\\'
            && let Some(next) = rest[1..]
                .chars()
                .next()
                .filter(|n| (1..=126).contains(&(*n as u32)))
        {
            out.push(Piece::Char {
                raw: &rest[..2],
                shown: next,
            });
            i += 2;
            continue;
        }
        let closing = open.last().copied().filter(|close| {
            rest.starts_with(close)
                // `_` does not end italic when it starts `__`.
                && !(*close == "_" && rest.starts_with("__"))
        });
        if let Some(close) = closing {
            out.push(Piece::Close {
                raw: &rest[..close.len()],
            });
            open.pop();
            i += close.len();
            continue;
        }
        if !in_code {
            let marker = ["```", "__", "||", "`", "*", "_", "~"]
                .into_iter()
                .find(|m| rest.starts_with(m));
            if let Some(marker) = marker {
                let mut end = i + marker.len();
                if marker == "```" {
                    // An optional language up to the first space, then one line break skipped.
                    let lang_end = bytes[end..]
                        .iter()
                        .position(|b| b.is_ascii_whitespace() || *b == b'`')
                        .map_or(bytes.len(), |p| end + p);
                    if lang_end != end && lang_end < bytes.len() && bytes[lang_end] != b'`' {
                        end = lang_end;
                    }
                    match (bytes.get(end), bytes.get(end + 1)) {
                        (Some(a @ (b'\n' | b'\r')), Some(b @ (b'\n' | b'\r'))) if a != b => {
                            end += 2
                        }
                        (Some(b'\n' | b'\r'), _) => end += 1,
                        _ => {}
                    }
                }
                let close: &'static str = match marker {
                    "```" => "```",
                    "__" => "__",
                    "||" => "||",
                    "`" => "`",
                    "*" => "*",
                    "_" => "_",
                    _ => "~",
                };
                out.push(Piece::Open {
                    raw: &text[i..end],
                    close,
                });
                open.push(close);
                i = end;
                continue;
            }
        }
        out.push(Piece::Char {
            raw: &rest[..len],
            shown: c,
        });
        i += len;
    }
    out
}

/// The text a MarkdownV2 message shows: escapes resolved, entity markers dropped. What is sent
/// when Telegram refuses the markup.
pub fn plain(text: &str) -> String {
    pieces(text)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Char { shown, .. } => Some(shown),
            _ => None,
        })
        .collect()
}

/// Builds the parts of a split message: an entity open at a cut is closed at the end of its
/// part and opened again at the start of the next.
struct Parts {
    /// The parts done.
    done: Vec<String>,
    /// The part being filled, as written.
    current: String,
    /// Its visible characters.
    shown: usize,
    /// Whether it shows anything but white space (Telegram refuses a blank message).
    blank: bool,
    /// The entities open at this point: how each was opened and how it ends.
    open: Vec<(String, &'static str)>,
}

impl Parts {
    fn push(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Char { raw, shown } => {
                self.current.push_str(raw);
                self.shown += 1;
                self.blank &= shown.is_whitespace();
            }
            Piece::Open { raw, close } => {
                self.current.push_str(raw);
                self.open.push((raw.to_string(), close));
            }
            Piece::Close { raw } => {
                self.current.push_str(raw);
                self.open.pop();
            }
        }
    }

    /// Ends the current part (closing what is open) and starts the next (reopening it).
    fn cut(&mut self) {
        let mut part = std::mem::take(&mut self.current);
        for (_, close) in self.open.iter().rev() {
            part.push_str(close);
        }
        if !self.blank {
            self.done.push(part);
        }
        self.shown = 0;
        self.blank = true;
        for (raw, _) in &self.open {
            self.current.push_str(raw);
        }
    }
}

/// Splits a MarkdownV2 message into parts that each show at most [`MAX_MESSAGE_CHARS`]
/// characters and are valid on their own: cut at line ends where possible, never inside an
/// escape, with code blocks (and any other entity) closed and reopened across a cut. Parts that
/// would show only white space are dropped (Telegram refuses them).
pub fn split(text: &str) -> Vec<String> {
    split_at(text, MAX_MESSAGE_CHARS)
}

fn split_at(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut parts = Parts {
        done: Vec::new(),
        current: String::new(),
        shown: 0,
        blank: true,
        open: Vec::new(),
    };
    let all = pieces(text);
    let mut rest = &all[..];
    while !rest.is_empty() {
        // One line: up to and including its line break.
        let end = rest
            .iter()
            .position(|p| matches!(p, Piece::Char { shown: '\n', .. }))
            .map_or(rest.len(), |p| p + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let width = line
            .iter()
            .filter(|p| matches!(p, Piece::Char { .. }))
            .count();
        if parts.shown > 0 && parts.shown + width > limit {
            parts.cut();
        }
        for piece in line {
            if matches!(piece, Piece::Char { .. }) && parts.shown >= limit {
                parts.cut();
            }
            parts.push(*piece);
        }
    }
    parts.cut();
    parts.done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_escaped() {
        assert_eq!(
            escape("a_b*c [x](y) 1.5!"),
            "a\\_b\\*c \\[x\\]\\(y\\) 1\\.5\\!"
        );
        assert_eq!(escape_code("a`b\\c"), "a\\`b\\\\c");
    }

    fn shown(part: &str) -> usize {
        plain(part).chars().count()
    }

    #[test]
    fn long_text_is_split_at_lines_and_never_inside_an_escape() {
        let line = format!("{}\n", "x".repeat(100));
        let text = line.repeat(100); // 10 100 characters
        let parts = split(&text);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| shown(p) <= MAX_MESSAGE_CHARS));
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts.concat(), text);

        // The limit is on what the user reads: `\.` is one character.
        let escaped = escape(&".".repeat(9000));
        let parts = split(&escaped);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| shown(p) <= MAX_MESSAGE_CHARS));
        assert!(
            parts
                .iter()
                .all(|p| p.starts_with('\\') && p.ends_with('.'))
        );
        assert_eq!(parts.concat(), escaped);
        assert!(split("").is_empty());
        assert!(split("\n \n").is_empty(), "Telegram refuses blank messages");
    }

    #[test]
    fn a_code_block_is_closed_and_reopened_across_parts() {
        let yaml = "key: `a` \\ #1.\n".repeat(1000);
        let text = format!(
            "{}\n```yaml\n{}\n```\nafter\\.",
            escape("big.yaml"),
            escape_code(&yaml)
        );
        let parts = split(&text);
        assert!(parts.len() >= 4, "{}", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(shown(part) <= MAX_MESSAGE_CHARS);
            if i > 0 && i + 1 < parts.len() {
                assert!(part.starts_with("```yaml\n"), "{part:.40}");
                assert!(part.ends_with("```"), "{}", &part[part.len() - 20..]);
            }
        }
        let read: String = parts.iter().map(|p| plain(p)).collect();
        assert_eq!(read, plain(&text));
        assert!(read.contains(&yaml));
    }

    #[test]
    fn plain_text_is_what_the_user_reads() {
        assert_eq!(plain("*a\\.b* `c\\`d` _e_"), "a.b c`d e");
        assert_eq!(plain("```rust\nfn x() {}\n```"), "fn x() {}\n");
    }
}
