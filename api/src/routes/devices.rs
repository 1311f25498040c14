//! Device routes (`/api/devices/v1/deployments/device/deployments/…`): check for an update,
//! report status, upload a log. Each turns into one message to a deployment actor.

mod log_upload;

use std::collections::HashMap;

use engine::Delivery;
use serde::{Deserialize, Serialize};
use storage::DeviceStatus;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

pub(crate) use log_upload::LogUpload;

use super::artifacts::device_link;
use super::{base_url, json_body, no_content};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::state::AppState;

/// Longest artifact name or device type.
const MAX_TEXT: usize = 4096;
/// Longest substate.
const MAX_SUBSTATE: usize = 200;
/// Largest log upload.
const MAX_LOG_BODY: u64 = 10 * 1024 * 1024;

fn device_base() -> BoxedFilter<()> {
    warp::path("api")
        .and(warp::path("devices"))
        .and(warp::path("v1"))
        .and(warp::path("deployments"))
        .and(warp::path("device"))
        .and(warp::path("deployments"))
        .boxed()
}

/// The device routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let next_get = device_base()
        .and(warp::path!("next"))
        .and(warp::get())
        .and(auth::device())
        .and(warp::query::<HashMap<String, String>>())
        .and(base_url())
        .and(st.clone())
        .then(|id, q: HashMap<String, String>, base, st| async move {
            let body = NextQuery {
                artifact_name: q.get("artifact_name").cloned(),
                device_type: q.get("device_type").cloned(),
            };
            respond(next(id, body, base, st).await)
        });
    let next_post = device_base()
        .and(warp::path!("next"))
        .and(warp::post())
        .and(auth::device())
        .and(json_body::<NextQuery>(1024 * 1024))
        .and(base_url())
        .and(st.clone())
        .then(|id, body, base, st| async move { respond(next(id, body, base, st).await) });
    let status = device_base()
        .and(warp::path!(String / "status"))
        .and(warp::put())
        .and(auth::device())
        .and(json_body::<StatusReport>(64 * 1024))
        .and(st.clone())
        .then(|d, id, body, st| async move { respond(status(d, id, body, st).await) });
    let log = device_base()
        .and(warp::path!(String / "log"))
        .and(warp::put())
        .and(auth::device())
        .and(json_body::<LogUpload>(MAX_LOG_BODY))
        .and(st)
        .then(|d, id, body, st| async move { respond(log(d, id, body, st).await) });
    next_get
        .or(next_post)
        .unify()
        .or(status)
        .unify()
        .or(log)
        .unify()
        .boxed()
}

/// What the device says it runs (query string or JSON body).
#[derive(Deserialize)]
pub(crate) struct NextQuery {
    artifact_name: Option<String>,
    device_type: Option<String>,
}

fn required(field: &str, value: Option<String>) -> ApiResult<String> {
    match value {
        Some(v) if !v.is_empty() && v.chars().count() <= MAX_TEXT => Ok(v),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {MAX_TEXT} characters long"
        ))),
        None => Err(ApiError::BadRequest(format!("{field} is required"))),
    }
}

#[derive(Serialize)]
struct Source {
    uri: String,
    #[serde(with = "time::serde::rfc3339")]
    expire: time::OffsetDateTime,
    method: &'static str,
}

#[derive(Serialize)]
struct NextArtifact<'a> {
    id: Uuid,
    artifact_name: &'a str,
    source: Source,
    device_types_compatible: &'a [String],
}

#[derive(Serialize)]
struct NextDeployment<'a> {
    id: Uuid,
    artifact: NextArtifact<'a>,
}

async fn next(id: Identity, q: NextQuery, base: String, st: AppState) -> ApiResult {
    let artifact_name = required("artifact_name", q.artifact_name)?;
    let device_type = required("device_type", q.device_type)?;
    let delivery = st
        .deployments
        .check_in(&id.tenant, &id.subject, &device_type, &artifact_name)
        .await;
    let (deployment, artifact) = match delivery {
        Ok(Delivery::Update {
            deployment,
            artifact,
        }) => (deployment, artifact),
        Ok(other) => {
            crate::metrics::check_in(match other {
                Delivery::AlreadyInstalled => "already-installed",
                Delivery::NoArtifact => "noartifact",
                _ => "nothing",
            });
            return Ok(no_content());
        }
        Err(e) => {
            if matches!(e, engine::EngineError::Conflict(_)) {
                crate::metrics::check_in("conflict");
            }
            return Err(e.into());
        }
    };
    crate::metrics::check_in("update");
    let link = device_link(&st, &base, &artifact).await?;
    let body = NextDeployment {
        id: deployment,
        artifact: NextArtifact {
            id: artifact.id,
            artifact_name: &artifact.meta.name,
            source: Source {
                uri: link.uri,
                expire: link.expire,
                method: "GET",
            },
            device_types_compatible: &artifact.meta.device_types_compatible,
        },
    };
    Ok(warp::reply::json(&body).into_response())
}

/// `PUT …/{id}/status` body.
#[derive(Deserialize)]
pub(crate) struct StatusReport {
    status: String,
    #[serde(default)]
    substate: Option<String>,
}

fn deployment_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("deployment not found".into()))
}

async fn status(raw: String, id: Identity, body: StatusReport, st: AppState) -> ApiResult {
    let status: DeviceStatus =
        serde_json::from_value(serde_json::Value::String(body.status.clone()))
            .map_err(|_| ApiError::BadRequest(format!("unknown status {:?}", body.status)))?;
    if body
        .substate
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SUBSTATE)
    {
        return Err(ApiError::BadRequest(format!(
            "substate is longer than {MAX_SUBSTATE} characters"
        )));
    }
    st.deployments
        .report(
            &id.tenant,
            &id.subject,
            deployment_id(&raw)?,
            status,
            body.substate,
        )
        .await?;
    crate::metrics::status_report(status);
    Ok(no_content())
}

async fn log(raw: String, id: Identity, body: LogUpload, st: AppState) -> ApiResult {
    let messages = body.into_checked()?;
    st.deployments
        .upload_log(&id.tenant, &id.subject, deployment_id(&raw)?, messages)
        .await?;
    Ok(no_content())
}
