//! Blueprints: YAML files that declare services, schedule actions and subscribe
//! services to events, read into blocks in file order.

use serde::Serialize;
use serde_json::{Map, Value};

use super::template::describe;
use super::yaml::parse_ordered;
use super::{Problem, valid_name};

/// Whether a blueprint file is archived (disabled): its name starts with `_`.
pub fn is_archived(file_name: &str) -> bool {
    file_name.starts_with('_')
}

/// Checks only that `text` is YAML whose top level is a mapping (or empty), for saving a
/// blueprint: semantic problems are reported when it is executed.
pub fn check_syntax(file_name: &str, text: &str) -> Result<(), Problem> {
    parse_ordered::<Value>(file_name, text).map(|_| ())
}

/// A parsed blueprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blueprint {
    /// The file name, extension included (`web.yaml`); problem locations start with it.
    pub name: String,
    /// The top-level blocks in file order.
    pub blocks: Vec<Block>,
}

/// One top-level key of a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Block {
    /// `actor__instance: {args}` declares (creates or updates) a service.
    Service(ServiceDecl),
    /// `actions: [...]` schedules actions.
    Actions {
        /// The entries in file order.
        entries: Vec<ActionEntry>,
    },
    /// `eventfilters: [...]` subscribes services to event channels.
    EventFilters {
        /// The entries in file order.
        entries: Vec<EventFilter>,
    },
}

/// A service declaration: `actor__instance: {args}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceDecl {
    /// The key as written, used in problem locations.
    pub key: String,
    /// The actor (template) name, before `__`.
    pub actor: String,
    /// The instance name, after `__`.
    pub instance: String,
    /// The arguments; empty for a bare `sshkey__main:`.
    pub args: Map<String, Value>,
}

/// An entry of `actions:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionEntry {
    /// The action to schedule.
    pub action: String,
    /// Only services of this actor, when given.
    pub actor: Option<String>,
    /// Only services with this instance name, when given.
    pub service: Option<String>,
    /// Also run the action on this schedule (a period or a cron expression), when given.
    pub recurring: Option<super::Schedule>,
}

/// An entry of `eventfilters:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventFilter {
    /// Only services of this actor, when given.
    pub actor: Option<String>,
    /// Only services with this instance name, when given.
    pub service: Option<String>,
    /// The event channel to listen on.
    pub channel: String,
    /// The action an event on the channel runs.
    pub action: String,
}

/// Splits `actor__instance` at the first `__`, when both sides are valid names.
pub(crate) fn split_key(key: &str) -> Option<(&str, &str)> {
    let (actor, instance) = key.split_once("__")?;
    (valid_name(actor) && valid_name(instance)).then_some((actor, instance))
}

impl Blueprint {
    /// Parses a blueprint, returning every format problem (bad keys, malformed
    /// `actions:`/`eventfilters:` entries) or the YAML syntax error.
    pub fn parse(name: &str, text: &str) -> Result<Blueprint, Vec<Problem>> {
        let (bp, problems) = Blueprint::parse_lenient(name, text).map_err(|p| vec![p])?;
        if problems.is_empty() {
            Ok(bp)
        } else {
            Err(problems)
        }
    }

