//! Device routes (`/api/devices/v1/deployments/device/deployments/…`): check for an update,
//! report status, upload a log; and under `/api/devices/v2/…`, the check for an update that
//! carries update control maps and the refresh of a map. Each turns into one message to a
//! deployment actor.

mod log_upload;

use std::borrow::Cow;
use std::collections::BTreeMap;

use engine::Delivery;
use serde::{Deserialize, Serialize};
use storage::{ControlPoint, DeviceStatus, PointControl, UpdateControlMap};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

pub(crate) use log_upload::LogUpload;

use super::artifacts::device_link;
use super::{base_url, json_body, no_content, parse_json, BodyHead};
use crate::auth::{self, Identity, PrincipalKind};
use crate::error::{respond, ApiError, ApiResult};
use crate::server::body::TimedBody;
use crate::state::AppState;

/// Longest artifact name or device type.
const MAX_TEXT: usize = 4096;
/// Longest substate.
const MAX_SUBSTATE: usize = 200;
/// Largest status report.
const MAX_STATUS_BODY: u64 = 64 * 1024;
/// Largest log upload.
const MAX_LOG_BODY: u64 = 10 * 1024 * 1024;

/// The query string, empty when there is none.
fn raw_query() -> BoxedFilter<(String,)> {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .boxed()
}

fn device_base() -> BoxedFilter<()> {
    base_of("v1")
}

fn base_of(version: &'static str) -> BoxedFilter<()> {
    warp::path("api")
        .and(warp::path("devices"))
        .and(warp::path(version))
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
        .and(raw_query())
        .and(base_url())
        .and(st.clone())
        .then(|id, query: String, base, st| async move {
            respond(next(id, NextQuery::parse(&query), false, move || base, st).await)
        });
    let next_post = device_base()
        .and(warp::path!("next"))
        .and(warp::post())
        .and(auth::device())
        .and(json_body::<NextQuery>(1024 * 1024))
        .and(base_url())
        .and(st.clone())
        .then(|id, body, base, st| async move {
            respond(next(id, body, false, move || base, st).await)
        });
    let next_v2 = base_of("v2")
        .and(warp::path!("next"))
        .and(warp::post())
        .and(auth::device())
        .and(json_body::<NextV2>(1024 * 1024))
        .and(base_url())
        .and(st.clone())
        .then(|id, body: NextV2, base, st| async move {
            let maps = body.update_control_map;
            respond(next(id, body.device_provides, maps, move || base, st).await)
        });
    let control_map = base_of("v2")
        .and(warp::path!(String / "update_control_map"))
        .and(warp::get())
        .and(auth::device())
        .and(st.clone())
        .then(|d, id, st| async move { respond(control_map(d, id, st).await) });
    let status = device_base()
        .and(warp::path!(String / "status"))
        .and(warp::put())
        .and(auth::device())
        .and(json_body::<StatusReport>(MAX_STATUS_BODY))
        .and(st.clone())
        .then(|d, id, body, st| async move { respond(status(d, id, body, st).await) });
    let log = device_base()
        .and(warp::path!(String / "log"))
        .and(warp::put())
        .and(auth::device())
        .and(json_body::<LogUpload>(MAX_LOG_BODY))
        .and(st)
        .then(|d, id, body, st| async move { respond(log(d, id, body, st).await) });
    super::any_of([
        next_get.boxed(),
        next_post.boxed(),
        next_v2.boxed(),
        control_map.boxed(),
        status.boxed(),
        log.boxed(),
    ])
}

/// The path of the check-in every device makes at every poll.
const CHECK_IN_PATH: &str = "/api/devices/v1/deployments/device/deployments/next";

