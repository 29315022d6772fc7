//! The renderer against Telegram's rules: for random names and contents (markdown characters,
//! emoji, 10 KB YAML, 200 items), every message part and keyboard the bot would send passes the
//! same checks the fake Bot API applies (`tests/support/telegram_rules.rs`), and nothing is lost.

#[path = "support/telegram_rules.rs"]
mod rules;

use cockpit::bot::render::{self, escape, escape_code};
use cockpit::bot::views::{self, BlueprintItem, BlueprintView, RunItem, ServiceItem, View};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Characters that stress MarkdownV2: every reserved one, the escape, line breaks, emoji (with
/// skin tones and joiners: two UTF-16 units each), accents, plain letters.
const CHARS: &[char] = &[
    'a',
    'b',
    'Z',
    '0',
    '9',
    ' ',
    ' ',
    '_',
    '*',
    '[',
    ']',
    '(',
    ')',
    '~',
    '`',
    '>',
    '#',
    '+',
    '-',
    '=',
    '|',
    '{',
    '}',
    '.',
    '!',
    '\\',
    '\n',
    '\r',
    '\t',
    'é',
    'ß',
    '😀',
    '👍',
    '\u{1F3FD}',
    '\u{200D}',
    '\u{FE0F}',
    '中',
    '"',
    '\'',
    '<',
    '&',
    ':',
    '/',
    '@',
    '$',
    '%',
];

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(CHARS), 0..=max)
        .prop_map(|chars| chars.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(CHARS), 1..=128)
        .prop_map(|chars| chars.into_iter().collect())
}

/// About 10 KB of YAML-looking text full of reserved characters.
fn yaml() -> impl Strategy<Value = String> {
    proptest::collection::vec(text(60), 150..=300).prop_map(|lines| {
        lines
            .into_iter()
            .map(|l| format!("key_{}: \"{l}\" # .!\n", l.len()))
            .collect()
    })
}

/// A keyboard as teloxide sends it.
fn markup(keyboard: &[Vec<cockpit::bot::Button>]) -> Value {
    json!({"inline_keyboard": keyboard.iter().map(|row| row.iter().map(|b| {
        json!({"text": b.label, "callback_data": b.data})
    }).collect::<Vec<_>>()).collect::<Vec<_>>()})
}

/// Every part of a message passes Telegram's checks; returns what the user reads, in full.
fn delivered(text: &str) -> String {
    let parts = render::split(text);
    let mut read = String::new();
    for part in &parts {
        match rules::check_text(part, Some("MarkdownV2")) {
            Ok(shown) => read.push_str(&shown),
            Err(err) => panic!("{err}\npart: {part:?}"),
        }
    }
    read
}

/// A view passes: its text (split) and its keyboard, as rendered (not trimmed by the sender).
fn check_view(view: &View) -> String {
    if let Err(err) = rules::check_markup(&markup(&view.keyboard)) {
        panic!("{err}: {:?}", view.keyboard);
    }
    let fitted = views::fit_keyboard(view.keyboard.clone());
    assert_eq!(fitted, view.keyboard, "the view's keyboard needed trimming");
    delivered(&view.text)
}

/// Every page of a list, through the ‹ › buttons: what they show in all.
fn all_pages(view: impl Fn(usize) -> View) -> String {
    let mut read = String::new();
    let mut page = 1;
    loop {
        let shown = view(page);
        read.push_str(&check_view(&shown));
        let next = format!(" {}", page + 1);
        let has_next = shown
            .keyboard
            .iter()
            .flatten()
            .any(|b| b.label == "›" && b.data.ends_with(&next));
        if !has_next {
            return read;
        }
        page += 1;
        assert!(page <= 1000, "pages never end");
    }
}

