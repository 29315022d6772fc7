//! Services: the instances blueprints declare, as the store persists them, and the
//! small edits made to them outside a blueprint (schedule an action, remove a service).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Names a service by role and instance name; the key is `role!name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    /// The role (actor name before the first `.`).
    pub role: String,
    /// The instance name.
    pub name: String,
}

impl ServiceRef {
    /// Builds a reference from its parts.
    pub fn new(role: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            name: name.into(),
        }
    }

    /// The key under which the service is stored: `role!name`.
    pub fn key(&self) -> String {
        format!("{}!{}", self.role, self.name)
    }

    /// Reads a `role!name` key (what the bot's `inspect <role>!<name>` takes).
    pub fn parse_key(key: &str) -> Option<ServiceRef> {
        let (role, name) = key.split_once('!')?;
        (!role.is_empty() && !name.is_empty()).then(|| ServiceRef::new(role, name))
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}!{}", self.role, self.name)
    }
}

/// A state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(
    /// The text that was given.
    pub String,
);

/// Declares a lowercase state enum with serde names, `Display` and `FromStr` that agree.
macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The lowercase name, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState(s.to_string())),
                }
            }
        }
    };
}

state_enum! {
    /// The life-cycle state of a service as a whole.
    ServiceState {
        /// Declared, never installed.
        New = "new",
        /// An install run is under way.
        Installing = "installing",
        /// Its last run succeeded.
        Ok = "ok",
        /// Its last run failed.
        Error = "error",
        /// Switched off: runs skip it.
        Disabled = "disabled",
        /// Its data was changed by a blueprint after it was first created.
        Changed = "changed",
    }
}

state_enum! {
    /// The state of one action of a service; runs pick up scheduled, changed and error.
    ActionState {
        /// Never run.
        New = "new",
        /// Its inputs changed since it last ran.
        Changed = "changed",
        /// Ran successfully.
        Ok = "ok",
        /// Waiting for the next run.
        Scheduled = "scheduled",
        /// Switched off: never planned.
        Disabled = "disabled",
        /// Its last run failed; the next run retries it.
        Error = "error",
        /// A job is running it now.
        Running = "running",
    }
}

/// An event subscription: an event on `channel` runs `action` on the service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subscription {
    /// The event channel (`email`, ...).
    pub channel: String,
    /// The action to run.
    pub action: String,
}

/// A service: one instance of an actor, with its data, relations and action states.
///
/// Collection fields default to empty when absent, so records stored by an older
/// version still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// `role!name`, unique in a repository.
    pub key: String,
    /// The role (actor name before the first `.`).
    pub role: String,
    /// The instance name.
    pub name: String,
    /// The actor (template) it was declared with.
    pub actor: String,
    /// Its field values: blueprint arguments, defaults, and data set by actions.
    pub data: Map<String, Value>,
    /// The service it lives in (from the schema's parent field), if any.
    pub parent: Option<ServiceRef>,
    /// The services it consumes, sorted; their actions run before its own.
    #[serde(default)]
    pub producers: Vec<ServiceRef>,
    /// The services consuming it, sorted (the back-links of `producers`).
    #[serde(default)]
    pub consumers: Vec<ServiceRef>,
    /// Its overall state.
    pub state: ServiceState,
    /// The state of each of its template's actions.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionState>,
    /// Actions that recur: action name to its schedule (a period, or cron in a time zone).
    #[serde(default)]
    pub recurring: BTreeMap<String, super::Schedule>,
    /// The args a scheduled action was given (`/service execute … key=value`), by action; the
    /// next run that plans the action takes them for its job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Value>,
    /// How its failed actions are retried (from its template's `config.yaml`), by action.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, super::RetryPolicy>,
    /// Events this service reacts to, without duplicates.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

impl Service {
    /// The reference (`role`, `name`) to this service.
    pub fn reference(&self) -> ServiceRef {
        ServiceRef::new(self.role.clone(), self.name.clone())
    }

    /// Adds a subscription unless the service already has it.
    pub fn subscribe(&mut self, channel: &str, action: &str) {
        let exists = self
            .subscriptions
            .iter()
            .any(|s| s.channel == channel && s.action == action);
        if !exists {
            self.subscriptions.push(Subscription {
                channel: channel.to_string(),
                action: action.to_string(),
            });
        }
    }
}