/// `GET …/device/deployments/next`, answered without warp's filter chain (path segments
/// matched one filter at a time, a boxed future per filter, rejections): every device of
/// the fleet calls it at every poll. It answers as the warp route does, token errors
/// included; `None` for any other request, and for a `Host` or `Authorization` header that
/// is not text (warp's route answers those).
pub(crate) fn check_in_without_warp<B>(
    st: &AppState,
    req: &http::Request<B>,
) -> Option<futures_util::future::BoxFuture<'static, Response>> {
    if req.method() != http::Method::GET || req.uri().path() != CHECK_IN_PATH {
        return None;
    }
    // Both kept as they came (a clone shares the bytes): the query is decoded in place and
    // the link base built only for an answer that carries a link.
    let host = req.headers().get(http::header::HOST).cloned();
    if host.as_ref().is_some_and(|h| h.to_str().is_err()) {
        return None;
    }
    let uri = req.uri().clone();
    let authorization = header_text(req, http::header::AUTHORIZATION).ok()?;
    let identity = auth::identify_as(&st.auth, authorization, PrincipalKind::Device);
    let st = st.clone();
    Some(Box::pin(async move {
        match identity {
            Ok(id) => {
                let query = NextQuery::parse(uri.query().unwrap_or(""));
                let base = move || super::base_url_of(host.as_ref().and_then(|h| h.to_str().ok()));
                respond(next(id, query, false, base, st).await)
            }
            Err(e) => e.into_response(),
        }
    }))
}

/// Where every status report goes: `PUT {DEVICE_DEPLOYMENTS}{id}/status`.
const DEVICE_DEPLOYMENTS: &str = "/api/devices/v1/deployments/device/deployments/";

/// `PUT …/device/deployments/{id}/status`, answered without warp's filter chain, as
/// [`check_in_without_warp`] answers the check-in: every device reports several times per
/// update. [`StatusHead::of`] takes what it needs from the request's head, then
/// [`StatusHead::answer`] reads the body. Checks come in the warp route's order (token,
/// content type, body, status, deployment), so the answers are its answers.
pub(crate) struct StatusHead {
    raw: String,
    identity: ApiResult<Identity>,
    content_type: Option<String>,
}

impl StatusHead {
    /// `None` when the request is not a status report, or when its path (an escaped id),
    /// `Authorization` or `Content-Type` is something only warp's filters answer.
    pub(crate) fn of<B>(st: &AppState, req: &http::Request<B>) -> Option<Self> {
        let raw = status_target(req)?;
        let authorization = header_text(req, http::header::AUTHORIZATION).ok()?;
        let content_type = header_text(req, http::header::CONTENT_TYPE).ok()?;
        Some(StatusHead {
            raw: raw.to_owned(),
            identity: auth::identify_as(&st.auth, authorization, PrincipalKind::Device),
            content_type: content_type.map(str::to_owned),
        })
    }

    pub(crate) async fn answer(self, st: AppState, body: TimedBody) -> Response {
        let answer = async {
            let id = self.identity?;
            let head = BodyHead {
                content_type: self.content_type,
                length: hyper::body::Body::size_hint(&body).exact(),
            };
            let body = http_body_util::BodyDataStream::new(body);
            let report = parse_json(&head, body, MAX_STATUS_BODY).await?;
            status(self.raw, id, report, st).await
        };
        respond(answer.await)
    }
}

/// The id segment of a status report's path, unless the segment needs decoding.
fn status_target<B>(req: &http::Request<B>) -> Option<&str> {
    if req.method() != http::Method::PUT {
        return None;
    }
    let id = req
        .uri()
        .path()
        .strip_prefix(DEVICE_DEPLOYMENTS)?
        .strip_suffix("/status")?;
    (!id.is_empty() && !id.contains(['/', '%'])).then_some(id)
}

/// A header's value as text (`Ok(None)` when absent), `Err` when it is not text.
fn header_text<B>(
    req: &http::Request<B>,
    name: http::header::HeaderName,
) -> Result<Option<&str>, http::header::ToStrError> {
    req.headers().get(name).map(|v| v.to_str()).transpose()
}

/// What the device says it runs (query string or JSON body).
#[derive(Deserialize)]
pub(crate) struct NextQuery<'a> {
    artifact_name: Option<Cow<'a, str>>,
    device_type: Option<Cow<'a, str>>,
    /// Not used to choose the update, but when given it must be the object the contract
    /// names, so a malformed body is refused (400) rather than half read.
    #[serde(default, rename = "artifact_provides")]
    _provides: Option<std::collections::HashMap<String, serde::de::IgnoredAny>>,
}

impl<'a> NextQuery<'a> {
    /// From a query string (`artifact_name=…&device_type=…`, percent-decoded; other
    /// parameters ignored, the last of a repeated one wins), without building a map of
    /// every parameter: this runs on every check-in.
    fn parse(query: &'a str) -> Self {
        let mut next = NextQuery {
            artifact_name: None,
            device_type: None,
            _provides: None,
        };
        // Values that need no decoding are borrowed from the query.
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "artifact_name" => next.artifact_name = Some(value),
                "device_type" => next.device_type = Some(value),
                _ => {}
            }
        }
        next
    }
}