fn strip(s: &str) -> String {
    // Telegram reads `\r\n` and `\n` the same in plain text; compare without `\r`.
    s.replace('\r', "")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn lists_of_up_to_200_random_names_pass_and_show_every_name(
        names in proptest::collection::vec(name(), 0..200),
        current in proptest::option::of(name()),
    ) {
        let read = all_pages(|page| views::repo_list(&names, current.as_deref(), page));
        for n in &names {
            prop_assert!(read.contains(n.as_str()), "{n:?} never shown");
        }
        let items: Vec<BlueprintItem> = names
            .iter()
            .enumerate()
            .map(|(i, n)| BlueprintItem { name: n.clone(), archived: i % 3 == 0 })
            .collect();
        let read = all_pages(|page| views::blueprint_list("repo", &items, page));
        for n in &names {
            prop_assert!(read.contains(n.as_str()), "{n:?} never shown");
        }
        let services: Vec<ServiceItem> = names
            .iter()
            .map(|n| ServiceItem { key: format!("{n}!{n}"), actor: n.clone(), state: "ok".into() })
            .collect();
        all_pages(|page| views::service_list(&names.concat(), &services, page));
        let runs: Vec<RunItem> = names
            .iter()
            .map(|n| RunItem { key: n.clone(), state: n.clone() })
            .collect();
        all_pages(|page| views::run_list("r", &runs, None, page));
        all_pages(|page| views::run_list("r", &runs, Some("error"), page));
        for (pick, _) in cockpit::bot::commands::Pick::ALL {
            let read = all_pages(|page| views::picker(*pick, &names, page));
            prop_assert!(read.contains(pick.question()));
        }
    }

    #[test]
    fn blueprints_of_any_size_are_delivered_whole(name in name(), content in yaml()) {
        for content in [content.clone(), content.chars().take(500).collect()] {
            match views::blueprint(&name, &content) {
                BlueprintView::Inline(text) => {
                    let read = delivered(&text);
                    prop_assert!(strip(&read).contains(&strip(&content)));
                }
                BlueprintView::Document { content: file, caption, .. } => {
                    prop_assert_eq!(&file, content.as_bytes());
                    prop_assert!(rules::check_caption(&caption, Some("MarkdownV2")).is_ok(), "{}", caption);
                }
            }
            // Long code blocks split across messages stay valid (the fallback of a document).
            let block = format!("{}\n```\n{}\n```", escape(&name), escape_code(&content));
            let read = delivered(&block);
            prop_assert!(strip(&read).contains(&strip(&content)));
        }
    }

    #[test]
    fn any_text_is_delivered_whole(body in text(300), repeat in 1usize..40) {
        let plain = body.repeat(repeat);
        let read = delivered(&escape(&plain));
        // Telegram drops blank parts; everything else arrives in order.
        let (read, plain_text) = (strip(&read), strip(&plain));
        prop_assert_eq!(
            read.split_whitespace().collect::<Vec<_>>(),
            plain_text.split_whitespace().collect::<Vec<_>>()
        );
        // And the plain-text fallback of a part reads the same as the part.
        for part in render::split(&escape(&plain)) {
            prop_assert_eq!(
                rules::check_text(&render::plain(&part), None).ok(),
                rules::check_text(&part, Some("MarkdownV2")).ok()
            );
        }
    }
}

mod parser {
    use super::rules::*;

    #[test]
    fn telegram_markdown_v2_rules() {
        assert_eq!(parse_markdown_v2("a\\.b").as_deref(), Ok("a.b"));
        assert_eq!(
            parse_markdown_v2("*bold* _it_ __u__").as_deref(),
            Ok("bold it u")
        );
        assert_eq!(
            parse_markdown_v2("```yaml\na: #1.\n```").as_deref(),
            Ok("a: #1.\n")
        );
        assert_eq!(parse_markdown_v2("`a\\`b`").as_deref(), Ok("a`b"));
        assert!(
            parse_markdown_v2("a.b")
                .unwrap_err()
                .contains("'.' is reserved")
        );
        assert!(
            parse_markdown_v2("x\n```\nopen")
                .unwrap_err()
                .contains("Can't find end of Pre entity at byte offset 2")
        );
        assert!(parse_markdown_v2("a #b").unwrap_err().contains("'#'"));
        assert_eq!(
            parse_markdown_v2(">quote\n>more\nafter\\.").as_deref(),
            Ok("quote\nmore\nafter.")
        );
        assert!(parse_markdown_v2("a > b").is_err());
        assert_eq!(parse_markdown_v2("[a](http://x\\)y)").as_deref(), Ok("a"));
        assert!(check_text("  \n", None).is_err());
        assert!(check_text(&"x".repeat(4097), None).is_err());
        assert!(check_text(&"\\.".repeat(4096), Some("MarkdownV2")).is_ok());
    }
}
