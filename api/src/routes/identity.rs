//! Identity routes of standalone mode: device authentication
//! (`/api/devices/v1/authentication/auth_requests`), the device registry
//! (`/api/management/v2/devauth/devices…`, with `PUT …/{id}/auth/{aid}/status` to accept
//! or reject a device's key), device inventory
//! (`/api/devices/v1/inventory/device/attributes`) and operator login
//! (`/api/management/v1/useradm/auth/login`).

use engine::inventory::Attribute;
use serde::{Deserialize, Serialize};
use storage::{DeviceAuthRecord, DeviceAuthStatus};
use time::OffsetDateTime;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::{json_body, read_limited, Decoded};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::state::AppState;

/// Largest auth request body (a PEM key of 8192 bits and identity data fit easily).
const MAX_AUTH_BODY: u64 = 64 * 1024;
/// Largest inventory upload.
const MAX_INVENTORY_BODY: u64 = 1024 * 1024;
/// Base path of the device registry.
pub const DEVAUTH_BASE: &str = "/api/management/v2/devauth/devices";

/// The identity routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let auth_request = warp::path!("api" / "devices" / "v1" / "authentication" / "auth_requests")
        .and(warp::post())
        .and(warp::header::optional::<String>("x-men-signature"))
        .and(warp::body::stream())
        .and(st.clone())
        .then(|sig: Option<String>, body, st: AppState| async move {
            respond(auth_request(sig, body, st).await)
        });
    let login = warp::path!("api" / "management" / "v1" / "useradm" / "auth" / "login")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(st.clone())
        .then(|h: Option<String>, st: AppState| async move {
            respond(
                st.identity
                    .login(h.as_deref())
                    .map(jwt_reply)
                    .map_err(ApiError::from),
            )
        });
    let devices = warp::path("api")
        .and(warp::path("management"))
        .and(warp::path("v2"))
        .and(warp::path("devauth"))
        .and(warp::path("devices"))
        .boxed();
    let list = devices
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .and(auth::user())
        .and(warp::query::<ListQuery>())
        .and(st.clone())
        .then(|id, q, st| async move { respond(list(id, q, st).await) });
    let show = devices
        .clone()
        .and(warp::path!(Decoded))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(show(dev, id, st).await) });
    let auth_status = devices
        .clone()
        .and(warp::path!(Decoded / "auth" / String / "status"))
        .and(warp::put())
        .and(auth::user())
        .and(json_body::<AuthStatusBody>(MAX_AUTH_BODY))
        .and(st.clone())
        .then(|Decoded(dev), set, id, body, st| async move {
            respond(auth_status(dev, set, id, body, st).await)
        });
    let decommission = devices
        .clone()
        .and(warp::path!(Decoded))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(decommission(dev, id, st).await) });
    let preauthorize = devices
        .and(warp::path::end())
        .and(warp::post())
        .and(auth::user())
        .and(json_body::<PreauthBody>(MAX_AUTH_BODY))
        .and(st.clone())
        .then(|id, body, st| async move { respond(preauthorize(id, body, st).await) });
    let inventory = warp::path!("api" / "devices" / "v1" / "inventory" / "device" / "attributes")
        .and(
            warp::put()
                .map(|| false)
                .or(warp::patch().map(|| true))
                .unify(),
        )
        .and(auth::device())
        .and(json_body::<Vec<Attribute>>(MAX_INVENTORY_BODY))
        .and(st)
        .then(|merge, id, attrs, st| async move { respond(inventory(merge, id, attrs, st).await) });
    super::any_of([
        auth_request.boxed(),
        login.boxed(),
        list.boxed(),
        show.boxed(),
        decommission.boxed(),
        preauthorize.boxed(),
        auth_status.boxed(),
        inventory.boxed(),
    ])
}

/// 200 with a token as the raw body, as Mender's services answer.
fn jwt_reply(token: String) -> Response {
    warp::reply::with_header(token, "content-type", "application/jwt").into_response()
}

async fn auth_request<S, B>(signature: Option<String>, body: S, st: AppState) -> ApiResult
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: warp::Buf,
{
    let bytes = read_limited(body, MAX_AUTH_BODY).await?;
    let admitted = st
        .identity
        .authenticate(&bytes, signature.as_deref())
        .await
        .inspect_err(|e| tracing::info!(error = %e, "device auth request refused"))?;
    // An admitted device may now match dynamic deployments (by its identity).
    st.deployments
        .device_changed(&admitted.tenant, &admitted.device)
        .await?;
    Ok(jwt_reply(admitted.token))
}

