//! `GET /api/management/v1/deployments/openapi.yaml`: rollout's OpenAPI document
//! (`api/openapi.yaml`), served without a token so that tools such as schemathesis, code
//! generators and API browsers can read it from the running server.
//!
//! The document is written by hand from the contract and these routes, and compiled into
//! the binary: what a server serves is always the document of its own version. `scripts/
//! schemathesis` checks it against the running server, so it cannot drift silently.

use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

/// The document, as committed.
pub const DOCUMENT: &str = include_str!("../../openapi.yaml");

/// The route; it takes no state.
pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("api" / "management" / "v1" / "deployments" / "openapi.yaml")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(DOCUMENT, "content-type", "application/yaml").into_response()
        })
        .boxed()
}
