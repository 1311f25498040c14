//! Deployment routes of the management API: create, list, show, devices (all, or paged and
//! filtered by status), device list, statistics (of one, or of many at once), device logs,
//! abort, pause and resume, phase approval, update control maps (`PATCH`), decommission.

use engine::{ListQuery, NewDeployment, Snapshot};
use serde::{Deserialize, Serialize};
use storage::{DeploymentStatus, DeviceDeploymentRecord, DeviceStatus};
use time::OffsetDateTime;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::paging::{raw_query, Paging};
use super::{created, json_body, management, no_content, Decoded, MANAGEMENT_BASE};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::state::AppState;

/// Most deployments `POST /deployments/statistics/list` takes at once.
const MAX_STATISTICS_IDS: usize = 100;

/// The deployment routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let limit = st_limit(&st);
    let limit_group = st_limit(&st);
    let limit_dynamic = st_limit(&st);
    let deployments = management().and(warp::path("deployments")).boxed();
    let create = deployments
        .clone()
        .and(warp::path::end())
        .and(warp::post())
        .and(auth::user())
        .and(limit)
        .and(st.clone())
        .then(|id, body, st| async move { respond(create(id, body, st).await) });
    let list = deployments
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|id, q, st| async move { respond(list(id, q, st).await) });
    let create_for_group = deployments
        .clone()
        .and(warp::path!("group" / Decoded))
        .and(warp::post())
        .and(auth::user())
        .and(limit_group)
        .and(st.clone())
        .then(|Decoded(g), id, body, st| async move {
            respond(create_for_group(g, id, body, st).await)
        });
    let create_dynamic = warp::path!("api" / "management" / "v2" / "deployments" / "deployments")
        .and(warp::post())
        .and(auth::user())
        .and(limit_dynamic)
        .and(st.clone())
        .then(|id, body, st| async move { respond(create_dynamic(id, body, st).await) });
    let history = deployments
        .clone()
        .and(warp::path!("devices" / Decoded))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|Decoded(dev), id, q, st| async move { respond(history(dev, id, q, st).await) });
    let decommission = deployments
        .clone()
        .and(warp::path!("devices" / Decoded))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(decommission(dev, id, st).await) });
    let show = deployments
        .clone()
        .and(warp::path!(String))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(show(d, id, st).await) });
    let devices = deployments
        .clone()
        .and(warp::path!(String / "devices"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(devices(d, id, st).await) });
    let devices_page = deployments
        .clone()
        .and(warp::path!(String / "devices" / "list"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|d, id, q, st| async move { respond(devices_page(d, id, q, st).await) });
    let statistics_list = deployments
        .clone()
        .and(warp::path!("statistics" / "list"))
        .and(warp::post())
        .and(auth::user())
        .and(json_body::<StatisticsListBody>(64 * 1024))
        .and(st.clone())
        .then(|id, body, st| async move { respond(statistics_list(id, body, st).await) });
    let device_list = deployments
        .clone()
        .and(warp::path!(String / "device_list"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(device_list(d, id, st).await) });
    let statistics = deployments
        .clone()
        .and(warp::path!(String / "statistics"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(statistics(d, id, st).await) });
    let log = deployments
        .clone()
        .and(warp::path!(String / "devices" / Decoded / "log"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, Decoded(dev), id, st| async move { respond(log(d, dev, id, st).await) });
    let abort = deployments
        .clone()
        .and(warp::path!(String / "status"))
        .and(warp::put())
        .and(auth::user())
        .and(json_body::<StatusUpdate>(64 * 1024))
        .and(st.clone())
        .then(|d, id, body, st| async move { respond(abort(d, id, body, st).await) });
    let pause = deployments
        .clone()
        .and(warp::path!(String / "pause"))
        .and(warp::post())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(set_paused(d, id, true, st).await) });
    let resume = deployments
        .clone()
        .and(warp::path!(String / "resume"))
        .and(warp::post())
        .and(auth::user())
        .and(st.clone())
        .then(|d, id, st| async move { respond(set_paused(d, id, false, st).await) });
    let patch = deployments
        .clone()
        .and(warp::path!(String))
        .and(warp::patch())
        .and(auth::user())
        .and(json_body::<DeploymentPatch>(64 * 1024))
        .and(st.clone())
        .then(|d, id, body, st| async move { respond(patch(d, id, body, st).await) });
    let approve = deployments
        .clone()
        .and(warp::path!(String / "phases" / String / "approve"))
        .and(warp::post())
        .and(auth::user())
        .and(st)
        .then(|d, n, id, st| async move { respond(approve(d, n, id, st).await) });
    super::any_of([
        create.boxed(),
        list.boxed(),
        create_for_group.boxed(),
        create_dynamic.boxed(),
        history.boxed(),
        decommission.boxed(),
        show.boxed(),
        devices.boxed(),
        devices_page.boxed(),
        statistics_list.boxed(),
        device_list.boxed(),
        statistics.boxed(),
        log.boxed(),
        abort.boxed(),
        pause.boxed(),
        resume.boxed(),
        approve.boxed(),
        patch.boxed(),
    ])
}

