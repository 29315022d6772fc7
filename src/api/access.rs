//! `/auth/tokens`, `/auth/users` and `/audit`: API tokens issued by cockpit, the people who hold
//! access, and the audit trail. Behind the same guard as `/ays` (the role table in
//! [`super::paths::ROUTES`]).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::auth::{Guarded, guarded};
use super::error;
use super::reply::{one_of, respond};
use super::schemas::{AuthFailures, BodyFailures, Error, RepoFailures};
use crate::actors::Shared;
use crate::auth::access::{Action, Role};
use crate::auth::approvals::{self, ApprovalError};
use crate::auth::audit::{self, Audit, Door, Outcome};
use crate::auth::tokens::{self, TokenError};
use crate::client::AysClient;
use crate::store::{ApiTokenRecord, AuditQuery};

/// Most audit rows in one page.
const MAX_PAGE: usize = 1000;

/// `POST /auth/tokens` body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewToken {
    /// What the token is for (1–100 printable characters).
    name: String,
    /// `viewer`, `operator` or `admin`; at most the caller's own role.
    #[schema(pattern = "^(viewer|operator|admin)$")]
    role: String,
    /// Days until it stops working (1–3650).
    #[schema(minimum = 1, maximum = 3650)]
    ttl_days: u64,
}

/// A token as listed: never the token itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenInfo {
    /// Its id, for `DELETE /auth/tokens/{id}`.
    id: String,
    /// Whose it is.
    identity: String,
    /// Its name.
    name: String,
    /// The role it carries.
    role: String,
    /// When it was made (Unix ms).
    created_ms: i64,
    /// When it stops working (Unix ms).
    expires_ms: i64,
}

/// A new token: the only time the token is shown.
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedToken {
    /// Send it as `Authorization: Bearer <token>`.
    token: String,
    /// What is stored about it.
    #[serde(flatten)]
    info: TokenInfo,
}

/// Someone who holds access.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserInfo {
    /// `itsyouonline:bob`, `github:alice`...
    identity: String,
    /// Telegram chats logged in as them.
    telegram_links: usize,
    /// API tokens they hold.
    tokens: usize,
}

/// `GET /audit` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only this identity.
    identity: Option<String>,
    /// Only this door (`rest`, `telegram`, `mail`, `cli`).
    door: Option<String>,
    /// Only this action (`repo.create`...).
    action: Option<String>,
    /// From this time (Unix ms, inclusive).
    since: Option<i64>,
    /// Before this time (Unix ms).
    until: Option<i64>,
    /// At most this many rows (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// One audit row.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    /// Increasing; the cursor.
    id: i64,
    /// When (Unix ms).
    at_ms: i64,
    /// `rest`, `telegram`, `mail`, `cli`.
    door: String,
    /// Who.
    identity: String,
    /// What (`repo.create`, `run.cancel`...).
    action: String,
    /// On what.
    target: String,
    /// `ok`, `denied` or `error`.
    outcome: String,
    /// Why it was denied or failed.
    message: String,
}

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// The rows.
    items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<i64>,
}

fn info(record: ApiTokenRecord) -> TokenInfo {
    TokenInfo {
        id: record.id,
        identity: record.identity,
        name: record.name,
        role: record.role,
        created_ms: record.created_ms,
        expires_ms: record.expires_ms,
    }
}

fn json<T: Serialize>(value: &T, status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, "access store failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// Every route of this module.
pub fn routes(shared: Shared) -> BoxedFilter<(Response,)> {
    let with = || super::with(shared.clone());
    let tokens = || {
        warp::path("auth")
            .and(warp::path("tokens"))
            .and(guarded(shared.clone()))
    };
    let users = || {
        warp::path("auth")
            .and(warp::path("users"))
            .and(guarded(shared.clone()))
    };
    one_of(vec![
        tokens()
            .and(warp::path::end())
            .and(warp::get())
            .and(with())
            .map(list_tokens)
            .boxed(),
        tokens()
            .and(warp::path::end())
            .and(warp::post())
            .and(super::ays::json_body::<NewToken>())
            .and(with())
            .map(create_token)
            .boxed(),
        tokens()
            .and(warp::path!(String))
            .and(warp::delete())
            .and(with())
            .map(revoke_token)
            .boxed(),
        users()
            .and(warp::path::end())
            .and(warp::get())
            .and(with())
            .map(list_users)
            .boxed(),
        users()
            .and(warp::path!(String))
            .and(warp::delete())
            .and(with())
            .map(revoke_user)
            .boxed(),
        warp::path("auth")
            .and(warp::path("approvals"))
            .and(guarded(shared.clone()))
            .and(warp::path!(String))
            .and(warp::post())
            .and(with())
            .then(approve)
            .boxed(),
        warp::path!("audit")
            .and(guarded(shared.clone()))
            .and(warp::get())
            .and(warp::query::<AuditParams>())
            .and(with())
            .map(list_audit)
            .boxed(),
    ])
}

/// The caller's tokens (an admin's: everyone's).
#[utoipa::path(get, path = "/auth/tokens", tag = "access",
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The tokens (never the tokens themselves)", body = Vec<TokenInfo>),
        AuthFailures))]
