//! A deployment's safety rules through the management API: `auto_abort`, `pacing` and
//! `device_timeout_seconds` on creation (checked, shown on `GET`), an auto-abort tripped by
//! real device reports (kept across a restart), pausing and resuming, maintenance windows
//! and an end time; update control maps (on creation, to devices through v2, replaced with
//! `PATCH`).

mod common;

use common::fleet::{create, Device, Fleet, DEVICE_TYPE, OLD_RELEASE};
use common::{assert_error, json_ok, no_body, send};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TENANT: &str = "acme";

/// `POST /deployments/{id}/{action}` (pause, resume).
async fn act(fleet: &Fleet, id: &str, action: &str) -> reqwest::Response {
    let path = format!("/deployments/{id}/{action}");
    send(fleet.user().request(Method::POST, &path)).await
}

/// Each of `bad` added to a valid deployment body is a 400 with a message.
async fn refused(fleet: &Fleet, bad: &[Value]) {
    for extra in bad {
        let mut body =
            json!({"name": "bad", "artifact_name": common::fleet::RELEASE, "devices": ["d9"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let resp = create(&fleet.user(), &body).await;
        let msg = assert_error(resp, StatusCode::BAD_REQUEST).await;
        assert!(!msg.is_empty(), "{extra}");
    }
}

#[tokio::test]
async fn rules_are_shown_as_given_and_absent_when_not_given() {
    let fleet = Fleet::start(TENANT).await;
    let rules = json!({
        "auto_abort": {"failure_percent": 20, "min_finished": 10, "action": "stop_admitting"},
        "pacing": {"per_minute": 50, "factor": 2.0, "step": 100, "max_per_minute": 1000},
        "device_timeout_seconds": 3600
    });
    let id = fleet.deploy_with(&["d1"], rules.clone()).await;
    let d = fleet.deployment(&id).await;
    for key in ["auto_abort", "pacing", "device_timeout_seconds"] {
        assert_eq!(d[key], rules[key], "{key} in {d}");
    }
    assert!(
        d.get("paused").is_none() && d.get("abort_reason").is_none(),
        "{d}"
    );

    let plain = fleet.deploy_with(&["d2"], json!({"name": "plain"})).await;
    let d = fleet.deployment(&plain).await;
    for key in [
        "auto_abort",
        "pacing",
        "device_timeout_seconds",
        "paused",
        "halted",
    ] {
        assert!(d.get(key).is_none(), "{key} in {d}");
    }
    let defaults = json!({"name": "defaults", "auto_abort": {"failure_percent": 5}});
    let id = fleet.deploy_with(&["d3"], defaults).await;
    let d = fleet.deployment(&id).await;
    assert_eq!(
        d["auto_abort"],
        json!({"failure_percent": 5, "min_finished": 0, "action": "abort"})
    );
}

#[tokio::test]
async fn rules_out_of_range_are_a_400_and_create_nothing() {
    let fleet = Fleet::start(TENANT).await;
    let bad = [
        json!({"auto_abort": {"failure_percent": 0}}),
        json!({"auto_abort": {"failure_percent": 101}}),
        json!({"auto_abort": {"failure_percent": 10, "action": "explode"}}),
        json!({"auto_abort": {"min_finished": 3}}),
        json!({"pacing": {"per_minute": 0}}),
        json!({"pacing": {"per_minute": 5, "factor": 0.5, "step": 1}}),
        json!({"pacing": {"per_minute": 5, "factor": 2.0}}),
        json!({"pacing": {"per_minute": 5, "max_per_minute": 4}}),
        json!({"device_timeout_seconds": 0}),
        json!({"device_timeout_seconds": -1}),
    ];
    refused(&fleet, &bad).await;
    let list = json_ok(fleet.user().get("/deployments").await).await;
    assert_eq!(list, json!([]), "nothing was created");
}

#[tokio::test]
async fn failures_at_the_threshold_abort_the_deployment_with_a_reason_kept_across_a_restart() {
    let mut fleet = Fleet::start(TENANT).await;
    let rule = json!({"auto_abort": {"failure_percent": 50, "min_finished": 2}});
    let id = fleet.deploy_with(&["d1", "d2", "d3", "d4"], rule).await;
    for d in ["d1", "d2"] {
        let device = fleet.device(d);
        assert_eq!(device.check_in().await.as_deref(), Some(id.as_str()));
        device
            .report_all(&id, &["downloading", "installing", "failure"])
            .await;
    }
    let d = fleet.deployment(&id).await;
    assert_eq!(d["status"], "finished", "{d}");
    let reason = d["abort_reason"].as_str().expect("abort_reason").to_owned();
    assert!(
        reason.starts_with("2 of 2 finished devices failed"),
        "{reason}"
    );
    let stats = fleet.statistics(&id).await;
    assert_eq!(
        (stats["failure"].clone(), stats["aborted"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(fleet.device("d3").check_in().await, None);

    fleet.server.restart().await;
    let d = fleet.deployment(&id).await;
    assert_eq!(
        (d["status"].as_str(), d["abort_reason"].as_str()),
        (Some("finished"), Some(reason.as_str()))
    );
}

#[tokio::test]
async fn a_paused_deployment_starts_no_device_until_resumed() {
    let fleet = Fleet::start(TENANT).await;
    let id = fleet.deploy(&["d1", "d2"]).await;
    let started = fleet.device("d1");
    assert_eq!(started.check_in().await.as_deref(), Some(id.as_str()));

    no_body(act(&fleet, &id, "pause").await, StatusCode::NO_CONTENT).await;
    assert_eq!(fleet.deployment(&id).await["paused"], json!(true));
    assert_eq!(fleet.device("d2").check_in().await, None, "paused");
    assert_eq!(
        started.check_in().await.as_deref(),
        Some(id.as_str()),
        "d1 goes on"
    );
    no_body(act(&fleet, &id, "pause").await, StatusCode::NO_CONTENT).await;

    no_body(act(&fleet, &id, "resume").await, StatusCode::NO_CONTENT).await;
    let d: Value = fleet.deployment(&id).await;
    assert!(d.get("paused").is_none(), "{d}");
    assert_eq!(
        fleet.device("d2").check_in().await.as_deref(),
        Some(id.as_str())
    );

    assert_error(
        act(&fleet, "not-a-uuid", "pause").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(act(&fleet, &unknown, "resume").await, StatusCode::NOT_FOUND).await;
    let other = fleet.server.as_user("globex");
    let path = format!("/deployments/{id}/pause");
    assert_error(
        send(other.request(Method::POST, &path)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let anonymous = fleet.server.anonymous();
    assert_error(
        send(anonymous.request(Method::POST, &path)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let aborted = json!({"status": "aborted"});
    let user = fleet.user();
    let abort = user
        .put_json(&format!("/deployments/{id}/status"), &aborted)
        .await;
    no_body(abort, StatusCode::NO_CONTENT).await;
    assert_error(
        act(&fleet, &id, "pause").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test]
async fn a_phase_held_by_a_gate_and_an_approval_opens_when_both_allow() {
    let fleet = Fleet::start(TENANT).await;
    let phases = json!({"phases": [
        {"batch_size": 50},
        {"gate": {"success_percent": 100, "min_finished": 1}, "needs_approval": true}
    ]});
    let id = fleet.deploy_with(&["d1", "d2"], phases).await;
    let d = fleet.deployment(&id).await;
    let second = &d["phases"][1];
    assert_eq!(
        second["gate"],
        json!({"success_percent": 100, "min_finished": 1}),
        "{d}"
    );
    assert_eq!(second["needs_approval"], json!(true));
    assert!(second.get("approved").is_none() && d["phases"][0].get("gate").is_none());

    let first = fleet.device("d1");
    assert_eq!(first.check_in().await.as_deref(), Some(id.as_str()));
    first
        .report_all(&id, &["downloading", "installing", "success"])
        .await;
    assert_eq!(fleet.device("d2").check_in().await, None, "not approved");

    let (f, d) = (&fleet, id.as_str());
    let approve = move |n: &str| {
        let path = format!("phases/{n}/approve");
        async move { act(f, d, &path).await }
    };
    assert_error(approve("1").await, StatusCode::CONFLICT).await;
    assert_error(approve("3").await, StatusCode::NOT_FOUND).await;
    assert_error(approve("0").await, StatusCode::BAD_REQUEST).await;
    assert_error(approve("two").await, StatusCode::BAD_REQUEST).await;
    no_body(approve("2").await, StatusCode::NO_CONTENT).await;
    let approved = fleet.deployment(&id).await["phases"][1]["approved"].clone();
    common::assert_rfc3339(&approved);
    assert_eq!(
        fleet.device("d2").check_in().await.as_deref(),
        Some(id.as_str())
    );

    let refused =
        json!({"name": "bad", "phases": [{"batch_size": 50, "needs_approval": true}, {}]});
    let mut body = json!({"artifact_name": common::fleet::RELEASE, "devices": ["d1", "d2"]});
    body.as_object_mut()
        .unwrap()
        .extend(refused.as_object().unwrap().clone());
    assert_error(create(&fleet.user(), &body).await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn windows_and_an_end_are_shown_as_given_and_bad_ones_are_a_400() {
    let fleet = Fleet::start(TENANT).await;
    let rules = json!({
        "maintenance_windows": [
            {"cron": "0 22 * * MON-FRI", "time_zone": "Europe/Berlin", "duration_minutes": 360},
            {"cron": "0 3 * * SAT", "duration_minutes": 60}
        ],
        "end": {"at": "2099-01-31T00:00:00Z", "action": "abort"}
    });
    let id = fleet.deploy_with(&["d1"], rules.clone()).await;
    let d = fleet.deployment(&id).await;
    assert_eq!(d["maintenance_windows"][0], rules["maintenance_windows"][0]);
    assert_eq!(
        d["maintenance_windows"][1],
        json!({"cron": "0 3 * * SAT", "time_zone": "UTC", "duration_minutes": 60}),
        "the default zone"
    );
    assert_eq!(d["end"], rules["end"]);
    let plain = fleet.deploy_with(&["d2"], json!({"name": "plain"})).await;
    let d = fleet.deployment(&plain).await;
    assert!(
        d.get("maintenance_windows").is_none() && d.get("end").is_none(),
        "{d}"
    );

    let bad = [
        json!({"maintenance_windows": [{"cron": "0 22 * * *", "time_zone": "Mars/Base", "duration_minutes": 60}]}),
        json!({"maintenance_windows": [{"cron": "61 22 * * *", "duration_minutes": 60}]}),
        json!({"maintenance_windows": [{"cron": "0 22 * * *", "duration_minutes": 0}]}),
        json!({"maintenance_windows": [{"cron": "0 22 * * *"}]}),
        json!({"maintenance_windows": [{"cron": "0 0 30 2 *", "duration_minutes": 60}]}),
        json!({"end": {"at": "2001-01-01T00:00:00Z"}}),
        json!({"end": {"at": "2099-01-01T00:00:00Z", "action": "explode"}}),
        json!({"end": {"at": "tomorrow"}}),
    ];
    refused(&fleet, &bad).await;
    let list = json_ok(fleet.user().get("/deployments").await).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "nothing more was created"
    );
}

/// The v2 check-in body of a client that acts on update control maps (or not).
fn next_v2(maps: bool) -> Value {
    let provides = json!({
        "artifact_name": OLD_RELEASE,
        "device_type": DEVICE_TYPE,
        "rootfs-image.version": OLD_RELEASE
    });
    json!({"device_provides": provides, "update_control_map": maps})
}

/// `PATCH /deployments/{id}` with `body`.
async fn patch(fleet: &Fleet, id: &str, body: &Value) -> reqwest::Response {
    let path = format!("/deployments/{id}");
    send(fleet.user().request(Method::PATCH, &path).json(body)).await
}

/// `GET …/{id}/update_control_map` as `device`.
async fn refreshed(device: &Device, id: &str) -> reqwest::Response {
    let path = format!("/{id}/update_control_map");
    send(device.request_v2(Method::GET, &path)).await
}

#[tokio::test]
async fn update_control_maps_reach_clients_that_ask_and_the_operator_replaces_them() {
    let mut fleet = Fleet::start(TENANT).await;
    refused(
        &fleet,
        &[
            json!({"update_control_map": {"priority": 11}}),
            json!({"update_control_map": {"states": {"Download_Enter": {"action": "pause"}}}}),
            json!({"update_control_map": {"states": {"ArtifactInstall_Enter": {"action": "wait"}}}}),
            json!({"update_control_map": {"states": {"ArtifactCommit_Enter": {"on_map_expire": "pause"}}}}),
            json!({"update_control_map": {"colour": "red"}}),
        ],
    )
    .await;
    let map = json!({"priority": 2, "states": {
        "ArtifactInstall_Enter": {"action": "pause", "on_map_expire": "fail"}
    }});
    let id = fleet
        .deploy_with(&["d1", "d2"], json!({"update_control_map": map}))
        .await;
    assert_eq!(fleet.deployment(&id).await["update_control_map"], map);
    let mut for_devices = map.clone();
    for_devices["id"] = json!(id);

    let d1 = fleet.device("d1");
    let next = send(d1.request_v2(Method::POST, "/next").json(&next_v2(true))).await;
    let next = json_ok(next).await;
    assert_eq!(
        (&next["id"], &next["update_control_map"]),
        (&json!(id), &for_devices)
    );
    let d2 = fleet.device("d2");
    let v1 = d2
        .next_post(&json!({"artifact_name": OLD_RELEASE, "device_type": DEVICE_TYPE}))
        .await;
    let without = send(d2.request_v2(Method::POST, "/next").json(&next_v2(false))).await;
    for body in [json_ok(v1).await, json_ok(without).await] {
        assert_eq!(body["id"], json!(id));
        assert!(body.get("update_control_map").is_none(), "{body}");
    }

    d1.report_all(&id, &["downloading", "pause_before_installing"])
        .await;
    assert_eq!(
        fleet.statistics(&id).await["pause_before_installing"],
        json!(1)
    );
    let got = json_ok(refreshed(&d1, &id).await).await;
    assert_eq!(got, json!({ "update_control_map": for_devices }));

    for bad in [
        json!({}),
        json!({"update_control_map": {"priority": -11}}),
        json!({"update_control_map": {"states": {"ArtifactReboot_Enter": {"action": "later"}}}}),
        json!({"update_control_map": map, "name": "renamed"}),
    ] {
        assert_error(patch(&fleet, &id, &bad).await, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(fleet.deployment(&id).await["update_control_map"], map);
    let go_on = json!({"priority": 2, "states": {"ArtifactInstall_Enter": {"action": "continue"}}});
    let resp = patch(&fleet, &id, &json!({ "update_control_map": go_on })).await;
    no_body(resp, StatusCode::NO_CONTENT).await;
    let got = json_ok(refreshed(&d1, &id).await).await;
    assert_eq!(got["update_control_map"]["states"], go_on["states"]);

    d1.report_all(&id, &["installing", "success"]).await;
    assert_error(refreshed(&d1, &id).await, StatusCode::NOT_FOUND).await;
    let stranger = fleet.device("d9");
    assert_error(refreshed(&stranger, &id).await, StatusCode::NOT_FOUND).await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let resp = patch(&fleet, unknown, &json!({ "update_control_map": go_on })).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    fleet.server.restart().await;
    let d = fleet.deployment(&id).await;
    assert_eq!(d["update_control_map"], go_on, "kept across a restart");
}
