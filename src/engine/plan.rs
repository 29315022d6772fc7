//! Run planning: which jobs a run executes, and in which steps.
//!
//! A run starts from every action in state `scheduled`, `changed` or `error` (of services
//! that are not disabled) and pulls in what those need:
//! - default chains: `install` needs `init`, `start` needs `install`, `monitor` needs
//!   `start`, `uninstall` needs `stop`;
//! - an action waits for the same action on the service's producers and parent; `stop`
//!   and `uninstall` wait on its consumers and children instead (tear down in reverse).
//!
//! A needed action joins the run when its service has it and it is not `ok` or
//! `disabled`; otherwise it is taken as done. Jobs are layered into steps: each job is
//! in the step after the last of its prerequisites, so a step's jobs are independent.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::service::{ActionState, Service, ServiceState, children_index};

/// The action each action requires on the same service first.
fn requires(action: &str) -> Option<&'static str> {
    match action {
        "install" => Some("init"),
        "start" => Some("install"),
        "monitor" => Some("start"),
        "uninstall" => Some("stop"),
        _ => None,
    }
}

/// Whether an action tears down, and so waits on consumers and children.
fn tears_down(action: &str) -> bool {
    matches!(action, "stop" | "uninstall")
}

/// Why a run cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The services wait on each other in a loop (e.g. two services consuming each other).
    #[error("dependency cycle between services: {}", services.join(" -> "))]
    Cycle {
        /// The services in the cycle, in dependency order.
        services: Vec<String>,
    },
}

/// One job of a run: an action of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// The service key (`role!name`).
    pub service_key: String,
    /// The action to run.
    pub action: String,
    /// The service's actor, whose `actions/<action>` runs.
    pub actor: String,
    /// The service's role.
    pub role: String,
    /// The service's instance name.
    pub name: String,
}

/// A batch of jobs that may run in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The step's position, from 1.
    pub number: usize,
    /// The jobs, sorted by service key then action.
    pub jobs: Vec<JobSpec>,
}

/// A planned run: steps in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Plan {
    /// The steps; empty when nothing is pending.
    pub steps: Vec<Step>,
}

impl Plan {
    /// How many jobs the plan has in all.
    pub fn job_count(&self) -> usize {
        self.steps.iter().map(|s| s.jobs.len()).sum()
    }
}

/// Whether `action` of `service` must run (it exists, is not done, is not switched off).
fn pending(service: &Service, action: &str) -> bool {
    service.state != ServiceState::Disabled
        && service
            .actions
            .get(action)
            .is_some_and(|s| !matches!(s, ActionState::Ok | ActionState::Disabled))
}

/// The job graph under construction: nodes are `(service key, action)`.
struct Graph<'a> {
    /// The nodes, in the order they were found.
    nodes: Vec<(&'a str, &'a str)>,
    /// Node to its index.
    index: HashMap<(&'a str, &'a str), usize>,
    /// For each node, the nodes that must run before it.
    preds: Vec<Vec<usize>>,
    /// Nodes whose prerequisites are not yet explored.
    work: Vec<usize>,
}

