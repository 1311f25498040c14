//! The deployments part of the management API against the real server: creation and its
//! validation, listing with filters and paging, the per-deployment views, abort and
//! decommission. Devices take part through the device API with their own tokens.

mod common;

use common::fleet::{create, deployment_id, statistics, Fleet, DEVICE_TYPE, RELEASE};
use common::{assert_error, assert_rfc3339, json_ok, no_body, send, Workdir};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const TENANT: &str = "acme";

/// Every status the statistics object lists.
const STATUSES: [&str; 13] = [
    "pending",
    "downloading",
    "installing",
    "rebooting",
    "pause_before_installing",
    "pause_before_committing",
    "pause_before_rebooting",
    "success",
    "failure",
    "noartifact",
    "already-installed",
    "aborted",
    "decommissioned",
];

/// RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

fn unix_nanos(value: &Value) -> i128 {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
}

/// The ids of a `GET /deployments` page.
async fn ids(resp: Response) -> Vec<String> {
    json_ok(resp)
        .await
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn create_answers_201_with_location_and_the_deployment_reads_back() {
    let f = Fleet::start(TENANT).await;
    let id = f
        .deploy_with(
            &["d1", "d2", "d3"],
            json!({"name": "first wave", "retries": 2}),
        )
        .await;
    let d = f.deployment(&id).await;
    assert_eq!(d["id"], json!(id));
    assert_eq!(d["name"], json!("first wave"));
    assert_eq!(d["artifact_name"], json!(RELEASE));
    assert_eq!(d["status"], json!("pending"));
    assert_eq!(d["device_count"], json!(3));
    assert_eq!(d["retries"], json!(2));
    assert_rfc3339(&d["created"]);
    assert!(d.get("finished").is_none_or(Value::is_null), "{d}");
    let phases = d["phases"].as_array().expect("phases is an array");
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0]["device_count"], json!(0));
    assert_rfc3339(&phases[0]["start_ts"]);

    let list = json_ok(
        f.user()
            .get(&format!("/deployments/{id}/device_list"))
            .await,
    )
    .await;
    assert_eq!(list, json!(["d1", "d2", "d3"]));
    let stats = statistics(&f.user(), &id).await;
    for s in STATUSES {
        let expected = if s == "pending" { 3 } else { 0 };
        assert_eq!(stats[s], json!(expected), "statistics[{s}] in {stats}");
    }
    assert_eq!(stats.as_object().unwrap().len(), STATUSES.len(), "{stats}");
    for rec in f.devices(&id).await {
        assert_eq!(rec["status"], json!("pending"));
        assert_eq!(rec["attempts"], json!(0));
        assert_eq!(rec["log"], json!(false));
        assert_rfc3339(&rec["created"]);
    }
}