/// The new-deployment body, limited by `--max-json-body`.
fn st_limit(
    st: &(impl Filter<Extract = (AppState,), Error = std::convert::Infallible>
          + Clone
          + Send
          + Sync
          + 'static),
) -> BoxedFilter<(NewDeployment,)> {
    st.clone()
        .and(super::body_head())
        .and(warp::body::stream())
        .and_then(|st: AppState, head, body| async move {
            super::parse_json::<NewDeployment, _, _, _>(&head, body, st.settings.max_json_body)
                .await
                .map_err(warp::reject::custom)
        })
        .boxed()
}

pub(super) fn deployment_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("deployment id {raw:?} is not a UUID")))
}

/// A deployment id from the path of a route whose contract answers only 404 for a bad id:
/// an id that is not a UUID names no deployment, and gets an unknown id's answer.
fn named_deployment(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("deployment not found".into()))
}

/// The Deployment JSON.
#[derive(Serialize)]
pub(super) struct DeploymentView<'a> {
    id: Uuid,
    name: &'a str,
    artifact_name: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    finished: Option<OffsetDateTime>,
    status: DeploymentStatus,
    device_count: u64,
    retries: u32,
    phases: Vec<PhaseView<'a>>,
    artifacts: &'a [Uuid],
    statistics: StatisticsView,
    dynamic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<&'a storage::DeploymentFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_device_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_devices: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    force_installation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_abort: Option<&'a storage::AutoAbort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pacing: Option<&'a storage::Pacing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    paused: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    halted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    maintenance_windows: &'a [storage::MaintenanceWindow],
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<&'a storage::DeploymentEnd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_control_map: Option<&'a storage::UpdateControlMap>,
}

/// A deployment's `statistics`, as upstream shows them on every deployment (the UI's
/// progress reads them): devices per status, and the bytes of the artifacts handed out.
#[derive(Serialize)]
struct StatisticsView {
    status: std::collections::BTreeMap<&'static str, u64>,
    total_size: u64,
}

#[derive(Serialize)]
struct PhaseView<'a> {
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    start_ts: OffsetDateTime,
    device_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<&'a storage::PhaseGate>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    needs_approval: bool,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    approved: Option<OffsetDateTime>,
}

impl<'a> DeploymentView<'a> {
    pub(super) fn new(snapshot: &'a Snapshot) -> Self {
        let d = &snapshot.header;
        DeploymentView {
            id: d.id,
            name: &d.name,
            artifact_name: &d.artifact_name,
            created: d.created,
            finished: d.finished,
            status: d.status,
            device_count: d.device_count,
            retries: d.retries,
            phases: d
                .phases
                .iter()
                .map(|p| PhaseView {
                    id: p.id,
                    batch_size: p.batch_size,
                    start_ts: p.start_ts,
                    device_count: p.device_count,
                    gate: p.gate.as_ref(),
                    needs_approval: p.needs_approval,
                    approved: p.approved,
                })
                .collect(),
            artifacts: &d.artifacts,
            statistics: StatisticsView {
                status: snapshot.stats.to_map(),
                total_size: snapshot.total_size,
            },
            dynamic: d.dynamic,
            filter: d.filter.as_ref(),
            initial_device_count: d.initial_device_count,
            max_devices: d.max_devices,
            force_installation: d.force_installation,
            auto_abort: d.safety.auto_abort.as_ref(),
            pacing: d.safety.pacing.as_ref(),
            device_timeout_seconds: d.safety.device_timeout_secs,
            paused: d.safety.paused,
            halted: d.safety.halted,
            abort_reason: d.safety.abort_reason.as_deref(),
            maintenance_windows: &d.safety.maintenance_windows,
            end: d.safety.end.as_ref(),
            update_control_map: d.safety.update_control_map.as_ref(),
        }
    }
}

