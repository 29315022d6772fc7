//! Replies shared by the door's routes: a client call's result as JSON with a fitting status,
//! `204` for deletions, and the boxed alternation of routes.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error;
use crate::client::AysError;

/// The first of `routes` that matches. Each step is boxed: a long chain of unboxed `.or()`
/// makes the filter type so deep that type checking takes minutes.
pub(crate) fn one_of(routes: Vec<BoxedFilter<(Response,)>>) -> BoxedFilter<(Response,)> {
    let mut routes = routes.into_iter();
    let first = routes.next().expect("at least one route");
    routes.fold(first, |acc, next| acc.or(next).unify().boxed())
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
        Err(err) => {
            let mut response = error(status_of(&err), err.to_string()).into_response();
            response
                .extensions_mut()
                .insert(super::auth::AuditNote(err.to_string()));
            response
        }
    }
}

/// 204 on success.
pub(crate) fn no_content(result: Result<impl Sized, AysError>) -> Response {
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => respond::<()>(Err(err), StatusCode::OK),
    }
}
