//! The OpenAPI 3 document served at `/openapi.json`, built from one table of routes so that the
//! document and the server cannot drift apart silently (a test checks every listed route answers).

use serde_json::{Map, Value, json};

/// One route: method, path template, summary, whether it needs a JWT.
pub struct Route {
    /// HTTP method, lowercase as OpenAPI wants it.
    pub method: &'static str,
    /// Path with `{param}` templates.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Whether the route is behind JWT auth.
    pub auth: bool,
}

/// Every route the server has.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/health",
        summary: "Liveness and readiness of each actor (200 all up, 503 otherwise)",
        auth: false,
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics: requests, latencies, actor restarts",
        auth: false,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        auth: false,
    },
    Route {
        method: "get",
        path: "/ays/repository",
        summary: "List repositories",
        auth: true,
    },
    Route {
        method: "post",
        path: "/ays/repository",
        summary: "Create a repository {name, git_url?} (201; 409 if it exists)",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}",
        summary: "Show a repository {name, path, git_url}",
        auth: true,
    },
    Route {
        method: "delete",
        path: "/ays/repository/{repo}",
        summary: "Delete a repository with its services and runs (204)",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/blueprint",
        summary: "List blueprints [{name, content, hash, archived}] (?archived=true includes archived)",
        auth: true,
    },
    Route {
        method: "post",
        path: "/ays/repository/{repo}/blueprint",
        summary: "Create a blueprint {name, content} (201; 400 invalid YAML; 409 exists)",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/blueprint/{blueprint}",
        summary: "Show a blueprint",
        auth: true,
    },
    Route {
        method: "put",
        path: "/ays/repository/{repo}/blueprint/{blueprint}",
        summary: "Replace a blueprint's content {content}",
        auth: true,
    },
    Route {
        method: "delete",
        path: "/ays/repository/{repo}/blueprint/{blueprint}",
        summary: "Delete a blueprint (204)",
        auth: true,
    },
    Route {
        method: "post",
        path: "/ays/repository/{repo}/blueprint/{blueprint}",
        summary: "Execute a blueprint (422 with every problem; nothing changed)",
        auth: true,
    },
    Route {
        method: "put",
        path: "/ays/repository/{repo}/blueprint/{blueprint}/archive",
        summary: "Archive a blueprint",
        auth: true,
    },
    Route {
        method: "put",
        path: "/ays/repository/{repo}/blueprint/{blueprint}/restore",
        summary: "Restore an archived blueprint",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/service",
        summary: "List services [{key, role, name, actor, state}]",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/service/{role}",
        summary: "List the services of one role",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/service/{role}/{name}",
        summary: "Show a service (data, actions, parent, producers, consumers)",
        auth: true,
    },
    Route {
        method: "delete",
        path: "/ays/repository/{repo}/service/{role}/{name}",
        summary: "Delete a service and its children (204)",
        auth: true,
    },
    Route {
        method: "post",
        path: "/ays/repository/{repo}/service/{role}/{name}/action/{action}",
        summary: "Schedule one action of a service",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/template",
        summary: "List actor templates",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/template/{name}",
        summary: "Show an actor template (schema, actions, config)",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/aysrun",
        summary: "List runs, newest first",
        auth: true,
    },
    Route {
        method: "post",
        path: "/ays/repository/{repo}/aysrun",
        summary: "Plan and start a run (?simulate=true plans only; ?callback_url=) (201; 409 while a run is in progress; 422 cycle or nothing to do)",
        auth: true,
    },
    Route {
        method: "get",
        path: "/ays/repository/{repo}/aysrun/{key}",
        summary: "Show a run with steps, jobs, states and logs",
        auth: true,
    },
    Route {
        method: "get",
        path: "/oauth/callback",
        summary: "OAuth redirect target of providers: Telegram login, or the central OAuth server (the state decides); 302 back to the app with jwt and state",
        auth: false,
    },
    Route {
        method: "get",
        path: "/oauth/providers",
        summary: "Central OAuth server: the provider names [\"github\", ...] (404 when [oauth_proxy] is off)",
        auth: false,
    },
    Route {
        method: "get",
        path: "/oauth/key",
        summary: "Central OAuth server: the Ed25519 verify key as 64 hex characters",
        auth: false,
    },
    Route {
        method: "get",
        path: "/oauth/jwks.json",
        summary: "Central OAuth server: the verify key as a JWKS (OKP, Ed25519)",
        auth: false,
    },
    Route {
        method: "get",
        path: "/oauth/authorize",
        summary: "Central OAuth server: ?provider&redirect_url&state; 302 to the provider (400 without redirect when redirect_url is not exactly allowed or the provider is unknown)",
        auth: false,
    },
    Route {
        method: "post",
        path: "/debug/crash/{actor}",
        summary: "Fault injection: make an actor panic (404 unless [debug].fault_injection)",
        auth: false,
    },
];

/// The OpenAPI 3 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "parameters": params,
            "responses": {"default": {"description": "JSON body; errors are {\"error\": \"...\"}"}},
        });
        if route.auth {
            op["security"] = json!([{"jwt": []}]);
        }
        if let Value::Object(map) = entry {
            map.insert(route.method.to_string(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Cockpit", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    })
}

/// The methods a path answers, as an `Allow` header value (`HEAD` with every `GET`), from the
/// paths of the document; `None` when no path template matches.
pub fn allowed_methods(path: &str) -> Option<String> {
    static TABLE: std::sync::OnceLock<Vec<(Vec<String>, Vec<String>)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let doc = document();
        let Some(paths) = doc["paths"].as_object() else {
            return Vec::new();
        };
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
            .collect()
    });
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
    fn every_route_is_in_the_document_with_its_parameters() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method];
            assert!(op.is_object(), "{} {}", route.method, route.path);
            let braces = route.path.matches('{').count();
            assert_eq!(op["parameters"].as_array().map(Vec::len), Some(braces));
            assert_eq!(op["security"].is_array(), route.auth, "{}", route.path);
        }
        assert!(ROUTES.len() >= 25);
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_templates() {
        assert_eq!(allowed_methods("/health").as_deref(), Some("GET, HEAD"));
        assert_eq!(
            allowed_methods("/ays/repository/demo/blueprint/bp.yaml").as_deref(),
            Some("GET, HEAD, POST, PUT, DELETE")
        );
        assert_eq!(allowed_methods("/nowhere"), None);
        assert_eq!(allowed_methods("/ays/repository//blueprint"), None);
    }
}
