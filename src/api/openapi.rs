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
