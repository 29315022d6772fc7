//! The console's pages: maud templates (escaped by construction), one layout, no inline script
//! (the CSP forbids it): behaviour hangs on `data-*` attributes read by `console.js`.

use maud::{DOCTYPE, Markup, html};
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{BASE, LinedProblem, Who, path_part};
use crate::auth::access::Action;
use crate::client::views::{
    BlueprintView, JobView, RepoView, RunView, ServiceSummary, ServiceView, TemplateView,
};
use crate::store::RunState;
use crate::store::{ApiTokenRecord, AuditQuery, AuditRow};

/// A page with a status.
fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response =
        warp::reply::with_status(warp::reply::html(markup.into_string()), status).into_response();
    response.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// The frame of every page: title, navigation, who is logged in, the logout button.
fn layout(title: &str, who: Option<&Who>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cockpit" }
                link rel="stylesheet" href={ (BASE) "/assets/console.css" };
                script src={ (BASE) "/assets/console.js" } defer {}
            }
            body {
                header {
                    a.brand href=(BASE) { "Cockpit" }
                    @if let Some(who) = who {
                        nav {
                            a href=(BASE) { "Repositories" }
                            a href={ (BASE) "/tokens" } { "Tokens" }
                            @if who.may(Action::UserList) { a href={ (BASE) "/users" } { "Users" } }
                            @if who.may(Action::AuditRead) { a href={ (BASE) "/audit" } { "Audit" } }
                        }
                        div.who {
                            span { (who.principal.identity) " · " (who.role.map_or("no role", |r| r.as_str())) }
                            form method="post" action={ (BASE) "/logout" } {
                                (csrf(who))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
fn csrf(who: &Who) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

/// A short page with a message.
pub(crate) fn message(status: StatusCode, who: Option<&Who>, title: &str, text: &str) -> Response {
    page(
        status,
        layout(
            title,
            who,
            html! { p.message { (text) } p { a href=(BASE) { "Back to the repositories" } } },
        ),
    )
}

/// The login page: the provider's button; the development login when offered.
pub(crate) fn login(provider: Option<&str>, dev: bool, next: &str) -> Response {
    let start = format!(
        "{BASE}/login/start?{}",
        super::encode(&[("next_url", next)])
    );
    page(
        StatusCode::OK,
        layout(
            "Log in",
            None,
            html! {
                @if let Some(provider) = provider {
                    p { a.button href=(start) { "Log in with " (provider) } }
                }
                @if dev {
                    form.dev method="post" action={ (BASE) "/login/dev" } {
                        input type="hidden" name="next_url" value=(next);
                        p.warning {
                            strong { "Development login. " }
                            "This server offers a login with no provider ([debug] console_dev_login, or "
                            "[mode].prod = false): it makes you dev:local, an admin. Never run production like this."
                        }
                        button type="submit" { "Log in for development" }
                    }
                }
                @if provider.is_none() && !dev {
                    p { "No login is configured." }
                }
            },
        ),
    )
}

/// Unix seconds as `2026-11-27 20:13:44`.
fn when(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The repositories, with the create form and delete buttons for admins.
pub(crate) fn repos(who: &Who, repos: &[RepoView]) -> Response {
    page(
        StatusCode::OK,
        layout(
            "Repositories",
            Some(who),
            html! {
                @if repos.is_empty() { p { "No repositories yet." } }
                ul.list {
                    @for repo in repos {
                        li {
                            a href={ (BASE) "/repos/" (path_part(&repo.name)) } { (repo.name) }
                            @if let Some(git) = &repo.git_url { " " small { (git) } }
                            @if who.may(Action::RepoDelete) {
                                form.inline method="post" action={ (BASE) "/repos/" (path_part(&repo.name)) "/delete" } {
                                    (csrf(who))
                                    button.danger type="submit" data-confirm={ "Delete repository " (repo.name) " with its services and runs?" } { "Delete" }
                                }
                            }
                        }
                    }
                }
                @if who.may(Action::RepoCreate) {
                    h2 { "New repository" }
                    form.stack method="post" action={ (BASE) "/repos" } {
                        (csrf(who))
                        label { "Name " input name="name" required pattern="[A-Za-z0-9_-]{1,64}"; }
                        label { "Git URL (optional) " input name="git_url" placeholder="https://… or /path/to/repo"; }
                        button type="submit" { "Create" }
                    }
                }
            },
        ),
    )
}

/// A run's state as a badge.
fn badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state) } }
}

/// A repository: its blueprints, the last runs, the buttons the role allows.
pub(crate) fn repo(
    who: &Who,
    repo: &str,
    blueprints: &[BlueprintView],
    runs: &[RunView],
) -> Response {
    let base = format!("{BASE}/repos/{}", path_part(repo));
    page(
        StatusCode::OK,
        layout(
            repo,
            Some(who),
            html! {
                h2 { "Blueprints" }
                @if blueprints.is_empty() { p { "No blueprints." } }
                ul.list {
                    @for bp in blueprints {
                        li {
                            a href={ (base) "/blueprints/" (path_part(&bp.name)) } { (bp.name) }
                            @if bp.archived { " " span.badge.cancelled { "archived" } }
                        }
                    }
                }
                @if who.may(Action::BlueprintAdd) {
                    p { a.button href={ (base) "/blueprints/_new" } { "New blueprint" } }
                }
                p {
                    a href={ (base) "/services" } { "Services" } " · "
                    a href={ (base) "/graph" } { "Service graph" } " · "
                    a href={ (base) "/templates" } { "Templates" }
                }
                h2 { "Runs" }
                @if who.may(Action::RunCreate) {
                    form method="post" action={ (base) "/runs" } {
                        (csrf(who))
                        button type="submit" { "Start a run" }
                    }
                }
                (run_table(repo, runs))
                p { a href={ (base) "/runs" } { "All runs" } }
            },
        ),
    )
}

/// A table of runs.
fn run_table(repo: &str, runs: &[RunView]) -> Markup {
    html! {
        table.runs {
            thead { tr { th { "Run" } th { "State" } th { "Created" } th { "Ended" } } }
            tbody {
                @for run in runs {
                    tr {
                        td { a href=(super::run_path(repo, &run.key)) { (short(&run.key)) } }
                        td { (badge(run.state.as_str())) }
                        td { (when(run.created)) }
                        td { (run.ended.map(when).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// The first 12 characters of a key.
fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// The runs of a repository, a page at a time, with the state filter.
pub(crate) fn runs(
    who: &Who,
    repo: &str,
    runs: &[RunView],
    state: Option<RunState>,
    next: Option<&str>,
) -> Response {
    let base = format!("{BASE}/repos/{}/runs", path_part(repo));
    let states = ["new", "running", "ok", "error", "cancelled"];
    let current = state.map(RunState::as_str).unwrap_or("");
    page(
        StatusCode::OK,
        layout(
            &format!("Runs of {repo}"),
            Some(who),
            html! {
                form.inline method="get" action=(base) {
                    label { "State "
                        select name="state" {
                            option value="" selected[current.is_empty()] { "any" }
                            @for s in states { option value=(s) selected[current == s] { (s) } }
                        }
                    }
                    button type="submit" { "Filter" }
                }
                (run_table(repo, runs))
                @if runs.is_empty() { p { "No runs." } }
                @if let Some(next) = next {
                    p { a.button href={ (base) "?" (super::encode(&[("state", current), ("cursor", next)])) } { "Older runs" } }
                }
                p { a href={ (BASE) "/repos/" (path_part(repo)) } { "Back to " (repo) } }
            },
        ),
    )
}

/// The most log lines a run's page shows (the last ones).
pub const MAX_LOG_LINES: usize = 500;

/// The most characters of one log line a page shows.
const MAX_LINE_CHARS: usize = 400;

/// A log line cut to [`MAX_LINE_CHARS`].
fn clip(line: &str) -> std::borrow::Cow<'_, str> {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]).into(),
        None => line.into(),
    }
}

/// A run: steps and jobs, its log (streamed while it runs), Cancel and Re-run.
pub(crate) fn run(who: &Who, repo: &str, run: &RunView) -> Response {
    let base = super::run_path(repo, &run.key);
    let live = matches!(run.state, RunState::New | RunState::Running);
    let mut labels = serde_json::Map::new();
    let mut lines: Vec<(f64, String)> = Vec::new();
    for step in &run.steps {
        for job in &step.jobs {
            let label = format!("{} {}", job.service_key, job.action_name);
            for line in &job.logs {
                lines.push((line.epoch, format!("[{label}] {}", line.log)));
            }
            labels.insert(job.key.clone(), label.into());
        }
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The page stays small whatever the jobs printed: the last lines, the rest through REST.
    let skipped = lines.len().saturating_sub(MAX_LOG_LINES);
    let lines = &lines[skipped..];
    page(
        StatusCode::OK,
        layout(
            &format!("Run {}", short(&run.key)),
            Some(who),
            html! {
                p {
                    (badge(run.state.as_str())) " in "
                    a href={ (BASE) "/repos/" (path_part(repo)) } { (repo) }
                    " · created " (when(run.created))
                    @if let Some(ended) = run.ended { " · ended " (when(ended)) }
                }
                @if let Some(error) = &run.error { p.message { (error) } }
                div.actions {
                    @if live && who.may(Action::RunCancel) {
                        form.inline method="post" action={ (base) "/cancel" } {
                            (csrf(who))
                            button.danger type="submit" data-confirm="Cancel this run?" { "Cancel" }
                        }
                    }
                    @if !live && who.may(Action::RunCreate) {
                        form.inline method="post" action={ (base) "/rerun" } {
                            (csrf(who))
                            button type="submit" { "Re-run" }
                        }
                    }
                }
                h2 { "Steps" }
                (timeline(run))
                @for step in &run.steps {
                    h3 { "Step " (step.number) }
                    ul.list {
                        @for job in &step.jobs {
                            li {
                                (job.service_key) " · " (job.action_name) " " (badge(job.state.as_str()))
                                @if let Some(took) = took(job) { " · " (took) }
                            }
                        }
                    }
                }
                h2 { "Log" }
                @if live {
                    pre #log data-stream={ (base) "/logs" } data-jobs=(serde_json::Value::Object(labels).to_string()) {}
                } @else {
                    @if skipped > 0 {
                        p.message { (skipped) " earlier lines are not shown: GET /ays/repository/" (repo) "/aysrun/" (run.key) "/logs has them all." }
                    }
                    pre #log {
                        @for (_, line) in lines { (clip(line)) "\n" }
                    }
                }
            },
        ),
    )
}

/// How long a job took, when it has both times (`1.2 s`).
fn took(job: &JobView) -> Option<String> {
    let ms = job.ended_ms? - job.started_ms?;
    Some(if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    })
}

/// The most jobs the timeline draws (the list below has them all).
const TIMELINE_JOBS: usize = 200;

/// A run as a timeline: one bar per job, from when it started to when it ended (a job still
/// running reaches the last moment known), coloured by state; a job that has not started has
/// no bar. Before any job started: the steps as columns.
fn timeline(run: &RunView) -> Markup {
    const WIDTH: f64 = 600.0;
    const LABEL: f64 = 200.0;
    const ROW: usize = 20;
    let jobs: Vec<(u32, &JobView)> = run
        .steps
        .iter()
        .flat_map(|step| step.jobs.iter().map(move |job| (step.number, job)))
        .collect();
    let start = jobs.iter().filter_map(|(_, j)| j.started_ms).min();
    let Some(start) = start else {
        return steps_timeline(run);
    };
    let end = jobs
        .iter()
        .filter_map(|(_, j)| j.ended_ms.or(j.started_ms))
        .max()
        .unwrap_or(start);
    let span = (end - start).max(1) as f64;
    let x = |ms: i64| LABEL + (ms - start) as f64 / span * (WIDTH - LABEL - 4.0);
    let shown = &jobs[..jobs.len().min(TIMELINE_JOBS)];
    let height = shown.len() * ROW + 24;
    html! {
        svg.timeline viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label="Run timeline: each job from its start to its end" {
            text x="4" y="13" { "0" }
            text x=(format!("{:.1}", WIDTH - 60.0)) y="13" { (format!("{:.1} s", span / 1000.0)) }
            @for (i, (step, job)) in shown.iter().enumerate() {
                g {
                    title {
                        "step " (step) ": " (job.service_key) " " (job.action_name) " (" (job.state.as_str()) ")"
                        @if let Some(took) = took(job) { ", " (took) }
                    }
                    text.job x="4" y=(i * ROW + 34) { (step) " · " (job.service_key) " " (job.action_name) }
                    @if let Some(started) = job.started_ms {
                        @let stop = job.ended_ms.unwrap_or(end).max(started);
                        rect class={ "s-" (job.state.as_str()) }
                            x=(format!("{:.1}", x(started))) y=(i * ROW + 22)
                            width=(format!("{:.1}", (x(stop) - x(started)).max(2.0))) height=(ROW - 6) rx="2" {}
                    }
                }
            }
        }
        @if jobs.len() > shown.len() {
            p.message { "The timeline shows the first " (shown.len()) " of " (jobs.len()) " jobs." }
        }
    }
}

/// Steps as columns of their jobs (a run whose jobs have not started).
fn steps_timeline(run: &RunView) -> Markup {
    const WIDTH: f64 = 600.0;
    const ROW: usize = 22;
    let steps = run.steps.len().max(1);
    let column = WIDTH / steps as f64;
    let rows = run
        .steps
        .iter()
        .map(|s| s.jobs.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let height = rows * ROW + 20;
    html! {
        svg.timeline viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label="Run timeline: steps and their jobs" {
            @for (i, step) in run.steps.iter().enumerate() {
                text x=(format!("{:.1}", i as f64 * column + 4.0)) y="13" { "step " (step.number) }
                @for (j, job) in step.jobs.iter().enumerate() {
                    g {
                        title { "step " (step.number) ": " (job.service_key) " " (job.action_name) " (" (job.state.as_str()) ")" }
                        rect class={ "s-" (job.state.as_str()) }
                            x=(format!("{:.1}", i as f64 * column + 2.0)) y=(j * ROW + 18)
                            width=(format!("{:.1}", (column - 4.0).max(1.0))) height=(ROW - 4) rx="3" {}
                        text.job x=(format!("{:.1}", i as f64 * column + 6.0)) y=(j * ROW + 32) {
                            (job.service_key) " " (job.action_name)
                        }
                    }
                }
            }
        }
    }
}

/// The blueprint editor: the text, Check (problems with their lines, before saving), Save;
/// Execute, Archive/Restore for an existing one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn editor(
    status: StatusCode,
    who: &Who,
    repo: &str,
    name: &str,
    content: &str,
    create: bool,
    archived: bool,
    problems: &[LinedProblem],
    note: Option<&str>,
) -> Response {
    let repo_base = format!("{BASE}/repos/{}", path_part(repo));
    let action = if create {
        format!("{repo_base}/blueprints")
    } else {
        format!("{repo_base}/blueprints/{}", path_part(name))
    };
    let title = if create {
        "New blueprint".to_string()
    } else {
        name.to_string()
    };
    let can_edit = who.may(Action::BlueprintAdd);
    page(
        status,
        layout(
            &title,
            Some(who),
            html! {
                p { a href=(repo_base) { "Back to " (repo) } }
                @if let Some(note) = note { p.note { (note) } }
                form.stack.editor method="post" action=(action) data-check={ (repo_base) "/check" } {
                    (csrf(who))
                    @if create {
                        label { "File name " input name="name" value=(name) required placeholder="web.yaml"; }
                    } @else {
                        input type="hidden" name="name" value=(name);
                    }
                    textarea name="content" rows="18" spellcheck="false" readonly[!can_edit] { (content) }
                    ul #problems.problems {
                        @for p in problems {
                            li data-line=[p.line] {
                                @if let Some(line) = p.line { span.line { "line " (line) } " " }
                                (p.text)
                            }
                        }
                    }
                    @if can_edit {
                        div.actions {
                            button type="button" data-check-button { "Check" }
                            button type="submit" { "Save" }
                        }
                    }
                }
                @if !create {
                    div.actions {
                        @if who.may(Action::BlueprintExecute) && !archived {
                            form.inline method="post" action={ (action) "/execute" } {
                                (csrf(who))
                                button type="submit" { "Execute" }
                            }
                        }
                        @if archived && who.may(Action::BlueprintRestore) {
                            form.inline method="post" action={ (action) "/restore" } {
                                (csrf(who))
                                button type="submit" { "Restore" }
                            }
                        } @else if !archived && who.may(Action::BlueprintArchive) {
                            form.inline method="post" action={ (action) "/archive" } {
                                (csrf(who))
                                button type="submit" data-confirm="Archive this blueprint?" { "Archive" }
                            }
                        }
                    }
                }
            },
        ),
    )
}

/// What an executed blueprint did: back to its editor with a note (a 303, so a reload does not
/// execute again).
pub(crate) fn executed(repo: &str, name: &str, services: &[String]) -> Response {
    super::see_other(&format!(
        "{BASE}/repos/{}/blueprints/{}?executed={}",
        path_part(repo),
        path_part(name),
        services.len()
    ))
}

/// The console path of a service.
fn service_path(repo: &str, role: &str, name: &str) -> String {
    format!(
        "{BASE}/repos/{}/services/{}/{}",
        path_part(repo),
        path_part(role),
        path_part(name)
    )
}

/// A page of the services of a repository.
pub(crate) fn services(
    who: &Who,
    repo: &str,
    services: &[ServiceSummary],
    page_number: usize,
    more: bool,
    total: usize,
) -> Response {
    let base = format!("{BASE}/repos/{}/services", path_part(repo));
    page(
        StatusCode::OK,
        layout(
            &format!("Services of {repo}"),
            Some(who),
            html! {
                p { (total) " services" }
                table.runs {
                    thead { tr { th { "Service" } th { "Actor" } th { "State" } } }
                    tbody {
                        @for s in services {
                            tr {
                                td { a href=(service_path(repo, &s.role, &s.name)) { (s.role) "!" (s.name) } }
                                td { (s.actor) }
                                td { (badge(s.state.as_str())) }
                            }
                        }
                    }
                }
                div.actions {
                    @if page_number > 0 {
                        a.button href={ (base) "?page=" (page_number - 1) } { "Previous" }
                    }
                    @if more {
                        a.button href={ (base) "?page=" (page_number + 1) } { "Next" }
                    }
                }
                p { a href={ (BASE) "/repos/" (path_part(repo)) } { "Back to " (repo) } }
            },
        ),
    )
}

/// A service: state, data, parent, producers and consumers, its actions with a Run button
/// taking arguments.
pub(crate) fn service(who: &Who, repo: &str, service: &ServiceView) -> Response {
    let data = serde_json::to_string_pretty(&service.data).unwrap_or_default();
    let link = |r: &crate::client::views::RefView| {
        html! { a href=(service_path(repo, &r.role, &r.name)) { (r.role) "!" (r.name) } }
    };
    page(
        StatusCode::OK,
        layout(
            &format!("{}!{}", service.role, service.name),
            Some(who),
            html! {
                p { (badge(service.state.as_str())) " actor " (service.actor) " in "
                    a href={ (BASE) "/repos/" (path_part(repo)) "/services" } { (repo) } }
                @if let Some(parent) = &service.parent { p { "Parent: " (link(parent)) } }
                @if !service.producers.is_empty() {
                    p { "Producers: " @for r in &service.producers { (link(r)) " " } }
                }
                @if !service.consumers.is_empty() {
                    p { "Consumers: " @for r in &service.consumers { (link(r)) " " } }
                }
                h2 { "Data" }
                pre.data { (data) }
                h2 { "Actions" }
                ul.list {
                    @for a in &service.actions {
                        li {
                            (a.name) " " (badge(a.state.as_str()))
                            @if who.may(Action::ServiceExecute) && who.may(Action::RunCreate) {
                                form.inline method="post" action=(format!("{}/{}", service_path(repo, &service.role, &service.name), path_part(&a.name))) {
                                    (csrf(who))
                                    input name="args" placeholder="args: {\"key\": \"value\"}" aria-label="arguments (a JSON object)";
                                    button type="submit" { "Run" }
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}

/// Unix milliseconds as a date and time.
fn when_ms(ms: i64) -> String {
    when(ms.div_euclid(1000))
}

/// API tokens: the list with Revoke, the create form; a new token shown this once.
pub(crate) fn tokens(who: &Who, tokens: &[ApiTokenRecord], new: Option<&str>) -> Response {
    let roles = crate::auth::access::Role::ALL
        .into_iter()
        .filter(|r| who.role >= Some(*r));
    page(
        StatusCode::OK,
        layout(
            "API tokens",
            Some(who),
            html! {
                @if let Some(token) = new {
                    div.note {
                        p { strong { "Your new token, shown this once: " } "copy it now; only its hash is kept." }
                        pre.token { (token) }
                    }
                }
                @if tokens.is_empty() { p { "No tokens." } }
                table.runs {
                    thead { tr { th { "Name" } th { "Identity" } th { "Role" } th { "Expires" } th {} } }
                    tbody {
                        @for t in tokens {
                            tr {
                                td { (t.name) } td { (t.identity) } td { (t.role) } td { (when_ms(t.expires_ms)) }
                                td {
                                    form.inline method="post" action={ (BASE) "/tokens/" (path_part(&t.id)) "/revoke" } {
                                        (csrf(who))
                                        button.danger type="submit" data-confirm={ "Revoke token " (t.name) "?" } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
                @if who.may(Action::TokenCreate) {
                    h2 { "New token" }
                    form.stack method="post" action={ (BASE) "/tokens" } {
                        (csrf(who))
                        label { "Name " input name="name" required maxlength="64"; }
                        label { "Role "
                            select name="role" { @for r in roles { option value=(r.as_str()) { (r.as_str()) } } }
                        }
                        label { "Days " input name="ttl_days" type="number" min="1" max="3650" value="90"; }
                        button type="submit" { "Create" }
                    }
                }
            },
        ),
    )
}

/// The people who hold access, with Revoke (admins).
pub(crate) fn users(who: &Who, users: &[(String, usize, usize)]) -> Response {
    page(
        StatusCode::OK,
        layout(
            "Users",
            Some(who),
            html! {
                @if users.is_empty() { p { "Nobody holds access through Telegram or a token." } }
                table.runs {
                    thead { tr { th { "Identity" } th { "Telegram logins" } th { "Tokens" } th {} } }
                    tbody {
                        @for (identity, links, tokens) in users {
                            tr {
                                td { (identity) } td { (links) } td { (tokens) }
                                td {
                                    @if who.may(Action::UserRevoke) {
                                        form.inline method="post" action={ (BASE) "/users/revoke" } {
                                            (csrf(who))
                                            input type="hidden" name="identity" value=(identity);
                                            button.danger type="submit" data-confirm={ "Log " (identity) " out everywhere?" } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}

/// A page of the audit trail, newest first, with filters.
pub(crate) fn audit(
    who: &Who,
    rows: &[AuditRow],
    query: &AuditQuery,
    next: Option<i64>,
) -> Response {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let next_link = next.map(|id| {
        format!(
            "{BASE}/audit?{}",
            super::encode(&[
                ("identity", &value(&query.identity)),
                ("door", &value(&query.door)),
                ("action", &value(&query.action)),
                ("before", &id.to_string()),
            ])
        )
    });
    page(
        StatusCode::OK,
        layout(
            "Audit trail",
            Some(who),
            html! {
                form.inline method="get" action={ (BASE) "/audit" } {
                    input name="identity" placeholder="identity" value=(value(&query.identity));
                    input name="door" placeholder="door" value=(value(&query.door));
                    input name="action" placeholder="action" value=(value(&query.action));
                    button type="submit" { "Filter" }
                }
                table.runs {
                    thead { tr { th { "When" } th { "Door" } th { "Identity" } th { "Action" } th { "Target" } th { "Outcome" } } }
                    tbody {
                        @for r in rows {
                            tr title=(r.record.message) {
                                td { (when_ms(r.record.at_ms)) } td { (r.record.door) } td { (r.record.identity) }
                                td { (r.record.action) } td { (r.record.target) } td { (r.record.outcome) }
                            }
                        }
                    }
                }
                @if let Some(link) = next_link { p { a.button href=(link) { "Older" } } }
            },
        ),
    )
}

/// The templates of a repository: schema, actions, config.
pub(crate) fn templates(who: &Who, repo: &str, templates: &[TemplateView]) -> Response {
    page(
        StatusCode::OK,
        layout(
            &format!("Templates of {repo}"),
            Some(who),
            html! {
                @if templates.is_empty() { p { "No templates." } }
                @for t in templates {
                    section.template {
                        h2 {
                            a href={ (BASE) "/repos/" (path_part(repo)) "/templates/" (path_part(&t.name)) } { (t.name) }
                            " " small { "role " (t.role) }
                        }
                        p { "Actions: " @for a in &t.actions { code { (a) } " " } }
                        details { summary { "schema.yaml" } pre.data { (t.schema) } }
                        @if let Some(config) = &t.config {
                            details { summary { "config.yaml" } pre.data { (config) } }
                        }
                    }
                }
                p { a href={ (BASE) "/repos/" (path_part(repo)) } { "Back to " (repo) } }
            },
        ),
    )
}

/// One template: schema, config, and each action's code.
pub(crate) fn template(who: &Who, repo: &str, t: &TemplateView) -> Response {
    page(
        StatusCode::OK,
        layout(
            &format!("Template {} of {repo}", t.name),
            Some(who),
            html! {
                p { "Role " code { (t.role) } }
                details open { summary { "schema.yaml" } pre.data { (t.schema) } }
                @if let Some(config) = &t.config {
                    details { summary { "config.yaml" } pre.data { (config) } }
                }
                @for action in &t.actions {
                    h2 { "actions/" (action) }
                    pre.data { (t.code.get(action).map_or("", String::as_str)) }
                }
                p { a href={ (BASE) "/repos/" (path_part(repo)) "/templates" } { "Back to the templates" } }
            },
        ),
    )
}

/// The column of each service in the graph: 0 without a parent or producer among `services`,
/// else one more than the deepest of them (a cycle stops growing after as many rounds as
/// there are services).
pub(crate) fn depths(services: &[ServiceView]) -> Vec<usize> {
    let index: std::collections::HashMap<(&str, &str), usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.role.as_str(), s.name.as_str()), i))
        .collect();
    let above: Vec<Vec<usize>> = services
        .iter()
        .map(|s| {
            s.parent
                .iter()
                .chain(&s.producers)
                .filter_map(|r| index.get(&(r.role.as_str(), r.name.as_str())).copied())
                .collect()
        })
        .collect();
    let mut depth = vec![0usize; services.len()];
    for _ in 0..services.len() {
        let mut changed = false;
        for (i, ups) in above.iter().enumerate() {
            let want = ups.iter().map(|u| depth[*u] + 1).max().unwrap_or(0);
            if want > depth[i] && want < services.len() {
                depth[i] = want;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

/// The service graph of a repository: a column per depth, a box per service (linked to its
/// page, coloured by state), a solid line from each producer and a dashed one from the parent.
pub(crate) fn graph(who: &Who, repo: &str, services: &[ServiceView]) -> Response {
    const W: usize = 170;
    const H: usize = 28;
    const GAP_X: usize = 60;
    const GAP_Y: usize = 12;
    let depth = depths(services);
    let mut row_of = vec![0usize; services.len()];
    let mut rows = std::collections::HashMap::<usize, usize>::new();
    for (i, d) in depth.iter().enumerate() {
        let r = rows.entry(*d).or_default();
        row_of[i] = *r;
        *r += 1;
    }
    let columns = depth.iter().max().map_or(1, |d| d + 1);
    let max_rows = rows.values().max().copied().unwrap_or(1).max(1);
    let width = columns * (W + GAP_X);
    let height = max_rows * (H + GAP_Y) + GAP_Y;
    let pos = |i: usize| (depth[i] * (W + GAP_X) + 10, row_of[i] * (H + GAP_Y) + GAP_Y);
    let index: std::collections::HashMap<(&str, &str), usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.role.as_str(), s.name.as_str()), i))
        .collect();
    let mut edges = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let find = |r: &crate::client::views::RefView| {
            index.get(&(r.role.as_str(), r.name.as_str())).copied()
        };
        if let Some(p) = s.parent.as_ref().and_then(find) {
            edges.push((p, i, true));
        }
        for p in s.producers.iter().filter_map(find) {
            edges.push((p, i, false));
        }
    }
    page(
        StatusCode::OK,
        layout(
            &format!("Service graph of {repo}"),
            Some(who),
            html! {
                p { "Producers and parents on the left of the services that need them; dashed: parent." }
                div.graph {
                    svg.graph width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } role="img" aria-label="Service graph" {
                        @for (from, to, parent) in &edges {
                            @let (x1, y1) = pos(*from);
                            @let (x2, y2) = pos(*to);
                            line class=(if *parent { "edge parent" } else { "edge" })
                                x1=(x1 + W) y1=(y1 + H / 2) x2=(x2) y2=(y2 + H / 2) {}
                        }
                        @for (i, s) in services.iter().enumerate() {
                            @let (x, y) = pos(i);
                            a href=(service_path(repo, &s.role, &s.name)) {
                                rect class={ "node s-" (s.state.as_str()) } x=(x) y=(y) width=(W) height=(H) rx="4" {}
                                text x=(x + 6) y=(y + 18) { (s.role) "!" (s.name) }
                            }
                        }
                    }
                }
                @if services.is_empty() { p { "No services." } }
                p { a href={ (BASE) "/repos/" (path_part(repo)) } { "Back to " (repo) } }
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::depths;
    use crate::client::views::{RefView, ServiceView};
    use crate::engine::ServiceState;

    fn service(name: &str, parent: Option<&str>, producers: &[&str]) -> ServiceView {
        let r = |n: &str| RefView {
            role: "node".into(),
            name: n.into(),
        };
        ServiceView {
            key: format!("node!{name}"),
            role: "node".into(),
            name: name.into(),
            actor: "node".into(),
            state: ServiceState::New,
            data: serde_json::Map::new(),
            parent: parent.map(r),
            producers: producers.iter().map(|p| r(p)).collect(),
            consumers: Vec::new(),
            actions: Vec::new(),
        }
    }

    #[test]
    fn services_stand_right_of_their_parents_and_producers() {
        let cases: Vec<(Vec<ServiceView>, Vec<usize>)> = vec![
            (vec![service("a", None, &[])], vec![0]),
            (
                vec![
                    service("app", Some("vm"), &["db"]),
                    service("db", Some("vm"), &[]),
                    service("vm", None, &[]),
                ],
                vec![2, 1, 0],
            ),
            // Someone outside the list does not count.
            (vec![service("x", Some("gone"), &["gone2"])], vec![0]),
            // A cycle ends: every depth stays below the number of services.
            (
                vec![service("p", None, &["q"]), service("q", None, &["p"])],
                vec![1, 1],
            ),
        ];
        for (services, want) in cases {
            let got = depths(&services);
            assert_eq!(got.len(), want.len());
            if services.len() == 2 && services[0].name == "p" {
                assert!(got.iter().all(|d| *d < 2), "{got:?}");
            } else {
                assert_eq!(got, want);
            }
        }
    }
}
