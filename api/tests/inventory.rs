//! The inventory management API (v1 devices and groups, v2 search and saved filters), group
//! and dynamic deployments, a device's deployment history and `force_installation`,
//! against the real binary. Devices report inventory with their own tokens, as
//! mender-client does.

mod common;

use common::fleet::{self, Fleet, DEVICE_TYPE, RELEASE};
use common::{assert_error, json_ok, json_with, no_body, send, Server};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const V1: &str = "/api/management/v1/inventory";
const V2: &str = "/api/management/v2/inventory";
const REPORT: &str = "/api/devices/v1/inventory/device/attributes";
const DYNAMIC: &str = "/api/management/v2/deployments/deployments";

/// A management request to any path, as a user of `tenant`.
async fn call(
    server: &Server,
    tenant: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = server
        .http()
        .request(method, server.url(path))
        .bearer_auth(server.user_token(tenant));
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

/// `device` of `tenant` reports `attrs` (`PATCH`), asserting 200.
async fn report(server: &Server, tenant: &str, device: &str, attrs: Value) {
    let req = server
        .http()
        .patch(server.url(REPORT))
        .bearer_auth(server.device_token_for(tenant, device))
        .json(&attrs);
    let resp = send(req).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

fn attr(name: &str, value: Value) -> Value {
    json!({"name": name, "value": value})
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|d| d["id"].as_str().or(d.as_str()).expect("an id"))
        .collect()
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn set_group(server: &Server, device: &str, group: &str) -> Response {
    let path = format!("{V1}/devices/{device}/group");
    call(
        server,
        "acme",
        Method::PUT,
        &path,
        Some(json!({ "group": group })),
    )
    .await
}

#[tokio::test]
async fn devices_attributes_and_groups_are_listed_filtered_and_paged() {
    let server = Server::start().await;
    for (id, kind, mem) in [
        ("d1", "rpi4", 512),
        ("d2", "rpi4", 2048),
        ("d3", "qemu", 1024),
    ] {
        report(
            &server,
            "acme",
            id,
            json!([attr("device_type", json!(kind)), attr("mem", json!(mem))]),
        )
        .await;
    }
    report(
        &server,
        "globex",
        "other",
        json!([attr("device_type", json!("rpi4"))]),
    )
    .await;

    // All of the tenant's devices, with scoped attributes and paging headers.
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices?per_page=2"),
        None,
    )
    .await;
    assert_eq!(header(&resp, "x-total-count"), "3");
    assert!(header(&resp, "link").contains("rel=\"next\""));
    let page = json_ok(resp).await;
    assert_eq!(ids(&page), ["d1", "d2"]);
    let d1 = &page[0];
    assert!(d1["updated_ts"].is_string(), "{d1}");
    let kind = d1["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "device_type")
        .unwrap();
    assert_eq!(kind["scope"], "inventory");
    assert_eq!(kind["value"], "rpi4");

    // Attribute equality, sorting, one device, unknown device.
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices?device_type=rpi4&sort=mem:desc"),
        None,
    )
    .await;
    assert_eq!(ids(&json_ok(resp).await), ["d2", "d1"]);
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/d3"),
        None,
    )
    .await;
    assert_eq!(json_ok(resp).await["id"], "d3");
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/nobody"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices?sort=mem:sideways"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // Groups: set (moving), read, list, members, leave; bad names and unknown devices.
    no_body(
        set_group(&server, "d1", "canary").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    no_body(
        set_group(&server, "d2", "prod").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    no_body(
        set_group(&server, "d2", "canary").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_error(
        set_group(&server, "d3", "bad name!").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        set_group(&server, "nobody", "canary").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/d2/group"),
        None,
    )
    .await;
    assert_eq!(json_ok(resp).await, json!({"group": "canary"}));
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/d3/group"),
        None,
    )
    .await;
    assert_eq!(json_ok(resp).await, json!({"group": null}));
    let resp = call(&server, "acme", Method::GET, &format!("{V1}/groups"), None).await;
    assert_eq!(json_ok(resp).await, json!(["canary"]));
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/groups/canary/devices"),
        None,
    )
    .await;
    assert_eq!(header(&resp, "x-total-count"), "2");
    assert_eq!(json_ok(resp).await, json!(["d1", "d2"]));
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices?has_group=false"),
        None,
    )
    .await;
    assert_eq!(ids(&json_ok(resp).await), ["d3"]);
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices?group=canary&per_page=1&page=2"),
        None,
    )
    .await;
    assert_eq!(ids(&json_ok(resp).await), ["d2"]);

    // A device's own report keeps its group and cannot set one.
    let sneaky =
        json!([{"name": "group", "scope": "system", "value": "prod"}, attr("mem", json!(4096))]);
    report(&server, "acme", "d1", sneaky).await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/d1/group"),
        None,
    )
    .await;
    assert_eq!(json_ok(resp).await, json!({"group": "canary"}));

    let path = format!("{V1}/devices/d1/group/prod");
    assert_error(
        call(&server, "acme", Method::DELETE, &path, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let path = format!("{V1}/devices/d1/group/canary");
    no_body(
        call(&server, "acme", Method::DELETE, &path, None).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/groups/canary/devices"),
        None,
    )
    .await;
    assert_eq!(json_ok(resp).await, json!(["d2"]));
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/groups/prod/devices"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    // Removing a device's inventory; the other tenant never saw any of it.
    no_body(
        call(
            &server,
            "acme",
            Method::DELETE,
            &format!("{V1}/devices/d3"),
            None,
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V1}/devices/d3"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = call(
        &server,
        "globex",
        Method::GET,
        &format!("{V1}/devices"),
        None,
    )
    .await;
    assert_eq!(ids(&json_ok(resp).await), ["other"]);
    let anonymous = send(server.http().get(server.url(&format!("{V1}/devices")))).await;
    assert_error(anonymous, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn search_and_saved_filters_use_every_operator() {
    let server = Server::start().await;
    for (id, kind, mem) in [
        ("d1", "rpi4", 512),
        ("d2", "rpi4", 2048),
        ("d3", "qemu", 1024),
    ] {
        report(
            &server,
            "acme",
            id,
            json!([attr("device_type", json!(kind)), attr("mem", json!(mem))]),
        )
        .await;
    }
    report(
        &server,
        "acme",
        "d4",
        json!([attr("ports", json!(["22", "80"]))]),
    )
    .await;
    let term = |attribute: &str, op: &str, value: Value| json!({"scope": "inventory", "attribute": attribute, "type": op, "value": value});
    let search = |filters: Vec<Value>| {
        let server = &server;
        async move {
            let body = json!({"filters": filters});
            let resp = call(
                server,
                "acme",
                Method::POST,
                &format!("{V2}/filters/search"),
                Some(body),
            )
            .await;
            let list = json_ok(resp).await;
            ids(&list)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search(vec![term("device_type", "$eq", json!("rpi4"))]).await,
        ["d1", "d2"]
    );
    assert_eq!(
        search(vec![term("device_type", "$ne", json!("rpi4"))]).await,
        ["d3", "d4"]
    );
    assert_eq!(
        search(vec![term("mem", "$gt", json!(512))]).await,
        ["d2", "d3"]
    );
    assert_eq!(
        search(vec![
            term("mem", "$gte", json!(1024)),
            term("mem", "$lt", json!(2048))
        ])
        .await,
        ["d3"]
    );
    assert_eq!(search(vec![term("mem", "$lte", json!(512))]).await, ["d1"]);
    assert_eq!(
        search(vec![term("device_type", "$in", json!(["qemu", "x"]))]).await,
        ["d3"]
    );
    assert_eq!(
        search(vec![term("device_type", "$nin", json!(["qemu"]))]).await,
        ["d1", "d2", "d4"]
    );
    assert_eq!(
        search(vec![term("ports", "$exists", json!(true))]).await,
        ["d4"]
    );
    assert_eq!(
        search(vec![term("ports", "$eq", json!("80"))]).await,
        ["d4"]
    );
    let body = json!({"filters": [term("mem", "$in", json!("not an array"))]});
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters/search"),
        Some(body),
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let body = json!({"filters": [term("mem", "$regex", json!("x"))]});
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters/search"),
        Some(body),
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let body = json!({"page": 2, "per_page": 1, "sort": [{"scope": "inventory", "attribute": "mem", "order": "desc"}]});
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters/search"),
        Some(body),
    )
    .await;
    assert_eq!(header(&resp, "x-total-count"), "4");
    assert_eq!(ids(&json_ok(resp).await), ["d3"]);

    // Saved filters: create (Location), duplicate name, list, show, search by, delete.
    let body = json!({"name": "big", "terms": [term("mem", "$gte", json!(1024))]});
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = header(&resp, "location");
    let id = location
        .strip_prefix(&format!("{V2}/filters/"))
        .expect("Location")
        .to_owned();
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters"),
        Some(body),
    )
    .await;
    assert_error(resp, StatusCode::CONFLICT).await;
    let resp = call(
        &server,
        "acme",
        Method::POST,
        &format!("{V2}/filters"),
        Some(json!({"name": "empty", "terms": []})),
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let resp = call(&server, "acme", Method::GET, &format!("{V2}/filters"), None).await;
    let list = json_ok(resp).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["terms"][0]["type"], "$gte");
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V2}/filters/{id}/search"),
        None,
    )
    .await;
    assert_eq!(ids(&json_ok(resp).await), ["d2", "d3"]);
    let resp = call(
        &server,
        "globex",
        Method::GET,
        &format!("{V2}/filters/{id}"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V2}/filters/not-a-uuid"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    no_body(
        call(
            &server,
            "acme",
            Method::DELETE,
            &format!("{V2}/filters/{id}"),
            None,
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V2}/filters/{id}"),
        None,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = call(
        &server,
        "acme",
        Method::GET,
        &format!("{V2}/filters/attributes"),
        None,
    )
    .await;
    let attrs = json_ok(resp).await;
    let first = &attrs[0];
    assert_eq!(
        (first["scope"].as_str(), first["count"].as_u64()),
        (Some("system"), Some(4)),
        "{attrs}"
    );
}

/// A fleet whose devices `ids` reported the release's device type.
async fn fleet_with(ids: &[&str]) -> Fleet {
    let f = Fleet::start("acme").await;
    for id in ids {
        report(
            &f.server,
            "acme",
            id,
            json!([attr("device_type", json!(DEVICE_TYPE))]),
        )
        .await;
    }
    f
}

#[tokio::test]
async fn a_group_deployment_takes_the_group_members_at_creation_and_is_not_created_twice() {
    let f = fleet_with(&["g1", "g2", "g3"]).await;
    for d in ["g1", "g2"] {
        no_body(
            set_group(&f.server, d, "canary").await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    let body = json!({"name": "canary rollout", "artifact_name": RELEASE});
    let created = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{}/deployments/group/canary", common::MANAGEMENT),
        Some(body.clone()),
    )
    .await;
    let id = fleet::deployment_id(created).await;
    let listed = json_ok(
        f.user()
            .get(&format!("/deployments/{id}/device_list"))
            .await,
    )
    .await;
    assert_eq!(listed, json!(["g1", "g2"]));
    // The same request again while it runs: 409; with another name: 201.
    let again = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{}/deployments/group/canary", common::MANAGEMENT),
        Some(body.clone()),
    )
    .await;
    assert_error(again, StatusCode::CONFLICT).await;
    // A device joining the group later is not part of it (a group deployment is static).
    no_body(
        set_group(&f.server, "g3", "canary").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(f.device("g3").check_in().await, None);
    assert_eq!(f.device("g1").check_in().await, Some(id.clone()));

    // The same devices as a list: the contract's POST /deployments has no 409.
    let same = json!({"name": "canary rollout", "artifact_name": RELEASE, "devices": ["g1", "g2"]});
    fleet::deployment_id(fleet::create(&f.user(), &same).await).await;
    let unknown = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{}/deployments/group/nobody", common::MANAGEMENT),
        Some(json!({"name": "x", "artifact_name": RELEASE})),
    )
    .await;
    assert_error(unknown, StatusCode::BAD_REQUEST).await;
    let mixed = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{}/deployments/group/canary", common::MANAGEMENT),
        Some(json!({"name": "x", "artifact_name": RELEASE, "devices": ["g1"]})),
    )
    .await;
    assert_error(mixed, StatusCode::BAD_REQUEST).await;

    // After an abort the identical request is new again.
    let abort = f
        .user()
        .put_json(
            &format!("/deployments/{id}/status"),
            &json!({"status": "aborted"}),
        )
        .await;
    no_body(abort, StatusCode::NO_CONTENT).await;
    let body = json!({"name": "canary rollout", "artifact_name": RELEASE});
    let created = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{}/deployments/group/canary", common::MANAGEMENT),
        Some(body),
    )
    .await;
    let third = fleet::deployment_id(created).await;
    let listed = json_ok(
        f.user()
            .get(&format!("/deployments/{third}/device_list"))
            .await,
    )
    .await;
    assert_eq!(listed, json!(["g1", "g2", "g3"]));
}

