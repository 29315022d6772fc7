//! `/ays/...`: repositories, blueprints, services, templates and runs (SPEC §5), behind JWT auth.
//!
//! Each handler turns a request into one message to the `Ays` actor or to a repository's actor
//! and maps the answer (or its [`AysError`]) to JSON with a fitting status.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{AuditTarget, Guarded, Job, audited, guarded};
use super::error;
use super::reply::{no_content, one_of, respond};
use super::schemas::{
    AuthFailures, Blueprint, BodyFailures, Error, Executed, Held, Problems, Repo, RepoFailures,
    Run, Service, ServiceSummary, Template,
};
use crate::actors::Shared;
use crate::client::{Audit, AysClient, RunRequest};
use crate::store::Origin;

/// Largest JSON body accepted (a blueprint is inside it).
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// `POST /ays/repository` body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewRepo {
    /// The repository's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    /// A git remote (`https://`, `http://`, `ssh://`, `git@host:path`) to clone into it.
    #[serde(default)]
    git_url: Option<String>,
}

/// `POST .../blueprint` body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewBlueprint {
    /// The file name: `.yaml` or `.yml`, not starting with `_` or `.`.
    #[schema(pattern = "^[A-Za-z0-9-][A-Za-z0-9_.-]*\\.(yaml|yml)$")]
    name: String,
    /// The YAML text.
    content: String,
}

/// `PUT .../blueprint/{bp}` body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct BlueprintContent {
    /// The new YAML text.
    content: String,
}

/// `GET .../blueprint` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListBlueprints {
    /// `true` or `1` lists archived blueprints too.
    #[serde(default)]
    archived: Option<String>,
}

/// `POST .../service/{role}/{name}/action/{action}` body (optional).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// What the action's job is given: a JSON object of names to values (at most 16 KiB as
    /// JSON). The job reads them merged into its input's `args` and, alone, from the
    /// `COCKPIT_ARGS` environment variable.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    args: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The query string as `T`, or what is wrong with it (for a `400`). (`warp::query` rejects a bad
/// query instead, and the rejection can lose to another route's `405`.)
fn query_or_400<T: serde::de::DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (Result<T, String>,), Error = std::convert::Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| {
            serde_urlencoded::from_str::<T>(&raw).map_err(|err| format!("bad query: {err}"))
        })
}

/// `GET .../aysrun` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListRuns {
    /// How many runs at most (1 to 1000; 100 when absent).
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where to go on from: the `cursor` of the `Link: <…>; rel="next"` header of the previous
    /// page (opaque).
    #[serde(default)]
    cursor: Option<String>,
    /// Only runs in this state: `new`, `running`, `ok`, `error` or `cancelled`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(new|running|ok|error|cancelled)$")]
    state: Option<String>,
}

/// Runs per page when `limit` is absent.
const RUNS_PAGE: usize = 100;
/// The largest `limit` of a page of runs.
const MAX_RUNS_PAGE: usize = 1000;

/// `POST .../aysrun` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NewRun {
    /// `true` or `1` only plans the run: nothing is executed.
    #[serde(default)]
    simulate: Option<String>,
    /// An `http://` or `https://` URL the run's result is POSTed to when it ends.
    #[serde(default)]
    callback_url: Option<String>,
}