pub(crate) fn list_tokens(guarded: Guarded, shared: Shared) -> Response {
    let admin = guarded.caller.role == Some(Role::Admin);
    let identity = (!admin).then_some(guarded.caller.principal.identity.as_str());
    match shared.store.list_tokens(identity) {
        Ok(list) => json(
            &list.into_iter().map(info).collect::<Vec<_>>(),
            StatusCode::OK,
        ),
        Err(err) => internal(err),
    }
}

/// Issue a token for the caller, carrying at most the caller's role: shown once, stored only as
/// its SHA-256 hash.
#[utoipa::path(post, path = "/auth/tokens", tag = "access",
    security(("jwt" = []), ("jwt_cookie" = [])),
    request_body(content = NewToken, description = "JSON"),
    responses((status = 201, description = "The token, shown this once", body = IssuedToken),
        BodyFailures, AuthFailures))]
pub(crate) fn create_token(guarded: Guarded, body: NewToken, shared: Shared) -> Response {
    let who = &guarded.caller.principal.identity;
    let Some(role) = Role::parse(&body.role) else {
        return error(
            StatusCode::BAD_REQUEST,
            "role: expected viewer, operator or admin",
        )
        .into_response();
    };
    let owner = guarded.caller.role.unwrap_or(Role::Viewer);
    let issued = tokens::issue(
        &shared.store,
        Door::Rest,
        who,
        who,
        owner,
        &body.name,
        role,
        body.ttl_days,
    );
    match issued {
        Ok((token, record)) => json(
            &IssuedToken {
                token,
                info: info(record),
            },
            StatusCode::CREATED,
        ),
        Err(err @ (TokenError::AboveOwner { .. } | TokenError::Invalid(_))) => {
            let denied = matches!(err, TokenError::AboveOwner { .. });
            let outcome = if denied {
                Outcome::Denied(err.to_string())
            } else {
                Outcome::Error(err.to_string())
            };
            let row = audit::record(Door::Rest, who, Action::TokenCreate, "", &outcome);
            audit::write(&shared.store, &row);
            let status = if denied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, err.to_string()).into_response()
        }
        Err(err) => internal(err),
    }
}

/// Revoke a token (the caller's own; an admin's: anyone's). The next request with it is 401.
#[utoipa::path(delete, path = "/auth/tokens/{id}", tag = "access",
    params(("id" = String, Path, description = "The token's id")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such token of yours", body = Error),
        AuthFailures))]
pub(crate) fn revoke_token(guarded: Guarded, id: String, shared: Shared) -> Response {
    let who = &guarded.caller.principal.identity;
    let admin = guarded.caller.role == Some(Role::Admin);
    let found = match shared.store.token(&id) {
        Ok(found) => found.filter(|t| admin || t.identity == *who),
        Err(err) => return internal(err),
    };
    if found.is_none() {
        let why = "no such token of yours";
        let row = audit::record(
            Door::Rest,
            who,
            Action::TokenRevoke,
            &id,
            &Outcome::Error(why.into()),
        );
        audit::write(&shared.store, &row);
        return error(StatusCode::NOT_FOUND, why).into_response();
    }
    let row = audit::record(Door::Rest, who, Action::TokenRevoke, &id, &Outcome::Ok);
    match shared.store.revoke_token(&id, &row) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => internal(err),
    }
}

/// Everyone who holds access: Telegram links and API tokens, by identity.
#[utoipa::path(get, path = "/auth/users", tag = "access",
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "The users", body = Vec<UserInfo>), AuthFailures))]
pub(crate) fn list_users(_guarded: Guarded, shared: Shared) -> Response {
    match shared.store.list_users() {
        Ok(users) => json(
            &users
                .into_iter()
                .map(|(identity, telegram_links, tokens)| UserInfo {
                    identity,
                    telegram_links,
                    tokens,
                })
                .collect::<Vec<_>>(),
            StatusCode::OK,
        ),
        Err(err) => internal(err),
    }
}

