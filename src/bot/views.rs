//! What the bot shows, shaped to Telegram's limits: lists in pages with ‹ › buttons (at most
//! [`MAX_BUTTONS`] buttons, a page's text well under a message), button data within
//! [`MAX_CALLBACK_BYTES`] (a long name goes through a short reference), and blueprints inline
//! when short, as a document when long. Pure: names and contents in, MarkdownV2 and buttons out.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::Button;
use super::commands::{Pick, RUN_STATES};
use super::render::{escape, escape_code};

/// Telegram's limit on the buttons of one inline keyboard.
pub const MAX_BUTTONS: usize = 100;

/// Telegram's limit on a button's callback data, in bytes.
pub const MAX_CALLBACK_BYTES: usize = 64;

/// Items per page of a list: with two buttons per item and a navigation row, far below
/// [`MAX_BUTTONS`]; with lines cut at [`MAX_LINE_CHARS`], far below a message.
pub const PAGE_ITEMS: usize = 20;

/// The longest list line shown; longer ones end with `…` (names can be 128 characters, a
/// service line holds several).
const MAX_LINE_CHARS: usize = 160;

/// The longest button label shown.
const MAX_LABEL_CHARS: usize = 40;

/// A blueprint longer than this many characters is sent as a document rather than inline: a
/// 10 KB YAML reads better as a file than as three messages.
pub const INLINE_BLUEPRINT_CHARS: usize = 3000;

/// Hex digits of a short reference.
const REF_DIGITS: usize = 10;

/// A message to show: MarkdownV2 text and rows of buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The text, escaped.
    pub text: String,
    /// Rows of buttons.
    pub keyboard: Vec<Vec<Button>>,
}

/// A blueprint to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlueprintView {
    /// Short: a message with the YAML in a code block.
    Inline(String),
    /// Long: a file, with a short caption.
    Document {
        /// The file's name.
        file_name: String,
        /// The YAML.
        content: Vec<u8>,
        /// The caption, escaped.
        caption: String,
    },
}

/// A short reference to a name: `#` and the first hex digits of its SHA-256. `#` cannot start
/// a repository or blueprint name, nor a `role!name` key.
pub fn short_ref(name: &str) -> String {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    format!("#{}", &digest[..REF_DIGITS])
}