/// The Device JSON (a device's record in a deployment).
#[derive(Serialize)]
struct DeviceView<'a> {
    id: &'a str,
    status: DeviceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    substate: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    finished: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_type: Option<&'a str>,
    log: bool,
    attempts: u32,
}

impl<'a> From<&'a DeviceDeploymentRecord> for DeviceView<'a> {
    fn from(r: &'a DeviceDeploymentRecord) -> Self {
        DeviceView {
            id: &r.device_id,
            status: r.status,
            substate: r.substate.as_deref(),
            created: r.created,
            finished: r.finished,
            device_type: r.device_type.as_deref(),
            log: r.log,
            attempts: r.attempts,
        }
    }
}

async fn create(id: Identity, body: NewDeployment, st: AppState) -> ApiResult {
    let d = st.deployments.create(&id.tenant, body).await?;
    Ok(created(format!("{MANAGEMENT_BASE}/deployments/{}", d.id)))
}

/// `POST /deployments/group/{name}`: the group's accepted devices at creation.
async fn create_for_group(
    group: String,
    id: Identity,
    mut body: NewDeployment,
    st: AppState,
) -> ApiResult {
    if !body.devices.is_empty() || body.all_devices || body.is_dynamic() {
        return Err(ApiError::BadRequest(
            "a group deployment takes its devices from the group: leave out devices, all_devices and filters".into(),
        ));
    }
    body.group = Some(group);
    create(id, body, st).await
}

/// `POST /api/management/v2/deployments/deployments`: a dynamic deployment, by the id of a
/// saved filter (`filter_id`) or with a filter given inline (`filter`).
async fn create_dynamic(id: Identity, body: NewDeployment, st: AppState) -> ApiResult {
    if !body.is_dynamic() {
        return Err(ApiError::BadRequest(
            "filter_id (or an inline filter) is required".into(),
        ));
    }
    create(id, body, st).await
}

/// One entry of a device's deployment history.
#[derive(Serialize)]
struct HistoryEntry<'a> {
    id: Uuid,
    deployment: DeploymentView<'a>,
    device: DeviceView<'a>,
}

/// `GET /deployments/devices/{id}`: the deployments a device is or was in, newest first,
/// paged, optionally of some statuses of the device only.
async fn history(device: String, id: Identity, q: String, st: AppState) -> ApiResult {
    let mut paging = Paging::default();
    let mut filter = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if !paging.take(&k, &v)? && k == "status" {
            filter = Some(StatusFilter::parse(&v)?);
        }
    }
    let mut all = st.deployments.device_history(&id.tenant, &device).await?;
    all.retain(|(_, r)| filter.is_none_or(|f| f.keeps(r.status)));
    let total = all.len() as u64;
    let mut page = Vec::new();
    for (d, record) in paging.page_of(all) {
        page.push((st.deployments.get(&id.tenant, d.id).await?, record));
    }
    let entries: Vec<HistoryEntry<'_>> = page
        .iter()
        .map(|(snapshot, record)| HistoryEntry {
            id: snapshot.header.id,
            deployment: DeploymentView::new(snapshot),
            device: DeviceView::from(record),
        })
        .collect();
    let path = format!("{MANAGEMENT_BASE}/deployments/devices/{device}");
    Ok(paging.headers(warp::reply::json(&entries), &path, &q, total))
}

fn parse_query(raw: &str) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        page: 1,
        per_page: 20,
        ..ListQuery::default()
    };
    let bad = |k: &str, v: &str| ApiError::BadRequest(format!("invalid value {v:?} for {k}"));
    let mut paging = Paging::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if paging.take(&k, &v)? {
            continue;
        }
        match k.as_ref() {
            "status" => {
                q.status = Some(
                    serde_json::from_value(serde_json::Value::String(v.to_string()))
                        .map_err(|_| bad(&k, &v))?,
                )
            }
            "search" => q.search = Some(v.into_owned()),
            "created_after" => q.created_after = Some(v.parse().map_err(|_| bad(&k, &v))?),
            "created_before" => q.created_before = Some(v.parse().map_err(|_| bad(&k, &v))?),
            "sort" => {
                q.ascending = match v.to_ascii_lowercase().as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad(&k, &v)),
                }
            }
            _ => {}
        }
    }
    (q.page, q.per_page) = (paging.page, paging.per_page);
    Ok(q)
}

