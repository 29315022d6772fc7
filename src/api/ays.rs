//! `/ays/...`: repositories, blueprints, services, templates and runs (SPEC §5), behind JWT auth.
//!
//! Each handler turns a request into one call of the [`AysClient`] and maps the answer (or its
//! [`AysError`]) to JSON with a fitting status.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::authenticated;
use super::error;
use crate::actors::Shared;
use crate::client::{AysClient, AysError, RunRequest};
use crate::store::Origin;

/// Largest JSON body accepted (a blueprint is inside it).
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// `POST /ays/repository` body.
#[derive(Deserialize)]
struct NewRepo {
    name: String,
    #[serde(default)]
    git_url: Option<String>,
}

/// `POST .../blueprint` body.
#[derive(Deserialize)]
struct NewBlueprint {
    name: String,
    content: String,
}

/// `PUT .../blueprint/{bp}` body.
#[derive(Deserialize)]
struct BlueprintContent {
    content: String,
}

/// Every `/ays` route.
pub fn routes(shared: Shared) -> BoxedFilter<(Response,)> {
    // Authentication runs once per request, before any route (and any body) is looked at.
    let base = warp::any();

    let list_repos = base
        .and(warp::path::end())
        .and(warp::get())
        .then(|| async { respond(AysClient.list_repos().await, StatusCode::OK) });
    let create_repo = base
        .and(warp::path::end())
        .and(warp::post())
        .and(json_body::<NewRepo>())
        .then(|body: NewRepo| async move {
            let git_url = body.git_url.filter(|u| !u.is_empty());
            let result = AysClient.create_repo(body.name, git_url).await;
            respond(result, StatusCode::CREATED)
        });
    let get_repo = base
        .and(warp::path!(String))
        .and(warp::get())
        .then(
            |name: String| async move { respond(AysClient.get_repo(name).await, StatusCode::OK) },
        );
    let delete_repo = base
        .and(warp::path!(String))
        .and(warp::delete())
        .then(|name: String| async move { no_content(AysClient.delete_repo(name).await) });

    let list_bp = base
        .and(warp::path!(String / "blueprint"))
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .then(|repo: String, q: HashMap<String, String>| async move {
            let archived = q.get("archived").is_some_and(|v| v == "true" || v == "1");
            let result = AysClient.list_blueprints(&repo, archived).await;
            respond(result, StatusCode::OK)
        });
    let create_bp = base
        .and(warp::path!(String / "blueprint"))
        .and(warp::post())
        .and(json_body::<NewBlueprint>())
        .then(|repo: String, body: NewBlueprint| async move {
            let result = AysClient
                .put_blueprint(&repo, body.name, body.content, true)
                .await;
            respond(result, StatusCode::CREATED)
        });
    let get_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::get())
        .then(|repo: String, name: String| async move {
            respond(AysClient.get_blueprint(&repo, name).await, StatusCode::OK)
        });
    let put_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::put())
        .and(json_body::<BlueprintContent>())
        .then(
            |repo: String, name: String, body: BlueprintContent| async move {
                let result = AysClient
                    .put_blueprint(&repo, name, body.content, false)
                    .await;
                respond(result, StatusCode::OK)
            },
        );
    let delete_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::delete())
        .then(|repo: String, name: String| async move {
            no_content(AysClient.delete_blueprint(&repo, name).await)
        });
    let execute_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::post())
        .then(|repo: String, name: String| async move {
            respond(
                AysClient.execute_blueprint(&repo, name).await,
                StatusCode::OK,
            )
        });
    let archive_bp = base
        .and(warp::path!(String / "blueprint" / String / String))
        .and(warp::put())
        .then(|repo: String, name: String, verb: String| async move {
            let archived = match verb.as_str() {
                "archive" => true,
                "restore" => false,
                _ => return error(StatusCode::NOT_FOUND, "not found").into_response(),
            };
            let result = AysClient.archive_blueprint(&repo, name, archived).await;
            respond(result, StatusCode::OK)
        });

    let list_services = base
        .and(warp::path!(String / "service"))
        .and(warp::get())
        .then(|repo: String| async move {
            respond(AysClient.list_services(&repo, None).await, StatusCode::OK)
        });
    let list_role = base
        .and(warp::path!(String / "service" / String))
        .and(warp::get())
        .then(|repo: String, role: String| async move {
            let result = AysClient.list_services(&repo, Some(role)).await;
            respond(result, StatusCode::OK)
        });
    let get_service = base
        .and(warp::path!(String / "service" / String / String))
        .and(warp::get())
        .then(|repo: String, role: String, name: String| async move {
            respond(
                AysClient.get_service(&repo, role, name).await,
                StatusCode::OK,
            )
        });
    let delete_service = base
        .and(warp::path!(String / "service" / String / String))
        .and(warp::delete())
        .then(|repo: String, role: String, name: String| async move {
            no_content(AysClient.delete_service(&repo, role, name).await)
        });
    let schedule = base
        .and(warp::path!(
            String / "service" / String / String / "action" / String
        ))
        .and(warp::post())
        .then(
            |repo: String, role: String, name: String, action: String| async move {
                let result = AysClient.schedule_action(&repo, role, name, action).await;
                respond(result, StatusCode::OK)
            },
        );

    let list_templates = base
        .and(warp::path!(String / "template"))
        .and(warp::get())
        .then(|repo: String| async move {
            respond(AysClient.list_templates(&repo).await, StatusCode::OK)
        });
    let get_template = base
        .and(warp::path!(String / "template" / String))
        .and(warp::get())
        .then(|repo: String, name: String| async move {
            respond(AysClient.get_template(&repo, &name).await, StatusCode::OK)
        });

    let list_runs = base
        .and(warp::path!(String / "aysrun"))
        .and(warp::get())
        .then(
            |repo: String| async move { respond(AysClient.list_runs(&repo).await, StatusCode::OK) },
        );
    let create_run = base
        .and(warp::path!(String / "aysrun"))
        .and(warp::post())
        .and(warp::query::<HashMap<String, String>>())
        .then(|repo: String, q: HashMap<String, String>| async move {
            let simulate = q.get("simulate").is_some_and(|v| v == "true" || v == "1");
            let callback_url = q.get("callback_url").filter(|u| !u.is_empty()).cloned();
            if let Some(url) = &callback_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "callback_url must be an http:// or https:// URL",
                )
                .into_response();
            }
            let request = RunRequest {
                simulate,
                callback_url,
                origin: Origin::Api,
            };
            let result = AysClient.create_run(&repo, request).await;
            respond(result, StatusCode::CREATED)
        });
    let get_run = base
        .and(warp::path!(String / "aysrun" / String))
        .and(warp::get())
        .then(|repo: String, key: String| async move {
            respond(AysClient.get_run(&repo, key).await, StatusCode::OK)
        });

    let mut all = vec![
        list_repos.boxed(),
        create_repo.boxed(),
        get_repo.boxed(),
        delete_repo.boxed(),
        list_bp.boxed(),
        create_bp.boxed(),
        get_bp.boxed(),
        put_bp.boxed(),
        delete_bp.boxed(),
        execute_bp.boxed(),
        archive_bp.boxed(),
        list_services.boxed(),
        list_role.boxed(),
        get_service.boxed(),
        delete_service.boxed(),
        schedule.boxed(),
        list_templates.boxed(),
        get_template.boxed(),
        list_runs.boxed(),
        create_run.boxed(),
        get_run.boxed(),
    ];
    all.extend(super::runs::routes());
    let routes = one_of(all);
    warp::path("ays")
        .and(warp::path("repository"))
        .and(authenticated(shared))
        .and(routes)
        .boxed()
}

