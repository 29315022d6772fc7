//! Where in a blueprint's text a problem is: the line a [`Problem`](super::Problem) points at,
//! for editors that mark lines. No IO: text and problem in, line number out.
//!
//! A problem's location is either `file:line:column` (a YAML syntax error: the line is in it)
//! or `file: key.path` (a format or semantic problem: `node.ovc__cockpit.memory`,
//! `actions[2].recurring`). A key path is found by its top-level key (the longest one written
//! at column 0 that starts the path: actor names may hold dots), then, within that key's block,
//! by each further segment written as `segment:` deeper down; the deepest one found wins.

/// The 1-based line of `problem` (a problem's `location: message` text, or its location alone)
/// in the blueprint `text` of file `file`, when it can be told.
pub fn problem_line(file: &str, text: &str, problem: &str) -> Option<usize> {
    let rest = problem.strip_prefix(file)?;
    if let Some(after) = rest.strip_prefix(':') {
        // `file:line:column`: a syntax error.
        if let Some((line, _)) = after.split_once(':')
            && let Ok(line) = line.trim().parse::<usize>()
        {
            return (line >= 1).then_some(line);
        }
    }
    let path = rest.strip_prefix(": ")?;
    let path = path.split(": ").next().unwrap_or(path);
    key_path_line(text, &indexed(path))
}

/// The engine's `actions item 2.recurring` (1-based) as `actions[1].recurring`.
fn indexed(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find(" item ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " item ".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) if n >= 1 => out.push_str(&format!("[{}]", n - 1)),
            _ => out.push_str(" item "),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// The 1-based line of a key path (`node.ovc__cockpit.memory`, `actions[2]`) in `text`.
fn key_path_line(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // The top-level key: the longest written at column 0 that starts the path.
    let (top, key) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.starts_with([' ', '\t', '#', '-']) && !l.trim().is_empty())
        .filter_map(|(i, l)| {
            let key = unquote(l.split_once(':')?.0.trim());
            let follows = path.strip_prefix(key)?;
            (follows.is_empty() || follows.starts_with(['.', '['])).then_some((i, key))
        })
        .max_by_key(|(_, key)| key.len())?;
    let mut found = top;
    let block_end = lines[top + 1..]
        .iter()
        .position(|l| !l.starts_with([' ', '\t', '-']) && !l.trim().is_empty())
        .map_or(lines.len(), |p| top + 1 + p);
    let rest = &path[key.len()..];
    for segment in rest.split(['.', '[', ']']).filter(|s| !s.is_empty()) {
        if segment.chars().all(|c| c.is_ascii_digit()) {
            // A list index: the n-th `- ` item of the block, after what was found.
            let Ok(n) = segment.parse::<usize>() else {
                break;
            };
            let item = lines[found + 1..block_end]
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with("- ") || l.trim() == "-")
                .nth(n)
                .map(|(i, _)| found + 1 + i);
            match item {
                Some(line) => found = line,
                None => break,
            }
            continue;
        }
        let wanted = format!("{segment}:");
        let at = (found..block_end).find(|&i| {
            let l = lines[i].trim_start().trim_start_matches("- ");
            l.starts_with(&wanted) || unquote(l.split(':').next().unwrap_or("")) == segment
        });
        match at {
            Some(line) => found = line,
            None => break,
        }
    }
    Some(found + 1)
}

/// A key without its YAML quotes.
fn unquote(key: &str) -> &str {
    key.trim_matches(|c| c == '"' || c == '\'')
}

#[cfg(test)]
mod tests {
    use super::problem_line;

    const TEXT: &str = "\
# a comment
node.ovc__cockpit:
  memory: lots
  disk: 10
sshkey__main:
actions:
  - action: install
  - action: start
    recurring: sometimes
";

    #[test]
    fn problems_point_at_their_lines() {
        let cases: &[(&str, Option<usize>)] = &[
            ("web.yaml:7:3: did not find expected key", Some(7)),
            (
                "web.yaml: node.ovc__cockpit.memory: expected an integer",
                Some(3),
            ),
            ("web.yaml: node.ovc__cockpit.disk: too small", Some(4)),
            ("web.yaml: node.ovc__cockpit: unknown actor", Some(2)),
            ("web.yaml: sshkey__main: no template", Some(5)),
            ("web.yaml: actions[1].recurring: bad schedule", Some(9)),
            ("web.yaml: actions[0]: unknown action", Some(7)),
            // The engine's own words for list items (1-based).
            ("web.yaml: actions item 2.recurring: bad schedule", Some(9)),
            ("web.yaml: actions item 1: unknown action", Some(7)),
            // A segment not written (a default) points at the nearest key found.
            ("web.yaml: node.ovc__cockpit.cpu: required", Some(2)),
            ("web.yaml: nothing__here: ?", None),
            ("other.yaml: node.ovc__cockpit: ?", None),
            ("web.yaml", None),
        ];
        for (problem, line) in cases {
            assert_eq!(problem_line("web.yaml", TEXT, problem), *line, "{problem}");
        }
    }
}