impl<'a> Graph<'a> {
    /// The index of a node, adding it (to be explored) if new.
    fn node(&mut self, key: &'a str, action: &'a str) -> usize {
        if let Some(&i) = self.index.get(&(key, action)) {
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push((key, action));
        self.index.insert((key, action), i);
        self.preds.push(Vec::new());
        self.work.push(i);
        i
    }
}

/// Plans a run over `services`: every pending action (scheduled, changed or failed) and what it
/// needs, in steps.
pub fn plan_run(services: &BTreeMap<String, Service>) -> Result<Plan, PlanError> {
    plan(services, true)
}

/// Plans a run of the scheduled and changed actions only, leaving failed ones to a person: what a
/// recurring action starts, so that one failing action does not re-run at every tick.
pub fn plan_scheduled(services: &BTreeMap<String, Service>) -> Result<Plan, PlanError> {
    plan(services, false)
}

/// The services that consume each other (or are each other's parent) in a loop, in order, if
/// any: such a set can never run, so a blueprint making one is refused.
pub fn consumer_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    // Depth-first search over "waits for" edges (producers and parent), with colours.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let keys: Vec<&String> = services.keys().collect();
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = keys
        .iter()
        .map(|k| {
            let s = &services[*k];
            s.producers
                .iter()
                .chain(&s.parent)
                .filter_map(|r| index.get(r.key().as_str()).copied())
                .collect()
        })
        .collect();
    let mut mark = vec![Mark::New; keys.len()];
    for root in 0..keys.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to follow); `path` is the open chain.
        let mut stack = vec![(root, 0usize)];
        let mut path = vec![root];
        mark[root] = Mark::Open;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::Open;
                        stack.push((to, 0));
                        path.push(to);
                    }
                    Mark::Open => {
                        let start = path.iter().position(|&n| n == to).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[start..].iter().map(|&n| keys[n].clone()).collect();
                        cycle.push(keys[to].clone());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

fn plan(services: &BTreeMap<String, Service>, include_errors: bool) -> Result<Plan, PlanError> {
    let children = children_index(services);
    let mut g = Graph {
        nodes: Vec::new(),
        index: HashMap::new(),
        preds: Vec::new(),
        work: Vec::new(),
    };
    for s in services
        .values()
        .filter(|s| s.state != ServiceState::Disabled)
    {
        for (action, state) in &s.actions {
            let pending = match state {
                ActionState::Scheduled | ActionState::Changed => true,
                ActionState::Error => include_errors,
                _ => false,
            };
            if pending {
                g.node(&s.key, action);
            }
        }
    }
    while let Some(n) = g.work.pop() {
        let (key, action) = g.nodes[n];
        let Some(service) = services.get(key) else {
            continue;
        };
        let mut before = Vec::new();
        if let Some(req) = requires(action)
            && let Some((req, _)) = service.actions.get_key_value(req)
            && pending(service, req)
        {
            before.push(g.node(key, req));
        }
        let others: Vec<&str> = if tears_down(action) {
            service
                .consumers
                .iter()
                .filter_map(|r| services.get_key_value(&r.key()).map(|(k, _)| k.as_str()))
                .chain(children.get(key).into_iter().flatten().copied())
                .collect()
        } else {
            service
                .producers
                .iter()
                .chain(&service.parent)
                .filter_map(|r| services.get_key_value(&r.key()).map(|(k, _)| k.as_str()))
                .collect()
        };
        for other in others {
            if services.get(other).is_some_and(|dep| pending(dep, action)) {
                before.push(g.node(other, action));
            }
        }
        before.sort_unstable();
        before.dedup();
        g.preds[n] = before;
    }
    layer(services, &g)
}

/// Layers the graph into steps (Kahn's algorithm), or reports a cycle.
fn layer(services: &BTreeMap<String, Service>, g: &Graph<'_>) -> Result<Plan, PlanError> {
    let count = g.nodes.len();
    let mut indegree: Vec<usize> = g.preds.iter().map(Vec::len).collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (n, preds) in g.preds.iter().enumerate() {
        for &p in preds {
            succs[p].push(n);
        }
    }
    let mut layer: Vec<usize> = (0..count).filter(|&n| indegree[n] == 0).collect();
    let mut done = 0;
    let mut steps = Vec::new();
    while !layer.is_empty() {
        done += layer.len();
        let mut next = Vec::new();
        for &n in &layer {
            for &s in &succs[n] {
                indegree[s] -= 1;
                if indegree[s] == 0 {
                    next.push(s);
                }
            }
        }
        let mut jobs: Vec<JobSpec> = layer
            .iter()
            .filter_map(|&n| {
                let (key, action) = g.nodes[n];
                services.get(key).map(|s| JobSpec {
                    service_key: s.key.clone(),
                    action: action.to_string(),
                    actor: s.actor.clone(),
                    role: s.role.clone(),
                    name: s.name.clone(),
                })
            })
            .collect();
        jobs.sort_by(|a, b| (&a.service_key, &a.action).cmp(&(&b.service_key, &b.action)));
        steps.push(Step {
            number: steps.len() + 1,
            jobs,
        });
        layer = next;
    }
    if done < count {
        return Err(PlanError::Cycle {
            services: find_cycle(g, &indegree),
        });
    }
    Ok(Plan { steps })
}

/// Names the services of one cycle among the nodes Kahn's algorithm could not place
/// (those with `indegree > 0`), starting from the smallest key for a stable message.
fn find_cycle(g: &Graph<'_>, indegree: &[usize]) -> Vec<String> {
    let stuck = |n: usize| indegree[n] > 0;
    let Some(start) = (0..g.nodes.len()).find(|&n| stuck(n)) else {
        return Vec::new();
    };
    // Every stuck node has a stuck predecessor: walk back until a node repeats.
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut n = start;
    while !seen_at.contains_key(&n) {
        seen_at.insert(n, path.len());
        path.push(n);
        match g.preds[n].iter().copied().find(|&p| stuck(p)) {
            Some(p) => n = p,
            None => break,
        }
    }
    let from = seen_at.get(&n).copied().unwrap_or(0);
    // The walk went backwards (towards prerequisites): reverse into dependency order.
    let mut cycle: Vec<String> = path[from..]
        .iter()
        .rev()
        .map(|&n| g.nodes[n].0.to_string())
        .collect();
    cycle.dedup();
    if cycle.len() > 1 && cycle.first() == cycle.last() {
        cycle.pop();
    }
    if let Some(min) = cycle
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map(|(i, _)| i)
    {
        cycle.rotate_left(min);
    }
    let mut unique = BTreeMap::new();
    cycle.retain(|k| unique.insert(k.clone(), ()).is_none());
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ServiceRef;
    use crate::engine::testkit::execute;

    /// Services from a blueprint, then action states set (`key action state`).
    fn services(text: &str, states: &[&str]) -> BTreeMap<String, Service> {
        let mut services = execute(&BTreeMap::new(), text).services;
        for line in states {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [key, action, state] = parts[..] else {
                panic!("bad state line {line}");
            };
            let Ok(state) = state.parse() else {
                panic!("bad state {state}");
            };
            match services.get_mut(key) {
                Some(s) => s.actions.insert(action.to_string(), state),
                None => panic!("no service {key}"),
            };
        }
        services
    }

    /// Plans and compares the steps, each written as `key:action key:action`.
    fn check(services: &BTreeMap<String, Service>, expected: &[&str]) {
        let plan = match plan_run(services) {
            Ok(plan) => plan,
            Err(e) => panic!("plan failed: {e}"),
        };
        let got: Vec<String> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                assert_eq!(step.number, i + 1);
                step.jobs
                    .iter()
                    .map(|j| format!("{}:{}", j.service_key, j.action))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(got, expected);
    }

    const NODE: &str =
        "g8client__g:\nvdc__v: {g8client: g}\nsshkey__k:\nnode.ovc__n: {vdc: v, sshkey: k}\n";

    #[test]
    fn producers_install_first_and_install_pulls_init() {
        check(
            &services(&format!("{NODE}actions:\n  - action: install\n"), &[]),
            // init waits for init on the producers too (the same action), not for install.
            &[
                "g8client!g:install sshkey!k:init",
                "node!n:init sshkey!k:install vdc!v:install",
                "node!n:install",
            ],
        );
        // Done prerequisites are not pulled in; `monitor` pulls start, install and init.
        check(
            &services(
                NODE,
                &[
                    "node!n monitor scheduled",
                    "node!n init ok",
                    "sshkey!k install ok",
                    "vdc!v install disabled",
                ],
            ),
            &["node!n:install", "node!n:start", "node!n:monitor"],
        );
    }

    #[test]
    fn parents_first_and_teardown_reversed() {
        check(
            &services(
                "datacenter__eu:\nrack__r: {datacenter: eu}\nactions:\n  - action: start\n",
                &[
                    "datacenter!eu init ok",
                    "rack!r init ok",
                    "datacenter!eu install ok",
                ],
            ),
            &["datacenter!eu:start rack!r:install", "rack!r:start"],
        );
        check(
            &services(&format!("{NODE}actions:\n  - action: uninstall\n"), &[]),
            &[
                "node!n:stop",
                "node!n:uninstall sshkey!k:stop",
                "sshkey!k:uninstall vdc!v:uninstall",
            ],
        );
        check(
            &services(
                "datacenter__eu:\nrack__r: {datacenter: eu}\n",
                &["datacenter!eu stop scheduled", "rack!r stop error"],
            ),
            &["rack!r:stop", "datacenter!eu:stop"],
        );
    }

    #[test]
    fn nothing_pending_is_an_empty_plan() {
        check(&services(NODE, &[]), &[]);
        let mut all = services(NODE, &["node!n install scheduled"]);
        if let Some(n) = all.get_mut("node!n") {
            n.state = ServiceState::Disabled;
        }
        check(&all, &[]);
    }

    #[test]
    fn cycles_name_the_services() {
        let mut all = services(
            "g8client__g:\nvdc__v: {g8client: g}\ng8client__h:\nvdc__w: {g8client: h}\n",
            &["vdc!v install scheduled"],
        );
        // Make v and w consume each other (a loop no blueprint could declare at once).
        let (v, w) = (ServiceRef::new("vdc", "v"), ServiceRef::new("vdc", "w"));
        if let Some(s) = all.get_mut("vdc!v") {
            s.producers.push(w.clone());
        }
        if let Some(s) = all.get_mut("vdc!w") {
            s.producers.push(v);
        }
        let err = plan_run(&all);
        assert_eq!(
            err,
            Err(PlanError::Cycle {
                services: vec!["vdc!v".into(), "vdc!w".into()]
            })
        );
        assert_eq!(
            err.map(|_| ()).map_err(|e| e.to_string()),
            Err("dependency cycle between services: vdc!v -> vdc!w".to_string())
        );
        // The loop is found whatever is scheduled, so a blueprint making it can be refused.
        assert_eq!(
            consumer_cycle(&all),
            Some(vec!["vdc!v".into(), "vdc!w".into(), "vdc!v".into()])
        );
        let acyclic = services(NODE, &[]);
        assert_eq!(consumer_cycle(&acyclic), None);
    }

    #[test]
    fn a_recurring_plan_leaves_failed_actions_alone() {
        let all = services(
            "g8client__g:\ng8client__h:\n",
            &["g8client!g install error", "g8client!h install scheduled"],
        );
        let keys = |plan: Plan| -> Vec<String> {
            plan.steps
                .iter()
                .flat_map(|s| s.jobs.iter().map(|j| j.service_key.clone()))
                .collect()
        };
        assert_eq!(
            keys(plan_run(&all).expect("plan")),
            vec!["g8client!g", "g8client!h"]
        );
        assert_eq!(
            keys(plan_scheduled(&all).expect("plan")),
            vec!["g8client!h"]
        );
    }
}