/// The v2 check for an update: the device's provides (`artifact_name`, `device_type` and
/// more), and whether its client acts on update control maps.
#[derive(Deserialize)]
pub(crate) struct NextV2 {
    device_provides: NextQuery<'static>,
    #[serde(default)]
    update_control_map: bool,
}

fn required<'a>(field: &str, value: Option<Cow<'a, str>>) -> ApiResult<Cow<'a, str>> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    update_control_map: Option<DeviceControlMap<'a>>,
}

/// A control map as the Mender client reads it: the operator's map with the deployment's id.
#[derive(Serialize)]
struct DeviceControlMap<'a> {
    id: Uuid,
    priority: i32,
    states: &'a BTreeMap<ControlPoint, PointControl>,
}

impl<'a> DeviceControlMap<'a> {
    fn new(deployment: Uuid, map: &'a UpdateControlMap) -> Self {
        DeviceControlMap {
            id: deployment,
            priority: map.priority,
            states: &map.states,
        }
    }
}

/// `maps`: the device's client acts on update control maps (it asked through v2 saying so).
/// `base`: the `http://host` of the download link, built only when there is one.
async fn next(
    id: Identity,
    q: NextQuery<'_>,
    maps: bool,
    base: impl FnOnce() -> String,
    st: AppState,
) -> ApiResult {
    let artifact_name = required("artifact_name", q.artifact_name)?;
    let device_type = required("device_type", q.device_type)?;
    let delivery = st
        .deployments
        .check_in(&id.tenant, &id.subject, &device_type, &artifact_name)
        .await;
    let (deployment, artifact, control_map) = match delivery {
        Ok(Delivery::Update {
            deployment,
            artifact,
            control_map,
        }) => (deployment, artifact, control_map),
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
    let link = device_link(&st, &base(), &artifact).await?;
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
        update_control_map: control_map
            .as_ref()
            .filter(|_| maps)
            .map(|m| DeviceControlMap::new(deployment, m)),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// `GET /api/devices/v2/…/deployments/{id}/update_control_map`: the map a device in the
/// middle of the update refreshes (404 once it has finished, as for a deployment it is not
/// in).
async fn control_map(raw: String, id: Identity, st: AppState) -> ApiResult {
    let deployment = deployment_id(&raw)?;
    let map = st
        .deployments
        .control_map(&id.tenant, &id.subject, deployment)
        .await?;
    let body = serde_json::json!({ "update_control_map": DeviceControlMap::new(deployment, &map) });
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{status_target, NextQuery};

    #[test]
    fn only_a_put_to_a_plain_status_path_skips_warp() {
        let target = |method: http::Method, path: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .expect("a valid request");
            status_target(&req).map(str::to_owned)
        };
        let base = "/api/devices/v1/deployments/device/deployments";
        let put = http::Method::PUT;
        assert_eq!(
            target(put.clone(), &format!("{base}/abc/status")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            target(http::Method::POST, &format!("{base}/abc/status")),
            None
        );
        for path in [
            "//status",
            "/a%2Db/status",
            "/a/b/status",
            "/abc/status/",
            "/abc/log",
        ] {
            assert_eq!(
                target(put.clone(), &format!("{base}{path}")),
                None,
                "{path}"
            );
        }
    }

    #[test]
    fn a_check_in_query_is_decoded_and_other_parameters_are_ignored() {
        let q = NextQuery::parse("device_type=raspberrypi%204&x=1&artifact_name=release+1");
        assert_eq!(q.artifact_name.as_deref(), Some("release 1"));
        assert_eq!(q.device_type.as_deref(), Some("raspberrypi 4"));
        let q = NextQuery::parse("artifact_name=a&artifact_name=b");
        assert_eq!(q.artifact_name.as_deref(), Some("b"));
        assert_eq!(q.device_type, None);
        let q = NextQuery::parse("");
        assert!(q.artifact_name.is_none() && q.device_type.is_none());
        // The common case, nothing to decode, copies nothing.
        let q = NextQuery::parse("artifact_name=release-1&device_type=pi");
        assert!(matches!(q.artifact_name, Some(Cow::Borrowed("release-1"))));
        assert!(matches!(q.device_type, Some(Cow::Borrowed("pi"))));
    }
}