/// Whether a word is a short reference.
pub fn is_ref(word: &str) -> bool {
    word.len() == REF_DIGITS + 1
        && word.starts_with('#')
        && word[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A button sending `command name`, or `command #ref` when that exceeds Telegram's 64 bytes;
/// `None` when even that does not fit (a command longer than the limit).
pub fn button(label: &str, command: &str, name: &str) -> Option<Button> {
    let full = format!("{command} {name}");
    let data = if full.len() <= MAX_CALLBACK_BYTES {
        full
    } else {
        format!("{command} {}", short_ref(name))
    };
    (data.len() <= MAX_CALLBACK_BYTES).then(|| Button {
        label: label_of(label),
        data,
    })
}

/// A button label Telegram accepts: not blank, not too long.
fn label_of(text: &str) -> String {
    if text.trim().is_empty() {
        "·".into()
    } else {
        shorten(text, MAX_LABEL_CHARS)
    }
}

/// `text` cut to `max` characters, ending with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Which items page `page` (1-based, clamped) of `len` items shows, its number and the count.
pub fn page_of(len: usize, page: usize) -> (Range<usize>, usize, usize) {
    let pages = len.div_ceil(PAGE_ITEMS).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE_ITEMS;
    (start..len.min(start + PAGE_ITEMS), page, pages)
}

/// The ‹ › row of a list sent by `command` (which takes the page number as its last word).
fn nav(command: &str, page: usize, pages: usize) -> Vec<Button> {
    let mut row = Vec::new();
    if page > 1 {
        row.push(Button {
            label: "‹".into(),
            data: format!("{command} {}", page - 1),
        });
    }
    if page < pages {
        row.push(Button {
            label: "›".into(),
            data: format!("{command} {}", page + 1),
        });
    }
    row
}

/// A list's heading: `title:` on one page, `title (21–40 of 150):` on several.
fn heading(title: &str, range: &Range<usize>, len: usize, pages: usize) -> String {
    if pages > 1 {
        format!("{title} ({}–{} of {len}):", range.start + 1, range.end)
    } else {
        format!("{title}:")
    }
}

/// A page of a list: heading, one line per item, one row of buttons per item, ‹ › last.
fn list<T>(
    title: &str,
    empty: &str,
    items: &[T],
    page: usize,
    command: &str,
    line: impl Fn(&T) -> String,
    buttons: impl Fn(&T) -> Vec<Button>,
) -> View {
    let (range, page, pages) = page_of(items.len(), page);
    let mut text = heading(title, &range, items.len(), pages);
    if items.is_empty() {
        text.push(' ');
        text.push_str(empty);
    }
    let mut keyboard = Vec::new();
    for item in &items[range.clone()] {
        text.push_str("\n- ");
        text.push_str(&shorten(&line(item), MAX_LINE_CHARS));
        let row = buttons(item);
        if !row.is_empty() {
            keyboard.push(row);
        }
    }
    let nav = nav(command, page, pages);
    if !nav.is_empty() {
        keyboard.push(nav);
    }
    View {
        text: escape(&text),
        keyboard,
    }
}

/// `/repo list`: the current repository, then a page of repositories to select.
pub fn repo_list(names: &[String], current: Option<&str>, page: usize) -> View {
    let mut view = list(
        "Repositories",
        "none yet; /repo create <name>",
        names,
        page,
        "/repo list",
        |name| name.clone(),
        |name| {
            button(&format!("Select {name}"), "/repo select", name)
                .into_iter()
                .collect()
        },
    );
    let current = escape(&format!(
        "Current repository: {}\n",
        current.unwrap_or("none")
    ));
    view.text.insert_str(0, &current);
    view
}

/// One blueprint of a list: its name and whether it is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintItem {
    /// The file name.
    pub name: String,
    /// Archived blueprints are listed without buttons.
    pub archived: bool,
}

/// `/blueprint list`: a page of blueprints, each with Show and Execute.
pub fn blueprint_list(repo: &str, items: &[BlueprintItem], page: usize) -> View {
    list(
        &format!("Blueprints in {repo}"),
        "none yet; /blueprint add <name>",
        items,
        page,
        "/blueprint list",
        |bp| {
            let mark = if bp.archived { " (archived)" } else { "" };
            format!("{}{mark}", bp.name)
        },
        |bp| {
            if bp.archived {
                return Vec::new();
            }
            [
                button(&format!("Show {}", bp.name), "/blueprint get", &bp.name),
                button(
                    &format!("Execute {}", bp.name),
                    "/blueprint execute",
                    &bp.name,
                ),
            ]
            .into_iter()
            .flatten()
            .collect()
        },
    )
}

/// One service of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceItem {
    /// `role!name`.
    pub key: String,
    /// Its actor template.
    pub actor: String,
    /// Its state.
    pub state: String,
}

/// `/service list`: a page of services, each with Inspect.
pub fn service_list(repo: &str, items: &[ServiceItem], page: usize) -> View {
    list(
        &format!("Services in {repo}"),
        "none yet; execute a blueprint",
        items,
        page,
        "/service list",
        |s| format!("{} ({}): {}", s.key, s.actor, s.state),
        |s| {
            button(&format!("Inspect {}", s.key), "/service inspect", &s.key)
                .into_iter()
                .collect()
        },
    )
}

/// One run of a list: its key and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    /// The run key.
    pub key: String,
    /// Its state.
    pub state: String,
}