async fn list(id: Identity, raw: String, st: AppState) -> ApiResult {
    let q = parse_query(&raw)?;
    let (page, total) = st.deployments.list(&id.tenant, &q).await?;
    let views: Vec<DeploymentView<'_>> = page.iter().map(DeploymentView::new).collect();
    let paging = Paging {
        page: q.page,
        per_page: q.per_page,
    };
    let path = format!("{MANAGEMENT_BASE}/deployments");
    Ok(paging.headers(warp::reply::json(&views), &path, &raw, total))
}

async fn show(raw: String, id: Identity, st: AppState) -> ApiResult {
    let snapshot = st
        .deployments
        .get(&id.tenant, named_deployment(&raw)?)
        .await?;
    Ok(warp::reply::json(&DeploymentView::new(&snapshot)).into_response())
}

async fn devices(raw: String, id: Identity, st: AppState) -> ApiResult {
    let records = st
        .deployments
        .devices(&id.tenant, named_deployment(&raw)?)
        .await?;
    let views: Vec<DeviceView<'_>> = records.iter().map(DeviceView::from).collect();
    Ok(warp::reply::json(&views).into_response())
}

/// Which devices `GET /deployments/{id}/devices/list?status=` keeps: one status, or one of
/// upstream's groups of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    One(DeviceStatus),
    /// The three `pause_before_*` statuses.
    Paused,
    /// Every status of a device still in the deployment.
    Active,
    /// Every final status.
    Finished,
}

impl StatusFilter {
    fn parse(v: &str) -> ApiResult<Self> {
        Ok(match v {
            "pause" => StatusFilter::Paused,
            "active" => StatusFilter::Active,
            "finished" => StatusFilter::Finished,
            _ => StatusFilter::One(
                serde_json::from_value(serde_json::Value::String(v.to_owned()))
                    .map_err(|_| ApiError::BadRequest(format!("invalid value {v:?} for status")))?,
            ),
        })
    }

    fn keeps(self, s: DeviceStatus) -> bool {
        match self {
            StatusFilter::One(one) => s == one,
            StatusFilter::Paused => matches!(
                s,
                DeviceStatus::PauseBeforeInstalling
                    | DeviceStatus::PauseBeforeCommitting
                    | DeviceStatus::PauseBeforeRebooting
            ),
            StatusFilter::Active => !s.is_terminal(),
            StatusFilter::Finished => s.is_terminal(),
        }
    }
}

/// A deployment's devices a page at a time, optionally of some statuses only; ordered by
/// status, then device id, as upstream orders them.
async fn devices_page(raw: String, id: Identity, q: String, st: AppState) -> ApiResult {
    let deployment = deployment_id(&raw)?;
    let mut paging = Paging::default();
    let mut filter = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if !paging.take(&k, &v)? && k == "status" {
            filter = Some(StatusFilter::parse(&v)?);
        }
    }
    let mut records = st.deployments.devices(&id.tenant, deployment).await?;
    records.retain(|r| filter.is_none_or(|f| f.keeps(r.status)));
    records
        .sort_by(|a, b| (a.status.as_str(), &a.device_id).cmp(&(b.status.as_str(), &b.device_id)));
    let total = records.len() as u64;
    let page = paging.page_of(&records);
    let views: Vec<DeviceView<'_>> = page.into_iter().map(DeviceView::from).collect();
    let path = format!("{MANAGEMENT_BASE}/deployments/{deployment}/devices/list");
    Ok(paging.headers(warp::reply::json(&views), &path, &q, total))
}

/// `POST /deployments/statistics/list`.
#[derive(Debug, Deserialize)]
struct StatisticsListBody {
    #[serde(default)]
    deployment_ids: Vec<String>,
}