#[tokio::test]
async fn create_refuses_invalid_deployments_with_400() {
    let f = Fleet::start(TENANT).await;
    let ten: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let body = |extra: Value| {
        let mut b = json!({"name": "n", "artifact_name": RELEASE, "devices": ten});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let cases = [
        ("no devices", body(json!({"devices": []}))),
        ("a device twice", body(json!({"devices": ["a", "b", "a"]}))),
        ("empty name", body(json!({"name": ""}))),
        ("long name", body(json!({"name": "x".repeat(4097)}))),
        (
            "no devices field",
            json!({"name": "n", "artifact_name": RELEASE}),
        ),
        (
            "a phase of 0 devices",
            body(json!({"phases": [{"batch_size": 5}, {"start_ts": in_seconds(3600)}]})),
        ),
        (
            "over 100%",
            body(json!({"phases": [
                {"batch_size": 60},
                {"batch_size": 50, "start_ts": in_seconds(3600)}
            ]})),
        ),
        (
            "phases out of order",
            body(json!({"phases": [
                {"batch_size": 50, "start_ts": in_seconds(7200)},
                {"start_ts": in_seconds(3600)}
            ]})),
        ),
        (
            "a later phase without start_ts",
            body(json!({"phases": [{"batch_size": 50}, {"batch_size": 50}]})),
        ),
    ];
    for (what, b) in cases {
        let resp = create(&f.user(), &b).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let malformed = f
        .user()
        .request(Method::POST, "/deployments")
        .header("content-type", "application/json")
        .body("{\"name\":");
    assert_error(send(malformed).await, StatusCode::BAD_REQUEST).await;

    let longest = body(json!({"name": "x".repeat(4096)}));
    deployment_id(create(&f.user(), &longest).await).await;
    let listed = json_ok(f.user().get("/deployments").await).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the valid one exists"
    );
}

#[tokio::test]
async fn create_needs_json_and_a_known_artifact() {
    let f = Fleet::start(TENANT).await;
    let body = json!({"name": "n", "artifact_name": RELEASE, "devices": ["a"]}).to_string();
    // A body without a Content-Type is read as JSON; another type is refused.
    let untyped = f
        .user()
        .request(Method::POST, "/deployments")
        .body(body.clone());
    assert_eq!(send(untyped).await.status(), StatusCode::CREATED);
    let text = f
        .user()
        .request(Method::POST, "/deployments")
        .header("content-type", "text/plain")
        .body(body);
    assert_error(send(text).await, StatusCode::BAD_REQUEST).await;
    let empty = f.user().request(Method::POST, "/deployments");
    let refused = send(empty).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error = refused.json::<serde_json::Value>().await.unwrap()["error"].clone();
    assert!(error.as_str().unwrap().contains("empty"), "{error}");

    let unknown = json!({"name": "n", "artifact_name": "nope-9.9", "devices": ["a"]});
    assert_error(
        create(&f.user(), &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Another tenant's release is unknown too.
    let other = json!({"name": "n", "artifact_name": RELEASE, "devices": ["a"]});
    assert_error(
        create(&f.server.as_user("globex"), &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let device_token = f.server.device_token(TENANT);
    assert_error(
        create(&f.server.api(device_token), &other).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn list_filters_by_status_search_and_creation_time() {
    let f = Fleet::start(TENANT).await;
    let work = Workdir::new();
    let web = work.single_file("web-2.0", &[DEVICE_TYPE], &[]);
    f.user().upload_ok(&web.path, "web").await;

    let pending = f
        .deploy_with(&["p1"], json!({"name": "Alpha Rollout"}))
        .await;
    let running = f.deploy_with(&["r1", "r2"], json!({"name": "beta"})).await;
    assert_eq!(f.device("r1").check_in().await, Some(running.clone()));
    // Handed the update is not enough: a deployment is pending until a device goes past
    // pending.
    assert_eq!(f.deployment(&running).await["status"], json!("pending"));
    f.device("r1").report_all(&running, &["downloading"]).await;
    assert_eq!(f.deployment(&running).await["status"], json!("inprogress"));
    let finished = f.deploy_with(&["f1"], json!({"name": "gamma"})).await;
    let aborted = json!({"status": "aborted"});
    let path = format!("/deployments/{finished}/status");
    no_body(
        f.user().put_json(&path, &aborted).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let scheduled = f
        .deploy_with(
            &["s1"],
            json!({"name": "delta", "artifact_name": "web-2.0",
                   "phases": [{"start_ts": in_seconds(3600)}]}),
        )
        .await;

    let query = |q: String| {
        let api = f.user();
        async move { ids(api.get(&format!("/deployments?{q}")).await).await }
    };
    for (status, id) in [
        ("pending", &pending),
        ("inprogress", &running),
        ("finished", &finished),
        ("scheduled", &scheduled),
    ] {
        assert_eq!(
            query(format!("status={status}")).await,
            vec![id.clone()],
            "{status}"
        );
    }
    // The list shows live phase counts, like GET /deployments/{id}.
    let live = json_ok(f.user().get("/deployments?status=inprogress").await).await;
    assert_eq!(live[0]["phases"][0]["device_count"], json!(1), "{live}");
    assert_eq!(query("search=alpha".into()).await, vec![pending.clone()]);
    assert_eq!(query("search=ROLLOUT".into()).await, vec![pending.clone()]);
    assert_eq!(query("search=WEB-2".into()).await, vec![scheduled.clone()]);
    assert_eq!(
        query("search=app-1".into()).await.len(),
        3,
        "by artifact name"
    );
    assert!(query("search=zzz".into()).await.is_empty());
    assert_eq!(
        query("status=pending&search=beta".into()).await,
        Vec::<String>::new()
    );

    let mut created = Vec::new();
    for id in [&pending, &running, &finished, &scheduled] {
        created.push((id.clone(), unix_nanos(&f.deployment(id).await["created"])));
    }
    // Each bound is an instant, whole seconds: a deployment created at t + 0.7 s is after
    // t, so created_before=t leaves it out (as upstream compares).
    let seconds: Vec<i64> = created
        .iter()
        .flat_map(|(_, c)| {
            let s = (c / 1_000_000_000) as i64;
            [s, s + 1]
        })
        .collect();
    for t in &seconds {
        let mut after: Vec<String> = query(format!("created_after={t}")).await;
        let mut before: Vec<String> = query(format!("created_before={t}")).await;
        after.sort();
        before.sort();
        let instant = i128::from(*t) * 1_000_000_000;
        let mut want_after: Vec<String> = created
            .iter()
            .filter(|(_, c)| *c >= instant)
            .map(|(i, _)| i.clone())
            .collect();
        let mut want_before: Vec<String> = created
            .iter()
            .filter(|(_, c)| *c <= instant)
            .map(|(i, _)| i.clone())
            .collect();
        want_after.sort();
        want_before.sort();
        assert_eq!(after, want_after, "created_after={t} is inclusive");
        assert_eq!(before, want_before, "created_before={t} is inclusive");
    }
    let t0 = seconds[0];
    assert!(query(format!("created_after={}", t0 + 100_000))
        .await
        .is_empty());
    assert!(query(format!("created_before={}", t0 - 100_000))
        .await
        .is_empty());
    for bad in [
        "status=bogus",
        "created_after=yesterday",
        "created_before=1.5",
    ] {
        let resp = f.user().get(&format!("/deployments?{bad}")).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    // Another tenant sees none of them.
    let other = f.server.as_user("globex").get("/deployments").await;
    assert!(ids(other).await.is_empty());
}

#[tokio::test]
async fn list_pages_newest_first_with_link_and_total_count() {
    let f = Fleet::start(TENANT).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            f.deploy_with(&["d"], json!({"name": format!("n{i}")}))
                .await,
        );
    }
    made.reverse();

    let resp = f.user().get("/deployments").await;
    assert_eq!(header(&resp, "x-total-count"), "5");
    assert!(
        header(&resp, "link").contains("per_page=20"),
        "default page size"
    );
    assert_eq!(ids(resp).await, made, "newest first");

    let mut seen = Vec::new();
    for page in 1..=3 {
        let resp = f
            .user()
            .get(&format!("/deployments?page={page}&per_page=2"))
            .await;
        assert_eq!(header(&resp, "x-total-count"), "5");
        let link = header(&resp, "link");
        assert!(link.contains("page=1&per_page=2>; rel=\"first\""), "{link}");
        let prev = format!("page={}&per_page=2>; rel=\"prev\"", page - 1);
        assert_eq!(link.contains("rel=\"prev\""), page > 1, "{link}");
        assert!(page == 1 || link.contains(&prev), "{link}");
        let next = format!("page={}&per_page=2>; rel=\"next\"", page + 1);
        assert_eq!(link.contains(&next), page < 3, "{link}");
        seen.extend(ids(resp).await);
    }
    assert_eq!(seen, made);
    let filtered = f.user().get("/deployments?per_page=1&search=n").await;
    assert!(
        header(&filtered, "link").contains("search=n"),
        "filters stay in links"
    );
    let beyond = f.user().get("/deployments?page=9&per_page=2").await;
    assert!(ids(beyond).await.is_empty());
    let max = f.user().get("/deployments?per_page=500").await;
    assert_eq!(ids(max).await.len(), 5);
    let oldest_first = f.user().get("/deployments?sort=asc&per_page=2").await;
    let mut ascending = made.clone();
    ascending.reverse();
    assert_eq!(ids(oldest_first).await, ascending[..2]);
    let desc = f.user().get("/deployments?sort=desc").await;
    assert_eq!(ids(desc).await, made);
    for bad in [
        "page=0",
        "page=x",
        "per_page=0",
        "per_page=501",
        "per_page=-1",
        "sort=bogus",
    ] {
        let resp = f.user().get(&format!("/deployments?{bad}")).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn unknown_deployments_are_404_everywhere() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1"]).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    // A UUID that names no deployment is 404. An id that is no UUID at all is a malformed
    // request (400, as upstream answers) where the contract lists 400 for the route, and
    // like an unknown id (404) where it lists only 404.
    for (missing, status) in [
        (unknown.as_str(), StatusCode::NOT_FOUND),
        ("not-a-uuid", StatusCode::BAD_REQUEST),
    ] {
        for path in ["", "/devices", "/statistics", "/devices/d1/log"] {
            let resp = f.user().get(&format!("/deployments/{missing}{path}")).await;
            assert_error(resp, StatusCode::NOT_FOUND).await;
        }
        let resp = f
            .user()
            .get(&format!("/deployments/{missing}/device_list"))
            .await;
        assert_error(resp, status).await;
        let aborted = json!({"status": "aborted"});
        let resp = f
            .user()
            .put_json(&format!("/deployments/{missing}/status"), &aborted)
            .await;
        assert_error(resp, status).await;
    }
    // Another tenant's deployment does not exist for this tenant.
    let other = f.server.as_user("globex");
    for path in ["", "/devices", "/statistics"] {
        let resp = other.get(&format!("/deployments/{id}{path}")).await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn abort_answers_204_then_422_and_keeps_finished_devices() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["done", "busy", "idle"]).await;
    let (done, busy) = (f.device("done"), f.device("busy"));
    assert_eq!(done.check_in().await, Some(id.clone()));
    done.report_all(&id, &["downloading", "installing", "success"])
        .await;
    assert_eq!(busy.check_in().await, Some(id.clone()));
    busy.report_all(&id, &["downloading"]).await;

    let path = format!("/deployments/{id}/status");
    for bad in [json!({"status": "finished"}), json!({"state": "aborted"})] {
        assert_error(
            f.user().put_json(&path, &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let aborted = json!({"status": "aborted"});
    no_body(
        f.user().put_json(&path, &aborted).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_error(
        f.user().put_json(&path, &aborted).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let d = f.deployment(&id).await;
    assert_eq!(d["status"], json!("finished"));
    assert_rfc3339(&d["finished"]);
    for (dev, status) in [
        ("done", "success"),
        ("busy", "aborted"),
        ("idle", "aborted"),
    ] {
        let rec = f.device_record(&id, dev).await;
        assert_eq!(rec["status"], json!(status), "{dev}");
        assert_rfc3339(&rec["finished"]);
    }
    let stats = f.statistics(&id).await;
    assert_eq!(
        (stats["success"].clone(), stats["aborted"].clone()),
        (json!(1), json!(2))
    );
    assert_error(busy.report(&id, "installing").await, StatusCode::CONFLICT).await;
    assert_eq!(f.device("idle").check_in().await, None);
}

#[tokio::test]
async fn decommission_answers_204_and_the_device_can_no_longer_report() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["gone", "stays"]).await;
    let gone = f.device("gone");
    assert_eq!(gone.check_in().await, Some(id.clone()));
    gone.report_all(&id, &["downloading"]).await;

    for device in ["gone", "never-deployed"] {
        let resp = f
            .user()
            .delete(&format!("/deployments/devices/{device}"))
            .await;
        no_body(resp, StatusCode::NO_CONTENT).await;
    }
    let rec = f.device_record(&id, "gone").await;
    assert_eq!(rec["status"], json!("decommissioned"));
    assert_rfc3339(&rec["finished"]);
    assert_eq!(
        f.device_record(&id, "stays").await["status"],
        json!("pending")
    );
    assert_eq!(f.statistics(&id).await["decommissioned"], json!(1));
    assert_error(gone.report(&id, "installing").await, StatusCode::CONFLICT).await;
    assert_eq!(gone.check_in().await, None);
    // Another tenant's decommission does not reach this tenant's device.
    let other = f.server.as_user("globex");
    no_body(
        other.delete("/deployments/devices/stays").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        f.device_record(&id, "stays").await["status"],
        json!("pending")
    );
}

#[tokio::test]
async fn device_log_is_served_as_text_lines() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1", "d2"]).await;
    let d1 = f.device("d1");
    assert_eq!(d1.check_in().await, Some(id.clone()));
    d1.report_all(&id, &["downloading", "failure"]).await;
    let log = json!({"messages": [
        {"timestamp": "2024-05-01T10:00:00Z", "level": "info", "message": "downloading"},
        {"timestamp": "2024-05-01T10:00:05Z", "level": "error", "message": "disk full"}
    ]});
    no_body(d1.put(&id, "log", &log).await, StatusCode::NO_CONTENT).await;

    let resp = f
        .user()
        .get(&format!("/deployments/{id}/devices/d1/log"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "content-type").starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "2024-05-01T10:00:00Z info: downloading",
            "2024-05-01T10:00:05Z error: disk full"
        ]
    );
    assert_eq!(f.device_record(&id, "d1").await["log"], json!(true));
    let none = f
        .user()
        .get(&format!("/deployments/{id}/devices/d2/log"))
        .await;
    assert_error(none, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_thousand_device_deployment_starts_with_every_device_pending() {
    let f = Fleet::start(TENANT).await;
    let devices: Vec<String> = (0..1000).map(|i| format!("device-{i:04}")).collect();
    let refs: Vec<&str> = devices.iter().map(String::as_str).collect();
    let id = f.deploy(&refs).await;
    let stats = f.statistics(&id).await;
    assert_eq!(stats["pending"], json!(1000));
    let d = f.deployment(&id).await;
    assert_eq!(d["device_count"], json!(1000));
    assert_eq!(d["status"], json!("pending"));
    let list = json_ok(
        f.user()
            .get(&format!("/deployments/{id}/device_list"))
            .await,
    )
    .await;
    assert_eq!(list, json!(devices));
}

#[tokio::test]
async fn devices_list_pages_a_deployments_devices_filtered_by_status() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1", "d2", "d3", "d4", "d5"]).await;
    for (device, statuses) in [
        ("d1", &["downloading", "success"][..]),
        ("d2", &["failure"][..]),
        ("d3", &["downloading"][..]),
    ] {
        let d = f.device(device);
        assert_eq!(d.check_in().await.as_deref(), Some(id.as_str()));
        d.report_all(&id, statuses).await;
    }
    let api = f.user();
    let list = |query: &str| {
        let path = format!("/deployments/{id}/devices/list?{query}");
        let api = &api;
        async move { api.get(&path).await }
    };
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // By status, then id: downloading d3, failure d2, pending d4 d5, success d1.
    let resp = list("per_page=2").await;
    assert_eq!(header(&resp, "x-total-count"), "5");
    let link = header(&resp, "link");
    assert!(link.contains("page=2&per_page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=3&per_page=2>; rel=\"last\""), "{link}");
    assert_eq!(ids(&json_ok(resp).await), ["d3", "d2"]);
    let third = json_ok(list("per_page=2&page=3").await).await;
    assert_eq!(ids(&third), ["d1"]);
    assert_eq!(third[0]["status"], json!("success"));

    for (status, expected) in [
        ("finished", &["d2", "d1"][..]),
        ("active", &["d3", "d4", "d5"][..]),
        ("pending", &["d4", "d5"][..]),
        ("pause", &[][..]),
    ] {
        let resp = list(&format!("status={status}")).await;
        assert_eq!(header(&resp, "x-total-count"), expected.len().to_string());
        assert_eq!(ids(&json_ok(resp).await), expected, "status={status}");
    }
    for bad in ["status=bogus", "page=0", "per_page=501"] {
        assert_error(list(bad).await, StatusCode::BAD_REQUEST).await;
    }
    let unknown = uuid::Uuid::new_v4();
    let resp = f
        .user()
        .get(&format!("/deployments/{unknown}/devices/list"))
        .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = f.user().get("/deployments/not-a-uuid/devices/list").await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let other = f.server.as_user("globex");
    let resp = other.get(&format!("/deployments/{id}/devices/list")).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn statistics_of_many_deployments_come_in_one_request() {
    let f = Fleet::start(TENANT).await;
    let one = f.deploy(&["d1", "d2"]).await;
    let two = f.deploy(&["d3"]).await;
    let d = f.device("d1");
    assert_eq!(d.check_in().await.as_deref(), Some(one.as_str()));
    d.report_all(&one, &["installing"]).await;
    let post = |body: Value| {
        send(
            f.user()
                .request(Method::POST, "/deployments/statistics/list")
                .json(&body),
        )
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    let got = json_ok(post(json!({"deployment_ids": [one, two, unknown]})).await).await;
    let got = got.as_array().expect("an array");
    assert_eq!(got.len(), 2, "the unknown id is left out: {got:?}");
    let of = |id: &str| got.iter().find(|s| s["id"] == json!(id)).unwrap()["stats"].clone();
    assert_eq!(of(&one)["installing"], json!(1));
    assert_eq!(of(&one)["pending"], json!(1));
    assert_eq!(of(&two)["pending"], json!(1));
    assert_eq!(of(&two), statistics(&f.user(), &two).await);

    let none = post(json!({"deployment_ids": [unknown]})).await;
    assert_error(none, StatusCode::NOT_FOUND).await;
    assert_eq!(
        json_ok(post(json!({"deployment_ids": []})).await).await,
        json!({})
    );
    let bad = post(json!({"deployment_ids": ["not-a-uuid"]})).await;
    assert_error(bad, StatusCode::BAD_REQUEST).await;
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let too_many = post(json!({ "deployment_ids": many })).await;
    assert_error(too_many, StatusCode::BAD_REQUEST).await;
    // Another tenant sees none of them.
    let other = send(
        f.server
            .as_user("globex")
            .request(Method::POST, "/deployments/statistics/list")
            .json(&json!({"deployment_ids": [one]})),
    )
    .await;
    assert_error(other, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn every_deployment_object_carries_statistics_by_status_and_total_size() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["d1", "d2", "d3"]).await;
    let size = f.user().artifact(&f.artifact_id).await["size"]
        .as_u64()
        .unwrap();
    for device in ["d1", "d2"] {
        let d = f.device(device);
        assert_eq!(d.check_in().await.as_deref(), Some(id.as_str()));
        d.report_all(&id, &["downloading"]).await;
    }
    let check = |d: &Value, downloading: u64, success: u64, total: u64| {
        let s = &d["statistics"];
        assert_eq!(s["status"]["downloading"], json!(downloading), "{d}");
        assert_eq!(s["status"]["success"], json!(success), "{d}");
        assert_eq!(s["status"]["pause_before_installing"], json!(0), "{d}");
        assert_eq!(s["total_size"], json!(total), "{d}");
    };
    check(&f.deployment(&id).await, 2, 0, 2 * size);
    let list = json_ok(f.user().get("/deployments").await).await;
    check(&list[0], 2, 0, 2 * size);

    for device in ["d1", "d2"] {
        f.device(device).report_all(&id, &["success"]).await;
    }
    let d3 = f.device("d3");
    assert_eq!(d3.check_in().await.as_deref(), Some(id.as_str()));
    d3.report_all(&id, &["success"]).await;
    let finished = f.deployment(&id).await;
    assert_eq!(finished["status"], json!("finished"));
    check(&finished, 0, 3, 3 * size);
    // Kept with the finished deployment; a final status replaced later follows.
    f.device("d3").report_all(&id, &["failure"]).await;
    let list = json_ok(f.user().get("/deployments").await).await;
    check(&list[0], 0, 2, 3 * size);
    assert_eq!(list[0]["statistics"]["status"]["failure"], json!(1));
    assert_eq!(f.statistics(&id).await["failure"], json!(1));
}

#[tokio::test]
async fn device_ids_in_management_paths_are_percent_decoded() {
    let f = Fleet::start(TENANT).await;
    let id = f.deploy(&["a b", "dév/1", "plain"]).await;
    let spaced = f.device("a b");
    assert_eq!(spaced.check_in().await, Some(id.clone()));
    let log = json!({"messages": [
        {"timestamp": "2024-05-01T10:00:00Z", "level": "info", "message": "hello"}
    ]});
    no_body(spaced.put(&id, "log", &log).await, StatusCode::NO_CONTENT).await;
    let resp = f
        .user()
        .get(&format!("/deployments/{id}/devices/a%20b/log"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert_eq!(text.trim_end(), "2024-05-01T10:00:00Z info: hello");

    for escaped in ["a%20b", "d%C3%A9v%2F1"] {
        let resp = f
            .user()
            .delete(&format!("/deployments/devices/{escaped}"))
            .await;
        no_body(resp, StatusCode::NO_CONTENT).await;
    }
    for device in ["a b", "dév/1"] {
        let status = &f.device_record(&id, device).await["status"];
        assert_eq!(status, &json!("decommissioned"), "{device}");
    }
    let plain = &f.device_record(&id, "plain").await["status"];
    assert_eq!(plain, &json!("pending"));
}

#[tokio::test]
async fn the_same_list_of_devices_deployed_twice_makes_two_deployments() {
    // The contract's POST /deployments answers 201, 400 or 422: no 409 for a repeat.
    let f = Fleet::start(TENANT).await;
    let first = f.deploy(&["d1", "d2"]).await;
    let second = f.deploy(&["d1", "d2"]).await;
    assert_ne!(first, second);
    for id in [&first, &second] {
        assert_eq!(f.deployment(id).await["status"], json!("pending"));
    }
    // The device is handed the oldest one first.
    assert_eq!(f.device("d1").check_in().await, Some(first));
}