/// `/run list [state]`: a page of runs (those in `state`, or all), each with Inspect, and a
/// row of filters by state.
pub fn run_list(repo: &str, items: &[RunItem], state: Option<&str>, page: usize) -> View {
    let (title, command) = match state {
        Some(state) => (
            format!("Runs in {repo} ({state})"),
            format!("/run list {state}"),
        ),
        None => (format!("Runs in {repo}"), "/run list".to_string()),
    };
    let mut view = list(
        &title,
        "none yet",
        items,
        page,
        &command,
        |r| format!("{}: {}", r.key, r.state),
        |r| {
            button(&format!("Inspect {}", r.key), "/run inspect", &r.key)
                .into_iter()
                .collect()
        },
    );
    let filters = std::iter::once(("all", "/run list".to_string()))
        .chain(RUN_STATES.iter().map(|s| (*s, format!("/run list {s}"))))
        .filter(|(label, _)| state.unwrap_or("all") != *label)
        .map(|(label, data)| Button {
            label: label.to_string(),
            data,
        })
        .collect();
    view.keyboard.push(filters);
    view
}

/// A bare command's menu: a question and its subcommands as buttons, three to a row.
pub fn menu(question: &str, items: &[(&str, &str)]) -> View {
    let buttons: Vec<Button> = items
        .iter()
        .map(|(label, data)| Button {
            label: label.to_string(),
            data: data.to_string(),
        })
        .collect();
    View {
        text: escape(question),
        keyboard: buttons.chunks(3).map(<[Button]>::to_vec).collect(),
    }
}

/// A picker: the question and a page of names to press, ‹ › through `/pick <id> <page>`.
pub fn picker(pick: Pick, names: &[String], page: usize) -> View {
    let (range, page, pages) = page_of(names.len(), page);
    let mut text = pick.question().to_string();
    if names.is_empty() {
        text.push_str("\nThere is nothing to choose from yet.");
    } else if pages > 1 {
        text.push_str(&format!(
            " ({}–{} of {})",
            range.start + 1,
            range.end,
            names.len()
        ));
    }
    let mut keyboard: Vec<Vec<Button>> = names[range]
        .iter()
        .filter_map(|name| button(name, pick.command(), name))
        .map(|b| vec![b])
        .collect();
    let nav = nav(&format!("/pick {}", pick.id()), page, pages);
    if !nav.is_empty() {
        keyboard.push(nav);
    }
    View {
        text: escape(&text),
        keyboard,
    }
}

/// Buttons for a list of (label, command, name) that may be long (a service's actions):
/// one per row, at most [`MAX_BUTTONS`], those whose data cannot fit left out.
pub fn button_rows(
    buttons: impl IntoIterator<Item = (String, String, String)>,
) -> Vec<Vec<Button>> {
    buttons
        .into_iter()
        .filter_map(|(label, command, name)| button(&label, &command, &name))
        .take(MAX_BUTTONS)
        .map(|b| vec![b])
        .collect()
}

/// `/blueprint get`: inline in a code block when short, as a document otherwise.
pub fn blueprint(name: &str, content: &str) -> BlueprintView {
    if content.chars().count() <= INLINE_BLUEPRINT_CHARS {
        return BlueprintView::Inline(format!(
            "{}\n```\n{}\n```",
            escape(name),
            escape_code(content)
        ));
    }
    let lines = content.lines().count();
    BlueprintView::Document {
        file_name: name.to_string(),
        content: content.as_bytes().to_vec(),
        caption: escape(&shorten(
            &format!("{name}: {lines} lines, {} bytes", content.len()),
            200,
        )),
    }
}