/// Every `/ays` route.
pub fn routes(
    shared: Shared,
    feeds: std::sync::Arc<super::runs::Feeds>,
) -> BoxedFilter<(Response,)> {
    // Authentication runs once per request, before any route (and any body) is looked at.
    let base = warp::any();
    let repo = || base.and(warp::path!(String));
    let blueprints = || base.and(warp::path!(String / "blueprint"));
    let blueprint = || base.and(warp::path!(String / "blueprint" / String));

    let mut all = vec![
        base.and(warp::path::end())
            .and(warp::get())
            .then(list_repos)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path::end())
            .and(warp::post())
            .and(json_body::<NewRepo>())
            .map(|body| Job::change(move |audit| create_repo(audit, body)))
            .boxed(),
        repo()
            .and(warp::get())
            .then(get_repo)
            .map(Job::Done)
            .boxed(),
        repo()
            .and(warp::delete())
            .map(|name| Job::change(move |audit| delete_repo(audit, name)))
            .boxed(),
        blueprints()
            .and(warp::get())
            .and(warp::query::<ListBlueprints>())
            .then(list_blueprints)
            .map(Job::Done)
            .boxed(),
        blueprints()
            .and(warp::post())
            .and(json_body::<NewBlueprint>())
            .map(|repo, body| Job::change(move |audit| create_blueprint(audit, repo, body)))
            .boxed(),
        blueprint()
            .and(warp::get())
            .then(get_blueprint)
            .map(Job::Done)
            .boxed(),
        blueprint()
            .and(warp::put())
            .and(json_body::<BlueprintContent>())
            .map(|repo, name, body| {
                Job::change(move |audit| put_blueprint(audit, repo, name, body))
            })
            .boxed(),
        blueprint()
            .and(warp::delete())
            .map(|repo, name| Job::change(move |audit| delete_blueprint(audit, repo, name)))
            .boxed(),
        blueprint()
            .and(warp::post())
            .map(|repo, name| Job::change(move |audit| execute_blueprint(audit, repo, name)))
            .boxed(),
        base.and(warp::path!(String / "blueprint" / String / "archive"))
            .and(warp::put())
            .map(|repo, name| Job::change(move |audit| archive_blueprint(audit, repo, name)))
            .boxed(),
        base.and(warp::path!(String / "blueprint" / String / "restore"))
            .and(warp::put())
            .map(|repo, name| Job::change(move |audit| restore_blueprint(audit, repo, name)))
            .boxed(),
        base.and(warp::path!(String / "service"))
            .and(warp::get())
            .then(list_services)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "service" / String))
            .and(warp::get())
            .then(list_role)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "service" / String / String))
            .and(warp::get())
            .then(get_service)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "service" / String / String))
            .and(warp::delete())
            .map(|repo, role, name| {
                Job::change(move |audit| delete_service(audit, repo, role, name))
            })
            .boxed(),
        base.and(warp::path!(
            String / "service" / String / String / "action" / String
        ))
        .and(warp::post())
        .and(json_body_or_empty::<ScheduleBody>())
        .map(|repo, role, name, action, body| {
            Job::change(move |audit| schedule_action(audit, repo, role, name, action, body))
        })
        .boxed(),
        base.and(warp::path!(String / "template"))
            .and(warp::get())
            .then(list_templates)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "template" / String))
            .and(warp::get())
            .then(get_template)
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "aysrun"))
            .and(warp::get())
            .and(query_or_400::<ListRuns>())
            .then(|repo, query: Result<ListRuns, String>| async move {
                match query {
                    Ok(query) => list_runs(repo, query).await,
                    Err(why) => error(StatusCode::BAD_REQUEST, why).into_response(),
                }
            })
            .map(Job::Done)
            .boxed(),
        base.and(warp::path!(String / "aysrun"))
            .and(warp::post())
            .and(warp::query::<NewRun>())
            .map(|repo, query| Job::change(move |audit| create_run(audit, repo, query)))
            .boxed(),
        base.and(warp::path!(String / "aysrun" / String))
            .and(warp::get())
            .then(get_run)
            .map(Job::Done)
            .boxed(),
    ];
    all.extend(super::runs::routes(shared.clone(), feeds));
    let routes = one_of(all);
    let store = shared.store.clone();
    warp::path("ays")
        .and(warp::path("repository"))
        .and(guarded(shared))
        .and(routes)
        .then(move |guarded: Guarded, job: Job| {
            let store = store.clone();
            async move {
                let response = job.run(&guarded).await;
                audited(&store, &guarded, response)
            }
        })
        .boxed()
}