/// `?status=` filter of the device list.
#[derive(Deserialize)]
struct ListQuery {
    status: Option<DeviceAuthStatus>,
}

/// A device as the device authentication API shows it.
#[derive(Serialize)]
struct DeviceView {
    id: String,
    identity_data: serde_json::Value,
    status: DeviceAuthStatus,
    #[serde(with = "time::serde::rfc3339")]
    created_ts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_ts: OffsetDateTime,
    auth_sets: Vec<AuthSetView>,
    decommissioning: bool,
}

#[derive(Serialize)]
struct AuthSetView {
    id: String,
    identity_data: serde_json::Value,
    pubkey: String,
    #[serde(with = "time::serde::rfc3339")]
    ts: OffsetDateTime,
    status: DeviceAuthStatus,
}

impl From<DeviceAuthRecord> for DeviceView {
    fn from(r: DeviceAuthRecord) -> Self {
        DeviceView {
            status: r.status(),
            auth_sets: r
                .auth_sets
                .into_iter()
                .map(|a| AuthSetView {
                    id: a.id,
                    identity_data: r.identity_data.clone(),
                    pubkey: a.pubkey,
                    ts: a.ts,
                    status: a.status,
                })
                .collect(),
            id: r.id,
            identity_data: r.identity_data,
            created_ts: r.created,
            updated_ts: r.updated,
            decommissioning: false,
        }
    }
}

async fn list(id: Identity, q: ListQuery, st: AppState) -> ApiResult {
    let devices: Vec<DeviceView> = st
        .identity
        .devices(&id.tenant)
        .await?
        .into_iter()
        .filter(|d| q.status.is_none_or(|s| s == d.status()))
        .map(DeviceView::from)
        .collect();
    Ok(warp::reply::json(&devices).into_response())
}

async fn show(device: String, id: Identity, st: AppState) -> ApiResult {
    let record = st
        .identity
        .device(&id.tenant, &device)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {device} not found")))?;
    Ok(warp::reply::json(&DeviceView::from(record)).into_response())
}

/// `DELETE …/devauth/devices/{id}`: the device's tokens stop working at once, it leaves
/// every deployment it takes part in (`decommissioned`), and its inventory is removed.
async fn decommission(device: String, id: Identity, st: AppState) -> ApiResult {
    st.identity.decommission(&id.tenant, &device).await?;
    st.deployments.decommission(&id.tenant, &device).await?;
    st.inventory.remove(&id.tenant, &device).await?;
    Ok(super::no_content())
}

/// Body of a preauthorization.
#[derive(Deserialize)]
pub(crate) struct PreauthBody {
    pub(crate) identity_data: serde_json::Value,
    pub(crate) pubkey: String,
}

async fn preauthorize(id: Identity, body: PreauthBody, st: AppState) -> ApiResult {
    let record = st
        .identity
        .preauthorize(&id.tenant, body.identity_data, &body.pubkey)
        .await?;
    Ok(super::created(format!("{DEVAUTH_BASE}/{}", record.id)))
}

/// Body of `PUT …/devices/{id}/auth/{aid}/status`.
#[derive(Deserialize)]
struct AuthStatusBody {
    status: DeviceAuthStatus,
}

/// An operator accepts, rejects or resets one of a device's keys: 204.
async fn auth_status(
    device: String,
    auth_set: String,
    id: Identity,
    body: AuthStatusBody,
    st: AppState,
) -> ApiResult {
    st.identity
        .set_auth_status(&id.tenant, &device, &auth_set, body.status)
        .await?;
    st.deployments.device_changed(&id.tenant, &device).await?;
    Ok(super::no_content())
}

/// Store a device's attributes: `PUT` replaces what it reported, `PATCH` updates the named
/// attributes.
async fn inventory(merge: bool, id: Identity, attrs: Vec<Attribute>, st: AppState) -> ApiResult {
    st.inventory
        .report(&id.tenant, &id.subject, merge, &attrs)
        .await?;
    Ok(warp::reply::with_status(warp::reply(), http::StatusCode::OK).into_response())
}
