//! The route table of the HTTP door: the role each route needs ([`ROUTES`]), the routes that
//! need none ([`PUBLIC`]), and from both the request log's route template (never the raw path)
//! and the `Allow` header of a `405`. A test holds the table equal to the OpenAPI document, so
//! the modules that log and answer requests need not import the document (which imports every
//! handler, and takes milliseconds to build).

use std::sync::LazyLock;

use crate::auth::access::{Action, Role};

/// One route's access rule.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    /// The method.
    pub method: &'static str,
    /// The path template, as in the OpenAPI document.
    pub template: &'static str,
    /// The role it needs.
    pub role: Role,
    /// What the audit trail calls it.
    pub action: Action,
}

const fn rule(
    method: &'static str,
    template: &'static str,
    role: Role,
    action: Action,
) -> RouteAccess {
    RouteAccess {
        method,
        template,
        role,
        action,
    }
}

/// The role every authenticated route needs (`HEAD` as its `GET`): one table for the whole
/// REST API. A route missing here is a test failure (`every_authenticated_route_states_its_role`).
pub const ROUTES: &[RouteAccess] = {
    use Action as A;
    use Role::{Admin, Operator, Viewer};
    const R: &str = "/ays/repository";
    &[
        rule("GET", R, Viewer, A::Read),
        rule("POST", "/ays/event/{channel}", Operator, A::EventRaise),
        rule("POST", R, Admin, A::RepoCreate),
        rule("GET", "/ays/repository/{repo}", Viewer, A::Read),
        rule("DELETE", "/ays/repository/{repo}", Admin, A::RepoDelete),
        rule("GET", "/ays/repository/{repo}/blueprint", Viewer, A::Read),
        rule(
            "POST",
            "/ays/repository/{repo}/blueprint",
            Operator,
            A::BlueprintAdd,
        ),
        rule(
            "GET",
            "/ays/repository/{repo}/blueprint/{blueprint}",
            Viewer,
            A::Read,
        ),
        rule(
            "PUT",
            "/ays/repository/{repo}/blueprint/{blueprint}",
            Operator,
            A::BlueprintAdd,
        ),
        rule(
            "POST",
            "/ays/repository/{repo}/blueprint/{blueprint}",
            Operator,
            A::BlueprintExecute,
        ),
        rule(
            "DELETE",
            "/ays/repository/{repo}/blueprint/{blueprint}",
            Admin,
            A::BlueprintDelete,
        ),
        rule(
            "PUT",
            "/ays/repository/{repo}/blueprint/{blueprint}/archive",
            Operator,
            A::BlueprintArchive,
        ),
        rule(
            "PUT",
            "/ays/repository/{repo}/blueprint/{blueprint}/restore",
            Operator,
            A::BlueprintRestore,
        ),
        rule("GET", "/ays/repository/{repo}/service", Viewer, A::Read),
        rule(
            "GET",
            "/ays/repository/{repo}/service/{role}",
            Viewer,
            A::Read,
        ),
        rule(
            "GET",
            "/ays/repository/{repo}/service/{role}/{name}",
            Viewer,
            A::Read,
        ),
        rule(
            "DELETE",
            "/ays/repository/{repo}/service/{role}/{name}",
            Admin,
            A::ServiceDelete,
        ),
        rule(
            "POST",
            "/ays/repository/{repo}/service/{role}/{name}/action/{action}",
            Operator,
            A::ServiceExecute,
        ),
        rule("GET", "/ays/repository/{repo}/template", Viewer, A::Read),
        rule(
            "GET",
            "/ays/repository/{repo}/template/{name}",
            Viewer,
            A::Read,
        ),
        rule("GET", "/ays/repository/{repo}/aysrun", Viewer, A::Read),
        rule(
            "POST",
            "/ays/repository/{repo}/aysrun",
            Operator,
            A::RunCreate,
        ),
        rule(
            "GET",
            "/ays/repository/{repo}/aysrun/{key}",
            Viewer,
            A::Read,
        ),
        rule(
            "POST",
            "/ays/repository/{repo}/aysrun/{key}/cancel",
            Operator,
            A::RunCancel,
        ),
        rule(
            "POST",
            "/ays/repository/{repo}/aysrun/{key}/rerun",
            Operator,
            A::RunCreate,
        ),
        rule(
            "GET",
            "/ays/repository/{repo}/aysrun/{key}/logs",
            Viewer,
            A::Read,
        ),
        rule("GET", "/auth/tokens", Viewer, A::TokenList),
        rule("POST", "/auth/tokens", Viewer, A::TokenCreate),
        rule("DELETE", "/auth/tokens/{id}", Viewer, A::TokenRevoke),
        rule("GET", "/auth/users", Admin, A::UserList),
        rule("DELETE", "/auth/users/{identity}", Admin, A::UserRevoke),
        rule("GET", "/audit", Admin, A::AuditRead),
        rule("POST", "/auth/approvals/{id}", Admin, A::ApprovalApprove),
    ]
};

