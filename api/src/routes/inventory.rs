//! Inventory routes of the management API, as Mender's inventory service serves them:
//! - v1 (`/api/management/v1/inventory`): devices with their attributes (paged, filtered by
//!   attribute values and group, sorted), one device, removing a device's attributes, a
//!   device's group (get, set, leave), the groups and a group's devices;
//! - v2 (`/api/management/v2/inventory`): search by filter terms, the filterable
//!   attributes, and saved filters (create, list, show, delete, search by one).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use engine::inventory::{attributes, DeviceInventory};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::{FilterTerm, SavedFilter};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::paging::{raw_query, Paging};
use super::{created, json_body, no_content, Decoded};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::state::AppState;

/// Base path of the v1 inventory API.
pub const INVENTORY_V1: &str = "/api/management/v1/inventory";
/// Base path of the v2 inventory API.
pub const INVENTORY_V2: &str = "/api/management/v2/inventory";
/// Largest body of a search or a saved filter.
const MAX_BODY: u64 = 256 * 1024;

/// The inventory routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let v1 = warp::path!("api" / "management" / "v1" / "inventory" / ..).boxed();
    let v2 = warp::path!("api" / "management" / "v2" / "inventory" / ..).boxed();
    let devices = v1
        .clone()
        .and(warp::path!("devices"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|id, q, st| async move { respond(devices(id, q, st).await) });
    let device = v1
        .clone()
        .and(warp::path!("devices" / Decoded))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(device(dev, id, st).await) });
    let remove = v1
        .clone()
        .and(warp::path!("devices" / Decoded))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(remove(dev, id, st).await) });
    let group = v1
        .clone()
        .and(warp::path!("devices" / Decoded / "group"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), id, st| async move { respond(group(dev, id, st).await) });
    let set_group = v1
        .clone()
        .and(warp::path!("devices" / Decoded / "group"))
        .and(warp::put())
        .and(auth::user())
        .and(json_body::<GroupBody>(MAX_BODY))
        .and(st.clone())
        .then(
            |Decoded(dev), id, body, st| async move { respond(set_group(dev, id, body, st).await) },
        );
    let leave_group = v1
        .clone()
        .and(warp::path!("devices" / Decoded / "group" / Decoded))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|Decoded(dev), Decoded(g), id, st| async move {
            respond(leave_group(dev, g, id, st).await)
        });
    let groups = v1
        .clone()
        .and(warp::path!("groups"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|id, st| async move { respond(groups(id, st).await) });
    let group_devices = v1
        .and(warp::path!("groups" / Decoded / "devices"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|Decoded(g), id, q, st| async move { respond(group_devices(g, id, q, st).await) });
    let search = v2
        .clone()
        .and(warp::path!("filters" / "search"))
        .and(warp::post())
        .and(auth::user())
        .and(json_body::<SearchBody>(MAX_BODY))
        .and(st.clone())
        .then(|id, body, st| async move { respond(search(id, body, st).await) });
    let filter_attributes = v2
        .clone()
        .and(warp::path!("filters" / "attributes"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|id, st| async move { respond(filter_attributes(id, st).await) });
    let create_filter = v2
        .clone()
        .and(warp::path!("filters"))
        .and(warp::post())
        .and(auth::user())
        .and(json_body::<NewFilter>(MAX_BODY))
        .and(st.clone())
        .then(|id, body, st| async move { respond(create_filter(id, body, st).await) });
    let filters = v2
        .clone()
        .and(warp::path!("filters"))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|id, st| async move { respond(filters(id, st).await) });
    let show_filter = v2
        .clone()
        .and(warp::path!("filters" / String))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|f, id, st| async move { respond(show_filter(f, id, st).await) });
    let delete_filter = v2
        .clone()
        .and(warp::path!("filters" / String))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|f, id, st| async move { respond(delete_filter(f, id, st).await) });
    let filter_search = v2
        .and(warp::path!("filters" / String / "search"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st)
        .then(|f, id, q, st| async move { respond(filter_search(f, id, q, st).await) });
    super::any_of([
        devices.boxed(),
        device.boxed(),
        remove.boxed(),
        group.boxed(),
        set_group.boxed(),
        leave_group.boxed(),
        groups.boxed(),
        group_devices.boxed(),
        search.boxed(),
        filter_attributes.boxed(),
        create_filter.boxed(),
        filters.boxed(),
        show_filter.boxed(),
        delete_filter.boxed(),
        filter_search.boxed(),
    ])
}

