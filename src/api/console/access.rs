//! The console's access pages: API tokens (created, shown once, revoked), users (admins revoke
//! them), the audit trail (admins), by the same store calls and rules as `/auth/tokens`,
//! `/auth/users` and `/audit` (`api::access`), each checked against that REST route's role.

use std::collections::HashMap;

use warp::http::StatusCode;
use warp::reply::Response;

use super::{BASE, C, Form, Req, bad_request, internal, pages, path_part, see_other};
use crate::auth::access::{Action, Role};
use crate::auth::audit::{self, Door, Outcome};
use crate::auth::tokens::{self, TokenError};
use crate::store::AuditQuery;

/// Audit rows per page.
pub const AUDIT_PAGE: usize = 100;

/// `GET /console/tokens`: the tokens (one's own; an admin's: everyone's) and the create form.
pub(super) async fn tokens_page(c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", "/auth/tokens", ""));
    let admin = who.role == Some(Role::Admin);
    let identity = (!admin).then_some(who.principal.identity.as_str());
    match c.shared.store.list_tokens(identity) {
        Ok(list) => pages::tokens(&who, &list, None),
        Err(err) => internal(&who, err),
    }
}

/// `POST /console/tokens` (form: name, role, ttl_days): the new token, shown this once.
pub(super) async fn create_token(c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    or_reply!(c.allow(&who, "POST", "/auth/tokens", ""));
    let identity = who.principal.identity.clone();
    let name = form.get("name").cloned().unwrap_or_default();
    let ttl_days = form
        .get("ttl_days")
        .and_then(|d| d.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let Some(role) = form.get("role").and_then(|r| Role::parse(r)) else {
        return bad_request(&who, "role: expected viewer, operator or admin");
    };
    let owner = who.role.unwrap_or(Role::Viewer);
    let issued = tokens::issue(
        &c.shared.store,
        Door::Console,
        &identity,
        &identity,
        owner,
        &name,
        role,
        ttl_days,
    );
    match issued {
        Ok((token, _)) => {
            let admin = who.role == Some(Role::Admin);
            let list = c
                .shared
                .store
                .list_tokens((!admin).then_some(identity.as_str()))
                .unwrap_or_default();
            pages::tokens(&who, &list, Some(&token))
        }
        Err(err @ (TokenError::AboveOwner { .. } | TokenError::Invalid(_))) => {
            let denied = matches!(err, TokenError::AboveOwner { .. });
            let outcome = if denied {
                Outcome::Denied(err.to_string())
            } else {
                Outcome::Error(err.to_string())
            };
            let row = audit::record(Door::Console, &identity, Action::TokenCreate, "", &outcome);
            audit::write(&c.shared.store, &row);
            let status = if denied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            pages::message(status, Some(&who), "No token", &err.to_string())
        }
        Err(err) => internal(&who, err),
    }
}

/// `POST /console/tokens/{id}/revoke`: one's own token (an admin: anyone's).
pub(super) async fn revoke_token(id: String, c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let rest = format!("/auth/tokens/{}", path_part(&id));
    or_reply!(c.allow(&who, "DELETE", &rest, &id));
    let identity = &who.principal.identity;
    let admin = who.role == Some(Role::Admin);
    let found = match c.shared.store.token(&id) {
        Ok(found) => found.filter(|t| admin || t.identity == *identity),
        Err(err) => return internal(&who, err),
    };
    if found.is_none() {
        let why = "no such token of yours";
        let row = audit::record(
            Door::Console,
            identity,
            Action::TokenRevoke,
            &id,
            &Outcome::Error(why.into()),
        );
        audit::write(&c.shared.store, &row);
        return pages::message(StatusCode::NOT_FOUND, Some(&who), "Not found", why);
    }
    let row = audit::record(
        Door::Console,
        identity,
        Action::TokenRevoke,
        &id,
        &Outcome::Ok,
    );
    match c.shared.store.revoke_token(&id, &row) {
        Ok(_) => see_other(&format!("{BASE}/tokens")),
        Err(err) => internal(&who, err),
    }
}

/// `GET /console/users` (admin): who holds access.
pub(super) async fn users_page(c: C, req: Req) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", "/auth/users", ""));
    match c.shared.store.list_users() {
        Ok(users) => pages::users(&who, &users),
        Err(err) => internal(&who, err),
    }
}

/// `POST /console/users/revoke` (admin; form: identity): logged out everywhere.
pub(super) async fn revoke_user(c: C, req: Req, form: Form) -> Response {
    let who = or_reply!(c.poster(&req, &form));
    let identity = form.get("identity").cloned().unwrap_or_default();
    let rest = format!("/auth/users/{}", path_part(&identity));
    or_reply!(c.allow(&who, "DELETE", &rest, &identity));
    let row = audit::record(
        Door::Console,
        &who.principal.identity,
        Action::UserRevoke,
        &identity,
        &Outcome::Ok,
    );
    match c.shared.store.revoke_user(&identity, &row) {
        Ok(revoked) if !revoked.any() => pages::message(
            StatusCode::NOT_FOUND,
            Some(&who),
            "Not found",
            "nobody of that identity holds access",
        ),
        Ok(_) => see_other(&format!("{BASE}/users")),
        Err(err) => internal(&who, err),
    }
}

/// `GET /console/audit?identity=&action=&before=` (admin): a page of the audit trail.
pub(super) async fn audit_page(c: C, req: Req, query: HashMap<String, String>) -> Response {
    let who = or_reply!(c.who(&req));
    or_reply!(c.allow(&who, "GET", "/audit", ""));
    let filter = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let audit_query = AuditQuery {
        identity: filter("identity"),
        door: filter("door"),
        action: filter("action"),
        since_ms: None,
        until_ms: None,
        before_id: query.get("before").and_then(|b| b.parse().ok()),
        limit: AUDIT_PAGE,
    };
    match c.shared.store.list_audit(&audit_query) {
        Ok(rows) => {
            let next = (rows.len() == AUDIT_PAGE)
                .then(|| rows.last().map(|r| r.id))
                .flatten();
            pages::audit(&who, &rows, &audit_query, next)
        }
        Err(err) => internal(&who, err),
    }
}