    /// Parses what can be parsed and lists the problems with the rest, so that executing
    /// a blueprint reports format and semantic problems together. Only a YAML syntax
    /// error stops it.
    pub(crate) fn parse_lenient(
        name: &str,
        text: &str,
    ) -> Result<(Blueprint, Vec<Problem>), Problem> {
        let entries: Vec<(String, Value)> = parse_ordered(name, text)?;
        let mut problems = Vec::new();
        let mut blocks = Vec::new();
        for (key, value) in entries {
            let loc = format!("{name}: {key}");
            match key.as_str() {
                "actions" => {
                    let entries = list_entries(&loc, &value, &mut problems, action_entry);
                    blocks.push(Block::Actions { entries });
                }
                "eventfilters" => {
                    let entries = list_entries(&loc, &value, &mut problems, event_filter);
                    blocks.push(Block::EventFilters { entries });
                }
                _ => {
                    let Some((actor, instance)) = split_key(&key) else {
                        problems.push(Problem::new(
                            loc,
                            format!(
                                "`{key}` needs to be actor__instance (or `actions` / `eventfilters`)"
                            ),
                        ));
                        continue;
                    };
                    let args = match value {
                        Value::Null => Map::new(),
                        Value::Object(map) => map,
                        other => {
                            problems.push(Problem::new(
                                loc,
                                format!("arguments must be a mapping, got {}", describe(&other)),
                            ));
                            continue;
                        }
                    };
                    blocks.push(Block::Service(ServiceDecl {
                        actor: actor.to_string(),
                        instance: instance.to_string(),
                        key,
                        args,
                    }));
                }
            }
        }
        Ok((
            Blueprint {
                name: name.to_string(),
                blocks,
            },
            problems,
        ))
    }

    /// The service declarations, in file order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceDecl> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Service(d) => Some(d),
            _ => None,
        })
    }
}

/// Reads one list item (its location, its mapping) into an entry, noting problems.
type EntryReader<T> = fn(&str, &Map<String, Value>, &mut Vec<Problem>) -> Option<T>;

/// Reads the items of a list block with `read`, each located as `... item N`; an item
/// that is not a mapping, or a block that is not a list, is a problem.
fn list_entries<T>(
    loc: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
    read: EntryReader<T>,
) -> Vec<T> {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        Value::Null => &[],
        other => {
            problems.push(Problem::new(
                loc,
                format!("expected a list of mappings, got {}", describe(other)),
            ));
            &[]
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let loc = format!("{loc} item {}", i + 1);
        match item {
            Value::Object(map) => out.extend(read(&loc, map, problems)),
            other => problems.push(Problem::new(
                loc,
                format!("expected a mapping, got {}", describe(other)),
            )),
        }
    }
    out
}

/// Reads the string fields `strings` of an entry, reporting keys that are neither in
/// `strings` nor in `others`, and non-scalar values. Numbers and booleans are read as
/// their text (an instance may be called `1`). `None` when there was a problem.
fn string_fields(
    loc: &str,
    map: &Map<String, Value>,
    strings: &[&str],
    others: &[&str],
    problems: &mut Vec<Problem>,
) -> Option<Vec<Option<String>>> {
    let before = problems.len();
    for key in map.keys() {
        if !strings.contains(&key.as_str()) && !others.contains(&key.as_str()) {
            let known: Vec<&str> = strings.iter().chain(others).copied().collect();
            problems.push(Problem::new(
                loc,
                format!("unknown key `{key}` (known: {})", known.join(", ")),
            ));
        }
    }
    let values = strings
        .iter()
        .map(|k| match map.get(*k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(other) => {
                problems.push(Problem::new(
                    format!("{loc}.{k}"),
                    format!("expected a string, got {}", describe(other)),
                ));
                None
            }
        })
        .collect();
    (problems.len() == before).then_some(values)
}

/// Reads one `actions:` entry.
fn action_entry(
    loc: &str,
    map: &Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<ActionEntry> {
    let fields = string_fields(
        loc,
        map,
        &["action", "actor", "service"],
        &["recurring"],
        problems,
    );
    let recurring = match map.get("recurring") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => super::Schedule::from_value(v).map(Some).map_err(|m| {
            let action = map.get("action").and_then(Value::as_str).unwrap_or("?");
            let whom = match (
                map.get("service").and_then(Value::as_str),
                map.get("actor").and_then(Value::as_str),
            ) {
                (Some(service), _) => format!("service `{service}`"),
                (None, Some(actor)) => format!("every service of actor `{actor}`"),
                (None, None) => "every service".to_string(),
            };
            problems.push(Problem::new(
                format!("{loc}.recurring"),
                format!("action `{action}` of {whom}: {m}"),
            ));
        }),
    };
    let mut fields = fields?.into_iter();
    let (action, actor, service) = (fields.next()?, fields.next()?, fields.next()?);
    let Some(action) = action else {
        problems.push(Problem::new(loc, "missing `action`"));
        return None;
    };
    Some(ActionEntry {
        action,
        actor,
        service,
        recurring: recurring.ok()?,
    })
}