/// A device as the inventory API shows it.
#[derive(Serialize)]
struct DeviceView<'a> {
    id: &'a str,
    attributes: Vec<&'a attributes::Attribute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_ts: Option<&'a str>,
}

impl<'a> DeviceView<'a> {
    /// The device with the attributes `select` keeps.
    fn new(d: &'a DeviceInventory, select: &[Selected]) -> Self {
        DeviceView {
            id: &d.id,
            attributes: d
                .attributes
                .iter()
                .filter(|a| {
                    select.is_empty()
                        || select
                            .iter()
                            .any(|s| s.scope == a.scope && s.attribute == a.name)
                })
                .collect(),
            updated_ts: d.updated_ts.as_deref(),
        }
    }
}

/// One page of `devices`, with the paging headers for `path` requested with `raw`.
fn device_page(
    devices: &[DeviceInventory],
    paging: Paging,
    select: &[Selected],
    path: &str,
    raw: &str,
) -> Response {
    let page: Vec<DeviceView<'_>> = paging
        .page_of(devices)
        .into_iter()
        .map(|d| DeviceView::new(d, select))
        .collect();
    paging.headers(warp::reply::json(&page), path, raw, devices.len() as u64)
}

/// One sort key: an attribute (of a scope, or of any) and a direction.
struct SortKey {
    scope: Option<String>,
    attribute: String,
    descending: bool,
}

/// Sort devices by `keys`, then by id; devices without the attribute last.
fn sort_devices(devices: &mut [DeviceInventory], keys: &[SortKey]) {
    let value = |d: &DeviceInventory, k: &SortKey| -> Option<Value> {
        d.attributes
            .iter()
            .find(|a| a.name == k.attribute && k.scope.as_ref().is_none_or(|s| *s == a.scope))
            .map(|a| a.value.clone())
    };
    devices.sort_by(|a, b| {
        for k in keys {
            let order = match (value(a, k), value(b, k)) {
                (Some(x), Some(y)) => {
                    let o = compare_values(&x, &y);
                    if k.descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        a.id.cmp(&b.id)
    });
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// `GET /v1/inventory/devices` query: paging, `sort=attr[:asc|:desc],…`, `has_group`,
/// `group`, and any other `name=value` as an equality on the attribute of that name.
struct DevicesQuery {
    paging: Paging,
    sort: Vec<SortKey>,
    has_group: Option<bool>,
    group: Option<String>,
    equal: Vec<(String, String)>,
}

fn parse_devices_query(raw: &str) -> ApiResult<DevicesQuery> {
    let mut q = DevicesQuery {
        paging: Paging::default(),
        sort: Vec::new(),
        has_group: None,
        group: None,
        equal: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if q.paging.take(&k, &v)? {
            continue;
        }
        match k.as_ref() {
            "sort" => q.sort = parse_sort(&v)?,
            "has_group" => {
                q.has_group = Some(v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid value {v:?} for has_group"))
                })?)
            }
            "group" => q.group = Some(v.into_owned()),
            _ => q.equal.push((k.into_owned(), v.into_owned())),
        }
    }
    Ok(q)
}

fn parse_sort(v: &str) -> ApiResult<Vec<SortKey>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (attribute, dir) = s.rsplit_once(':').unwrap_or((s, "desc"));
            let descending = match dir {
                "asc" => false,
                "desc" => true,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid sort direction {dir:?}: use asc or desc"
                    )))
                }
            };
            Ok(SortKey {
                scope: None,
                attribute: attribute.to_owned(),
                descending,
            })
        })
        .collect()
}

/// Whether a device has an attribute `name` equal to `value` (a number or a string).
fn has_value(d: &DeviceInventory, name: &str, value: &str) -> bool {
    d.attributes.iter().filter(|a| a.name == name).any(|a| {
        let one = |v: &Value| match v {
            Value::String(s) => s == value,
            Value::Number(n) => value.parse::<f64>().ok() == n.as_f64(),
            _ => false,
        };
        match &a.value {
            Value::Array(items) => items.iter().any(one),
            v => one(v),
        }
    })
}

