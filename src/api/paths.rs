//! The route table of the HTTP door, for the request log (a path's route template, never the raw
//! path) and the `Allow` header of a `405`. It is read from the OpenAPI document once, when the
//! routes are built ([`install`]), so the modules that log and answer requests need not import
//! the document (which imports every handler).

use std::sync::OnceLock;

use serde_json::Value;

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
