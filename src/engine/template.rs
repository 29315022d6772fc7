//! Actor templates: the schema of a service's fields, its action names and its
//! `config.yaml` (recurring actions and event hooks).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::yaml::parse_ordered;
use super::{Problem, valid_name};

/// The role of an actor: its name before the first `.` (`node.ovc` -> `node`).
///
/// Services are keyed by role, so `node.ovc__a` and `node.kvm__a` are the same service.
pub fn role_of(actor: &str) -> &str {
    actor.split_once('.').map_or(actor, |(role, _)| role)
}

/// Why a period such as `5m` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// The text is not digits followed by an optional unit.
    #[error(
        "period `{0}` is not a number of seconds or a number followed by s, m, h, d or w (e.g. 30s, 5m, 1h)"
    )]
    Format(String),
    /// A zero period would run the action in a busy loop.
    #[error("period `{0}` must be more than zero")]
    Zero(String),
    /// The period does not fit in 64 bits of seconds.
    #[error("period `{0}` is too long")]
    Overflow(String),
}

/// Reads a period (`30s`, `5m`, `1h`, `1d`, `2w`, or plain seconds `45`) into seconds.
pub fn parse_period(text: &str) -> Result<u64, PeriodError> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let factor: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(PeriodError::Format(text.to_string())),
    };
    if digits.is_empty() {
        return Err(PeriodError::Format(text.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| PeriodError::Overflow(text.to_string()))?;
    let secs = n
        .checked_mul(factor)
        .ok_or_else(|| PeriodError::Overflow(text.to_string()))?;
    if secs == 0 {
        return Err(PeriodError::Zero(text.to_string()));
    }
    Ok(secs)
}

/// Reads a period given in YAML either as a string (`5m`) or as an integer of seconds.
pub(crate) fn period_from_value(value: &Value) -> Result<u64, String> {
    match value {
        Value::String(s) => parse_period(s).map_err(|e| e.to_string()),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Err(PeriodError::Zero(n.to_string()).to_string()),
            Some(secs) => Ok(secs),
            None => Err(PeriodError::Format(n.to_string()).to_string()),
        },
        other => Err(format!(
            "a period must be a string like `5m` or seconds, got {}",
            describe(other)
        )),
    }
}

/// The type of a schema field; a blueprint value is checked (and coerced) against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// Text. Numbers and booleans given for a `str` field are stored as their text.
    Str,
    /// A 64-bit integer. A quoted integer (`'50'`) is accepted.
    Int,
    /// `true` or `false` (also quoted).
    Bool,
    /// A 64-bit float; integers are accepted.
    Float,
    /// A list whose items all have the inner type.
    List(Box<FieldType>),
}

