//! Message rendering for Telegram: MarkdownV2 escaping and splitting at the 4096-character limit.
//! No IO, no teloxide.

/// Telegram's limit on one message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Escapes text for MarkdownV2 so that user data never turns into markup.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '_' | '*'
                | '['
                | ']'
                | '('
                | ')'
                | '~'
                | '`'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '{'
                | '}'
                | '.'
                | '!'
                | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes text for the inside of a MarkdownV2 code block (only `` ` `` and `\`).
pub fn escape_code(text: &str) -> String {
    text.replace('\\', "\\\\").replace('`', "\\`")
}

/// Splits an already escaped message into parts of at most [`MAX_MESSAGE_CHARS`] characters,
/// at line ends where possible and never inside an escape sequence.
pub fn split(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in text.split_inclusive('\n') {
        let len = line.chars().count();
        if current_len + len <= MAX_MESSAGE_CHARS {
            current.push_str(line);
            current_len += len;
            continue;
        }
        if !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        if len <= MAX_MESSAGE_CHARS {
            current.push_str(line);
            current_len = len;
            continue;
        }
        // One line longer than a message: cut it, keeping `\x` pairs together.
        let mut chunk = String::new();
        let mut chunk_len = 0;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            let pair: Option<char> = if c == '\\' { chars.next() } else { None };
            let width = 1 + usize::from(pair.is_some());
            if chunk_len + width > MAX_MESSAGE_CHARS {
                parts.push(std::mem::take(&mut chunk));
                chunk_len = 0;
            }
            chunk.push(c);
            if let Some(p) = pair {
                chunk.push(p);
            }
            chunk_len += width;
        }
        current = chunk;
        current_len = chunk_len;
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    parts
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

    #[test]
    fn long_text_is_split_at_lines_and_never_inside_an_escape() {
        let line = format!("{}\n", "x".repeat(100));
        let text = line.repeat(100); // 10 100 characters
        let parts = split(&text);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_MESSAGE_CHARS));
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts.concat(), text);

        let escaped = escape(&".".repeat(5000)); // 10 000 characters of `\.`
        let parts = split(&escaped);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_MESSAGE_CHARS));
        assert!(
            parts
                .iter()
                .all(|p| !p.ends_with('\\') || p.ends_with("\\\\"))
        );
        assert!(parts.iter().all(|p| p.starts_with('\\')));
        assert_eq!(parts.concat(), escaped);
        assert_eq!(split(""), vec![String::new()]);
    }
}
