//! The device deployments API against the real server: checking for an update (and its
//! side effects), downloading the artifact through the link it hands out, reporting
//! progress, uploading logs, phases and retries, as devices with their own tokens.

mod common;

use common::fleet::{Fleet, DEVICE_TYPE, OLD_RELEASE, RELEASE};
use common::{assert_error, assert_rfc3339, json_ok, no_body, send, sha256_hex};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const TENANT: &str = "acme";

/// Assert the 200 body of `next` for deployment `id` and return the download URI.
fn assert_next_body(body: &Value, id: &str, artifact_id: &str) -> String {
    assert_eq!(body["id"], json!(id), "{body}");
    let artifact = &body["artifact"];
    assert_eq!(artifact["id"], json!(artifact_id));
    assert_eq!(artifact["artifact_name"], json!(RELEASE));
    assert_eq!(artifact["device_types_compatible"], json!([DEVICE_TYPE]));
    let source = &artifact["source"];
    assert_eq!(source["method"], json!("GET"));
    assert_rfc3339(&source["expire"]);
    let expire = OffsetDateTime::parse(source["expire"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(expire > OffsetDateTime::now_utc(), "the link has expired");
    source["uri"].as_str().expect("uri is a string").to_owned()
}

#[tokio::test]
async fn next_delivers_the_artifact_and_its_link_downloads_it() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1", "d2"]).await;

    let resp = f.device("d1").next_as(OLD_RELEASE, DEVICE_TYPE).await;
    let uri = assert_next_body(&json_ok(resp).await, &id, &f.artifact_id);
    let download = send(f.server.http().get(&uri)).await;
    assert_eq!(download.status(), StatusCode::OK, "GET {uri}");
    let bytes = download.bytes().await.unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&f.artifact.bytes()));

    let body = json!({"artifact_name": OLD_RELEASE, "device_type": DEVICE_TYPE,
                      "artifact_provides": {"rootfs-image.version": OLD_RELEASE}});
    let mistyped = json!({"artifact_name": OLD_RELEASE, "device_type": DEVICE_TYPE,
                          "artifact_provides": "rootfs-image.version"});
    let resp = f.device("d2").next_post(&mistyped).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let resp = f.device("d2").next_post(&body).await;
    let uri = assert_next_body(&json_ok(resp).await, &id, &f.artifact_id);
    let bytes = send(f.server.http().get(&uri)).await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&f.artifact.bytes()));

    let d = f.deployment(&id).await;
    assert_eq!(d["phases"][0]["device_count"], json!(2));
    for rec in f.devices(&id).await {
        assert_eq!(rec["attempts"], json!(1), "{rec}");
        assert_eq!(
            rec["status"],
            json!("pending"),
            "delivered, not yet reported"
        );
    }
}

