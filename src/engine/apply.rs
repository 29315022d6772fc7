//! Executing a blueprint: validate it as a whole against the templates and the existing
//! services, then create or update services, link them and schedule actions.
//!
//! Decisions, so that callers and users can rely on them:
//! - Validation collects every problem; when there is any, the result is `Err` and the
//!   caller's map is untouched (the engine works on a copy).
//! - Values are checked against the schema with these coercions: numbers and booleans
//!   fill `str` fields as their text (`port: 22` is `"22"`); quoted scalars fill
//!   `int`/`float`/`bool` fields when their text parses (`'50'` is `50`); anything else
//!   ill-typed (`memory: abc`) is a problem. A `null` argument means "not given".
//! - A consume field takes one name or a list of names of services of the consumed
//!   role; a `list(str)` consume field given one name stores it as a one-item list.
//! - Re-executing a blueprint updates services: given arguments are merged over the
//!   existing data (data set by actions is kept), defaults fill what is missing. When
//!   the data differs, the service's state becomes `changed` (unless it is still `new`);
//!   action states are left alone, so nothing runs until an action is scheduled.
//!   Actions the template gained since are added as `new`.
//! - A parent field must be set (by the blueprint or its default) and name a service of
//!   the parent actor's role declared in this blueprint or already existing.
//! - `actions:` and `eventfilters:` entries without `actor`/`service` apply to the
//!   services this blueprint declares; with a filter they apply to every matching
//!   service of the repository. Services lacking the action are skipped; an entry no
//!   service can take is a problem. Disabled actions are left disabled.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::Problem;
use super::blueprint::{ActionEntry, Block, Blueprint, EventFilter};
use super::service::{ActionState, Service, ServiceRef, ServiceState};
use super::template::{Field, FieldType, Template, role_of};

/// How deep auto-created producers may themselves auto-create producers; deeper means a
/// loop of `auto` consumes between templates.
const MAX_AUTO_DEPTH: usize = 8;

/// The result of executing a valid blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The complete new service map (existing services included), keyed by `role!name`.
    pub services: BTreeMap<String, Service>,
    /// Keys of services created, in declaration order (an auto producer just before the
    /// service that needed it).
    pub created: Vec<String>,
    /// Keys of existing services whose data changed.
    pub updated: Vec<String>,
    /// Keys of every service whose stored record differs from before (created, updated,
    /// newly linked as a producer, scheduled, subscribed), sorted: what the store must
    /// write.
    pub changed: Vec<String>,
}

/// Executes blueprint `bp_name` (its text `text`) against `templates` (by actor name)
/// and the current `services`. Returns every problem, or the new state of the world.
pub fn execute_blueprint(
    bp_name: &str,
    text: &str,
    templates: &BTreeMap<String, Template>,
    services: &BTreeMap<String, Service>,
) -> Result<Outcome, Vec<Problem>> {
    let (bp, problems) = Blueprint::parse_lenient(bp_name, text).map_err(|p| vec![p])?;
    let mut run = Execution {
        file: bp_name,
        templates,
        by_role: roles(templates),
        old: services,
        new: services.clone(),
        problems,
        declared: BTreeMap::new(),
        processed: Vec::new(),
        created: Vec::new(),
        updated: Vec::new(),
        next_auto: BTreeMap::new(),
    };
    run.declare(&bp);
    run.process_declared(&bp);
    run.link_back();
    for block in &bp.blocks {
        match block {
            Block::Actions { entries } => {
                for (i, e) in entries.iter().enumerate() {
                    run.schedule(i, e);
                }
            }
            Block::EventFilters { entries } => {
                for (i, e) in entries.iter().enumerate() {
                    run.subscribe(i, e);
                }
            }
            Block::Service(_) => {}
        }
    }
    if !run.problems.is_empty() {
        return Err(run.problems);
    }
    let changed = run
        .new
        .iter()
        .filter(|(k, s)| services.get(*k) != Some(*s))
        .map(|(k, _)| k.clone())
        .collect();
    Ok(Outcome {
        services: run.new,
        created: run.created,
        updated: run.updated,
        changed,
    })
}

