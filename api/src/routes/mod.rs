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
use crate::server::BoxError;
use crate::server::{from_warp, App};
use crate::state::AppState;

/// Base path of the management deployments API.
pub const MANAGEMENT_BASE: &str = "/api/management/v1/deployments";

/// The whole application: download links first, then the check-in and the status report
/// (all three served without warp), then the warp routes of the request's [`RouteGroup`]. A request for warp carries
/// the token verifier in its extensions, where [`crate::auth::user`] and
/// [`crate::auth::device`] find it.
pub fn app(state: AppState, metrics: Option<PrometheusHandle>) -> App {
    let table = Arc::new(RouteTable::new(&state, metrics));
    let body_read_timeout = state.settings.body_read_timeout;
    Arc::new(move |req| {
        if let Some(refused) = req.uri().query().and_then(undecodable_query) {
            // Answered inside the future, where the request id is in scope.
            return async move { from_warp(refused.into_response()) }.boxed();
        }
        if download::matches(&req) {
            let state = state.clone();
            return async move { download::serve(&state, req).await }.boxed();
        }
        if let Some(answer) = devices::check_in_without_warp(&state, &req) {
            return answer.map(from_warp).boxed();
        }
        let mut req = req.map(|body| TimedBody::new(body, body_read_timeout));
        if let Some(head) = devices::StatusHead::of(&state, &req) {
            let state = state.clone();
            return async move { from_warp(head.answer(state, req.into_body()).await) }.boxed();
        }
        req.extensions_mut().insert(state.auth.clone());
        let mut service = warp::service(table.routes(RouteGroup::of(req.uri().path())));
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

/// The routes a request may reach, told by the first four segments of its path. A request
/// walks only its group's filters: warp tries alternatives in order, and with one list of
/// every route a `/health` or a 404 went through all of rollout's routes first (at half
/// the speed of a check-in). A path the table does not know under `/api` tries every
/// route, as before; any other path is a 404 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum RouteGroup {
    /// `/api/devices/{v1,v2}/deployments/…`: check-ins, status reports, logs.
    Devices,
    /// Device authentication and inventory reports, the device registry, login.
    Identity,
    /// `/api/management/{v1,v2}/deployments/…`: artifacts, releases, deployments.
    Deployments,
    /// `/api/management/{v1,v2}/inventory/…`.
    Inventory,
    /// `/health…`, `/metrics`.
    Health,
    /// Any other path under `/api`.
    All,
    /// No route has this path.
    None,
}

impl RouteGroup {
    fn of(path: &str) -> RouteGroup {
        let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
        let mut next = || segments.next().unwrap_or("");
        match [next(), next(), next(), next()] {
            ["health" | "metrics", ..] => RouteGroup::Health,
            ["api", "devices", "v1" | "v2", "deployments"] => RouteGroup::Devices,
            ["api", "devices", "v1", "authentication" | "inventory"]
            | ["api", "management", "v1", "useradm"]
            | ["api", "management", "v2", "devauth"] => RouteGroup::Identity,
            ["api", "management", "v1" | "v2", "deployments"] => RouteGroup::Deployments,
            ["api", "management", "v1" | "v2", "inventory"] => RouteGroup::Inventory,
            ["api", ..] => RouteGroup::All,
            _ => RouteGroup::None,
        }
    }
}

/// A warp service per [`RouteGroup`] (in the enum's order), each answering rejections
/// with rollout's errors.
struct RouteTable {
    services: [BoxedFilter<(Response,)>; 7],
}

impl RouteTable {
    fn new(state: &AppState, metrics: Option<PrometheusHandle>) -> Self {
        let st = || state.clone();
        let devices = devices::routes(st());
        let identity = identity::routes(st());
        let deployments = any_of([
            catalog::routes(st()),
            artifacts::routes(st()),
            deployments::routes(st()),
            events::routes(st()),
            openapi::routes(),
        ]);
        let inventory = inventory::routes(st());
        let health = health::routes(st(), metrics);
        // Device routes first in `All`: check-ins and status reports are the hot path.
        let all = any_of([
            devices.clone(),
            deployments.clone(),
            identity.clone(),
            inventory.clone(),
            health.clone(),
        ]);
        let none = warp::any()
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed();
        let groups = [devices, identity, deployments, inventory, health, all, none];
        let services = groups.map(|routes| routes.recover(recover).unify().boxed());
        RouteTable { services }
    }

    fn routes(&self, group: RouteGroup) -> BoxedFilter<(Response,)> {
        self.services[group as usize].clone()
    }
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

/// A JSON body of type `T`: a body without `Content-Type` is read as JSON (upstream reads
/// the body whatever its type, and scripts often leave the header out); another type than
/// `application/json` is an invalid request (400, the only refusal the contract lists for a
/// body). An empty body reads as `{}`. Accepts chunked bodies, refuses bodies over `limit`
/// bytes (413) and malformed JSON (400).
pub fn json_body<T: DeserializeOwned + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    body_head()
        .and(warp::body::stream())
        .and_then(move |head: BodyHead, body| async move {
            parse_json::<T, _, _, _>(&head, body, limit)
                .await
                .map_err(warp::reject::custom)
        })
}

/// What the headers say of a request body, read before the body.
pub(crate) struct BodyHead {
    pub(crate) content_type: Option<String>,
    /// `Content-Length`: a body declared over the limit is refused before it is read.
    pub(crate) length: Option<u64>,
}

/// The [`BodyHead`] of a warp request.
pub(crate) fn body_head() -> impl Filter<Extract = (BodyHead,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .map(|content_type, length| BodyHead {
            content_type,
            length,
        })
}

/// Check the content type and declared length, read at most `limit` bytes and parse them
/// as JSON.
pub(crate) async fn parse_json<T, S, B, E>(
    head: &BodyHead,
    body: S,
    limit: u64,
) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: Buf,
    E: Into<BoxError>,
{
    let ct = head.content_type.as_deref();
    let media_type = ct.and_then(|c| c.split(';').next()).map(str::trim);
    if let Some(other) = media_type.filter(|m| !m.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::BadRequest(format!(
            "the request body must be application/json, not {other:?}"
        )));
    }
    if head.length.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let bytes = read_limited(body, limit).await?;
    if bytes.trim_ascii().is_empty() {
        // No body reads as an empty object: where every field is optional (an artifact's
        // description) the contract marks the body optional too.
        return serde_json::from_slice::<T>(b"{}")
            .map_err(|e| ApiError::BadRequest(format!("the request body is empty: {e}")));
    }
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
pub(crate) async fn read_limited<S, B, E>(mut body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: Buf,
    E: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            let e: BoxError = e.into();
            if is_body_timeout(&*e) {
                ApiError::RequestTimeout(e.to_string())
            } else {
                ApiError::BadRequest(format!("reading the body failed: {e}"))
            }
        })?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large(limit));
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

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge(format!("the request body is larger than {limit} bytes"))
}