/// List repositories.
#[utoipa::path(get, path = "/ays/repository", tag = "repositories",
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Every repository", body = Vec<Repo>),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_repos() -> Response {
    match AysClient.list_repos_json().await {
        Ok(json) => {
            let mut response = Response::new(json.into());
            response.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}

/// Create a repository, cloning `git_url` into it when given.
#[utoipa::path(post, path = "/ays/repository", tag = "repositories",
    security(("jwt" = []), ("jwt_cookie" = [])),
    request_body(content = NewRepo, description = "JSON, whatever the Content-Type says (`curl -d` works)"),
    responses((status = 201, description = "Created", body = Repo),
        (status = 409, description = "A repository of that name exists", body = Error),
        BodyFailures, AuthFailures, RepoFailures))]
pub(crate) async fn create_repo(audit: Option<Audit>, body: NewRepo) -> Response {
    let git_url = body.git_url.filter(|u| !u.is_empty());
    let target = AuditTarget(body.name.clone());
    let audit = audit.map(|a| Audit {
        target: target.0.clone(),
        ..a
    });
    let result = AysClient.create_repo(body.name, git_url, audit).await;
    let mut response = respond(result, StatusCode::CREATED);
    response.extensions_mut().insert(target);
    response
}

/// Show a repository.
#[utoipa::path(get, path = "/ays/repository/{repo}", tag = "repositories",
    params(("repo" = String, Path, description = "Repository name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The repository", body = Repo),
        AuthFailures, RepoFailures))]
pub(crate) async fn get_repo(name: String) -> Response {
    respond(AysClient.get_repo(name).await, StatusCode::OK)
}

/// Delete a repository with its services and runs.
#[utoipa::path(delete, path = "/ays/repository/{repo}", tag = "repositories",
    params(("repo" = String, Path, description = "Repository name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "A run is in progress", body = Error),
        (status = 202, description = "Held until a second admin approves it (`[access] two_person`)", body = Held),
        AuthFailures, RepoFailures))]
pub(crate) async fn delete_repo(audit: Option<Audit>, name: String) -> Response {
    no_content(AysClient.delete_repo(name, audit).await)
}

/// List blueprints.
#[utoipa::path(get, path = "/ays/repository/{repo}/blueprint", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"), ListBlueprints),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The blueprints", body = Vec<Blueprint>),
        (status = 400, description = "A query parameter is not a string", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_blueprints(repo: String, q: ListBlueprints) -> Response {
    let archived = q.archived.is_some_and(|v| v == "true" || v == "1");
    let result = AysClient.list_blueprints(&repo, archived).await;
    respond(result, StatusCode::OK)
}

/// Create a blueprint (its YAML is checked, not executed).
#[utoipa::path(post, path = "/ays/repository/{repo}/blueprint", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    request_body(content = NewBlueprint, description = "JSON, whatever the Content-Type says"),
    responses((status = 201, description = "Created", body = Blueprint),
        (status = 409, description = "A blueprint of that name exists", body = Error),
        BodyFailures, AuthFailures, RepoFailures))]
pub(crate) async fn create_blueprint(
    audit: Option<Audit>,
    repo: String,
    body: NewBlueprint,
) -> Response {
    let target = AuditTarget(format!("{repo}/{}", body.name));
    let audit = audit.map(|a| Audit {
        target: target.0.clone(),
        ..a
    });
    let result = AysClient
        .put_blueprint(&repo, body.name, body.content, true, audit)
        .await;
    let mut response = respond(result, StatusCode::CREATED);
    response.extensions_mut().insert(target);
    response
}

/// Show a blueprint.
#[utoipa::path(get, path = "/ays/repository/{repo}/blueprint/{blueprint}", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The blueprint", body = Blueprint),
        AuthFailures, RepoFailures))]
pub(crate) async fn get_blueprint(repo: String, name: String) -> Response {
    respond(AysClient.get_blueprint(&repo, name).await, StatusCode::OK)
}