/// Role to the actor names having it, for `auto` producers.
fn roles(templates: &BTreeMap<String, Template>) -> BTreeMap<&str, Vec<&str>> {
    let mut by_role: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for actor in templates.keys() {
        by_role.entry(role_of(actor)).or_default().push(actor);
    }
    by_role
}

/// The working state of one blueprint execution.
struct Execution<'a> {
    /// The blueprint file name, the start of every problem location.
    file: &'a str,
    /// The templates by actor name.
    templates: &'a BTreeMap<String, Template>,
    /// Actor names by role.
    by_role: BTreeMap<&'a str, Vec<&'a str>>,
    /// The services before execution; never modified.
    old: &'a BTreeMap<String, Service>,
    /// The services being built.
    new: BTreeMap<String, Service>,
    /// Every problem found so far.
    problems: Vec<Problem>,
    /// Keys declared by this blueprint (valid key, known actor) to their actor, so that
    /// parents and producers may be declared later in the file.
    declared: BTreeMap<String, &'a str>,
    /// Keys of declared services in file order, once processed.
    processed: Vec<String>,
    /// Keys created, in order.
    created: Vec<String>,
    /// Keys of existing services whose data changed.
    updated: Vec<String>,
    /// Per role, the lowest `auto_N` number not yet known to be taken, so that finding
    /// the next free name does not rescan from 1 for every consumer.
    next_auto: BTreeMap<String, u64>,
}

