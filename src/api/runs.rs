//! Run control under `/ays/repository/{repo}/aysrun/{key}/...` (behind the same JWT guard as the
//! rest of `/ays`): `POST .../cancel`.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::ays::respond;
use crate::client::AysClient;

/// The run-control routes, relative to `/ays/repository`.
pub fn routes() -> Vec<BoxedFilter<(Response,)>> {
    let cancel = warp::path!(String / "aysrun" / String / "cancel")
        .and(warp::post())
        .then(|repo: String, key: String| async move {
            respond(
                AysClient.cancel_run(&repo, key, "the REST API").await,
                StatusCode::OK,
            )
        })
        .map(Reply::into_response)
        .boxed();
    vec![cancel]
}