/// Replace a blueprint's content.
#[utoipa::path(put, path = "/ays/repository/{repo}/blueprint/{blueprint}", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    request_body(content = BlueprintContent, description = "JSON, whatever the Content-Type says"),
    responses((status = 200, description = "Replaced", body = Blueprint),
        BodyFailures, AuthFailures, RepoFailures))]
pub(crate) async fn put_blueprint(
    audit: Option<Audit>,
    repo: String,
    name: String,
    body: BlueprintContent,
) -> Response {
    let result = AysClient
        .put_blueprint(&repo, name, body.content, false, audit)
        .await;
    respond(result, StatusCode::OK)
}

/// Delete a blueprint.
#[utoipa::path(delete, path = "/ays/repository/{repo}/blueprint/{blueprint}", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 202, description = "Held until a second admin approves it (`[access] two_person`)", body = Held),
        AuthFailures, RepoFailures))]
pub(crate) async fn delete_blueprint(audit: Option<Audit>, repo: String, name: String) -> Response {
    no_content(AysClient.delete_blueprint(&repo, name, audit).await)
}

/// Execute a blueprint: every problem is reported at once and nothing changes unless it is valid.
#[utoipa::path(post, path = "/ays/repository/{repo}/blueprint/{blueprint}", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Executed", body = Executed),
        (status = 400, description = "The blueprint is not valid YAML", body = Error),
        (status = 409, description = "The blueprint is archived: restore it first", body = Error),
        (status = 422, description = "Every problem of the blueprint", body = Problems),
        AuthFailures, RepoFailures))]
pub(crate) async fn execute_blueprint(
    audit: Option<Audit>,
    repo: String,
    name: String,
) -> Response {
    respond(
        AysClient.execute_blueprint(&repo, name, audit).await,
        StatusCode::OK,
    )
}

/// Archive a blueprint.
#[utoipa::path(put, path = "/ays/repository/{repo}/blueprint/{blueprint}/archive", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Archived", body = Blueprint),
        (status = 409, description = "Already archived", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn archive_blueprint(
    audit: Option<Audit>,
    repo: String,
    name: String,
) -> Response {
    archive(audit, repo, name, true).await
}

/// Restore an archived blueprint.
#[utoipa::path(put, path = "/ays/repository/{repo}/blueprint/{blueprint}/restore", tag = "blueprints",
    params(("repo" = String, Path, description = "Repository name"),
        ("blueprint" = String, Path, description = "Blueprint file name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Restored", body = Blueprint),
        (status = 409, description = "Not archived", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn restore_blueprint(
    audit: Option<Audit>,
    repo: String,
    name: String,
) -> Response {
    archive(audit, repo, name, false).await
}

async fn archive(audit: Option<Audit>, repo: String, name: String, archived: bool) -> Response {
    let result = AysClient
        .archive_blueprint(&repo, name, archived, audit)
        .await;
    respond(result, StatusCode::OK)
}

/// List services.
#[utoipa::path(get, path = "/ays/repository/{repo}/service", tag = "services",
    params(("repo" = String, Path, description = "Repository name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The services", body = Vec<ServiceSummary>),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_services(repo: String) -> Response {
    respond(AysClient.list_services(&repo, None).await, StatusCode::OK)
}

/// List the services of one role.
#[utoipa::path(get, path = "/ays/repository/{repo}/service/{role}", tag = "services",
    params(("repo" = String, Path, description = "Repository name"),
        ("role" = String, Path, description = "Role")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The services of the role", body = Vec<ServiceSummary>),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_role(repo: String, role: String) -> Response {
    let result = AysClient.list_services(&repo, Some(role)).await;
    respond(result, StatusCode::OK)
}

/// Show a service.
#[utoipa::path(get, path = "/ays/repository/{repo}/service/{role}/{name}", tag = "services",
    params(("repo" = String, Path, description = "Repository name"),
        ("role" = String, Path, description = "Role"),
        ("name" = String, Path, description = "Instance name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The service", body = Service),
        AuthFailures, RepoFailures))]
pub(crate) async fn get_service(repo: String, role: String, name: String) -> Response {
    respond(
        AysClient.get_service(&repo, role, name).await,
        StatusCode::OK,
    )
}

/// Delete a service and its children.
#[utoipa::path(delete, path = "/ays/repository/{repo}/service/{role}/{name}", tag = "services",
    params(("repo" = String, Path, description = "Repository name"),
        ("role" = String, Path, description = "Role"),
        ("name" = String, Path, description = "Instance name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "A run is in progress", body = Error),
        (status = 202, description = "Held until a second admin approves it (`[access] two_person`)", body = Held),
        AuthFailures, RepoFailures))]
pub(crate) async fn delete_service(
    audit: Option<Audit>,
    repo: String,
    role: String,
    name: String,
) -> Response {
    no_content(AysClient.delete_service(&repo, role, name, audit).await)
}

/// Schedule one action of a service (a later run executes it), optionally with `args` for its
/// job.
#[utoipa::path(post, path = "/ays/repository/{repo}/service/{role}/{name}/action/{action}", tag = "services",
    params(("repo" = String, Path, description = "Repository name"),
        ("role" = String, Path, description = "Role"),
        ("name" = String, Path, description = "Instance name"),
        ("action" = String, Path, description = "Action name")),
    request_body(content = Option<ScheduleBody>, description = "Optional JSON: `{\"args\": {...}}`"),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Scheduled", body = Service),
        (status = 400, description = "The service's template has no such action, or the body is not JSON", body = Error),
        (status = 413, description = "The body is too large", body = Error),
        (status = 422, description = "`args` too large", body = Problems),
        AuthFailures, RepoFailures))]