impl<'a> Execution<'a> {
    /// Records a problem at `file: what`.
    fn problem(&mut self, what: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(format!("{}: {what}", self.file), message));
    }

    /// Whether a service with this key exists or is declared by this blueprint.
    fn exists(&self, key: &str) -> bool {
        self.new.contains_key(key) || self.declared.contains_key(key)
    }

    /// First pass: check each declaration's actor and key, and note what the blueprint
    /// declares.
    fn declare(&mut self, bp: &'a Blueprint) {
        for decl in bp.services() {
            let Some(template) = self.templates.get(&decl.actor) else {
                let known: Vec<&str> = self.templates.keys().map(String::as_str).collect();
                self.problem(
                    &decl.key,
                    format!(
                        "unknown actor `{}` (known: {})",
                        decl.actor,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                continue;
            };
            let key = format!("{}!{}", template.role(), decl.instance);
            if let Some(other) = self.declared.get(&key) {
                let msg = format!(
                    "service {key} is declared twice (also as {other}__{})",
                    decl.instance
                );
                self.problem(&decl.key, msg);
                continue;
            }
            if let Some(existing) = self.old.get(&key).filter(|s| s.actor != decl.actor) {
                let msg = format!(
                    "service {key} already exists with actor `{}`; delete it first to change its actor",
                    existing.actor
                );
                self.problem(&decl.key, msg);
                continue;
            }
            self.declared.insert(key, &template.actor);
        }
    }

    /// Second pass: build each valid declaration's service.
    fn process_declared(&mut self, bp: &'a Blueprint) {
        for decl in bp.services() {
            let Some(template) = self.templates.get(&decl.actor) else {
                continue;
            };
            let key = format!("{}!{}", template.role(), decl.instance);
            if self.declared.get(&key) != Some(&template.actor.as_str()) {
                continue;
            }
            self.build(template, &decl.instance, &decl.args, &decl.key, 0);
            self.processed.push(key);
        }
    }

    /// Checks the arguments of one service against its template and puts the resulting
    /// service into `new`. `loc` names the declaration in problems.
    fn build(
        &mut self,
        template: &'a Template,
        instance: &str,
        args: &Map<String, Value>,
        loc: &str,
        depth: usize,
    ) {
        let me = ServiceRef::new(template.role(), instance);
        let key = me.key();
        let old = self.old.get(&key);
        let mut data = old.map(|s| s.data.clone()).unwrap_or_default();
        // Fields given an ill-typed value: already reported, so not checked further.
        let mut bad: Vec<&str> = Vec::new();
        for (name, value) in args {
            let at = format!("{loc}.{name}");
            let Some(field) = template.schema.field(name) else {
                let known: Vec<&str> = template
                    .schema
                    .fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect();
                self.problem(
                    &at,
                    format!(
                        "unknown field `{name}` for actor `{}` (known: {})",
                        template.actor,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                continue;
            };
            if value.is_null() {
                continue;
            }
            match check_field(field, value) {
                Ok(v) => {
                    data.insert(name.clone(), v);
                }
                Err(m) => {
                    self.problem(&at, m);
                    bad.push(name);
                }
            }
        }
        for field in &template.schema.fields {
            if let Some(default) = &field.default {
                data.entry(field.name.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        let parent = self.resolve_parent(template, &key, &data, loc);
        let producers = self.resolve_producers(template, &me, &mut data, &bad, loc, depth);

        let service = match old {
            Some(old) => {
                let mut s = old.clone();
                if s.data != data {
                    self.updated.push(key.clone());
                    if s.state != ServiceState::New {
                        s.state = ServiceState::Changed;
                    }
                }
                s.data = data;
                s.parent = parent;
                s.producers = producers;
                for action in &template.actions {
                    s.actions.entry(action.clone()).or_insert(ActionState::New);
                }
                s
            }
            None => {
                self.created.push(key.clone());
                Service {
                    key: key.clone(),
                    role: me.role,
                    name: me.name,
                    actor: template.actor.clone(),
                    data,
                    parent,
                    producers,
                    consumers: Vec::new(),
                    state: ServiceState::New,
                    actions: template
                        .actions
                        .iter()
                        .map(|a| (a.clone(), ActionState::New))
                        .collect(),
                    recurring: BTreeMap::new(),
                    retries: BTreeMap::new(),
                    args: BTreeMap::new(),
                    subscriptions: Vec::new(),
                }
            }
        };
        let mut service = service;
        for r in &template.config.recurring {
            service
                .recurring
                .entry(r.action.clone())
                .or_insert_with(|| r.schedule.clone());
        }
        service.retries = template.config.retries.clone();
        for hook in &template.config.events {
            for action in &hook.actions {
                service.subscribe(&hook.channel, action);
            }
        }
        self.new.insert(key, service);
    }

    /// Finds the parent named by the schema's parent field, reporting a missing one.
    fn resolve_parent(
        &mut self,
        template: &Template,
        key: &str,
        data: &Map<String, Value>,
        loc: &str,
    ) -> Option<ServiceRef> {
        let field = template.schema.parent_field()?;
        let parent_actor = field.parent.as_deref()?;
        let at = format!("{loc}.{}", field.name);
        let Some(Value::String(name)) = data.get(&field.name) else {
            self.problem(
                &at,
                format!(
                    "missing parent: set `{}` to the name of a {parent_actor} service",
                    field.name
                ),
            );
            return None;
        };
        let parent = ServiceRef::new(role_of(parent_actor), name.clone());
        let parent_key = parent.key();
        if parent_key == key {
            self.problem(&at, "a service cannot be its own parent");
            None
        } else if self.exists(&parent_key) {
            Some(parent)
        } else {
            self.problem(
                &at,
                format!(
                    "parent {parent_key} not found: declare {parent_actor}__{name} in this blueprint or in one executed before"
                ),
            );
            None
        }
    }

    /// Finds the producers named by the consume fields (creating `auto` ones), checks
    /// their count, and returns them sorted.
    fn resolve_producers(
        &mut self,
        template: &'a Template,
        me: &ServiceRef,
        data: &mut Map<String, Value>,
        bad: &[&str],
        loc: &str,
        depth: usize,
    ) -> Vec<ServiceRef> {
        let mut producers = BTreeSet::new();
        for field in &template.schema.fields {
            let Some(consume) = &field.consume else {
                continue;
            };
            if bad.contains(&field.name.as_str()) {
                continue;
            }
            let at = format!("{loc}.{}", field.name);
            let mut names: Vec<String> = match data.get(&field.name) {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            names.sort();
            names.dedup();
            if names.is_empty()
                && consume.auto
                && let Some(name) = self.create_auto(&consume.role, me, &at, depth)
            {
                let value = match field.ty {
                    FieldType::Str => Value::String(name.clone()),
                    _ => Value::Array(vec![Value::String(name.clone())]),
                };
                data.insert(field.name.clone(), value);
                names.push(name);
            }
            let too_few = names.len() < consume.min;
            let too_many = consume.max.is_some_and(|max| names.len() > max);
            if too_few || too_many {
                let range = match consume.max {
                    Some(max) if max == consume.min => format!("exactly {max}"),
                    Some(max) => format!("{} to {max}", consume.min),
                    None => format!("at least {}", consume.min),
                };
                self.problem(
                    &at,
                    format!(
                        "needs {range} {} service(s), got {}",
                        consume.role,
                        names.len()
                    ),
                );
            }
            for name in names {
                let producer = ServiceRef::new(consume.role.clone(), name);
                let pkey = producer.key();
                if pkey == me.key() {
                    self.problem(&at, "a service cannot consume itself");
                } else if self.exists(&pkey) {
                    producers.insert(producer);
                } else {
                    self.problem(
                        &at,
                        format!(
                            "{pkey} not found: declare a {} service named `{}`",
                            consume.role, producer.name
                        ),
                    );
                }
            }
        }
        producers.into_iter().collect()
    }

    /// Creates a producer `auto_N` of `role` with its template's defaults, for `consumer`.
    fn create_auto(
        &mut self,
        role: &str,
        consumer: &ServiceRef,
        at: &str,
        depth: usize,
    ) -> Option<String> {
        let actors = self.by_role.get(role).cloned().unwrap_or_default();
        let [actor] = actors.as_slice() else {
            let msg = if actors.is_empty() {
                format!("no actor template has role `{role}` to create an auto producer")
            } else {
                format!(
                    "several actor templates have role `{role}` ({}): name the producer",
                    actors.join(", ")
                )
            };
            self.problem(at, msg);
            return None;
        };
        if depth >= MAX_AUTO_DEPTH {
            self.problem(
                at,
                "auto producers nest too deep: do templates auto-consume each other?",
            );
            return None;
        }
        let template = self.templates.get(*actor)?;
        let first = self.next_auto.get(role).copied().unwrap_or(1);
        let n = (first..).find(|n| !self.exists(&format!("{role}!auto_{n}")))?;
        self.next_auto.insert(role.to_string(), n + 1);
        let name = format!("auto_{n}");
        let loc = format!("{actor}__{name} (auto producer for {consumer})");
        self.build(template, &name, &Map::new(), &loc, depth + 1);
        Some(name)
    }

    /// Brings every producer's `consumers` list in line with the producers of the
    /// services this execution built, touching each producer once.
    fn link_back(&mut self) {
        let mut add: BTreeMap<String, BTreeSet<ServiceRef>> = BTreeMap::new();
        let mut remove: BTreeMap<String, BTreeSet<ServiceRef>> = BTreeMap::new();
        let built = self.processed.iter().chain(&self.created);
        let built: BTreeSet<&String> = built.collect();
        for key in built {
            let Some(service) = self.new.get(key) else {
                continue;
            };
            let me = service.reference();
            let before: BTreeSet<&ServiceRef> = self
                .old
                .get(key)
                .map(|s| s.producers.iter().collect())
                .unwrap_or_default();
            let after: BTreeSet<&ServiceRef> = service.producers.iter().collect();
            for p in before.difference(&after) {
                remove.entry(p.key()).or_default().insert(me.clone());
            }
            for p in after.difference(&before) {
                add.entry(p.key()).or_default().insert(me.clone());
            }
        }
        let keys: BTreeSet<&String> = add.keys().chain(remove.keys()).collect();
        for key in keys {
            let Some(producer) = self.new.get_mut(key) else {
                continue;
            };
            let mut consumers: BTreeSet<ServiceRef> = producer.consumers.drain(..).collect();
            if let Some(gone) = remove.get(key) {
                consumers.retain(|c| !gone.contains(c));
            }
            if let Some(new) = add.get(key) {
                consumers.extend(new.iter().cloned());
            }
            producer.consumers = consumers.into_iter().collect();
        }
    }

    /// Keys of the services an `actions:`/`eventfilters:` entry applies to, or a problem.
    fn targets(
        &mut self,
        at: &str,
        actor: Option<&str>,
        service: Option<&str>,
    ) -> Option<Vec<String>> {
        if let Some(actor) = actor
            && !self.templates.contains_key(actor)
        {
            self.problem(at, format!("unknown actor `{actor}`"));
            return None;
        }
        let keys: Vec<String> = match (actor, service) {
            (None, None) => self.processed.clone(),
            (Some(actor), Some(name)) => {
                let key = format!("{}!{name}", role_of(actor));
                self.new
                    .get(&key)
                    .filter(|s| s.actor == actor)
                    .map(|s| vec![s.key.clone()])
                    .unwrap_or_default()
            }
            (actor, service) => self
                .new
                .values()
                .filter(|s| actor.is_none_or(|a| s.actor == a))
                .filter(|s| service.is_none_or(|n| s.name == n))
                .map(|s| s.key.clone())
                .collect(),
        };
        if keys.is_empty() && (actor.is_some() || service.is_some()) {
            let what = match (actor, service) {
                (Some(a), Some(s)) => format!("{a}__{s}"),
                (Some(a), None) => format!("actor `{a}`"),
                (None, Some(s)) => format!("name `{s}`"),
                (None, None) => String::new(),
            };
            self.problem(at, format!("unknown service: no service matches {what}"));
            return None;
        }
        Some(keys)
    }

    /// The subset of `keys` whose services have `action`, or a problem when none has it.
    fn with_action(&mut self, at: &str, keys: Vec<String>, action: &str) -> Vec<String> {
        let (have, lack): (Vec<String>, Vec<String>) = keys.into_iter().partition(|k| {
            self.new
                .get(k)
                .is_some_and(|s| s.actions.contains_key(action))
        });
        if have.is_empty() {
            let whom = if lack.is_empty() {
                "this blueprint declares no service".to_string()
            } else {
                let mut actors: Vec<&str> = lack
                    .iter()
                    .filter_map(|k| self.new.get(k).map(|s| s.actor.as_str()))
                    .collect();
                actors.sort();
                actors.dedup();
                format!("no matching service has it (actors: {})", actors.join(", "))
            };
            self.problem(at, format!("unknown action `{action}`: {whom}"));
        }
        have
    }

    /// Applies one `actions:` entry.
    fn schedule(&mut self, i: usize, entry: &ActionEntry) {
        let at = format!("actions item {}", i + 1);
        let Some(keys) = self.targets(&at, entry.actor.as_deref(), entry.service.as_deref()) else {
            return;
        };
        for key in self.with_action(&at, keys, &entry.action) {
            let Some(service) = self.new.get_mut(&key) else {
                continue;
            };
            if let Some(state) = service.actions.get_mut(&entry.action)
                && *state != ActionState::Disabled
            {
                *state = ActionState::Scheduled;
            }
            if let Some(schedule) = &entry.recurring {
                service
                    .recurring
                    .insert(entry.action.clone(), schedule.clone());
            }
        }
    }

    /// Applies one `eventfilters:` entry.
    fn subscribe(&mut self, i: usize, filter: &EventFilter) {
        let at = format!("eventfilters item {}", i + 1);
        let Some(keys) = self.targets(&at, filter.actor.as_deref(), filter.service.as_deref())
        else {
            return;
        };
        for key in self.with_action(&at, keys, &filter.action) {
            if let Some(service) = self.new.get_mut(&key) {
                service.subscribe(&filter.channel, &filter.action);
            }
        }
    }
}

/// Checks a blueprint value for `field`; consume fields also take one name where the
/// type is a list.
fn check_field(field: &Field, value: &Value) -> Result<Value, String> {
    match (&field.consume, &field.ty, value) {
        (Some(_), FieldType::List(_), Value::String(_)) => {
            field.ty.check(&Value::Array(vec![value.clone()]))
        }
        _ => field.ty.check(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testkit::{execute, render, world};

    /// Executes `text` over `existing` and compares the whole rendered service map.
    fn check(existing: &BTreeMap<String, Service>, text: &str, expected: &str) -> Outcome {
        let outcome = execute(existing, text);
        assert_eq!(
            render(&outcome.services),
            expected.trim(),
            "blueprint:\n{text}"
        );
        outcome
    }

    /// Executes `text` over `existing` and compares the problems, in order.
    fn check_problems(existing: &BTreeMap<String, Service>, text: &str, expected: &[&str]) {
        match execute_blueprint("t.yaml", text, &world(), existing) {
            Ok(o) => panic!("should fail, got:\n{}", render(&o.services)),
            Err(problems) => {
                let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
                assert_eq!(got, expected, "blueprint:\n{text}");
            }
        }
    }

    const LIFE_NEW: &str = "init:new install:new monitor:new start:new stop:new uninstall:new";

    #[test]
    fn ovc_cockpit_fixture_links_everything() {
        let text = include_str!("../../tests/fixtures/blueprints/ovc_cockpit.yaml");
        let outcome = check(
            &BTreeMap::new(),
            text,
            r#"
g8client!uk g8client new {"login":"myLogin","password":"myPassword","url":"du-conv-3.demo.greenitglobe.com"} consumers=vdc!cockpit [install:scheduled]
node!cockpit node.ovc new {"bootdisk.size":50,"memory":2,"os.image":"Ubuntu 16.04 x64","ports":["22","80:80","443:443"],"sshkey":"main","vdc":"cockpit"} producers=sshkey!main,vdc!cockpit [init:new install:scheduled monitor:new start:new stop:new uninstall:new]
sshkey!main sshkey new {} consumers=node!cockpit [init:new install:scheduled stop:new uninstall:new]
uservdc!myLogin uservdc new {} consumers=vdc!cockpit [install:scheduled]
vdc!cockpit vdc new {"account":"MyAccount","description":"cockpit vdc","g8client":"uk","location":"du-conv-3","uservdc":["myLogin"]} producers=g8client!uk,uservdc!myLogin consumers=node!cockpit [install:scheduled uninstall:new]
"#,
        );
        assert_eq!(
            outcome.created,
            [
                "g8client!uk",
                "uservdc!myLogin",
                "vdc!cockpit",
                "sshkey!main",
                "node!cockpit"
            ]
        );
        assert!(outcome.updated.is_empty());
        assert_eq!(outcome.changed.len(), 5);
    }

    #[test]
    fn defaults_parent_and_coercions() {
        check(
            &BTreeMap::new(),
            include_str!("../../tests/fixtures/blueprints/datacenter_rack.yaml"),
            &format!(
                r#"
datacenter!eu datacenter new {{"description":"Main datacenter in Europe","location":"Europe"}} [{LIFE_NEW}]
rack!storage1 rack new {{"datacenter":"eu","description":"rack for storage node","location":"room1"}} parent=datacenter!eu [{LIFE_NEW}]
"#
            ),
        );
        // The parent may come later in the file; numbers fill str fields as text and a
        // quoted integer fills an int field; defaults fill the rest.
        check(
            &BTreeMap::new(),
            "rack__r1: {datacenter: dc1, location: 12}\ndatacenter__dc1:\n\
             vdc__v: {g8client: g}\ng8client__g:\nnode.ovc__n: {vdc: v, sshkey: k, memory: '4', ports: [22]}\nsshkey__k:",
            &format!(
                r#"
datacenter!dc1 datacenter new {{}} [{LIFE_NEW}]
g8client!g g8client new {{}} consumers=vdc!v [install:new]
node!n node.ovc new {{"bootdisk.size":10,"memory":4,"os.image":"Ubuntu 16.04 x64","ports":["22"],"sshkey":"k","vdc":"v"}} producers=sshkey!k,vdc!v [{LIFE_NEW}]
rack!r1 rack new {{"datacenter":"dc1","location":"12"}} parent=datacenter!dc1 [{LIFE_NEW}]
sshkey!k sshkey new {{}} consumers=node!n [init:new install:new stop:new uninstall:new]
vdc!v vdc new {{"g8client":"g"}} producers=g8client!g consumers=node!n [install:new uninstall:new]
"#
            ),
        );
    }

    #[test]
    fn auto_producers_take_the_next_free_number() {
        let first = check(
            &BTreeMap::new(),
            "g8client__g:\nvdc__v: {g8client: g}\nnode.ovc__a: {vdc: v}\nnode.ovc__b: {vdc: v}",
            &format!(
                r#"
g8client!g g8client new {{}} consumers=vdc!v [install:new]
node!a node.ovc new {{"bootdisk.size":10,"memory":2,"os.image":"Ubuntu 16.04 x64","sshkey":"auto_1","vdc":"v"}} producers=sshkey!auto_1,vdc!v [{LIFE_NEW}]
node!b node.ovc new {{"bootdisk.size":10,"memory":2,"os.image":"Ubuntu 16.04 x64","sshkey":"auto_2","vdc":"v"}} producers=sshkey!auto_2,vdc!v [{LIFE_NEW}]
sshkey!auto_1 sshkey new {{}} consumers=node!a [init:new install:new stop:new uninstall:new]
sshkey!auto_2 sshkey new {{}} consumers=node!b [init:new install:new stop:new uninstall:new]
vdc!v vdc new {{"g8client":"g"}} producers=g8client!g consumers=node!a,node!b [install:new uninstall:new]
"#
            ),
        );
        assert_eq!(
            first.created,
            [
                "g8client!g",
                "vdc!v",
                "sshkey!auto_1",
                "node!a",
                "sshkey!auto_2",
                "node!b"
            ]
        );
        // Re-executing keeps the links (no new auto producer); a new node gets auto_3.
        let again = execute(
            &first.services,
            "node.ovc__a: {vdc: v}\nnode.ovc__c: {vdc: v}",
        );
        assert_eq!(again.created, ["sshkey!auto_3", "node!c"]);
        assert!(again.updated.is_empty());
        assert_eq!(again.changed, ["node!c", "sshkey!auto_3", "vdc!v"]);
        assert_eq!(
            again.services["vdc!v"].consumers,
            [
                ServiceRef::new("node", "a"),
                ServiceRef::new("node", "b"),
                ServiceRef::new("node", "c")
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_and_nothing_changes() {
        let existing = execute(&BTreeMap::new(), "g8client__g:\nvdc__v: {g8client: g}").services;
        let before = existing.clone();
        check_problems(
            &existing,
            "web__x: {}\nbadkey: {}\n\
             node.ovc__n: {vdc: v, sshkey: k, memory: abc, colour: red}\nsshkey__k:\n\
             rack__r: {location: x}\nrack__s: {datacenter: nowhere}\n\
             vdc__w: {}\nvdc__v2: {g8client: [g, h]}\n\
             actions:\n  - {action: install}\n  - {action: fly}\n  - {action: test, actor: ghost}\n  - {action: install, actor: rack, service: zz}\n\
             eventfilters:\n  - {channel: email, action: nope}\n",
            &[
                "t.yaml: badkey: `badkey` needs to be actor__instance (or `actions` / `eventfilters`)",
                "t.yaml: web__x: unknown actor `web` (known: datacenter, g8client, mailer, node.kvm, node.ovc, rack, sshkey, test_run_filter1, test_run_filters, uservdc, vdc)",
                "t.yaml: node.ovc__n.colour: unknown field `colour` for actor `node.ovc` (known: bootdisk.size, memory, os.image, ports, vdc, sshkey)",
                "t.yaml: node.ovc__n.memory: expected an integer, got \"abc\"",
                "t.yaml: rack__r.datacenter: missing parent: set `datacenter` to the name of a datacenter service",
                "t.yaml: rack__s.datacenter: parent datacenter!nowhere not found: declare datacenter__nowhere in this blueprint or in one executed before",
                "t.yaml: vdc__w.g8client: needs exactly 1 g8client service(s), got 0",
                "t.yaml: vdc__v2.g8client: expected a string, got a list",
                "t.yaml: actions item 2: unknown action `fly`: no matching service has it (actors: node.ovc, rack, sshkey, vdc)",
                "t.yaml: actions item 3: unknown actor `ghost`",
                "t.yaml: actions item 4: unknown service: no service matches rack__zz",
                "t.yaml: eventfilters item 1: unknown action `nope`: no matching service has it (actors: node.ovc, rack, sshkey, vdc)",
            ],
        );
        assert_eq!(existing, before);
    }

    #[test]
    fn updates_mark_changed_and_keep_action_data() {
        let mut services = execute(&BTreeMap::new(), "datacenter__eu: {location: x}").services;
        // An unchanged re-execution modifies nothing.
        let same = execute(&services, "datacenter__eu: {location: x}");
        assert!(same.changed.is_empty() && same.updated.is_empty());
        // Once installed, a data change marks the service changed, keeping other data.
        if let Some(dc) = services.get_mut("datacenter!eu") {
            dc.state = ServiceState::Ok;
            dc.data.insert("ip".into(), Value::from("10.0.0.1"));
        }
        let changed = check(
            &services,
            "datacenter__eu: {location: y}",
            &format!(
                r#"datacenter!eu datacenter changed {{"ip":"10.0.0.1","location":"y"}} [{LIFE_NEW}]"#
            ),
        );
        assert_eq!(changed.updated, ["datacenter!eu"]);
        assert_eq!(changed.changed, ["datacenter!eu"]);
        assert!(changed.created.is_empty());
        // The actor of an existing service cannot change (same role, other actor).
        let nodes = execute(
            &BTreeMap::new(),
            "g8client__g:\nvdc__v: {g8client: g}\nnode.ovc__n: {vdc: v}",
        )
        .services;
        check_problems(
            &nodes,
            "node.kvm__n:\nnode.kvm__m:\nnode.ovc__m: {vdc: v}",
            &[
                "t.yaml: node.kvm__n: service node!n already exists with actor `node.ovc`; delete it first to change its actor",
                "t.yaml: node.ovc__m: service node!m is declared twice (also as node.kvm__m)",
            ],
        );
    }

    #[test]
    fn actions_block_filters() {
        check(
            &BTreeMap::new(),
            include_str!("../../tests/fixtures/blueprints/run_filters.yaml"),
            "test_run_filter1!main test_run_filter1 new {} [install:scheduled test:scheduled]\n\
             test_run_filters!main test_run_filters new {} [install:scheduled]",
        );
        // With a filter, an entry reaches services declared by earlier blueprints too;
        // without one, only this blueprint's services. Disabled actions stay disabled.
        let mut first = execute(&BTreeMap::new(), "mailer__m1:\nmailer__m2:").services;
        if let Some(m2) = first.get_mut("mailer!m2") {
            m2.actions.insert("install".into(), ActionState::Disabled);
        }
        let text = "mailer__m3:\nactions:\n  - {action: report, actor: mailer, service: m1, recurring: 1h}\n  \
                    - {action: install, actor: mailer}\n  - {action: check}\n";
        let outcome = check(
            &first,
            text,
            "mailer!m1 mailer new {} [check:new install:scheduled report:scheduled] every 300s check every 3600s report on email report\n\
             mailer!m2 mailer new {} [check:new install:disabled report:new] every 300s check on email report\n\
             mailer!m3 mailer new {} [check:scheduled install:scheduled report:new] every 300s check on email report",
        );
        assert_eq!(outcome.changed, ["mailer!m1", "mailer!m3"]);
    }

    #[test]
    fn eventfilters_subscribe() {
        let existing = execute(&BTreeMap::new(), "test_run_filter1__old:").services;
        check(
            &existing,
            "test_run_filter1__a:\ntest_run_filters__b:\n\
             eventfilters:\n  - {channel: email, action: install}\n  - {channel: tg, action: test, actor: test_run_filter1}\n  \
             - {channel: email, action: install}\n",
            "test_run_filter1!a test_run_filter1 new {} [install:new test:new] on email install on tg test\n\
             test_run_filter1!old test_run_filter1 new {} [install:new test:new] on tg test\n\
             test_run_filters!b test_run_filters new {} [install:new] on email install",
        );
    }
}