/// Keeps a keyboard within Telegram's limits, whatever built it: buttons whose data exceeds
/// [`MAX_CALLBACK_BYTES`] or is empty are left out (cutting them would send another command),
/// labels are shortened, and buttons beyond [`MAX_BUTTONS`] are dropped.
pub fn fit_keyboard(keyboard: Vec<Vec<Button>>) -> Vec<Vec<Button>> {
    let mut left = MAX_BUTTONS;
    keyboard
        .into_iter()
        .map(|row| {
            let row: Vec<Button> = row
                .into_iter()
                .filter(|b| (1..=MAX_CALLBACK_BYTES).contains(&b.data.len()))
                .map(|b| Button {
                    label: label_of(&b.label),
                    data: b.data,
                })
                .take(left)
                .collect();
            left -= row.len();
            row
        })
        .filter(|row| !row.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_go_through_a_short_reference() {
        let short = button("Select demo", "/repo select", "demo").expect("fits");
        assert_eq!(short.data, "/repo select demo");
        let name = "r".repeat(64);
        let long = button("Select", "/repo select", &name).expect("fits");
        assert!(long.data.len() <= MAX_CALLBACK_BYTES, "{}", long.data);
        let reference = long.data.rsplit(' ').next().expect("ref");
        assert!(is_ref(reference));
        assert_eq!(reference, short_ref(&name));
        assert_ne!(short_ref("a"), short_ref("b"));
        assert!(button("x", &"/c".repeat(40), "n").is_none());
    }

    #[test]
    fn lists_page_by_twenty_with_arrows() {
        let names: Vec<String> = (0..150).map(|i| format!("repo{i:03}")).collect();
        let first = repo_list(&names, None, 1);
        assert!(first.text.contains("1–20 of 150"), "{}", first.text);
        let last_row = first.keyboard.last().expect("nav");
        assert_eq!(last_row.len(), 1);
        assert_eq!(last_row[0].data, "/repo list 2");
        let middle = repo_list(&names, None, 2);
        let nav: Vec<&str> = middle
            .keyboard
            .last()
            .expect("nav")
            .iter()
            .map(|b| b.data.as_str())
            .collect();
        assert_eq!(nav, ["/repo list 1", "/repo list 3"]);
        let last = repo_list(&names, None, 99);
        assert!(last.text.contains("141–150 of 150"), "{}", last.text);
        let few = repo_list(&names[..3], Some("repo000"), 1);
        assert_eq!(few.keyboard.len(), 3);
        assert!(few.text.contains("Repositories:"));
    }

    #[test]
    fn pickers_and_run_filters() {
        let names: Vec<String> = (0..45).map(|i| format!("bp{i}.yaml")).collect();
        let first = picker(Pick::BlueprintGet, &names, 1);
        assert!(first.text.starts_with("Which blueprint"), "{}", first.text);
        assert_eq!(first.keyboard[0][0].label, "bp0.yaml");
        assert_eq!(first.keyboard[0][0].data, "/blueprint get bp0.yaml");
        let nav = first.keyboard.last().expect("nav");
        assert_eq!(nav[0].data, "/pick bp_get 2");
        let empty = picker(Pick::RunInspect, &[], 1);
        assert!(empty.keyboard.is_empty());
        assert!(empty.text.contains("nothing to choose"), "{}", empty.text);

        let runs = vec![RunItem {
            key: "r1".into(),
            state: "ok".into(),
        }];
        let view = run_list("demo", &runs, Some("ok"), 1);
        assert!(
            view.text.starts_with("Runs in demo \\(ok\\)"),
            "{}",
            view.text
        );
        let filters: Vec<&str> = view
            .keyboard
            .last()
            .expect("filters")
            .iter()
            .map(|b| b.data.as_str())
            .collect();
        assert_eq!(
            filters,
            [
                "/run list",
                "/run list new",
                "/run list running",
                "/run list error"
            ]
        );
    }

    #[test]
    fn keyboards_are_held_to_telegram_limits() {
        let row = |n: usize| {
            (0..n)
                .map(|i| Button {
                    label: format!("b{i}"),
                    data: format!("/x {i}"),
                })
                .collect::<Vec<_>>()
        };
        let fitted = fit_keyboard(vec![row(60), row(60)]);
        assert_eq!(fitted.iter().map(Vec::len).sum::<usize>(), MAX_BUTTONS);
        let long = Button {
            label: "long".into(),
            data: "x".repeat(65),
        };
        assert!(fit_keyboard(vec![vec![long]]).is_empty());
    }

    #[test]
    fn long_blueprints_become_documents() {
        assert!(matches!(
            blueprint("a.yaml", "x: 1\n"),
            BlueprintView::Inline(_)
        ));
        let yaml = "key: value\n".repeat(1000);
        match blueprint("big.yaml", &yaml) {
            BlueprintView::Document {
                file_name,
                content,
                caption,
            } => {
                assert_eq!(file_name, "big.yaml");
                assert_eq!(content, yaml.as_bytes());
                assert!(caption.contains("1000 lines"), "{caption}");
            }
            other => panic!("{other:?}"),
        }
    }
}