/// `http://host` for links: the configured public URL, else the request's Host header.
pub fn base_url() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("host").map(|h: Option<String>| base_url_of(h.as_deref()))
}

/// A query whose %-escapes decode to bytes that are not UTF-8 is refused here, for every
/// route: its parsers would decode them lossily, so `device_type=dev-%FE` would be taken
/// for the type `dev-\u{FFFD}`, which no device sent.
fn undecodable_query(query: &str) -> Option<ApiError> {
    if !query.contains('%') {
        return None;
    }
    let bad = query.split(['&', '=']).any(|part| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .is_err()
    });
    bad.then(|| ApiError::BadRequest("the query string is not UTF-8 once %-decoded".into()))
}

/// `http://host` from a request's `Host` header (`localhost` without one).
pub(crate) fn base_url_of(host: Option<&str>) -> String {
    format!("http://{}", host.unwrap_or("localhost"))
}

/// A path segment that names a device or a group, percent-decoded: warp hands segments
/// over as they came, and such names may hold characters a URL escapes (`a b` comes as
/// `a%20b`). A segment that does not decode to UTF-8 matches no route (404).
pub(crate) struct Decoded(pub(crate) String);

impl std::str::FromStr for Decoded {
    type Err = std::str::Utf8Error;

    fn from_str(segment: &str) -> Result<Self, Self::Err> {
        let text = percent_encoding::percent_decode_str(segment).decode_utf8()?;
        Ok(Decoded(text.into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::RouteGroup::{self, *};

    #[test]
    fn a_path_goes_to_the_group_of_its_first_segments() {
        let cases = [
            (
                "/api/devices/v1/deployments/device/deployments/next",
                Devices,
            ),
            (
                "/api/devices/v2/deployments/device/deployments/next",
                Devices,
            ),
            ("/api/devices/v1/authentication/auth_requests", Identity),
            ("/api/devices/v1/inventory/device/attributes", Identity),
            ("/api/management/v1/useradm/auth/login", Identity),
            ("/api/management/v2/devauth/devices/x", Identity),
            ("/api/management/v1/deployments/artifacts", Deployments),
            ("/api/management/v2/deployments/deployments", Deployments),
            ("/api/management/v1/inventory/devices", Inventory),
            ("/api/management/v2/inventory/filters", Inventory),
            ("/health", Health),
            ("/health/ready", Health),
            ("/metrics", Health),
            ("/api/management/v3/deployments", All),
            ("/api//devices/v1/deployments", All),
            ("/api", All),
            ("/", None),
            ("/healthz", None),
            ("/favicon.ico", None),
        ];
        for (path, group) in cases {
            assert_eq!(RouteGroup::of(path), group, "{path}");
        }
    }
}