pub(crate) async fn schedule_action(
    audit: Option<Audit>,
    repo: String,
    role: String,
    name: String,
    action: String,
    body: ScheduleBody,
) -> Response {
    let args = body.args.map(serde_json::Value::Object);
    let result = AysClient
        .schedule_action(&repo, role, name, action, args, audit)
        .await;
    respond(result, StatusCode::OK)
}

/// List actor templates.
#[utoipa::path(get, path = "/ays/repository/{repo}/template", tag = "templates",
    params(("repo" = String, Path, description = "Repository name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The templates", body = Vec<Template>),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_templates(repo: String) -> Response {
    respond(AysClient.list_templates(&repo).await, StatusCode::OK)
}

/// Show an actor template.
#[utoipa::path(get, path = "/ays/repository/{repo}/template/{name}", tag = "templates",
    params(("repo" = String, Path, description = "Repository name"),
        ("name" = String, Path, description = "Actor name")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The template", body = Template),
        AuthFailures, RepoFailures))]
pub(crate) async fn get_template(repo: String, name: String) -> Response {
    respond(AysClient.get_template(&repo, &name).await, StatusCode::OK)
}

/// List runs, newest first, a page at a time (without their steps). When more follow, the
/// answer has a `Link: <…?limit=…&cursor=…>; rel="next"` header.
#[utoipa::path(get, path = "/ays/repository/{repo}/aysrun", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"), ListRuns),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "A page of runs", body = Vec<Run>,
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when more runs follow"))),
        (status = 400, description = "A bad `limit`, `state` or `cursor`", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn list_runs(repo: String, q: ListRuns) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => RUNS_PAGE,
        Some(Ok(n)) if (1..=MAX_RUNS_PAGE).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {MAX_RUNS_PAGE}"),
            )
            .into_response();
        }
    };
    let state = match q.state.as_deref() {
        None => None,
        Some(text) => match crate::store::RunState::parse(text) {
            Some(state) => Some(state),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "state must be new, running, ok, error or cancelled",
                )
                .into_response();
            }
        },
    };
    match AysClient
        .list_runs_page(&repo, state, q.cursor.as_deref(), limit)
        .await
    {
        Ok((runs, next)) => {
            let mut reply = respond(Ok(runs), StatusCode::OK);
            if let Some(cursor) = next {
                let mut url =
                    format!("/ays/repository/{repo}/aysrun?limit={limit}&cursor={cursor}");
                if let Some(state) = state {
                    url.push_str(&format!("&state={state}"));
                }
                if let Ok(value) = format!("<{url}>; rel=\"next\"").parse() {
                    reply.headers_mut().insert(warp::http::header::LINK, value);
                }
            }
            reply
        }
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}