impl FieldType {
    /// Reads a type name: `str`, `int`, `bool`, `float` or `list(T)` (nestable).
    pub fn parse(text: &str) -> Option<FieldType> {
        let t = text.trim();
        match t {
            "str" => Some(FieldType::Str),
            "int" => Some(FieldType::Int),
            "bool" => Some(FieldType::Bool),
            "float" => Some(FieldType::Float),
            _ => t
                .strip_prefix("list(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(FieldType::parse)
                .map(|inner| FieldType::List(Box::new(inner))),
        }
    }

    /// Checks `value` against this type and returns the value to store, or a message
    /// saying what was expected and what was given.
    ///
    /// Coercions (documented in the module): scalars fill `str` fields as their text;
    /// quoted scalars fill `int`/`float`/`bool` fields when their text parses as such.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        let fail = || {
            Err(format!(
                "expected {}, got {}",
                self.expected(),
                describe(value)
            ))
        };
        match (self, value) {
            (FieldType::Str, Value::String(_)) => Ok(value.clone()),
            (FieldType::Str, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (FieldType::Str, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (FieldType::Int, Value::Number(n)) => n.as_i64().map(Value::from).map_or_else(fail, Ok),
            (FieldType::Int, Value::String(s)) => {
                s.trim().parse::<i64>().map(Value::from).or_else(|_| fail())
            }
            (FieldType::Float, Value::Number(n)) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .map_or_else(fail, Ok),
            (FieldType::Float, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .map_or_else(fail, Ok),
            (FieldType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (FieldType::Bool, Value::String(s)) => match s.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => fail(),
            },
            (FieldType::List(inner), Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    inner
                        .check(item)
                        .map_err(|m| format!("item {}: {m}", i + 1))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => fail(),
        }
    }

    /// Words for "what was expected" in error messages.
    fn expected(&self) -> String {
        match self {
            FieldType::Str => "a string".into(),
            FieldType::Int => "an integer".into(),
            FieldType::Bool => "true or false".into(),
            FieldType::Float => "a number".into(),
            FieldType::List(inner) => format!("a list of {inner}"),
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Str => f.write_str("str"),
            FieldType::Int => f.write_str("int"),
            FieldType::Bool => f.write_str("bool"),
            FieldType::Float => f.write_str("float"),
            FieldType::List(inner) => write!(f, "list({inner})"),
        }
    }
}

impl Serialize for FieldType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Short words for a JSON value in error messages (`"abc"`, `3`, `a list`).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("\"{}...\"", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("\"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A consume relation: this field names the producers (services of `role`) that the
/// service depends on, so that they are installed first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consume {
    /// The role of the producers this field names.
    pub role: String,
    /// The fewest producers a service must name (after `auto`).
    pub min: usize,
    /// The most producers a service may name; `None` is unbounded (only for `list(str)`).
    pub max: Option<usize>,
    /// Whether a producer named `auto_N` is created when none is given.
    pub auto: bool,
}

/// One field of a service, from `schema.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The field name as blueprints write it; may contain dots (`bootdisk.size`).
    pub name: String,
    /// The type values are checked and coerced against.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// The value filled in when a blueprint does not give one.
    pub default: Option<Value>,
    /// When set, the field names the service's parent, an instance of this actor's role.
    pub parent: Option<String>,
    /// When set, the field names producers this service consumes.
    pub consume: Option<Consume>,
    /// Free text for people reading the template through the API.
    pub description: Option<String>,
}

/// The fields of an actor's services, in `schema.yaml` order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Schema {
    /// The fields in file order (schemas are small, so lookups scan).
    pub fields: Vec<Field>,
}

/// A field definition as written in YAML, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    /// The type name; `str` when absent.
    #[serde(rename = "type")]
    ty: Option<String>,
    /// The default value, checked against the type.
    default: Option<Value>,
    /// The parent actor, when this field names the parent.
    parent: Option<String>,
    /// The consume relation, when this field names producers.
    consume: Option<RawConsume>,
    /// Free text for readers.
    description: Option<String>,
}

/// A consume definition as written in YAML, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsume {
    /// The consumed role.
    role: String,
    /// The fewest producers; 0 when absent.
    min: Option<usize>,
    /// The most producers; 1 for a str field, unbounded for a list when absent.
    max: Option<usize>,
    /// Whether to create an `auto_N` producer when none is named.
    #[serde(default)]
    auto: bool,
}