fn group_of(d: &DeviceInventory) -> Option<&str> {
    d.attributes
        .iter()
        .find(|a| a.scope == attributes::SYSTEM && a.name == attributes::GROUP)
        .and_then(|a| a.value.as_str())
}

async fn devices(id: Identity, raw: String, st: AppState) -> ApiResult {
    let q = parse_devices_query(&raw)?;
    let mut all = st.inventory.search(&id.tenant, &[]).await?;
    all.retain(|d| {
        q.has_group.is_none_or(|h| group_of(d).is_some() == h)
            && q.group.as_deref().is_none_or(|g| group_of(d) == Some(g))
            && q.equal.iter().all(|(k, v)| has_value(d, k, v))
    });
    sort_devices(&mut all, &q.sort);
    let path = format!("{INVENTORY_V1}/devices");
    Ok(device_page(&all, q.paging, &[], &path, &raw))
}

async fn device(device: String, id: Identity, st: AppState) -> ApiResult {
    let d = st.inventory.device(&id.tenant, &device).await?;
    Ok(warp::reply::json(&DeviceView::new(&d, &[])).into_response())
}

async fn remove(device: String, id: Identity, st: AppState) -> ApiResult {
    st.inventory.remove(&id.tenant, &device).await?;
    Ok(no_content())
}

/// `{"group": name}`; `null` on reads of a device in no group.
#[derive(Serialize, Deserialize)]
struct GroupBody {
    group: Option<String>,
}

async fn group(device: String, id: Identity, st: AppState) -> ApiResult {
    let d = st.inventory.device(&id.tenant, &device).await?;
    let body = GroupBody {
        group: group_of(&d).map(str::to_owned),
    };
    Ok(warp::reply::json(&body).into_response())
}

async fn set_group(device: String, id: Identity, body: GroupBody, st: AppState) -> ApiResult {
    let group = body
        .group
        .ok_or_else(|| ApiError::BadRequest("group is required".into()))?;
    st.inventory.set_group(&id.tenant, &device, &group).await?;
    Ok(no_content())
}

async fn leave_group(device: String, group: String, id: Identity, st: AppState) -> ApiResult {
    st.inventory
        .leave_group(&id.tenant, &device, &group)
        .await?;
    Ok(no_content())
}

async fn groups(id: Identity, st: AppState) -> ApiResult {
    let groups = st.inventory.groups(&id.tenant).await?;
    Ok(warp::reply::json(&groups).into_response())
}

/// The ids of a group's devices, a page at a time; 404 for a group without devices.
async fn group_devices(group: String, id: Identity, raw: String, st: AppState) -> ApiResult {
    let mut paging = Paging::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        paging.take(&k, &v)?;
    }
    let all = st.inventory.search(&id.tenant, &[]).await?;
    let ids: Vec<&str> = all
        .iter()
        .filter(|d| group_of(d) == Some(group.as_str()))
        .map(|d| d.id.as_str())
        .collect();
    if ids.is_empty() {
        return Err(ApiError::NotFound(format!("group {group} not found")));
    }
    let path = format!("{INVENTORY_V1}/groups/{group}/devices");
    let page = paging.page_of(&ids);
    Ok(paging.headers(warp::reply::json(&page), &path, &raw, ids.len() as u64))
}

/// An attribute to return from a search.
#[derive(Deserialize)]
struct Selected {
    scope: String,
    attribute: String,
}