/// What went wrong editing services outside a blueprint; the API maps these to 404/409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No service has this key.
    #[error("service `{0}` not found")]
    UnknownService(String),
    /// The service's template has no such action.
    #[error("service `{service}` has no action `{action}` (it has: {available})")]
    UnknownAction {
        /// The service key.
        service: String,
        /// The action asked for.
        action: String,
        /// The actions it does have, comma-separated.
        available: String,
    },
    /// The action or service is disabled and cannot be scheduled.
    #[error("action `{action}` of `{service}` is disabled")]
    Disabled {
        /// The service key.
        service: String,
        /// The action asked for.
        action: String,
    },
}

/// Schedules one action of one service (REST `POST .../service/{role}/{name}/action/{action}`).
pub fn schedule_action(
    services: &mut BTreeMap<String, Service>,
    key: &str,
    action: &str,
) -> Result<(), EngineError> {
    let service = services
        .get_mut(key)
        .ok_or_else(|| EngineError::UnknownService(key.to_string()))?;
    let disabled = service.state == ServiceState::Disabled;
    let available = service
        .actions
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let state = service
        .actions
        .get_mut(action)
        .ok_or_else(|| EngineError::UnknownAction {
            service: key.to_string(),
            action: action.to_string(),
            available,
        })?;
    if disabled || *state == ActionState::Disabled {
        return Err(EngineError::Disabled {
            service: key.to_string(),
            action: action.to_string(),
        });
    }
    *state = ActionState::Scheduled;
    Ok(())
}

/// The `(service key, action)` pairs an event on `channel` runs, in key order; disabled
/// services and actions are left out.
pub fn subscribers(services: &BTreeMap<String, Service>, channel: &str) -> Vec<(String, String)> {
    services
        .values()
        .filter(|s| s.state != ServiceState::Disabled)
        .flat_map(|s| {
            s.subscriptions
                .iter()
                .filter(move |sub| {
                    sub.channel == channel
                        && s.actions
                            .get(&sub.action)
                            .is_some_and(|st| *st != ActionState::Disabled)
                })
                .map(move |sub| (s.key.clone(), sub.action.clone()))
        })
        .collect()
}

/// Removes a service and, recursively, its children (services whose parent it is), and
/// removes them from the producer/consumer lists of the services that remain. Returns
/// the removed keys, the asked-for service first; none when `key` is unknown.
pub fn remove_service(services: &mut BTreeMap<String, Service>, key: &str) -> Vec<String> {
    if !services.contains_key(key) {
        return Vec::new();
    }
    let children = children_index(services);
    let mut removed = vec![key.to_string()];
    let mut seen: BTreeSet<String> = removed.iter().cloned().collect();
    let mut i = 0;
    while let Some(k) = removed.get(i) {
        let kids = children.get(k.as_str()).cloned().unwrap_or_default();
        for kid in kids {
            if seen.insert(kid.to_string()) {
                removed.push(kid.to_string());
            }
        }
        i += 1;
    }
    let mut gone = Vec::with_capacity(removed.len());
    for k in &removed {
        if let Some(s) = services.remove(k) {
            gone.push(s);
        }
    }
    let gone_refs: BTreeSet<ServiceRef> = gone.iter().map(Service::reference).collect();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for s in &gone {
        touched.extend(s.producers.iter().chain(&s.consumers).map(ServiceRef::key));
    }
    for k in touched {
        if let Some(s) = services.get_mut(&k) {
            s.producers.retain(|r| !gone_refs.contains(r));
            s.consumers.retain(|r| !gone_refs.contains(r));
        }
    }
    removed
}

