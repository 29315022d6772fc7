//! The OpenAPI document served at `/openapi.json`, derived by `utoipa` from the handlers' own
//! `#[utoipa::path]` annotations and the request and answer types, so that it cannot drift from
//! the code; `/docs` serves Swagger UI over it from files built into the binary (no CDN).

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The document's root: every handler and the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cockpit",
        description = "The AYS control plane's REST API. Every `/ays` route wants a JWT (ES384, \
            from `[oauth].jwt_issuer`, granting membership of `[oauth].organization`) as \
            `Authorization: bearer <jwt>` or as the `jwt` cookie. Errors are `{\"error\": \"...\"}`.",
    ),
    paths(
        super::health,
        super::ready,
        super::metrics,
        openapi_json,
        docs,
        super::crash,
        super::ays::list_repos,
        super::ays::create_repo,
        super::ays::get_repo,
        super::ays::delete_repo,
        super::ays::list_blueprints,
        super::ays::create_blueprint,
        super::ays::get_blueprint,
        super::ays::put_blueprint,
        super::ays::delete_blueprint,
        super::ays::execute_blueprint,
        super::ays::archive_blueprint,
        super::ays::restore_blueprint,
        super::ays::list_services,
        super::ays::list_role,
        super::ays::get_service,
        super::ays::delete_service,
        super::ays::schedule_action,
        super::ays::list_templates,
        super::ays::get_template,
        super::ays::list_runs,
        super::ays::create_run,
        super::ays::get_run,
        super::runs::cancel_run,
        super::runs::run_logs,
        super::events::raise_event,
        super::events::github_webhook,
        super::telegram::telegram_webhook,
        super::access::list_tokens,
        super::access::create_token,
        super::access::revoke_token,
        super::access::list_users,
        super::access::revoke_user,
        super::access::list_audit,
        super::access::approve,
        super::runs::rerun_run,
        super::login::callback,
        super::oauth_proxy::providers,
        super::oauth_proxy::key,
        super::oauth_proxy::jwks,
        super::oauth_proxy::authorize,
    ),
    modifiers(&Security),
    tags(
        (name = "server", description = "Health, metrics and this document"),
        (name = "repositories"), (name = "blueprints"), (name = "services"),
        (name = "templates"), (name = "runs"),
        (name = "events", description = "Events from outside that run subscribed actions"),
        (name = "access", description = "API tokens, users and the audit trail"),
        (name = "login", description = "Telegram login and the central OAuth2 server"),
    )
)]
struct ApiDoc;

/// Adds the two ways to present the JWT.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "jwt_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("jwt"))),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        add_links(&mut doc);
        doc
    })
}

/// A link: the target operation and its parameters' runtime expressions.
type Link = (&'static str, &'static [(&'static str, &'static str)]);

/// OpenAPI links: what a created resource's answer names, and where it can be used next (clients
/// and Schemathesis's stateful phase follow them).
fn add_links(doc: &mut Value) {
    const NAME: &str = "$response.body#/name";
    const REPO: &str = "$request.path.repo";
    let table: [(&str, &str, &str, &[Link]); 3] = [
        (
            "/ays/repository",
            "post",
            "201",
            &[
                ("get_repo", &[("repo", NAME)]),
                ("list_blueprints", &[("repo", NAME)]),
                ("create_blueprint", &[("repo", NAME)]),
                ("list_services", &[("repo", NAME)]),
                ("list_templates", &[("repo", NAME)]),
                ("list_runs", &[("repo", NAME)]),
                ("create_run", &[("repo", NAME)]),
                ("delete_repo", &[("repo", NAME)]),
            ],
        ),
        (
            "/ays/repository/{repo}/blueprint",
            "post",
            "201",
            &[
                ("get_blueprint", &[("repo", REPO), ("blueprint", NAME)]),
                ("put_blueprint", &[("repo", REPO), ("blueprint", NAME)]),
                ("execute_blueprint", &[("repo", REPO), ("blueprint", NAME)]),
                ("archive_blueprint", &[("repo", REPO), ("blueprint", NAME)]),
                ("delete_blueprint", &[("repo", REPO), ("blueprint", NAME)]),
            ],
        ),
        (
            "/ays/repository/{repo}/aysrun",
            "post",
            "201",
            &[("get_run", &[("repo", REPO), ("key", "$response.body#/key")])],
        ),
    ];
    for (path, method, status, links) in table {
        let response = &mut doc["paths"][path][method]["responses"][status];
        if !response.is_object() {
            continue;
        }
        let mut all = serde_json::Map::new();
        for (operation, parameters) in links {
            let parameters: serde_json::Map<String, Value> = parameters
                .iter()
                .map(|(name, value)| (name.to_string(), Value::from(*value)))
                .collect();
            all.insert(
                operation.to_string(),
                serde_json::json!({"operationId": operation, "parameters": parameters}),
            );
        }
        response["links"] = Value::Object(all);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "server",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(crate) fn openapi_json() -> Response {
    warp::reply::json(document()).into_response()
}

/// An interactive viewer of this document (Swagger UI, served from the binary).
#[utoipa::path(get, path = "/docs/", tag = "server",
    responses((status = 200, description = "The viewer page", content_type = "text/html", body = String)))]
