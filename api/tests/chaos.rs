//! Supervision over HTTP: with `--chaos-crash-every` the server crashes the deployment's
//! actor every few milliseconds while devices report. A report that arrives while the actor
//! restarts must still be answered 204 (a 409 tells mender-client the deployment was
//! aborted, and it rolls back), and the statistics must equal the records at the end.

mod common;

use common::fleet::{create, deployment_id, statistics, Device, DEVICE_TYPE, RELEASE};
use common::{Server, Workdir};
use reqwest::StatusCode;
use serde_json::json;

const TENANT: &str = "acme";
const DEVICES: usize = 12;
/// What each device reports, each status twice with two substates.
const STAGES: [&str; 4] = ["downloading", "installing", "rebooting", "success"];

/// One device through the update; every answer it got that was not the expected one.
async fn run_device(device: Device, deployment: String) -> Vec<String> {
    let mut unexpected = Vec::new();
    let got = device.check_in().await;
    if got.as_deref() != Some(deployment.as_str()) {
        unexpected.push(format!("{}: check-in got {got:?}", device.id));
    }
    for stage in STAGES {
        for substate in ["starting", "almost done"] {
            let body = json!({"status": stage, "substate": substate});
            let status = device.put(&deployment, "status", &body).await.status();
            if status != StatusCode::NO_CONTENT {
                unexpected.push(format!(
                    "{}: {stage} ({substate}) answered {status}",
                    device.id
                ));
            }
        }
        let log = json!({"messages": [
            {"timestamp": "2024-01-02T03:04:05Z", "level": "info", "message": stage}
        ]});
        let status = device.put(&deployment, "log", &log).await.status();
        if status != StatusCode::NO_CONTENT {
            unexpected.push(format!(
                "{}: log after {stage} answered {status}",
                device.id
            ));
        }
    }
    unexpected
}

#[tokio::test]
async fn devices_are_never_refused_while_their_deployment_actor_restarts() {
    let server = Server::start_with(&["--chaos-crash-every", "3"]).await;
    let work = Workdir::new();
    let artifact = work.single_file(RELEASE, &[DEVICE_TYPE], &[]);
    server
        .as_user(TENANT)
        .upload_ok(&artifact.path, "the release")
        .await;
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("d{i:02}")).collect();
    let body = json!({"name": "chaos", "artifact_name": RELEASE, "devices": ids});
    let id = deployment_id(create(&server.as_user(TENANT), &body).await).await;

    let devices: Vec<Device> = ids.iter().map(|d| server.device(TENANT, d)).collect();
    let runs = devices
        .into_iter()
        .map(|d| tokio::spawn(run_device(d, id.clone())));
    let mut unexpected = Vec::new();
    for run in runs {
        unexpected.extend(run.await.expect("a device task"));
    }
    let log = server.log_text();
    let crashes = log.matches("chaos drill: crashed its actor").count();
    assert!(
        unexpected.is_empty(),
        "{unexpected:#?}\n({crashes} crashes)"
    );
    assert!(
        crashes >= 5,
        "only {crashes} crashes: the drill did not run"
    );

    let stats = statistics(&server.as_user(TENANT), &id).await;
    assert_eq!(stats["success"], json!(DEVICES), "{stats}");
    let d = common::json_ok(
        server
            .as_user(TENANT)
            .get(&format!("/deployments/{id}"))
            .await,
    )
    .await;
    assert_eq!(d["status"], json!("finished"));
}