/// A sort criterion of a search.
#[derive(Deserialize)]
struct SortCriterion {
    scope: String,
    attribute: String,
    order: SortOrder,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SortOrder {
    Asc,
    Desc,
}

/// `POST /v2/inventory/filters/search`.
#[derive(Deserialize)]
struct SearchBody {
    #[serde(default)]
    page: Option<u64>,
    #[serde(default)]
    per_page: Option<u64>,
    #[serde(default)]
    filters: Vec<FilterTerm>,
    #[serde(default)]
    sort: Vec<SortCriterion>,
    #[serde(default)]
    attributes: Vec<Selected>,
}

async fn search(id: Identity, body: SearchBody, st: AppState) -> ApiResult {
    let mut paging = Paging::default();
    for (k, v) in [("page", body.page), ("per_page", body.per_page)] {
        if let Some(v) = v {
            paging.take(k, &v.to_string())?;
        }
    }
    let mut found = st.inventory.search(&id.tenant, &body.filters).await?;
    let keys: Vec<SortKey> = body
        .sort
        .into_iter()
        .map(|c| SortKey {
            scope: Some(c.scope),
            attribute: c.attribute,
            descending: c.order == SortOrder::Desc,
        })
        .collect();
    sort_devices(&mut found, &keys);
    let path = format!("{INVENTORY_V2}/filters/search");
    Ok(device_page(&found, paging, &body.attributes, &path, ""))
}

/// One filterable attribute and on how many devices it is.
#[derive(Serialize)]
struct FilterAttribute<'a> {
    name: &'a str,
    scope: &'a str,
    count: u64,
}

/// Attributes devices have, most common first, then by scope and name.
async fn filter_attributes(id: Identity, st: AppState) -> ApiResult {
    let all = st.inventory.search(&id.tenant, &[]).await?;
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in all.iter().flat_map(|d| &d.attributes) {
        *counts.entry((&a.scope, &a.name)).or_default() += 1;
    }
    let mut out: Vec<FilterAttribute<'_>> = counts
        .into_iter()
        .map(|((scope, name), count)| FilterAttribute { name, scope, count })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then((a.scope, a.name).cmp(&(b.scope, b.name)))
    });
    Ok(warp::reply::json(&out).into_response())
}

/// `POST /v2/inventory/filters`.
#[derive(Deserialize)]
struct NewFilter {
    name: String,
    terms: Vec<FilterTerm>,
}

/// A saved filter as the API shows it.
#[derive(Serialize)]
struct FilterView<'a> {
    id: Uuid,
    name: &'a str,
    terms: &'a [FilterTerm],
}

impl<'a> From<&'a SavedFilter> for FilterView<'a> {
    fn from(f: &'a SavedFilter) -> Self {
        FilterView {
            id: f.id,
            name: &f.name,
            terms: &f.terms,
        }
    }
}

async fn create_filter(id: Identity, body: NewFilter, st: AppState) -> ApiResult {
    let saved = st
        .inventory
        .create_filter(&id.tenant, body.name, body.terms)
        .await?;
    Ok(created(format!("{INVENTORY_V2}/filters/{}", saved.id)))
}

async fn filters(id: Identity, st: AppState) -> ApiResult {
    let all = st.inventory.filters(&id.tenant).await?;
    let views: Vec<FilterView<'_>> = all.iter().map(FilterView::from).collect();
    Ok(warp::reply::json(&views).into_response())
}

fn filter_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("filter id {raw:?} is not a UUID")))
}

async fn show_filter(raw: String, id: Identity, st: AppState) -> ApiResult {
    let f = st.inventory.filter(&id.tenant, filter_id(&raw)?).await?;
    Ok(warp::reply::json(&FilterView::from(&f)).into_response())
}

async fn delete_filter(raw: String, id: Identity, st: AppState) -> ApiResult {
    st.inventory
        .delete_filter(&id.tenant, filter_id(&raw)?)
        .await?;
    Ok(no_content())
}

/// The devices a saved filter matches now, a page at a time.
async fn filter_search(raw_id: String, id: Identity, raw: String, st: AppState) -> ApiResult {
    let f = st.inventory.filter(&id.tenant, filter_id(&raw_id)?).await?;
    let mut paging = Paging::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        paging.take(&k, &v)?;
    }
    let found = st.inventory.search(&id.tenant, &f.terms).await?;
    let path = format!("{INVENTORY_V2}/filters/{}/search", f.id);
    Ok(device_page(&found, paging, &[], &path, &raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_parameters_are_checked() {
        let keys = parse_sort("a:asc, b").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(!keys[0].descending && keys[1].descending);
        assert!(parse_sort("a:sideways").is_err());
    }
}