/// The first of `routes` that matches. Each step is boxed: a long chain of unboxed `.or()`
/// makes the filter type so deep that type checking takes minutes.
pub(crate) fn one_of(routes: Vec<BoxedFilter<(Response,)>>) -> BoxedFilter<(Response,)> {
    let mut routes = routes.into_iter();
    let first = routes.next().expect("at least one route");
    routes.fold(first, |acc, next| acc.or(next).unify().boxed())
}

/// A JSON body of at most [`MAX_BODY`] bytes, whatever its `Content-Type` says (`curl -d` sends
/// form encoding by default; the body is still JSON, and saying so is friendlier than a 415).
fn json_body<T: DeserializeOwned + Send>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone
{
    warp::body::content_length_limit(MAX_BODY)
        .and(warp::body::bytes())
        .and_then(|body: bytes::Bytes| async move {
            serde_json::from_slice(&body)
                .map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))
        })
}

/// The status code of an error.
fn status_of(err: &AysError) -> StatusCode {
    match err {
        AysError::NotFound(_) => StatusCode::NOT_FOUND,
        AysError::Conflict(_) => StatusCode::CONFLICT,
        AysError::BadRequest(_) => StatusCode::BAD_REQUEST,
        AysError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AysError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A result as JSON: the value with `ok`, or the error with its status. Validation errors also
/// list every problem under `problems`.
pub(crate) fn respond<T: serde::Serialize>(
    result: Result<T, AysError>,
    ok: StatusCode,
) -> Response {
    match result {
        Ok(value) => warp::reply::with_status(warp::reply::json(&value), ok).into_response(),
        Err(AysError::Invalid(problems)) => warp::reply::with_status(
            warp::reply::json(&serde_json::json!({
                "error": problems.join("; "),
                "problems": problems,
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .into_response(),
        Err(err) => error(status_of(&err), err.to_string()).into_response(),
    }
}

/// 204 on success.
fn no_content(result: Result<impl Sized, AysError>) -> Response {
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}