/// Log someone out everywhere: their Telegram links and their API tokens, and for an
/// `itsyouonline:` identity the JWTs they hold (those issued before now are refused from the
/// next request on).
#[utoipa::path(delete, path = "/auth/users/{identity}", tag = "access",
    params(("identity" = String, Path, description = "`itsyouonline:bob`, `github:alice`...")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 204, description = "Logged out everywhere (an `itsyouonline:` identity always: its JWTs issued before now are refused)"),
        (status = 404, description = "Nobody of that identity holds access", body = Error),
        AuthFailures))]
pub(crate) fn revoke_user(guarded: Guarded, identity: String, shared: Shared) -> Response {
    let identity = percent_decode(&identity);
    let row = audit::record(
        Door::Rest,
        &guarded.caller.principal.identity,
        Action::UserRevoke,
        &identity,
        &Outcome::Ok,
    );
    match shared.store.revoke_user(&identity, &row) {
        Ok(revoked) if !revoked.any() => error(
            StatusCode::NOT_FOUND,
            "nobody of that identity holds access",
        )
        .into_response(),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => internal(err),
    }
}

/// `itsyouonline%3Abob` as `itsyouonline:bob` (clients may encode the colon).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an approval did.
#[derive(Serialize, ToSchema)]
pub(crate) struct Approved {
    /// The approval's id.
    approval: String,
    /// The action carried out.
    action: String,
    /// What it acted on.
    target: String,
    /// Who asked for it.
    requested_by: String,
}

/// Approve an action held by `[access].two_person`, as a second admin (never the one who asked):
/// it is carried out now.
#[utoipa::path(post, path = "/auth/approvals/{id}", tag = "access",
    params(("id" = String, Path, description = "The approval's id (`apr_…`)")),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "Approved and carried out", body = Approved),
        (status = 400, description = "The held action cannot be carried out", body = Error),
        (status = 409, description = "Already approved, expired (held more than 24 hours), or a run is in progress", body = Error),
        AuthFailures, RepoFailures))]
pub(crate) async fn approve(guarded: Guarded, id: String, shared: Shared) -> Response {
    let approver = guarded.caller.principal.identity.clone();
    let (action, target, requested_by) =
        match approvals::approve(&shared.store, Door::Rest, &approver, &id) {
            Ok(held) => held,
            Err(err @ ApprovalError::OwnRequest) => {
                return error(StatusCode::FORBIDDEN, err.to_string()).into_response();
            }
            Err(err @ ApprovalError::NotFound(_)) => {
                return error(StatusCode::NOT_FOUND, err.to_string()).into_response();
            }
            Err(err @ (ApprovalError::Done(_) | ApprovalError::Expired(_))) => {
                return error(StatusCode::CONFLICT, err.to_string()).into_response();
            }
            Err(ApprovalError::Store(err)) => return internal(err),
        };
    // The requester's action, written by the core with the change; a failure here.
    let audit = Audit::new(Door::Rest, &requested_by, action, &target);
    let result = AysClient.carry_out(audit.clone()).await;
    if let Err(err) = &result {
        let why = Outcome::Error(format!("approved by {approver}: {err}"));
        audit::write(&shared.store, &audit.row(&why));
    }
    match result {
        Ok(()) => json(
            &Approved {
                approval: id,
                action: action.as_str().to_string(),
                target,
                requested_by,
            },
            StatusCode::OK,
        ),
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}

/// The audit trail, newest first, filtered and paged.
#[utoipa::path(get, path = "/audit", tag = "access",
    params(AuditParams),
    security(("jwt" = []), ("jwt_cookie" = [])),
    responses((status = 200, description = "A page of the audit trail", body = AuditPage),
        (status = 400, description = "A query parameter is not of its type", body = Error),
        AuthFailures))]
pub(crate) fn list_audit(_guarded: Guarded, q: AuditParams, shared: Shared) -> Response {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {MAX_PAGE}"),
            )
            .into_response();
        }
    };
    let query = AuditQuery {
        identity: q.identity,
        door: q.door,
        action: q.action,
        since_ms: q.since,
        until_ms: q.until,
        before_id: q.cursor,
        limit,
    };
    match shared.store.list_audit(&query) {
        Ok(rows) => {
            let next_cursor = (rows.len() == limit)
                .then(|| rows.last().map(|r| r.id))
                .flatten();
            let items = rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at_ms: r.record.at_ms,
                    door: r.record.door,
                    identity: r.record.identity,
                    action: r.record.action,
                    target: r.record.target,
                    outcome: r.record.outcome,
                    message: r.record.message,
                })
                .collect();
            json(&AuditPage { items, next_cursor }, StatusCode::OK)
        }
        Err(err) => internal(err),
    }
}
