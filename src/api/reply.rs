//! Replies shared by the door's routes: a client call's result as JSON with a fitting status,
//! `204` for deletions, and the boxed alternation of routes.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error;
use crate::client::AysError;

/// The first of `routes` that matches, tried in their order. Each step is boxed: a long chain
/// of unboxed `.or()` makes the filter type so deep that type checking takes minutes. The `or`s
/// form a balanced tree, not a chain: a request passes through about log2(n) of them instead of
/// up to n (each one a boxed future per request).
pub(crate) fn one_of<T: Send + 'static>(mut routes: Vec<BoxedFilter<(T,)>>) -> BoxedFilter<(T,)> {
    match routes.len() {
        0 => panic!("one_of needs at least one route"),
        1 => routes.remove(0),
        n => {
            let second = routes.split_off(n / 2);
            one_of(routes).or(one_of(second)).unify().boxed()
        }
    }
}

/// The status code of an error.
pub(crate) fn status_of(err: &AysError) -> StatusCode {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A route answering `GET /<path>` with `label`.
    fn route(path: &'static str, label: &'static str) -> BoxedFilter<(Response,)> {
        warp::path(path)
            .and(warp::path::end())
            .map(move || label.into_response())
            .boxed()
    }

    async fn body(filter: &BoxedFilter<(Response,)>, path: &str) -> Option<String> {
        let response = warp::test::request().path(path).reply(filter).await;
        (response.status() == StatusCode::OK)
            .then(|| String::from_utf8_lossy(response.body()).into_owned())
    }

    #[tokio::test]
    async fn one_of_takes_the_first_match_in_order_at_any_size() {
        for n in 1..=9 {
            // Routes 0..n; route i answers /p<i % 3>, so each path matches several routes.
            let names = ["p0", "p1", "p2"];
            let labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8"];
            let routes = (0..n).map(|i| route(names[i % 3], labels[i])).collect();
            let all = one_of(routes);
            for (p, path) in names.iter().enumerate() {
                let expected = (p < n).then(|| labels[p].to_string());
                assert_eq!(body(&all, &format!("/{path}")).await, expected, "n={n}");
            }
            assert_eq!(body(&all, "/elsewhere").await, None);
        }
    }
}
