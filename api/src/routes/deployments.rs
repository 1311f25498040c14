//! Deployment routes of the management API: create, list, show, devices, device list,
//! statistics, device logs, abort, decommission.

use engine::{ListQuery, NewDeployment, Snapshot};
use serde::{Deserialize, Serialize};
use storage::{DeploymentRecord, DeploymentStatus, DeviceDeploymentRecord, DeviceStatus};
use time::OffsetDateTime;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::{created, json_body, management, no_content, MANAGEMENT_BASE};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::state::AppState;

/// Largest `per_page`.
const MAX_PER_PAGE: u64 = 500;

/// The deployment routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let limit = st_limit(&st);
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
    let decommission = deployments
        .clone()
        .and(warp::path!("devices" / String))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|dev, id, st| async move { respond(decommission(dev, id, st).await) });
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
        .and(warp::path!(String / "devices" / String / "log"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|d, dev, id, st| async move { respond(log(d, dev, id, st).await) });
    let abort = deployments
        .clone()
        .and(warp::path!(String / "status"))
        .and(warp::put())
        .and(auth::user())
        .and(json_body::<StatusUpdate>(64 * 1024))
        .and(st)
        .then(|d, id, body, st| async move { respond(abort(d, id, body, st).await) });
    create
        .or(list)
        .unify()
        .or(decommission)
        .unify()
        .or(show)
        .unify()
        .or(devices)
        .unify()
        .or(device_list)
        .unify()
        .or(statistics)
        .unify()
        .or(log)
        .unify()
        .or(abort)
        .unify()
        .boxed()
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
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and_then(|st: AppState, ct, body| async move {
            super::parse_json::<NewDeployment, _, _>(ct, body, st.settings.max_json_body)
                .await
                .map_err(warp::reject::custom)
        })
        .boxed()
}

fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn deployment_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("deployment id {raw:?} is not a UUID")))
}

/// The Deployment JSON.
#[derive(Serialize)]
struct DeploymentView<'a> {
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
    phases: Vec<PhaseView>,
    artifacts: &'a [Uuid],
    #[serde(skip_serializing_if = "Option::is_none")]
    statistics: Option<std::collections::BTreeMap<&'static str, u64>>,
}

#[derive(Serialize)]
struct PhaseView {
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    start_ts: OffsetDateTime,
    device_count: u64,
}

impl<'a> DeploymentView<'a> {
    fn new(d: &'a DeploymentRecord) -> Self {
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
                })
                .collect(),
            artifacts: &d.artifacts,
            statistics: None,
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

fn parse_query(raw: &str) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        page: 1,
        per_page: 20,
        ..ListQuery::default()
    };
    let bad = |k: &str, v: &str| ApiError::BadRequest(format!("invalid value {v:?} for {k}"));
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "page" => {
                q.page = v
                    .parse()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad(&k, &v))?
            }
            "per_page" => {
                q.per_page = v
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(|| bad(&k, &v))?
            }
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
                q.ascending = match v.as_ref() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad(&k, &v)),
                }
            }
            _ => {}
        }
    }
    Ok(q)
}

/// `Link` header with `first`, `prev` and `next` relations.
fn link_header(raw: &str, q: &ListQuery, total: u64) -> String {
    let others: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .filter(|(k, _)| k != "page" && k != "per_page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let url = |page: u64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("page", &page.to_string());
        s.append_pair("per_page", &q.per_page.to_string());
        for (k, v) in &others {
            s.append_pair(k, v);
        }
        format!("<{MANAGEMENT_BASE}/deployments?{}>", s.finish())
    };
    let mut links = vec![format!("{}; rel=\"first\"", url(1))];
    if q.page > 1 {
        links.push(format!("{}; rel=\"prev\"", url(q.page - 1)));
    }
    if q.page.saturating_mul(q.per_page) < total {
        links.push(format!("{}; rel=\"next\"", url(q.page + 1)));
    }
    links.join(", ")
}

async fn list(id: Identity, raw: String, st: AppState) -> ApiResult {
    let q = parse_query(&raw)?;
    let (page, total) = st.deployments.list(&id.tenant, &q).await?;
    let views: Vec<DeploymentView<'_>> = page.iter().map(DeploymentView::new).collect();
    let reply = warp::reply::json(&views);
    let reply = warp::reply::with_header(reply, "link", link_header(&raw, &q, total));
    Ok(warp::reply::with_header(reply, "x-total-count", total.to_string()).into_response())
}

async fn show(raw: String, id: Identity, st: AppState) -> ApiResult {
    let Snapshot { header, stats } = st.deployments.get(&id.tenant, deployment_id(&raw)?).await?;
    let mut view = DeploymentView::new(&header);
    view.statistics = Some(stats.to_map());
    Ok(warp::reply::json(&view).into_response())
}

async fn devices(raw: String, id: Identity, st: AppState) -> ApiResult {
    let records = st
        .deployments
        .devices(&id.tenant, deployment_id(&raw)?)
        .await?;
    let views: Vec<DeviceView<'_>> = records.iter().map(DeviceView::from).collect();
    Ok(warp::reply::json(&views).into_response())
}

async fn device_list(raw: String, id: Identity, st: AppState) -> ApiResult {
    let list = st
        .deployments
        .device_list(&id.tenant, deployment_id(&raw)?)
        .await?;
    Ok(warp::reply::json(&list).into_response())
}

async fn statistics(raw: String, id: Identity, st: AppState) -> ApiResult {
    let s = st.deployments.get(&id.tenant, deployment_id(&raw)?).await?;
    Ok(warp::reply::json(&s.stats.to_map()).into_response())
}

async fn log(raw: String, device: String, id: Identity, st: AppState) -> ApiResult {
    let messages = st
        .deployments
        .log(&id.tenant, deployment_id(&raw)?, &device)
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

    #[test]
    fn link_header_has_first_prev_and_next() {
        let q = parse_query("page=2&per_page=5&search=x").unwrap();
        let h = link_header("page=2&per_page=5&search=x", &q, 20);
        assert!(
            h.contains("page=1&per_page=5&search=x>; rel=\"first\""),
            "{h}"
        );
        assert!(h.contains("rel=\"prev\""));
        assert!(h.contains("page=3&per_page=5&search=x>; rel=\"next\""));
        let last = parse_query("page=4&per_page=5").unwrap();
        assert!(!link_header("page=4&per_page=5", &last, 20).contains("next"));
    }
}