/// Plan and start a run of every scheduled action.
#[utoipa::path(post, path = "/ays/repository/{repo}/aysrun", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"), NewRun),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 201, description = "Started (or only planned with `simulate`)", body = Run),
        (status = 400, description = "`callback_url` is not an http(s) URL", body = Error),
        (status = 409, description = "A run is in progress", body = Error),
        (status = 422, description = "Nothing to do, or a dependency cycle", body = Problems),
        AuthFailures, RepoFailures))]
pub(crate) async fn create_run(audit: Option<Audit>, repo: String, q: NewRun) -> Response {
    let simulate = q.simulate.is_some_and(|v| v == "true" || v == "1");
    let callback_url = q.callback_url.filter(|u| !u.is_empty());
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
        audit,
    };
    respond(
        AysClient.create_run(&repo, request).await,
        StatusCode::CREATED,
    )
}

/// Show a run with its steps, jobs, states and logs.
#[utoipa::path(get, path = "/ays/repository/{repo}/aysrun/{key}", tag = "runs",
    params(("repo" = String, Path, description = "Repository name"),
        ("key" = String, Path, description = "Run key")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The run", body = Run),
        AuthFailures, RepoFailures))]
pub(crate) async fn get_run(repo: String, key: String) -> Response {
    respond(AysClient.get_run(&repo, key).await, StatusCode::OK)
}

/// A JSON body of at most [`MAX_BODY`] bytes, whatever its `Content-Type` says (`curl -d` sends
/// form encoding by default; the body is still JSON, and saying so is friendlier than a 415), with
/// a `Content-Length` or chunked (Python `requests` with a generator, Node's `http.request`).
pub(crate) fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    declared_within_limit()
        .and(warp::body::stream())
        .and_then(|body| read_json::<T, _, _>(body))
}

/// Refuses (413) a request whose `Content-Length` is over [`MAX_BODY`] before its body is read;
/// a chunked body is held to the limit while it is read.
fn declared_within_limit() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(n) if n > MAX_BODY => Err(warp::reject::custom(super::TooLarge)),
                _ => Ok(()),
            }
        })
        .untuple_one()
}

/// [`json_body`], where no body at all (or an empty one) is `T::default()`.
fn json_body_or_empty<T: DeserializeOwned + Default + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    declared_within_limit()
        .and(warp::body::stream())
        .and_then(|body| read_json_or_default::<T, _, _>(body))
}

/// [`read_json`], where an empty body is `T::default()`.
async fn read_json_or_default<T, S, B>(body: S) -> Result<T, Rejection>
where
    T: DeserializeOwned + Default,
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let value: Option<serde_json::Value> = read_json_opt(body).await?;
    match value {
        None => Ok(T::default()),
        Some(value) => serde_json::from_value(value)
            .map_err(|err| warp::reject::custom(super::BadJson(err.to_string()))),
    }
}

/// Reads a streamed body of at most [`MAX_BODY`] bytes: `None` when it is empty.
async fn read_json_opt<S, B>(body: S) -> Result<Option<serde_json::Value>, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let read = read_body(body).await?;
    if read.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&read)
        .map(Some)
        .map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))
}

/// Reads a streamed body of at most [`MAX_BODY`] bytes and parses it as JSON.
async fn read_json<T, S, B>(body: S) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let read = read_body(body).await?;
    serde_json::from_slice(&read)
        .map_err(|err| warp::reject::custom(super::BadJson(err.to_string())))
}

/// Reads a streamed body of at most [`MAX_BODY`] bytes.
async fn read_body<S, B>(body: S) -> Result<Vec<u8>, Rejection>
where
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
    Ok(read)
}
