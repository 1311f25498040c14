//! Every route of rollout. Start here to find where a request goes:
//! - [`artifacts`] serves `/api/management/v1/deployments/artifacts…`, releases, storage limits;
//! - [`deployments`] serves `/api/management/v1/deployments/deployments…`;
//! - [`events`] serves `/api/management/v1/deployments/deployments/{id}/events`, a
//!   deployment's live progress as Server-Sent Events;
//! - [`devices`] serves `/api/devices/v1/deployments/device/deployments…` (check-in, status, log);
//! - [`download`] serves `/download/{id}`, the signed artifact links (served outside warp, to
//!   stream blobs with ranges);
//! - [`identity`] serves device authentication, the device registry (`/api/management/v2/devauth`),
//!   devices' inventory reports and operator login;
//! - [`inventory`] serves the inventory management API (`/api/management/v1/inventory`:
//!   devices, attributes, groups; `/api/management/v2/inventory`: search, saved filters);
//! - [`health`] serves `/health`, `/metrics`;
//! - [`openapi`] serves `/api/management/v1/deployments/openapi.yaml`, the OpenAPI document
//!   of these routes (`api/openapi.yaml`).

pub mod artifacts;
mod catalog;
pub mod deployments;
pub mod devices;
pub mod download;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod openapi;
mod paging;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Buf, Filter};

use crate::error::{recover, ApiError};
use crate::server::body::{is_body_timeout, TimedBody};
use crate::server::{from_warp, App};
use crate::state::AppState;

/// Base path of the management deployments API.
pub const MANAGEMENT_BASE: &str = "/api/management/v1/deployments";

/// The whole application: download links first, then the warp routes. Every request
/// carries the token verifier in its extensions, where [`crate::auth::user`] and
/// [`crate::auth::device`] find it.
pub fn app(state: AppState, metrics: Option<PrometheusHandle>) -> App {
    let routes = warp_routes(state.clone(), metrics);
    let service = warp::service(routes);
    let body_read_timeout = state.settings.body_read_timeout;
    Arc::new(move |mut req| {
        req.extensions_mut().insert(state.auth.clone());
        if download::matches(&req) {
            let state = state.clone();
            return async move { download::serve(&state, req).await }.boxed();
        }
        let mut service = service.clone();
        let req = req.map(|body| TimedBody::new(body, body_read_timeout));
        async move {
            let response = match service.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            from_warp(response)
        }
        .boxed()
    })
}

fn warp_routes(state: AppState, metrics: Option<PrometheusHandle>) -> BoxedFilter<(Response,)> {
    // Device routes first: check-ins and status reports are the hot path, and warp tries
    // alternatives in order.
    any_of([
        devices::routes(state.clone()),
        catalog::routes(state.clone()),
        artifacts::routes(state.clone()),
        deployments::routes(state.clone()),
        events::routes(state.clone()),
        identity::routes(state.clone()),
        inventory::routes(state.clone()),
        health::routes(state, metrics),
        openapi::routes(),
    ])
    .recover(recover)
    .unify()
    .boxed()
}

/// The first of `routes` that matches. Each route is boxed before it is combined, so the
/// combined filter's type stays small: chaining many unboxed warp filters with `or` builds
/// a nested type that took rustc minutes to check.
pub(crate) fn any_of<const N: usize>(
    routes: [BoxedFilter<(Response,)>; N],
) -> BoxedFilter<(Response,)> {
    routes
        .into_iter()
        .reduce(|first, next| first.or(next).unify().boxed())
        .expect("at least one route")
}

/// `/api/management/v1/deployments`.
pub fn management() -> BoxedFilter<()> {
    warp::path("api")
        .and(warp::path("management"))
        .and(warp::path("v1"))
        .and(warp::path("deployments"))
        .boxed()
}

/// A JSON body of type `T`: requires `Content-Type: application/json` (415 otherwise),
/// accepts chunked bodies, refuses bodies over `limit` bytes (413) and malformed JSON (400).
pub fn json_body<T: DeserializeOwned + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::body::stream())
        .and_then(move |ct: Option<String>, body| async move {
            parse_json::<T, _, _>(ct, body, limit)
                .await
                .map_err(warp::reject::custom)
        })
}

/// Check the content type, read at most `limit` bytes and parse them as JSON.
pub async fn parse_json<T, S, B>(ct: Option<String>, body: S, limit: u64) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let is_json = ct
        .as_deref()
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "the request body must be application/json".into(),
        ));
    }
    let bytes = read_limited(body, limit).await?;
    serde_json::from_slice::<T>(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// 201 with a `Location`.
pub fn created(location: String) -> Response {
    warp::reply::with_header(
        warp::reply::with_status(warp::reply(), http::StatusCode::CREATED),
        "location",
        location,
    )
    .into_response()
}

/// 204.
pub fn no_content() -> Response {
    warp::reply::with_status(warp::reply(), http::StatusCode::NO_CONTENT).into_response()
}

/// Read a body of at most `limit` bytes (413 beyond).
pub(crate) async fn read_limited<S, B>(mut body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                ApiError::RequestTimeout(e.to_string())
            } else {
                ApiError::BadRequest(format!("reading the body failed: {e}"))
            }
        })?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::TooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// `http://host` for links: the configured public URL, else the request's Host header.
pub fn base_url() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("host")
        .map(|h: Option<String>| format!("http://{}", h.unwrap_or_else(|| "localhost".into())))
}