/// The statistics of several deployments at once (the UI's list view): those of the ids
/// that name a deployment of the tenant, 404 if none does.
async fn statistics_list(id: Identity, body: StatisticsListBody, st: AppState) -> ApiResult {
    if body.deployment_ids.is_empty() {
        // Upstream answers an empty request with an empty object; scripts may rely on it.
        return Ok(warp::reply::json(&serde_json::json!({})).into_response());
    }
    if body.deployment_ids.len() > MAX_STATISTICS_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_STATISTICS_IDS} deployment ids at once"
        )));
    }
    let ids = body
        .deployment_ids
        .iter()
        .map(|raw| deployment_id(raw))
        .collect::<ApiResult<Vec<Uuid>>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for d in ids {
        match st.deployments.get(&id.tenant, d).await {
            Ok(s) => out.push(serde_json::json!({"id": d, "stats": s.stats.to_map()})),
            Err(engine::EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if out.is_empty() {
        return Err(ApiError::NotFound("deployment not found".into()));
    }
    Ok(warp::reply::json(&out).into_response())
}

async fn device_list(raw: String, id: Identity, st: AppState) -> ApiResult {
    let list = st
        .deployments
        .device_list(&id.tenant, deployment_id(&raw)?)
        .await?;
    Ok(warp::reply::json(&list).into_response())
}

async fn statistics(raw: String, id: Identity, st: AppState) -> ApiResult {
    let s = st
        .deployments
        .get(&id.tenant, named_deployment(&raw)?)
        .await?;
    Ok(warp::reply::json(&s.stats.to_map()).into_response())
}

async fn log(raw: String, device: String, id: Identity, st: AppState) -> ApiResult {
    let messages = st
        .deployments
        .log(&id.tenant, named_deployment(&raw)?, &device)
        .await?;
    let text: String = messages
        .iter()
        .map(|m| format!("{} {}: {}\n", m.timestamp, m.level, m.message))
        .collect();
    Ok(warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8").into_response())
}

/// `PUT /deployments/{id}/status` body.
#[derive(Deserialize)]
pub(crate) struct StatusUpdate {
    status: String,
}

async fn abort(raw: String, id: Identity, body: StatusUpdate, st: AppState) -> ApiResult {
    if body.status != "aborted" {
        return Err(ApiError::BadRequest(format!(
            "status must be \"aborted\", not {:?}",
            body.status
        )));
    }
    st.deployments
        .abort(&id.tenant, deployment_id(&raw)?)
        .await?;
    Ok(no_content())
}

/// `POST /deployments/{id}/pause` and `/resume`.
async fn set_paused(raw: String, id: Identity, paused: bool, st: AppState) -> ApiResult {
    st.deployments
        .set_paused(&id.tenant, deployment_id(&raw)?, paused)
        .await?;
    Ok(no_content())
}

/// `PATCH /deployments/{id}` body: what an operator may change while a deployment runs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentPatch {
    update_control_map: storage::UpdateControlMap,
}

/// `PATCH /deployments/{id}`: replace the update control map (devices that wait at a paused
/// point go on once the map they refresh says `continue`).
async fn patch(raw: String, id: Identity, body: DeploymentPatch, st: AppState) -> ApiResult {
    st.deployments
        .set_control_map(&id.tenant, deployment_id(&raw)?, body.update_control_map)
        .await?;
    Ok(no_content())
}

/// `POST /deployments/{id}/phases/{n}/approve`, `n` counting from 1.
async fn approve(raw: String, n: String, id: Identity, st: AppState) -> ApiResult {
    let number = n.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::BadRequest(format!("phase {n:?} is not a phase number (1, 2, …)"))
    })?;
    st.deployments
        .approve_phase(&id.tenant, deployment_id(&raw)?, number)
        .await?;
    Ok(no_content())
}

async fn decommission(device: String, id: Identity, st: AppState) -> ApiResult {
    st.deployments.decommission(&id.tenant, &device).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_values_are_checked() {
        assert!(parse_query("page=0").is_err());
        assert!(parse_query("per_page=501").is_err());
        assert!(parse_query("per_page=x").is_err());
        assert!(parse_query("status=bogus").is_err());
        let q = parse_query("page=2&per_page=5&status=inprogress").unwrap();
        assert_eq!(
            (q.page, q.per_page, q.status),
            (2, 5, Some(DeploymentStatus::Inprogress))
        );
    }
}