impl Schema {
    /// Parses `schema.yaml`: a mapping of field name to `{type, default?, parent?,
    /// consume?, description?}`; a bare `name:` is a `str` field. Returns every problem
    /// found (located as `schema.yaml: <field>`).
    pub fn parse(text: &str) -> Result<Schema, Vec<Problem>> {
        const FILE: &str = "schema.yaml";
        let raw: Vec<(String, Option<RawField>)> =
            parse_ordered(FILE, text).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        for (name, def) in raw {
            let loc = format!("{FILE}: {name}");
            let mut problem = |m: String| problems.push(Problem::new(loc.clone(), m));
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                problem("a field name must be non-empty and have no spaces".into());
            }
            let def = def.unwrap_or(RawField {
                ty: None,
                default: None,
                parent: None,
                consume: None,
                description: None,
            });
            let ty_text = def.ty.as_deref().unwrap_or("str");
            let Some(ty) = FieldType::parse(ty_text) else {
                problem(format!(
                    "unknown type `{ty_text}`: use str, int, bool, float or list(T)"
                ));
                continue;
            };
            let default = match def.default {
                None | Some(Value::Null) => None,
                Some(v) => match ty.check(&v) {
                    Ok(v) => Some(v),
                    Err(m) => {
                        problem(format!("default: {m}"));
                        None
                    }
                },
            };
            if let Some(parent) = &def.parent {
                if !valid_name(parent) {
                    problem(format!("parent `{parent}` is not a valid actor name"));
                }
                if ty != FieldType::Str {
                    problem(format!("a parent field must have type str, not {ty}"));
                }
                if def.consume.is_some() {
                    problem("a field cannot be both parent and consume".into());
                }
                if let Some(other) = fields.iter().find(|f| f.parent.is_some()) {
                    problem(format!(
                        "only one field may be the parent (`{}` already is)",
                        other.name
                    ));
                }
            }
            let consume = def.consume.map(|c| {
                if !valid_name(&c.role) {
                    problem(format!(
                        "consume role `{}` is not a valid role name",
                        c.role
                    ));
                }
                let max = match (&ty, c.max) {
                    (FieldType::Str, None) => Some(1),
                    (FieldType::Str, Some(m)) if m > 1 => {
                        problem(format!(
                            "a str field consumes at most one {}; use list(str) for max {m}",
                            c.role
                        ));
                        Some(m)
                    }
                    (FieldType::Str, m) => m,
                    (FieldType::List(inner), m) if **inner == FieldType::Str => m,
                    (_, m) => {
                        problem(format!(
                            "a consume field must be str or list(str), not {ty}"
                        ));
                        m
                    }
                };
                let min = c.min.unwrap_or(0);
                if let Some(max) = max.filter(|&max| min > max) {
                    problem(format!("consume min {min} is more than max {max}"));
                }
                Consume {
                    role: c.role,
                    min,
                    max,
                    auto: c.auto,
                }
            });
            fields.push(Field {
                name,
                ty,
                default,
                parent: def.parent,
                consume,
                description: def.description,
            });
        }
        if problems.is_empty() {
            Ok(Schema { fields })
        } else {
            Err(problems)
        }
    }

    /// The field called `name`, if the schema has it.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field naming the parent, if the schema has one.
    pub fn parent_field(&self) -> Option<&Field> {
        self.fields.iter().find(|f| f.parent.is_some())
    }
}

/// A recurring action from `config.yaml`: run `action` on a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recurring {
    /// The action to run; must be one of the template's actions.
    pub action: String,
    /// When: a period or a cron expression in a time zone.
    pub schedule: super::Schedule,
}

/// An event hook from `config.yaml`: an event on `channel` runs these actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventHook {
    /// The event channel (`email`, `telegram`, ...).
    pub channel: String,
    /// The actions each service of the template runs on such an event.
    pub actions: Vec<String>,
}

/// The optional `config.yaml` of a template; it applies to every service of the template.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TemplateConfig {
    /// Actions that run on a period.
    pub recurring: Vec<Recurring>,
    /// Actions that run on events.
    pub events: Vec<EventHook>,
    /// How failed actions are retried, by action name.
    pub retries: BTreeMap<String, RetryPolicy>,
}

/// How a failed action is retried (`config.yaml`: `actions: {name: {retries, retry_delay,
/// retry_max_delay}}`): up to `retries` more attempts, the n-th after `delay × 2^(n-1)`
/// seconds, never more than `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts after the first failure.
    pub retries: u32,
    /// Seconds before the first retry.
    pub delay: u64,
    /// The cap of the doubling delay, in seconds.
    pub max_delay: u64,
}

impl RetryPolicy {
    /// The delay before the attempt that follows failure number `failures` (1-based), in
    /// seconds: `delay`, then doubled per failure, capped at `max_delay`.
    pub fn delay_after(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(62);
        self.delay
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay.max(self.delay))
    }
}

/// The default cap of a retry delay: one hour.
const DEFAULT_MAX_RETRY_DELAY: u64 = 3_600;
/// At most this many retries of one failure.
const MAX_RETRIES: u64 = 100;

/// `config.yaml` as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Recurring actions.
    #[serde(default)]
    recurring: Vec<RawRecurring>,
    /// Event hooks.
    #[serde(default)]
    events: Vec<RawEvent>,
    /// Per-action settings (retries).
    #[serde(default)]
    actions: BTreeMap<String, RawAction>,
}

/// An `actions` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    /// Attempts after a failure.
    #[serde(default)]
    retries: Option<Value>,
    /// The first delay (`30s`, or seconds).
    #[serde(default)]
    retry_delay: Option<Value>,
    /// The cap of the doubling delay.
    #[serde(default)]
    retry_max_delay: Option<Value>,
}

