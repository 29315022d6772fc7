//! Shared test helpers: templates like the original AYS ones, and a one-line-per-service
//! rendering that tests compare against.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Service, Template};

/// A template from its schema YAML, space-separated action names and optional config.
pub(crate) fn tpl(actor: &str, schema: &str, actions: &str, config: Option<&str>) -> Template {
    let actions = actions.split_whitespace().map(str::to_string).collect();
    match Template::parse(actor, schema, config, actions) {
        Ok(t) => t,
        Err(problems) => panic!("test template {actor} is invalid: {problems:?}"),
    }
}

/// Templates able to execute the fixture blueprints.
pub(crate) fn world() -> BTreeMap<String, Template> {
    let life = "init install start stop uninstall monitor";
    [
        tpl("g8client", "url:\nlogin:\npassword:\naccount:", "install", None),
        tpl("uservdc", "", "install", None),
        tpl(
            "vdc",
            "description:\naccount:\nlocation:\n\
             g8client: {type: str, consume: {role: g8client, min: 1}}\n\
             uservdc: {type: 'list(str)', consume: {role: uservdc}}",
            "install uninstall",
            None,
        ),
        tpl("sshkey", "", "init install stop uninstall", None),
        tpl(
            "node.ovc",
            "bootdisk.size: {type: int, default: 10}\n\
             memory: {type: int, default: 2}\n\
             os.image: {type: str, default: 'Ubuntu 16.04 x64'}\n\
             ports: {type: 'list(str)'}\n\
             vdc: {type: str, consume: {role: vdc, min: 1, max: 1}}\n\
             sshkey: {type: str, consume: {role: sshkey, min: 1, max: 1, auto: true}}",
            life,
            None,
        ),
        tpl("node.kvm", "", "install", None),
        tpl("test_run_filter1", "", "install test", None),
        tpl("test_run_filters", "", "install", None),
        tpl("datacenter", "location:\ndescription:", life, None),
        tpl(
            "rack",
            "datacenter: {type: str, parent: datacenter}\nlocation:\ndescription:",
            life,
            None,
        ),
        tpl(
            "mailer",
            "",
            "install check report",
            Some("recurring: [{action: check, period: 5m}]\nevents: [{channel: email, actions: [report]}]"),
        ),
    ]
    .into_iter()
    .map(|t| (t.actor.clone(), t))
    .collect()
}

/// One line per service: key, actor, state, data, links, action states, extras.
pub(crate) fn render(services: &BTreeMap<String, Service>) -> String {
    services
        .values()
        .map(|s| {
            let refs = |v: &[super::ServiceRef]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let actions = s
                .actions
                .iter()
                .map(|(a, st)| format!("{a}:{st}"))
                .collect::<Vec<_>>()
                .join(" ");
            let mut line = format!(
                "{} {} {} {}",
                s.key,
                s.actor,
                s.state,
                Value::Object(s.data.clone())
            );
            if let Some(p) = &s.parent {
                line.push_str(&format!(" parent={p}"));
            }
            if !s.producers.is_empty() {
                line.push_str(&format!(" producers={}", refs(&s.producers)));
            }
            if !s.consumers.is_empty() {
                line.push_str(&format!(" consumers={}", refs(&s.consumers)));
            }
            line.push_str(&format!(" [{actions}]"));
            for (a, p) in &s.recurring {
                line.push_str(&format!(" {p} {a}"));
            }
            for sub in &s.subscriptions {
                line.push_str(&format!(" on {} {}", sub.channel, sub.action));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Executes a blueprint against the world templates and panics with its problems.
pub(crate) fn execute(existing: &BTreeMap<String, Service>, text: &str) -> super::Outcome {
    match super::execute_blueprint("t.yaml", text, &world(), existing) {
        Ok(o) => o,
        Err(problems) => panic!("blueprint should execute: {problems:#?}"),
    }
}