/// Reads one `eventfilters:` entry.
fn event_filter(
    loc: &str,
    map: &Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<EventFilter> {
    let mut fields = string_fields(
        loc,
        map,
        &["actor", "service", "channel", "action"],
        &[],
        problems,
    )?
    .into_iter();
    let (actor, service, channel, action) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let mut missing = |name: &str, v: Option<String>| {
        if v.is_none() {
            problems.push(Problem::new(loc, format!("missing `{name}`")));
        }
        v
    };
    let channel = missing("channel", channel);
    let action = missing("action", action);
    Some(EventFilter {
        actor,
        service,
        channel: channel?,
        action: action?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per block entry, or the problems.
    fn check_parse(name: &str, text: &str, expected: &[&str]) {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        let got: Vec<String> = match Blueprint::parse(name, text) {
            Ok(bp) => bp
                .blocks
                .iter()
                .flat_map(|b| match b {
                    Block::Service(d) => {
                        vec![format!(
                            "{} {} {}",
                            d.actor,
                            d.instance,
                            Value::Object(d.args.clone())
                        )]
                    }
                    Block::Actions { entries } => entries
                        .iter()
                        .map(|e| {
                            format!(
                                "action {} actor={} service={} recurring={:?}",
                                e.action,
                                opt(&e.actor),
                                opt(&e.service),
                                e.recurring
                            )
                        })
                        .collect(),
                    Block::EventFilters { entries } => entries
                        .iter()
                        .map(|e| {
                            format!(
                                "on {} {} actor={} service={}",
                                e.channel,
                                e.action,
                                opt(&e.actor),
                                opt(&e.service)
                            )
                        })
                        .collect(),
                })
                .collect(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected, "{name}");
    }

    #[test]
    fn fixtures_parse() {
        check_parse(
            "ovc_cockpit.yaml",
            include_str!("../../tests/fixtures/blueprints/ovc_cockpit.yaml"),
            &[
                r#"g8client uk {"login":"myLogin","password":"myPassword","url":"du-conv-3.demo.greenitglobe.com"}"#,
                "uservdc myLogin {}",
                r#"vdc cockpit {"account":"MyAccount","description":"cockpit vdc","g8client":"uk","location":"du-conv-3","uservdc":["myLogin"]}"#,
                "sshkey main {}",
                r#"node.ovc cockpit {"bootdisk.size":50,"memory":2,"os.image":"Ubuntu 16.04 x64","ports":["22","80:80","443:443"],"sshkey":"main","vdc":"cockpit"}"#,
                "action install actor=- service=- recurring=None",
            ],
        );
        check_parse(
            "autosnapshotting.yaml",
            include_str!("../../tests/fixtures/blueprints/autosnapshotting.yaml"),
            &[
                r#"autosnapshotting mysnapshotting {"cleanupInterval":"1d","retention":"3d","snapshotInterval":"1h","vdc":"myvdc"}"#,
                "action install actor=- service=- recurring=None",
            ],
        );
        check_parse(
            "datacenter_rack.yaml",
            include_str!("../../tests/fixtures/blueprints/datacenter_rack.yaml"),
            &[
                r#"datacenter eu {"description":"Main datacenter in Europe","location":"Europe"}"#,
                r#"rack storage1 {"datacenter":"eu","description":"rack for storage node","location":"room1"}"#,
            ],
        );
        check_parse(
            "run_filters.yaml",
            include_str!("../../tests/fixtures/blueprints/run_filters.yaml"),
            &[
                "test_run_filter1 main {}",
                "test_run_filters main {}",
                "action install actor=- service=- recurring=None",
                "action test actor=test_run_filter1 service=- recurring=None",
            ],
        );
        check_parse(
            "vdc.yaml",
            include_str!("../../tests/fixtures/blueprints/vdc.yaml"),
            &[
                r#"g8client cl {"account":"***","login":"***","password":"***","url":"uk-g8-1.demo.greenitglobe.com"}"#,
                r#"vdc myvdc {"account":"***","g8client":"cl","location":"uk-g8-1"}"#,
                "action install actor=- service=- recurring=None",
            ],
        );
    }

    #[test]
    fn entries_and_odd_values() {
        check_parse(
            "x.yaml",
            "eventfilters:\n  - {channel: email, action: report}\n  - {actor: mailer, service: m1, channel: tg, action: ping}\n\
             actions:\n  - {action: check, actor: mailer, service: 7, recurring: 5m}\n\
             a__b: {mode: 0755, flag: yes}\n",
            &[
                "on email report actor=- service=-",
                "on tg ping actor=mailer service=m1",
                "action check actor=mailer service=7 recurring=Some(Period(300))",
                r#"a b {"flag":"yes","mode":"0755"}"#,
            ],
        );
        check_parse("empty.yaml", "", &[]);
        check_parse("c.yaml", "# only a comment\n", &[]);
    }

    #[test]
    fn format_problems() {
        check_parse(
            "bad.yaml",
            "nounderscore: {}\nnode__: {}\n__x: {}\nnode__a b: {}\nok__one: 5\n\
             actions:\n  - {actor: x}\n  - install\n  - {action: a, recurring: 0}\n  - {action: a, when: now}\n\
             \x20 - {action: backup, service: db, recurring: {cron: '0 3 * * *', tz: Mars/Olympus}}\n\
             eventfilters:\n  - {action: a}\n",
            &[
                "bad.yaml: nounderscore: `nounderscore` needs to be actor__instance (or `actions` / `eventfilters`)",
                "bad.yaml: node__: `node__` needs to be actor__instance (or `actions` / `eventfilters`)",
                "bad.yaml: __x: `__x` needs to be actor__instance (or `actions` / `eventfilters`)",
                "bad.yaml: node__a b: `node__a b` needs to be actor__instance (or `actions` / `eventfilters`)",
                "bad.yaml: ok__one: arguments must be a mapping, got 5",
                "bad.yaml: actions item 1: missing `action`",
                "bad.yaml: actions item 2: expected a mapping, got \"install\"",
                "bad.yaml: actions item 3.recurring: action `a` of every service: period `0` must be more than zero",
                "bad.yaml: actions item 4: unknown key `when` (known: action, actor, service, recurring)",
                "bad.yaml: actions item 5.recurring: action `backup` of service `db`: time zone `Mars/Olympus` is unknown; expected an IANA name such as Europe/Brussels or UTC",
                "bad.yaml: eventfilters item 1: missing `channel`",
            ],
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let text = "a__b:\n  x: [1, 2\nc__d: 3\n";
        check_parse(
            "s.yaml",
            text,
            &["s.yaml:3:5: illegal placement of ':' indicator"],
        );
        assert_eq!(check_syntax("s.yaml", "a__b: {}\n"), Ok(()));
        let Err(p) = check_syntax("s.yaml", "- 1\n- 2\n") else {
            panic!("a list is not a blueprint");
        };
        assert!(p.location.starts_with("s.yaml:1:"), "{p}");
        check_parse(
            "dup.yaml",
            "a__b: {}\na__b: {}\n",
            &[
                "dup.yaml:2:1: duplicate mapping key: a__b, set DuplicateKeyPolicy in Options if acceptable",
            ],
        );
    }

    #[test]
    fn archived_names() {
        assert!(is_archived("_old.yaml"));
        assert!(!is_archived("web.yaml"));
        assert!(!is_archived("web_.yaml"));
    }
}