fn rpi_filter() -> Value {
    json!({"name": "rpi", "terms": [{"scope": "inventory", "attribute": "model", "type": "$eq", "value": "rpi4"}]})
}

#[tokio::test]
async fn a_dynamic_deployment_takes_devices_that_match_later_through_its_phases_until_max_devices()
{
    let f = fleet_with(&["early", "late", "never", "extra"]).await;
    report(
        &f.server,
        "acme",
        "early",
        json!([attr("model", json!("rpi4"))]),
    )
    .await;
    let resp = call(
        &f.server,
        "acme",
        Method::POST,
        &format!("{V2}/filters"),
        Some(rpi_filter()),
    )
    .await;
    let filter_id = header(&resp, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Half of max_devices in the first phase, the rest two seconds later.
    let second = (time::OffsetDateTime::now_utc() + time::Duration::seconds(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({
        "name": "dynamic", "artifact_name": RELEASE, "filter_id": filter_id, "max_devices": 2,
        "phases": [{"batch_size": 50}, {"start_ts": second}],
    });
    let resp = call(&f.server, "acme", Method::POST, DYNAMIC, Some(body)).await;
    let id = fleet::deployment_id(resp).await;
    let d = f.deployment(&id).await;
    assert_eq!(
        (
            d["dynamic"].as_bool(),
            d["initial_device_count"].as_u64(),
            d["max_devices"].as_u64()
        ),
        (Some(true), Some(1), Some(2)),
        "{d}"
    );
    assert_eq!(d["filter"]["name"], "rpi");
    assert_eq!(d["filter"]["terms"][0]["type"], "$eq");

    // The device matching at creation takes phase 1; one that starts matching later joins and
    // waits for phase 2; one that never matches gets nothing.
    assert_eq!(f.device("early").check_in().await, Some(id.clone()));
    assert_eq!(f.device("late").check_in().await, None);
    report(
        &f.server,
        "acme",
        "late",
        json!([attr("model", json!("rpi4"))]),
    )
    .await;
    assert_eq!(f.deployment(&id).await["device_count"], json!(2));
    assert_eq!(
        f.device("late").check_in().await,
        None,
        "phase 2 has not opened"
    );
    report(
        &f.server,
        "acme",
        "never",
        json!([attr("model", json!("qemu"))]),
    )
    .await;
    assert_eq!(f.device("never").check_in().await, None);
    // max_devices is reached: a third matching device is not taken.
    report(
        &f.server,
        "acme",
        "extra",
        json!([attr("model", json!("rpi4"))]),
    )
    .await;
    assert_eq!(f.deployment(&id).await["device_count"], json!(2));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(f.device("late").check_in().await, Some(id.clone()));
    assert_eq!(f.device("extra").check_in().await, None);

    let phases = f.deployment(&id).await["phases"].clone();
    assert_eq!(
        (
            phases[0]["device_count"].as_u64(),
            phases[1]["device_count"].as_u64()
        ),
        (Some(1), Some(1)),
        "{phases}"
    );
    f.device("early")
        .report_all(&id, &["downloading", "installing", "success"])
        .await;
    assert_eq!(f.deployment(&id).await["status"], "inprogress");
    f.device("late")
        .report_all(&id, &["downloading", "installing", "failure"])
        .await;
    let done = f.deployment(&id).await;
    assert_eq!(done["status"], "finished", "max_devices finished: {done}");
    assert_eq!(done["statistics"]["status"]["success"], json!(1));
    assert_eq!(done["statistics"]["status"]["failure"], json!(1));

    // Bad requests change nothing.
    let bad = [
        json!({"name": "x", "artifact_name": RELEASE}),
        json!({"name": "x", "artifact_name": RELEASE, "filter_id": uuid::Uuid::new_v4()}),
        json!({"name": "x", "artifact_name": RELEASE, "filter_id": filter_id, "max_devices": 0}),
        json!({"name": "x", "artifact_name": RELEASE, "filter_id": filter_id, "devices": ["early"]}),
        json!({"name": "x", "artifact_name": RELEASE, "filter": {"terms": [{"scope": "inventory", "attribute": "a", "type": "$in", "value": 3}]}}),
    ];
    for body in bad {
        let resp = call(&f.server, "acme", Method::POST, DYNAMIC, Some(body.clone())).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let list = json_ok(f.user().get("/deployments").await).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn devices_joined_to_a_dynamic_deployment_survive_a_crash() {
    let mut f = fleet_with(&["a", "b"]).await;
    let body = json!({"name": "inline", "artifact_name": RELEASE, "filter": rpi_filter()});
    let id = fleet::deployment_id(call(&f.server, "acme", Method::POST, DYNAMIC, Some(body)).await)
        .await;
    assert_eq!(f.deployment(&id).await["initial_device_count"], json!(0));
    assert_eq!(
        f.deployment(&id).await["status"],
        "pending",
        "a dynamic deployment waits for devices"
    );
    report(
        &f.server,
        "acme",
        "a",
        json!([attr("model", json!("rpi4"))]),
    )
    .await;
    f.server.crash_and_restart();
    let d = f.deployment(&id).await;
    assert_eq!(d["device_count"], json!(1), "{d}");
    let listed = json_ok(
        f.user()
            .get(&format!("/deployments/{id}/device_list"))
            .await,
    )
    .await;
    assert_eq!(listed, json!(["a"]));
    let a = f.device("a").at(&f.server);
    assert_eq!(a.check_in().await, Some(id.clone()));
    a.report_all(&id, &["downloading", "installing", "success"])
        .await;
    // Without max_devices it keeps running, and still takes devices after the restart.
    assert_eq!(f.deployment(&id).await["status"], "inprogress");
    report(
        &f.server,
        "acme",
        "b",
        json!([attr("model", json!("rpi4"))]),
    )
    .await;
    assert_eq!(
        f.device("b").at(&f.server).check_in().await,
        Some(id.clone())
    );
    assert_eq!(f.deployment(&id).await["device_count"], json!(2));
}

#[tokio::test]
async fn a_device_history_lists_its_deployments_newest_first_and_force_installation_reinstalls() {
    let f = fleet_with(&[]).await;
    let first = f.deploy(&["h1", "h2"]).await;
    f.device("h1").check_in().await;
    f.device("h1")
        .report_all(&first, &["downloading", "installing", "success"])
        .await;
    // h1 runs the release now; a forced deployment of it hands it over again.
    let forced = f
        .deploy_with(
            &["h1"],
            json!({"name": "again", "force_installation": true}),
        )
        .await;
    let resp = f.device("h1").next_as(RELEASE, DEVICE_TYPE).await;
    assert_eq!(json_ok(resp).await["id"], json!(forced));
    assert_eq!(
        f.deployment(&forced).await["force_installation"],
        json!(true)
    );
    let plain = f.deploy_with(&["h3"], json!({"name": "plain"})).await;
    let resp = f.device("h3").next_as(RELEASE, DEVICE_TYPE).await;
    no_body(resp, StatusCode::NO_CONTENT).await;
    assert_eq!(
        f.device_record(&plain, "h3").await["status"],
        "already-installed"
    );

    let resp = f.user().get("/deployments/devices/h1").await;
    assert_eq!(header(&resp, "x-total-count"), "2");
    let history = json_ok(resp).await;
    let entries = history.as_array().unwrap();
    assert_eq!(entries[0]["deployment"]["id"], json!(forced));
    assert_eq!(
        entries[0]["device"]["status"], "pending",
        "handed the update, not started"
    );
    assert_eq!(entries[1]["deployment"]["id"], json!(first));
    assert_eq!(entries[1]["device"]["status"], "success");
    let resp = f.user().get("/deployments/devices/h1?status=success").await;
    let only = json_ok(resp).await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    let resp = f
        .user()
        .get("/deployments/devices/h1?per_page=1&page=2")
        .await;
    assert_eq!(json_ok(resp).await[0]["deployment"]["id"], json!(first));
    let resp = f.user().get("/deployments/devices/h1?status=bogus").await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let none = json_with(
        f.user().get("/deployments/devices/nobody").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(none, json!([]));
    // h2 takes part in the first deployment, untouched: pending.
    let h2 = json_ok(f.user().get("/deployments/devices/h2").await).await;
    assert_eq!(h2.as_array().unwrap().len(), 1);
    assert_eq!(h2[0]["device"]["status"], "pending");
    assert_eq!(h2[0]["deployment"]["id"], json!(first));
}
