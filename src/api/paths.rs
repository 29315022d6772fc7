//! The route table of the HTTP door, for the request log (a path's route template, never the raw
//! path) and the `Allow` header of a `405`. It is read from the OpenAPI document once, when the
//! routes are built ([`install`]), so the modules that log and answer requests need not import
//! the document (which imports every handler).

use std::sync::OnceLock;

use serde_json::Value;

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

/// The access rule of a request (`HEAD` as `GET`), or `None` when no route matches.
pub fn route(method: &str, path: &str) -> Option<&'static RouteAccess> {
    let template = template(path);
    let method = if method == "HEAD" { "GET" } else { method };
    ROUTES
        .iter()
        .find(|r| r.method == method && r.template == template)
}

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

/// Every path template with its segments.
static TEMPLATES: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();

/// Every path template's segments with its methods.
static METHODS: OnceLock<Vec<(Vec<String>, Vec<String>)>> = OnceLock::new();

/// Reads the table from an OpenAPI document's `paths` (the first call wins).
pub fn install(document: &Value) {
    let Some(paths) = document["paths"].as_object() else {
        return;
    };
    let _ = TEMPLATES.set(
        paths
            .keys()
            .map(|t| (t.clone(), t.split('/').map(str::to_string).collect()))
            .collect(),
    );
    let _ = METHODS.set(
        paths
            .iter()
            .map(|(template, ops)| {
                let segments = template.split('/').map(str::to_string).collect();
                let methods = ops
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                (segments, methods)
            })
            .collect(),
    );
}

/// The path templates of the document (`/ays/repository/{repo}`...), split at `/`.
fn templates() -> &'static [(String, Vec<String>)] {
    TEMPLATES.get().map_or(&[], Vec::as_slice)
}

/// The route template a request path matches (`/ays/repository/{repo}`), or `other`: the only
/// values the request log writes (never the raw path, which may hold anything).
pub fn template(path: &str) -> &'static str {
    let wanted: Vec<&str> = path.split('/').collect();
    templates()
        .iter()
        .find(|(_, segments)| {
            segments.len() == wanted.len()
                && segments.iter().zip(&wanted).all(|(template, segment)| {
                    template == segment || (template.starts_with('{') && !segment.is_empty())
                })
        })
        .map_or("other", |(template, _)| template.as_str())
}

/// The methods a path answers, as an `Allow` header value (`HEAD` with every `GET`), from the
/// paths of the document; `None` when no path template matches.
pub fn allowed_methods(path: &str) -> Option<String> {
    let table = METHODS.get().map_or(&[][..], Vec::as_slice);
    let wanted: Vec<&str> = path.split('/').collect();
    let mut methods: Vec<&str> = Vec::new();
    for (segments, ops) in table {
        let matches = segments.len() == wanted.len()
            && segments.iter().zip(&wanted).all(|(template, seg)| {
                template == seg || (template.starts_with('{') && !seg.is_empty())
            });
        if matches {
            methods.extend(ops.iter().map(String::as_str));
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
    fn every_authenticated_route_states_its_role() {
        let document = super::super::openapi::document();
        install(document);
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