/// A `recurring` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecurring {
    /// The action to repeat.
    action: String,
    /// A period string (`5m`) or seconds.
    #[serde(default)]
    period: Option<Value>,
    /// A cron expression, instead of a period.
    #[serde(default)]
    cron: Option<String>,
    /// The time zone of `cron`.
    #[serde(default)]
    tz: Option<String>,
}

/// An `events` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    /// The event channel.
    channel: String,
    /// The actions an event runs.
    actions: Vec<String>,
}

impl TemplateConfig {
    /// Parses `config.yaml`: `recurring: [{action, period}]`, `events: [{channel,
    /// actions}]`. An empty file is an empty config.
    pub fn parse(text: &str) -> Result<TemplateConfig, Vec<Problem>> {
        const FILE: &str = "config.yaml";
        let raw: Option<RawConfig> = super::yaml::parse(FILE, text).map_err(|p| vec![p])?;
        let Some(raw) = raw else {
            return Ok(TemplateConfig::default());
        };
        let mut problems = Vec::new();
        let mut recurring = Vec::new();
        for (i, r) in raw.recurring.into_iter().enumerate() {
            let mut written = serde_json::Map::new();
            if let Some(period) = r.period {
                written.insert("period".into(), period);
            }
            if let Some(cron) = r.cron {
                written.insert("cron".into(), Value::String(cron));
            }
            if let Some(tz) = r.tz {
                written.insert("tz".into(), Value::String(tz));
            }
            match super::Schedule::from_value(&Value::Object(written)) {
                Ok(schedule) => recurring.push(Recurring {
                    action: r.action,
                    schedule,
                }),
                Err(m) => problems.push(Problem::new(
                    format!("{FILE}: recurring item {} (action `{}`)", i + 1, r.action),
                    m,
                )),
            }
        }
        let events = raw
            .events
            .into_iter()
            .map(|e| EventHook {
                channel: e.channel,
                actions: e.actions,
            })
            .collect();
        let mut retries = BTreeMap::new();
        for (action, a) in raw.actions {
            let at = format!("{FILE}: actions.{action}");
            let count = match &a.retries {
                None => 0,
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_RETRIES) => {
                    n.as_u64().unwrap_or_default()
                }
                Some(other) => {
                    problems.push(Problem::new(
                        format!("{at}.retries"),
                        format!(
                            "expected a number from 0 to {MAX_RETRIES}, got {}",
                            describe(other)
                        ),
                    ));
                    continue;
                }
            };
            let mut period = |key: &str, value: &Option<Value>, default: u64| match value {
                None => Some(default),
                Some(v) => period_from_value(v)
                    .map_err(|m| problems.push(Problem::new(format!("{at}.{key}"), m)))
                    .ok(),
            };
            let delay = period("retry_delay", &a.retry_delay, 60);
            let max_delay = period(
                "retry_max_delay",
                &a.retry_max_delay,
                DEFAULT_MAX_RETRY_DELAY,
            );
            if let (Some(delay), Some(max_delay)) = (delay, max_delay)
                && count > 0
            {
                retries.insert(
                    action,
                    RetryPolicy {
                        retries: count as u32,
                        delay,
                        max_delay,
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(TemplateConfig {
                recurring,
                events,
                retries,
            })
        } else {
            Err(problems)
        }
    }
}

/// An actor template: what a service of this actor looks like and can do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    /// The actor name (`node.ovc`), the directory name under `actorTemplates/`.
    pub actor: String,
    /// The fields of its services.
    pub schema: Schema,
    /// The action names (the files in `actions/`), sorted; the caller lists them.
    pub actions: Vec<String>,
    /// Recurring actions and event hooks for every service of this actor.
    pub config: TemplateConfig,
}

impl Template {
    /// Builds a template from the texts of its files and the names of its actions,
    /// checking that `config.yaml` names only existing actions. Problem locations are
    /// prefixed with the actor (`node.ovc/schema.yaml: memory`).
    pub fn parse(
        actor: &str,
        schema_yaml: &str,
        config_yaml: Option<&str>,
        mut actions: Vec<String>,
    ) -> Result<Template, Vec<Problem>> {
        let mut problems = Vec::new();
        if !valid_name(actor) || actor.contains("__") {
            problems.push(Problem::new(
                actor,
                "an actor name must be non-empty, without `__`, `!`, `/` or spaces",
            ));
        }
        let prefix = |mut p: Problem| {
            p.location = format!("{actor}/{}", p.location);
            p
        };
        let schema = Schema::parse(schema_yaml).unwrap_or_else(|ps| {
            problems.extend(ps.into_iter().map(prefix));
            Schema::default()
        });
        let config = match config_yaml {
            None => TemplateConfig::default(),
            Some(text) => TemplateConfig::parse(text).unwrap_or_else(|ps| {
                problems.extend(ps.into_iter().map(prefix));
                TemplateConfig::default()
            }),
        };
        actions.sort();
        actions.dedup();
        let named = config
            .recurring
            .iter()
            .map(|r| &r.action)
            .chain(config.events.iter().flat_map(|e| e.actions.iter()))
            .chain(config.retries.keys());
        for action in named {
            if actions.binary_search(action).is_err() {
                problems.push(Problem::new(
                    format!("{actor}/config.yaml"),
                    format!("unknown action `{action}`: add actions/{action}"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(Template {
                actor: actor.to_string(),
                schema,
                actions,
                config,
            })
        } else {
            Err(problems)
        }
    }

    /// The role of this template's services.
    pub fn role(&self) -> &str {
        role_of(&self.actor)
    }

    /// Whether services of this template have `action`.
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Checks a value against a type: `Ok(stored)` or an error containing the text.
    fn check_type(ty: &str, value: Value, expected: Result<Value, &str>) {
        let Some(t) = FieldType::parse(ty) else {
            panic!("type {ty} should parse");
        };
        assert_eq!(t.to_string(), ty, "type display round-trips");
        match (t.check(&value), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{ty} <- {value}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{ty} <- {value}: {got}"),
            (got, want) => panic!("{ty} <- {value}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn types_check_and_coerce() {
        check_type("int", json!(2), Ok(json!(2)));
        check_type("int", json!("42"), Ok(json!(42)));
        check_type("int", json!("abc"), Err("expected an integer, got \"abc\""));
        check_type("int", json!(2.5), Err("expected an integer, got 2.5"));
        check_type("str", json!(22), Ok(json!("22")));
        check_type("str", json!(true), Ok(json!("true")));
        check_type("str", json!(["a"]), Err("expected a string, got a list"));
        check_type("bool", json!(false), Ok(json!(false)));
        check_type("bool", json!("yes"), Err("expected true or false"));
        check_type("float", json!(2), Ok(json!(2.0)));
        check_type("float", json!("1.5"), Ok(json!(1.5)));
        check_type("list(str)", json!(["22", 80]), Ok(json!(["22", "80"])));
        check_type(
            "list(int)",
            json!([1, "x"]),
            Err("item 2: expected an integer"),
        );
        check_type("list(int)", json!(1), Err("expected a list of int, got 1"));
        check_type("list(list(int))", json!([[1]]), Ok(json!([[1]])));
        assert_eq!(FieldType::parse("list(nope)"), None);
        assert_eq!(FieldType::parse("string"), None);
    }

    /// Checks a period: seconds or an error.
    fn check_period(text: &str, expected: Result<u64, PeriodError>) {
        assert_eq!(parse_period(text), expected, "{text}");
    }

    #[test]
    fn periods() {
        check_period("30s", Ok(30));
        check_period("5m", Ok(300));
        check_period("1h", Ok(3_600));
        check_period("1d", Ok(86_400));
        check_period("45", Ok(45));
        check_period(" 2w ", Ok(1_209_600));
        check_period("0m", Err(PeriodError::Zero("0m".into())));
        check_period("m", Err(PeriodError::Format("m".into())));
        check_period("5y", Err(PeriodError::Format("5y".into())));
        check_period("-5s", Err(PeriodError::Format("-5s".into())));
        check_period(
            "99999999999999999999d",
            Err(PeriodError::Overflow("99999999999999999999d".into())),
        );
        assert_eq!(period_from_value(&json!(60)), Ok(60));
        assert!(period_from_value(&json!(0)).is_err());
    }

    #[test]
    fn roles() {
        assert_eq!(role_of("node.ovc"), "node");
        assert_eq!(role_of("node.ovc.x"), "node");
        assert_eq!(role_of("sshkey"), "sshkey");
    }

    /// Parses a schema and compares a rendering of its fields (or its problems).
    fn check_schema(yaml: &str, expected: &[&str]) {
        let got: Vec<String> = match Schema::parse(yaml) {
            Ok(s) => s
                .fields
                .iter()
                .map(|f| {
                    let mut line = format!("{}: {}", f.name, f.ty);
                    if let Some(d) = &f.default {
                        line.push_str(&format!(" = {d}"));
                    }
                    if let Some(p) = &f.parent {
                        line.push_str(&format!(" parent {p}"));
                    }
                    if let Some(c) = &f.consume {
                        line.push_str(&format!(
                            " consume {} {}..{:?} auto={}",
                            c.role, c.min, c.max, c.auto
                        ));
                    }
                    line
                })
                .collect(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected, "schema:\n{yaml}");
    }

    #[test]
    fn schemas() {
        check_schema(
            "location: {type: str, default: \"eu\"}\n\
             memory:   {type: int, default: 2}\n\
             ports:    {type: \"list(str)\"}\n\
             datacenter: {type: str, parent: datacenter}\n\
             sshkey:   {type: str, consume: {role: sshkey, min: 1, max: 1, auto: true}}\n\
             bootdisk.size:\n",
            &[
                "location: str = \"eu\"",
                "memory: int = 2",
                "ports: list(str)",
                "datacenter: str parent datacenter",
                "sshkey: str consume sshkey 1..Some(1) auto=true",
                "bootdisk.size: str",
            ],
        );
        check_schema("", &[]);
        check_schema(
            "a: {type: str, parent: x}\nb: {type: str, parent: y}\nc: {type: int, default: abc}\n\
             d: {type: text}\ne: {type: int, consume: {role: r}}\nf: {type: str, consume: {role: r, min: 2}}",
            &[
                "schema.yaml: b: only one field may be the parent (`a` already is)",
                "schema.yaml: c: default: expected an integer, got \"abc\"",
                "schema.yaml: d: unknown type `text`: use str, int, bool, float or list(T)",
                "schema.yaml: e: a consume field must be str or list(str), not int",
                "schema.yaml: f: consume min 2 is more than max 1",
            ],
        );
        check_schema(
            "a: {type: str, color: red}",
            &[
                "schema.yaml:1:16: unknown field `color`, expected one of type, default, parent, consume, description",
            ],
        );
    }

    #[test]
    fn template_config() {
        let t = crate::engine::testkit::tpl(
            "mailer",
            "",
            "check report check",
            Some(
                "recurring: [{action: check, period: 5m}, {action: report, period: 60}]\nevents: [{channel: email, actions: [report]}]",
            ),
        );
        assert_eq!(t.actions, ["check", "report"]);
        assert_eq!(
            t.config.recurring,
            [
                Recurring {
                    action: "check".into(),
                    schedule: crate::engine::Schedule::Period(300)
                },
                Recurring {
                    action: "report".into(),
                    schedule: crate::engine::Schedule::Period(60)
                }
            ]
        );
        assert_eq!(t.config.events[0].channel, "email");
        let problems = Template::parse(
            "bad__name",
            "x: {type: nope}",
            Some("recurring: [{action: gone, period: 5m}]\nevents: [{channel: e, actions: [missing]}]"),
            vec!["install".into()],
        )
        .err()
        .unwrap_or_default();
        let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "bad__name: an actor name must be non-empty, without `__`, `!`, `/` or spaces",
                "bad__name/schema.yaml: x: unknown type `nope`: use str, int, bool, float or list(T)",
                "bad__name/config.yaml: unknown action `gone`: add actions/gone",
                "bad__name/config.yaml: unknown action `missing`: add actions/missing",
            ]
        );
        assert_eq!(
            TemplateConfig::parse("recurring: [{action: a, period: 0}]"),
            Err(vec![Problem::new(
                "config.yaml: recurring item 1 (action `a`)",
                "period `0` must be more than zero"
            )])
        );
        assert_eq!(
            TemplateConfig::parse(
                "recurring: [{action: backup, cron: '0 3 * * *', tz: Europe/Brussels}, {action: b, cron: '0 3 * *'}]"
            )
            .map_err(|ps| ps.iter().map(ToString::to_string).collect::<Vec<_>>()),
            Err(vec![
                "config.yaml: recurring item 2 (action `b`): cron expression `0 3 * *` is not valid (Invalid pattern: Pattern must have between 5 and 7 fields.); expected 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\"".to_string()
            ])
        );
        assert_eq!(TemplateConfig::parse(""), Ok(TemplateConfig::default()));
    }
}