pub(crate) fn docs(tail: warp::path::Tail) -> Response {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")));
    match utoipa_swagger_ui::serve(tail.as_str(), config.clone()) {
        Ok(Some(file)) => {
            warp::reply::with_header(file.bytes.into_owned(), "content-type", file.content_type)
                .into_response()
        }
        Ok(None) => super::error(StatusCode::NOT_FOUND, "not found").into_response(),
        Err(_) => {
            super::error(StatusCode::INTERNAL_SERVER_ERROR, "the viewer is broken").into_response()
        }
    }
}

/// `/openapi.json`, `/docs` (a redirect to `/docs/`) and `/docs/...`.
pub fn routes() -> warp::filters::BoxedFilter<(Response,)> {
    let json = warp::path!("openapi.json")
        .and(warp::get())
        .map(openapi_json)
        .boxed();
    // The page's assets are relative: `/docs` must become `/docs/` (warp's `path!` matches both).
    let files = warp::path("docs")
        .and(warp::get())
        .and(warp::path::full())
        .and(warp::path::tail())
        .map(|full: warp::path::FullPath, tail: warp::path::Tail| {
            if full.as_str() == "/docs" {
                warp::reply::with_header(StatusCode::MOVED_PERMANENTLY, "location", "/docs/")
                    .into_response()
            } else {
                docs(tail)
            }
        })
        .boxed();
    super::reply::one_of(vec![json, files])
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::paths::allowed_methods;

    #[test]
    fn paths_map_to_their_templates_or_other() {
        for (path, template) in [
            ("/health", "/health"),
            (
                "/ays/repository/demo/aysrun/k1",
                "/ays/repository/{repo}/aysrun/{key}",
            ),
            ("/ays/repository/demo", "/ays/repository/{repo}"),
            ("/ays/repository//aysrun", "other"),
            ("/nope", "other"),
            ("/<key>", "other"),
        ] {
            assert_eq!(super::super::paths::template(path), template, "{path}");
        }
    }

    #[test]
    fn every_operation_has_its_parameters_responses_and_security() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 24, "{}", paths.len());
        let mut operations = 0;
        for (path, ops) in paths {
            for (method, op) in ops.as_object().expect("operations") {
                operations += 1;
                let braces = path.matches('{').count();
                let in_path = op["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().filter(|p| p["in"] == "path").count())
                    .unwrap_or(0);
                assert_eq!(in_path, braces, "{method} {path}");
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.contains_key("default"), "{method} {path}");
                for (status, response) in responses {
                    if status != "204" && status != "301" && status != "302" {
                        assert!(response["content"].is_object(), "{method} {path} {status}");
                    }
                }
                if path.starts_with("/ays/") {
                    assert!(op["security"].is_array(), "{method} {path}");
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
            }
        }
        assert!(operations >= 32, "{operations}");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["jwt"]["scheme"], "bearer");
        assert_eq!(schemes["jwt_cookie"]["in"], "cookie");
        let create = &paths["/ays/repository"]["post"];
        assert!(create["requestBody"]["content"]["application/json"].is_object());
        let run = &paths["/ays/repository/{repo}/aysrun"]["post"];
        let query: Vec<&str> = run["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(query, ["simulate", "callback_url"]);
    }

    /// Every `$ref` names a schema of the document (a schema used only inside an
    /// `IntoResponses` enum is not collected, and Schemathesis skips what it cannot resolve).
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        found.push(target);
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{target} does not resolve"
            );
        }
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