/// The names a path gives the template's `{...}` segments, joined by `/` (`demo/web.yaml`): the
/// audit trail's target.
pub fn target(template: &str, path: &str) -> String {
    template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{'))
        .map(|(_, segment)| segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The documented routes that need no login: `(method, template)`. With [`ROUTES`], every
/// route of the OpenAPI document (`every_documented_route_is_in_the_table`): the table is
/// static, so starting the server does not wait for the document to be built.
pub const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/debug/crash/{actor}"),
    ("GET", "/docs/"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/oauth/authorize"),
    ("GET", "/oauth/callback"),
    ("GET", "/oauth/jwks.json"),
    ("GET", "/oauth/key"),
    ("GET", "/oauth/providers"),
    ("GET", "/openapi.json"),
    ("GET", "/ready"),
    ("POST", "/telegram/webhook"),
    ("POST", "/webhooks/github"),
];

/// A path template: its text, its segments (split at `/`), and each method it answers with
/// the method's access rule (none for the routes that need no login).
struct Template {
    text: &'static str,
    segments: Vec<&'static str>,
    methods: Vec<(&'static str, Option<&'static RouteAccess>)>,
}

/// Every path template.
static TABLE: LazyLock<Vec<Template>> = LazyLock::new(|| {
    let mut table: Vec<Template> = Vec::new();
    let all = ROUTES
        .iter()
        .map(|rule| (rule.method, rule.template, Some(rule)))
        .chain(
            PUBLIC
                .iter()
                .map(|(method, template)| (*method, *template, None)),
        );
    for (method, text, rule) in all {
        match table.iter_mut().find(|t| t.text == text) {
            Some(template) => template.methods.push((method, rule)),
            None => table.push(Template {
                text,
                segments: text.split('/').collect(),
                methods: vec![(method, rule)],
            }),
        }
    }
    table
});

/// The most segments a route template has (`/ays/repository/{repo}/service/{role}/{name}/action/{action}`
/// has 9, with the empty one before the first `/`): a longer path matches no template.
const MAX_SEGMENTS: usize = 12;

/// A path split at `/` once, on the stack; `None` when it has more segments than any template.
fn split(path: &str) -> Option<([&str; MAX_SEGMENTS], usize)> {
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    for segment in path.split('/') {
        *segments.get_mut(count)? = segment;
        count += 1;
    }
    Some((segments, count))
}

/// Whether a template's segments match a path's: each the same, or a `{...}` segment matching
/// a non-empty one; how many segments matched literally (the most literal template wins).
fn matches(template: &[&str], wanted: &[&str]) -> Option<usize> {
    if template.len() != wanted.len() {
        return None;
    }
    let mut literal = 0;
    for (t, segment) in template.iter().zip(wanted) {
        if t == segment {
            literal += 1;
        } else if !t.starts_with('{') || segment.is_empty() {
            return None;
        }
    }
    Some(literal)
}

/// The template a path matches best.
fn best(path: &str) -> Option<&'static Template> {
    let (segments, count) = split(path)?;
    let wanted = &segments[..count];
    TABLE
        .iter()
        .filter_map(|template| Some((matches(&template.segments, wanted)?, template)))
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template)
}

/// The route template a request path matches (`/ays/repository/{repo}`), or `other`: the only
/// values the request log writes (never the raw path, which may hold anything).
pub fn template(path: &str) -> &'static str {
    best(path).map_or("other", |template| template.text)
}

