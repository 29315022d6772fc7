//! `/ays/...`: repositories, blueprints, services, templates and runs (SPEC §5), behind JWT auth.
//!
//! Each handler turns a request into one message to the `Ays` actor or to a repository's actor
//! and maps the answer (or its [`AysError`]) to JSON with a fitting status.

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
use crate::actors::ays::{AysError, AysMsg, ask_ays, ask_repo};
use crate::actors::repo::RepoMsg;

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
        .then(|| async { respond(ask_ays(AysMsg::ListRepos).await, StatusCode::OK) });
    let create_repo = base
        .and(warp::path::end())
        .and(warp::post())
        .and(json_body::<NewRepo>())
        .then(|body: NewRepo| async move {
            let result = ask_ays(|reply| AysMsg::CreateRepo {
                name: body.name,
                git_url: body.git_url.filter(|u| !u.is_empty()),
                reply,
            })
            .await;
            respond(result, StatusCode::CREATED)
        });
    let get_repo = base
        .and(warp::path!(String))
        .and(warp::get())
        .then(|name: String| async move {
            respond(
                ask_ays(|reply| AysMsg::GetRepo { name, reply }).await,
                StatusCode::OK,
            )
        });
    let delete_repo =
        base.and(warp::path!(String))
            .and(warp::delete())
            .then(|name: String| async move {
                no_content(ask_ays(|reply| AysMsg::DeleteRepo { name, reply }).await)
            });

    let list_bp = base
        .and(warp::path!(String / "blueprint"))
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .then(|repo: String, q: HashMap<String, String>| async move {
            let archived = q.get("archived").is_some_and(|v| v == "true" || v == "1");
            let result = ask_repo(&repo, |reply| RepoMsg::ListBlueprints { archived, reply }).await;
            respond(result, StatusCode::OK)
        });
    let create_bp = base
        .and(warp::path!(String / "blueprint"))
        .and(warp::post())
        .and(json_body::<NewBlueprint>())
        .then(|repo: String, body: NewBlueprint| async move {
            let result = ask_repo(&repo, |reply| RepoMsg::PutBlueprint {
                name: body.name,
                content: body.content,
                create: true,
                reply,
            })
            .await;
            respond(result, StatusCode::CREATED)
        });
    let get_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::get())
        .then(|repo: String, name: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::GetBlueprint { name, reply }).await,
                StatusCode::OK,
            )
        });
    let put_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::put())
        .and(json_body::<BlueprintContent>())
        .then(
            |repo: String, name: String, body: BlueprintContent| async move {
                let result = ask_repo(&repo, |reply| RepoMsg::PutBlueprint {
                    name,
                    content: body.content,
                    create: false,
                    reply,
                })
                .await;
                respond(result, StatusCode::OK)
            },
        );
    let delete_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::delete())
        .then(|repo: String, name: String| async move {
            no_content(ask_repo(&repo, |reply| RepoMsg::DeleteBlueprint { name, reply }).await)
        });
    let execute_bp = base
        .and(warp::path!(String / "blueprint" / String))
        .and(warp::post())
        .then(|repo: String, name: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::ExecuteBlueprint { name, reply }).await,
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
            let result = ask_repo(&repo, |reply| RepoMsg::ArchiveBlueprint {
                name,
                archived,
                reply,
            })
            .await;
            respond(result, StatusCode::OK)
        });

    let list_services = base
        .and(warp::path!(String / "service"))
        .and(warp::get())
        .then(|repo: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::ListServices { role: None, reply }).await,
                StatusCode::OK,
            )
        });
    let list_role = base
        .and(warp::path!(String / "service" / String))
        .and(warp::get())
        .then(|repo: String, role: String| async move {
            let result = ask_repo(&repo, |reply| RepoMsg::ListServices {
                role: Some(role),
                reply,
            })
            .await;
            respond(result, StatusCode::OK)
        });
    let get_service = base
        .and(warp::path!(String / "service" / String / String))
        .and(warp::get())
        .then(|repo: String, role: String, name: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::GetService { role, name, reply }).await,
                StatusCode::OK,
            )
        });
    let delete_service = base
        .and(warp::path!(String / "service" / String / String))
        .and(warp::delete())
        .then(|repo: String, role: String, name: String| async move {
            no_content(ask_repo(&repo, |reply| RepoMsg::DeleteService { role, name, reply }).await)
        });
    let schedule = base
        .and(warp::path!(
            String / "service" / String / String / "action" / String
        ))
        .and(warp::post())
        .then(
            |repo: String, role: String, name: String, action: String| async move {
                let result = ask_repo(&repo, |reply| RepoMsg::ScheduleAction {
                    role,
                    name,
                    action,
                    reply,
                })
                .await;
                respond(result, StatusCode::OK)
            },
        );

    let list_templates = base
        .and(warp::path!(String / "template"))
        .and(warp::get())
        .then(|repo: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::ListTemplates { reply }).await,
                StatusCode::OK,
            )
        });
    let get_template = base
        .and(warp::path!(String / "template" / String))
        .and(warp::get())
        .then(|repo: String, name: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::GetTemplate { name, reply }).await,
                StatusCode::OK,
            )
        });

    let list_runs = base
        .and(warp::path!(String / "aysrun"))
        .and(warp::get())
        .then(|repo: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::ListRuns { reply }).await,
                StatusCode::OK,
            )
        });
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
            let result = ask_repo(&repo, |reply| RepoMsg::CreateRun {
                simulate,
                callback_url,
                origin: serde_json::json!({"api": true}),
                reply,
            })
            .await;
            respond(result, StatusCode::CREATED)
        });
    let get_run = base
        .and(warp::path!(String / "aysrun" / String))
        .and(warp::get())
        .then(|repo: String, key: String| async move {
            respond(
                ask_repo(&repo, |reply| RepoMsg::GetRun { key, reply }).await,
                StatusCode::OK,
            )
        });

    let routes = one_of(vec![
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
    ]);
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
/// form encoding by default; the body is still JSON, and saying so is friendlier than a 415), with
/// a `Content-Length` or chunked (Python `requests` with a generator, Node's `http.request`).
fn json_body<T: DeserializeOwned + Send>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone
{
    warp::header::optional::<u64>("content-length")
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(n) if n > MAX_BODY => Err(warp::reject::custom(super::TooLarge)),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(|body| read_json::<T, _, _>(body))
}

/// Reads a streamed body of at most [`MAX_BODY`] bytes and parses it as JSON.
async fn read_json<T, S, B>(body: S) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut read = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))?;
        if read.len() + chunk.remaining() > MAX_BODY as usize {
            return Err(warp::reject::custom(super::TooLarge));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            read.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    serde_json::from_slice(&read)
        .map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))
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
fn respond<T: serde::Serialize>(result: Result<T, AysError>, ok: StatusCode) -> Response {
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