/// Parent key to child keys, built in one pass so that walks over children stay linear.
pub(crate) fn children_index(services: &BTreeMap<String, Service>) -> BTreeMap<String, Vec<&str>> {
    let mut index: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for s in services.values() {
        if let Some(p) = &s.parent {
            index.entry(p.key()).or_default().push(s.key.as_str());
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testkit::execute;

    /// A small world: a datacenter with a rack child, a node consuming a vdc and a key.
    fn world() -> BTreeMap<String, Service> {
        execute(
            &BTreeMap::new(),
            "datacenter__eu:\nrack__r1: {datacenter: eu}\nrack__r2: {datacenter: eu}\n\
             g8client__g:\nvdc__v: {g8client: g}\nsshkey__k:\nnode.ovc__n: {vdc: v, sshkey: k}\n\
             mailer__m:\neventfilters:\n  - {channel: email, action: install, actor: mailer}\n",
        )
        .services
    }

    /// Schedules an action and compares the action's state afterwards, or the error.
    fn check_schedule(
        services: &mut BTreeMap<String, Service>,
        key: &str,
        action: &str,
        expected: Result<ActionState, &str>,
    ) {
        let got = schedule_action(services, key, action)
            .map(|()| services[key].actions[action])
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{key} {action}");
    }

    #[test]
    fn scheduling_one_action() {
        let mut services = world();
        check_schedule(&mut services, "node!n", "start", Ok(ActionState::Scheduled));
        check_schedule(
            &mut services,
            "node!zz",
            "start",
            Err("service `node!zz` not found"),
        );
        check_schedule(
            &mut services,
            "vdc!v",
            "fly",
            Err("service `vdc!v` has no action `fly` (it has: install, uninstall)"),
        );
        if let Some(s) = services.get_mut("vdc!v") {
            s.actions.insert("install".into(), ActionState::Disabled);
        }
        check_schedule(
            &mut services,
            "vdc!v",
            "install",
            Err("action `install` of `vdc!v` is disabled"),
        );
    }

    #[test]
    fn subscribers_of_a_channel() {
        let mut services = world();
        // The mailer template subscribes `report` to email; the blueprint adds `install`.
        assert_eq!(
            subscribers(&services, "email"),
            [
                ("mailer!m".to_string(), "report".to_string()),
                ("mailer!m".to_string(), "install".to_string())
            ]
        );
        assert!(subscribers(&services, "telegram").is_empty());
        if let Some(m) = services.get_mut("mailer!m") {
            m.actions.insert("report".into(), ActionState::Disabled);
        }
        assert_eq!(
            subscribers(&services, "email"),
            [("mailer!m".to_string(), "install".to_string())]
        );
    }

    #[test]
    fn removing_a_service_removes_children_and_links() {
        let mut services = world();
        let removed = remove_service(&mut services, "datacenter!eu");
        assert_eq!(removed, ["datacenter!eu", "rack!r1", "rack!r2"]);
        assert!(!services.contains_key("rack!r1"));
        assert_eq!(remove_service(&mut services, "vdc!v"), ["vdc!v"]);
        assert_eq!(
            services["node!n"].producers,
            [ServiceRef::new("sshkey", "k")]
        );
        assert!(services["g8client!g"].consumers.is_empty());
        assert!(remove_service(&mut services, "vdc!v").is_empty());
    }

    #[test]
    fn states_and_records_round_trip() {
        for text in ["new", "installing", "ok", "error", "disabled", "changed"] {
            let state: Result<ServiceState, _> = text.parse();
            assert_eq!(state.map(|s| s.to_string()), Ok(text.to_string()));
        }
        for text in [
            "new",
            "changed",
            "ok",
            "scheduled",
            "disabled",
            "error",
            "running",
        ] {
            let state: Result<ActionState, _> = text.parse();
            assert_eq!(state.map(|s| s.to_string()), Ok(text.to_string()));
        }
        assert_eq!("OK".parse::<ActionState>(), Err(UnknownState("OK".into())));
        let services = world();
        let node = &services["node!n"];
        let json = serde_json::to_value(node).unwrap_or_default();
        assert_eq!(json["state"], "new");
        assert_eq!(json["parent"], Value::Null);
        assert_eq!(
            json["producers"][0],
            serde_json::json!({"role": "sshkey", "name": "k"})
        );
        assert_eq!(
            serde_json::from_value::<Service>(json).ok().as_ref(),
            Some(node)
        );
        assert_eq!(
            ServiceRef::parse_key("node!n"),
            Some(ServiceRef::new("node", "n"))
        );
        assert_eq!(ServiceRef::parse_key("node"), None);
    }
}