/// The access rule of a request (`HEAD` as `GET`), or `None` when no route matches.
pub fn route(method: &str, path: &str) -> Option<&'static RouteAccess> {
    let method = if method == "HEAD" { "GET" } else { method };
    best(path)?
        .methods
        .iter()
        .find(|(m, _)| *m == method)
        .and_then(|(_, rule)| *rule)
}

/// The methods a path answers, as an `Allow` header value (`HEAD` with every `GET`), from the
/// paths of the document; `None` when no path template matches.
pub fn allowed_methods(path: &str) -> Option<String> {
    let (segments, count) = split(path)?;
    let wanted = &segments[..count];
    let mut methods: Vec<&str> = Vec::new();
    for template in TABLE.iter() {
        if matches(&template.segments, wanted).is_some() {
            methods.extend(template.methods.iter().map(|(method, _)| *method));
        }
    }
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    const ORDER: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    let allowed: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|m| methods.contains(m))
        .collect();
    (!allowed.is_empty()).then(|| allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_is_in_the_table() {
        let document = super::super::openapi::document();
        let mut documented = Vec::new();
        for (template, ops) in document["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.to_ascii_uppercase(), template.clone()));
            }
        }
        let mut table: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method, r.template))
            .chain(PUBLIC.iter().copied())
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
    }

    #[test]
    fn the_most_literal_template_names_a_path() {
        assert_eq!(
            matches(&["", "a", "{x}"], &["", "a", "b"]),
            Some(2),
            "the empty first segment and `a`"
        );
        assert_eq!(matches(&["", "a", "{x}"], &["", "a", ""]), None);
        assert_eq!(matches(&["", "a"], &["", "a", "b"]), None);
        assert!(
            TABLE.iter().all(|t| t.segments.len() <= MAX_SEGMENTS),
            "a template longer than MAX_SEGMENTS would never match"
        );
        assert_eq!(template(&"/a".repeat(MAX_SEGMENTS)), "other");
        assert_eq!(template("/oauth/jwks.json"), "/oauth/jwks.json");
        assert_eq!(
            template("/ays/repository/demo/aysrun"),
            "/ays/repository/{repo}/aysrun"
        );
    }

    #[test]
    fn every_authenticated_route_states_its_role() {
        let document = super::super::openapi::document();
        let mut documented = Vec::new();
        for (template, ops) in document["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                if op.get("security").is_some() {
                    documented.push((method.to_ascii_uppercase(), template.clone()));
                }
            }
        }
        let mut table: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.template.to_string()))
            .collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
        for rule in ROUTES {
            assert_eq!(
                rule.role,
                rule.action.role(),
                "{} {}",
                rule.method,
                rule.template
            );
        }
        // A route `[access] two_person` may hold documents its `202`.
        for rule in ROUTES.iter().filter(|r| r.action.holdable()) {
            let method = rule.method.to_ascii_lowercase();
            let responses = &document["paths"][rule.template][method.as_str()]["responses"];
            assert!(
                responses.get("202").is_some(),
                "{} {} can be held: document its 202",
                rule.method,
                rule.template
            );
        }
        let rule = route("HEAD", "/ays/repository/demo").expect("rule");
        assert_eq!((rule.role, rule.action), (Role::Viewer, Action::Read));
        assert_eq!(
            target(
                "/ays/repository/{repo}/blueprint/{blueprint}",
                "/ays/repository/demo/blueprint/web.yaml"
            ),
            "demo/web.yaml"
        );
    }
}