#[tokio::test]
async fn next_answers_204_when_there_is_nothing_for_the_device() {
    let f = Fleet::start(TENANT).await;
    let stranger = f.device("stranger");
    no_body(
        stranger.next_as(OLD_RELEASE, DEVICE_TYPE).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    f.deploy(&["d1"]).await;
    no_body(
        stranger.next_as(OLD_RELEASE, DEVICE_TYPE).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    // Same device id, other tenant.
    let twin = f.server.device("globex", "d1");
    no_body(
        twin.next_as(OLD_RELEASE, DEVICE_TYPE).await,
        StatusCode::NO_CONTENT,
    )
    .await;
}

#[tokio::test]
async fn next_requires_artifact_name_and_device_type() {
    let f = Fleet::start(TENANT).await;
    f.deploy(&["d1"]).await;
    let d = f.device("d1");
    let long = "x".repeat(4097);
    let queries = [
        (None, Some(DEVICE_TYPE)),
        (Some(OLD_RELEASE), None),
        (Some(""), Some(DEVICE_TYPE)),
        (Some(OLD_RELEASE), Some("")),
        (Some(long.as_str()), Some(DEVICE_TYPE)),
    ];
    for (a, t) in queries {
        assert_error(d.next_query(a, t).await, StatusCode::BAD_REQUEST).await;
    }
    for body in [
        json!({"device_type": DEVICE_TYPE}),
        json!({"artifact_name": OLD_RELEASE}),
    ] {
        assert_error(d.next_post(&body).await, StatusCode::BAD_REQUEST).await;
    }
    // Nothing was recorded for the refused check-ins.
    let id = json_ok(f.user().get("/deployments").await).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(f.device_record(&id, "d1").await["attempts"], json!(0));
    let user_token = f.server.user_token(TENANT);
    let as_user = f
        .server
        .http()
        .get(f.server.url(&format!(
            "{}/next?artifact_name=a&device_type=b",
            common::fleet::DEVICE_API
        )))
        .bearer_auth(user_token);
    assert_error(send(as_user).await, StatusCode::FORBIDDEN).await;

    // %-escapes that are not UTF-8 are refused, not decoded into a device type no device
    // sent (the record stays untouched).
    for query in [
        format!("artifact_name=%FF&device_type={DEVICE_TYPE}"),
        format!("artifact_name={OLD_RELEASE}&device_type=dev-%FE"),
    ] {
        let url = f
            .server
            .url(&format!("{}/next?{query}", common::fleet::DEVICE_API));
        let token = f.server.device_token_for(TENANT, "d1");
        let resp = send(f.server.http().get(url).bearer_auth(token)).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(f.device_record(&id, "d1").await["attempts"], json!(0));
    assert_error(
        f.user().get("/deployments?search=%C3").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn next_marks_incompatible_and_up_to_date_devices_finished() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["other-type", "up-to-date", "normal"]).await;
    no_body(
        f.device("other-type").next_as(OLD_RELEASE, "dev-z").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    no_body(
        f.device("up-to-date").next_as(RELEASE, DEVICE_TYPE).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let rec = f.device_record(&id, "other-type").await;
    assert_eq!(rec["status"], json!("noartifact"));
    assert_rfc3339(&rec["finished"]);
    let rec = f.device_record(&id, "up-to-date").await;
    assert_eq!(rec["status"], json!("already-installed"));
    assert_rfc3339(&rec["finished"]);
    let stats = f.statistics(&id).await;
    assert_eq!(stats["noartifact"], json!(1));
    assert_eq!(stats["already-installed"], json!(1));
    assert_eq!(f.deployment(&id).await["status"], json!("inprogress"));

    // The last device finishes, and with it the deployment.
    let normal = f.device("normal");
    assert_eq!(normal.check_in().await, Some(id.clone()));
    normal
        .report_all(&id, &["downloading", "installing", "rebooting", "success"])
        .await;
    let d = f.deployment(&id).await;
    assert_eq!(d["status"], json!("finished"));
    assert_rfc3339(&d["finished"]);
}

#[tokio::test]
async fn next_conflicts_when_the_device_type_changes_mid_deployment() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let d = f.device("d1");
    assert_eq!(d.check_in().await, Some(id.clone()));
    d.report_all(&id, &["downloading"]).await;
    assert_eq!(
        d.check_in().await,
        Some(id.clone()),
        "same data, same answer"
    );
    assert_error(d.next_as(OLD_RELEASE, "dev-b").await, StatusCode::CONFLICT).await;
    assert_eq!(f.device_record(&id, "d1").await["status"], json!("failure"));
    assert_eq!(f.statistics(&id).await["failure"], json!(1));
}

#[tokio::test]
async fn status_reports_move_the_device_and_finish_the_deployment() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1", "d2"]).await;
    let (d1, d2) = (f.device("d1"), f.device("d2"));
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading", "downloading"]).await;
    assert_eq!(
        f.device_record(&id, "d1").await["status"],
        json!("downloading")
    );
    assert_eq!(f.deployment(&id).await["status"], json!("inprogress"));

    assert_error(d1.report(&id, "sleeping").await, StatusCode::BAD_REQUEST).await;
    assert_error(d1.report(&id, "pending").await, StatusCode::BAD_REQUEST).await;
    let long = json!({"status": "installing", "substate": "s".repeat(201)});
    assert_error(d1.put(&id, "status", &long).await, StatusCode::BAD_REQUEST).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(
        d1.report(&unknown, "installing").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let stranger = f.device("stranger");
    assert_error(
        stranger.report(&id, "installing").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The status body as raw text, with the given Content-Type or none.
    let raw_status = |content_type: Option<&'static str>, body: &'static str| {
        let url = f
            .server
            .url(&format!("{}/{id}/status", common::fleet::DEVICE_API));
        let mut req = f
            .server
            .http()
            .request(Method::PUT, url)
            .bearer_auth(f.server.device_token_for(TENANT, "d1"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        send(req.body(body))
    };
    let untyped = raw_status(None, r#"{"status":"installing"}"#).await;
    no_body(untyped, StatusCode::NO_CONTENT).await;
    assert_eq!(
        f.device_record(&id, "d1").await["status"],
        json!("installing")
    );
    let typed = raw_status(Some("text/plain"), r#"{"status":"downloading"}"#).await;
    assert_error(typed, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        f.device_record(&id, "d1").await["status"],
        json!("installing")
    );

    let with_substate = json!({"status": "installing", "substate": "writing rootfs"});
    no_body(
        d1.put(&id, "status", &with_substate).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let rec = f.device_record(&id, "d1").await;
    assert_eq!(rec["status"], json!("installing"));
    assert_eq!(rec["substate"], json!("writing rootfs"));
    for s in ["pause_before_rebooting", "rebooting", "success", "success"] {
        no_body(d1.report(&id, s).await, StatusCode::NO_CONTENT).await;
    }
    assert_eq!(f.deployment(&id).await["status"], json!("inprogress"));
    // A final status may be replaced by another (a client that fails to commit after
    // reporting success), as upstream accepts; an active one may not.
    no_body(d1.report(&id, "failure").await, StatusCode::NO_CONTENT).await;
    assert_eq!(f.device_record(&id, "d1").await["status"], json!("failure"));
    assert_error(d1.report(&id, "installing").await, StatusCode::CONFLICT).await;

    assert_eq!(d2.check_in().await, Some(id.clone()));
    d2.report_all(&id, &["downloading", "failure"]).await;
    let d = f.deployment(&id).await;
    assert_eq!(d["status"], json!("finished"));
    assert_rfc3339(&d["finished"]);
    let stats = f.statistics(&id).await;
    assert_eq!(
        (stats["success"].clone(), stats["failure"].clone()),
        (json!(0), json!(2))
    );
    no_body(d2.report(&id, "failure").await, StatusCode::NO_CONTENT).await;
    // Also once the deployment has finished: the stored record changes, and the counts.
    no_body(d2.report(&id, "success").await, StatusCode::NO_CONTENT).await;
    let stats = f.statistics(&id).await;
    assert_eq!(
        (stats["success"].clone(), stats["failure"].clone()),
        (json!(1), json!(1))
    );
    assert_error(d2.report(&id, "downloading").await, StatusCode::CONFLICT).await;
    assert_eq!(f.deployment(&id).await["status"], json!("finished"));
}

/// A status report's refusals, each for its own cause and with the error body, and none of
/// them changes the device's record.
#[tokio::test]
async fn status_report_refusals_name_their_cause() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let d1 = f.device("d1");
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading"]).await;
    let put = |path: String, token: Option<String>, body: String| {
        let mut req = f
            .server
            .http()
            .request(Method::PUT, f.server.url(&path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req)
    };
    let path = format!("{}/{id}/status", common::fleet::DEVICE_API);
    let device = || Some(f.server.device_token_for(TENANT, "d1"));
    let installing = || r#"{"status":"installing"}"#.to_owned();
    let cases = [
        (
            put(path.clone(), None, installing()).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            put(path.clone(), Some("not-a-token".into()), installing()).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            put(
                path.clone(),
                Some(f.server.user_token(TENANT)),
                installing(),
            )
            .await,
            StatusCode::FORBIDDEN,
        ),
        (
            put(path.clone(), device(), "{\"status\":".into()).await,
            StatusCode::BAD_REQUEST,
        ),
        (
            put(
                path.clone(),
                device(),
                format!(r#"{{"status":"{}"}}"#, "x".repeat(70_000)),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            put(
                format!("{}/not-a-uuid/status", common::fleet::DEVICE_API),
                device(),
                installing(),
            )
            .await,
            StatusCode::NOT_FOUND,
        ),
    ];
    // An id that needs decoding is left to warp's route, which does not decode it either.
    let escaped = format!(
        "{}/{}/status",
        common::fleet::DEVICE_API,
        id.replace('-', "%2D")
    );
    assert_error(
        put(escaped, device(), installing()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for (resp, status) in cases {
        assert_error(resp, status).await;
    }
    assert_eq!(
        f.device_record(&id, "d1").await["status"],
        json!("downloading")
    );
}

#[tokio::test]
async fn status_after_abort_is_409() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let d1 = f.device("d1");
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading"]).await;
    let aborted = json!({"status": "aborted"});
    let path = format!("/deployments/{id}/status");
    no_body(
        f.user().put_json(&path, &aborted).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    for s in ["installing", "success", "failure"] {
        assert_error(d1.report(&id, s).await, StatusCode::CONFLICT).await;
    }
    assert_eq!(d1.check_in().await, None);
}

#[tokio::test]
async fn log_upload_needs_membership_and_complete_messages() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let d1 = f.device("d1");
    let line = json!({"timestamp": "2024-05-01T10:00:00Z", "level": "info", "message": "hi"});
    for incomplete in [
        json!({"messages": [{"level": "info", "message": "no time"}]}),
        json!({"messages": [{"timestamp": "2024-05-01T10:00:00Z", "message": "no level"}]}),
        json!({"messages": [{"timestamp": "2024-05-01T10:00:00Z", "level": "info"}]}),
        json!({"lines": [line]}),
    ] {
        assert_error(
            d1.put(&id, "log", &incomplete).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let log = json!({ "messages": [line] });
    assert_error(
        f.device("stranger").put(&id, "log", &log).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(d1.put(&unknown, "log", &log).await, StatusCode::NOT_FOUND).await;

    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading", "failure"]).await;
    no_body(d1.put(&id, "log", &log).await, StatusCode::NO_CONTENT).await;
    let resp = f
        .user()
        .get(&format!("/deployments/{id}/devices/d1/log"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.text().await.unwrap(),
        "2024-05-01T10:00:00Z info: hi\n"
    );
    assert_eq!(f.device_record(&id, "d1").await["log"], json!(true));
}

#[tokio::test]
async fn log_lines_cannot_forge_lines_carry_bad_timestamps_or_erase_the_log() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let d1 = f.device("d1");
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading", "failure"]).await;
    let log_path = format!("/deployments/{id}/devices/d1/log");

    // A message with line breaks stays one line: the breaks are stored escaped.
    let forged = "hi\n2024-05-01T10:00:01Z info: forged\r\u{2028}end";
    let log = json!({"messages": [
        {"timestamp": "2024-05-01T10:00:00Z", "level": "error", "message": forged},
        {"timestamp": "2024-05-01T12:00:00.5+02:00", "level": "info", "message": "tab\tkept"},
    ]});
    no_body(d1.put(&id, "log", &log).await, StatusCode::NO_CONTENT).await;
    let stored =
        "2024-05-01T10:00:00Z error: hi\\n2024-05-01T10:00:01Z info: forged\\r\\u{2028}end\n\
                  2024-05-01T12:00:00.5+02:00 info: tab\tkept\n";
    let text = f.user().get(&log_path).await.text().await.unwrap();
    assert_eq!(text, stored);
    assert_eq!(text.lines().count(), 2);

    // Refused with 400, and the stored log is left as it was.
    let line = |timestamp: &str, level: &str| json!({"messages": [{"timestamp": timestamp, "level": level, "message": "m"}]});
    for bad in [
        json!({"messages": []}),
        line("yesterday", "info"),
        line("2024-05-01 10:00:00", "info"),
        line("2024-05-01T10:00:00Z\nforged", "info"),
        line("2024-05-01T10:00:00Z", ""),
        line("2024-05-01T10:00:00Z", "info\nforged"),
        json!({"messages": [{"timestamp": null, "level": "info", "message": "m"}]}),
    ] {
        let msg = assert_error(d1.put(&id, "log", &bad).await, StatusCode::BAD_REQUEST).await;
        assert!(!msg.is_empty(), "{bad}");
    }
    assert_eq!(f.user().get(&log_path).await.text().await.unwrap(), stored);
}

#[tokio::test]
async fn retries_deliver_the_deployment_again_after_a_failure() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy_with(&["d1"], json!({"retries": 1})).await;
    let d1 = f.device("d1");
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading", "installing", "failure"])
        .await;
    let rec = f.device_record(&id, "d1").await;
    assert_eq!(
        (rec["status"].clone(), rec["attempts"].clone()),
        (json!("pending"), json!(1))
    );
    let stats = f.statistics(&id).await;
    assert_eq!(
        (stats["pending"].clone(), stats["failure"].clone()),
        (json!(1), json!(0))
    );
    assert_ne!(f.deployment(&id).await["status"], json!("finished"));

    assert_eq!(d1.check_in().await, Some(id.clone()), "the retry");
    d1.report_all(&id, &["downloading", "installing", "success"])
        .await;
    let rec = f.device_record(&id, "d1").await;
    assert_eq!(
        (rec["status"].clone(), rec["attempts"].clone()),
        (json!("success"), json!(2))
    );
    let stats = f.statistics(&id).await;
    assert_eq!(
        (stats["success"].clone(), stats["failure"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(f.deployment(&id).await["status"], json!("finished"));
}

#[tokio::test]
async fn devices_beyond_an_open_phase_wait_pending() {
    let f = Fleet::start(TENANT).await;
    let later = (OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&Rfc3339)
        .unwrap();
    let phases = json!({"phases": [{"batch_size": 50}, {"start_ts": later}]});
    let id = f.deploy_with(&["d1", "d2", "d3", "d4"], phases).await;
    assert_eq!(f.device("d1").check_in().await, Some(id.clone()));
    assert_eq!(f.device("d2").check_in().await, Some(id.clone()));
    assert_eq!(
        f.device("d3").check_in().await,
        None,
        "the first phase is full"
    );
    let d = f.deployment(&id).await;
    let counts: Vec<&Value> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["device_count"])
        .collect();
    assert_eq!(counts, vec![&json!(2), &json!(0)]);
    assert_eq!(f.device_record(&id, "d3").await["status"], json!("pending"));
    assert_eq!(f.statistics(&id).await["pending"], json!(4));
}
