//! Two rollout processes on one shared store (a Cassandra/ScyllaDB keyspace): the rules a
//! process-local lock used to enforce hold across processes. Runs when the suites run on
//! the cluster store (`ROLLOUT_TEST_STORE=scylla`, see `common/cql.rs`); with the embedded
//! store, which one process owns, there is nothing to test and the case says so loudly.

mod common;

use common::{Server, Workdir};
use reqwest::StatusCode;

/// Rounds of simultaneous uploads; each round's race window is a few milliseconds, so
/// several rounds make a lost race (two artifacts stored) show reliably.
const ROUNDS: usize = 8;

#[tokio::test]
async fn the_same_release_uploaded_to_two_nodes_at_once_is_stored_once() {
    let first = Server::start().await;
    let Some(second) = Server::start_beside(&first).await else {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
        return;
    };
    let work = Workdir::new();
    let (a, b) = (first.as_user("acme"), second.as_user("acme"));
    for round in 0..ROUNDS {
        let name = format!("release-{round}");
        let built = work.single_file(&name, &["dev-a", "dev-b"], &[]);
        let (one, two) = tokio::join!(a.upload(&built.path, ""), b.upload(&built.path, ""));
        let mut statuses = [one.status(), two.status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: both nodes must not store {name}"
        );
    }
    let names: Vec<String> = a
        .artifacts()
        .await
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), ROUNDS, "{names:?}");
    assert_eq!(b.artifacts().await.len(), ROUNDS);
}

#[tokio::test]
async fn a_device_preauthorized_on_two_nodes_at_once_is_registered_once() {
    let first = Server::start().await;
    let Some(second) = Server::start_beside(&first).await else {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
        return;
    };
    let work = Workdir::new();
    let pubkey = ed25519_public_key(&work);
    let post = |server: &Server, body: &serde_json::Value| {
        server
            .http()
            .post(server.url("/api/management/v2/devauth/devices"))
            .bearer_auth(server.user_token("acme"))
            .json(body)
            .send()
    };
    for round in 0..ROUNDS {
        let body = serde_json::json!({
            "identity_data": {"mac": format!("02:00:00:00:01:{round:02x}")},
            "pubkey": pubkey,
        });
        let (one, two) = tokio::join!(post(&first, &body), post(&second, &body));
        let mut statuses = [one.unwrap().status(), two.unwrap().status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: the second registration must see the first"
        );
    }
}

#[tokio::test]
async fn the_preauthorize_command_registers_a_device_while_the_cluster_serves() {
    let server = Server::start().await;
    let store = server.store_args();
    if store.is_empty() {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
        return;
    }
    let work = Workdir::new();
    let pubkey = work.file("dev.pub", ed25519_public_key(&work).as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(["device", "preauthorize", "--tenant", "acme", "--identity"])
        .arg(r#"{"mac":"02:00:00:00:03:01"}"#)
        .arg("--pubkey")
        .arg(&pubkey)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(&store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = format!("/api/management/v2/devauth/devices/{id}");
    let req = server
        .http()
        .get(server.url(&path))
        .bearer_auth(server.user_token("acme"));
    let device = common::json_ok(common::send(req).await).await;
    assert_eq!(device["status"], "preauthorized", "{device}");
}

#[tokio::test]
async fn cluster_status_lists_every_live_node_and_the_unfinished_deployments() {
    let first = Server::start().await;
    let Some(second) = Server::start_beside(&first).await else {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
        return;
    };
    let store = first.store_args();
    let api = first.as_user("acme");
    let work = Workdir::new();
    let built = work.single_file("status-release", &["dev-a"], &[]);
    api.upload_ok(&built.path, "").await;
    let body = serde_json::json!({
        "name": "watched", "artifact_name": "status-release", "devices": ["d1", "d2"],
    });
    let created = common::fleet::create(&api, &body).await;
    let deployment = common::fleet::deployment_id(created).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(["cluster", "status", "--data-dir"])
        .arg(&first.data_dir)
        .args(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each node under its default id (host name and port) and its address.
    for server in [&first, &second] {
        let port = server.base.rsplit(':').next().unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&server.base))
            .unwrap_or_else(|| panic!("{} is not listed:\n{text}", server.base));
        assert!(line
            .split_whitespace()
            .next()
            .unwrap()
            .ends_with(&format!(":{port}")));
        assert!(line.contains(" yes "), "not alive: {line}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with(&deployment) && l.contains("acme")),
        "the deployment is not listed:\n{text}"
    );
}

/// A new Ed25519 key's public half (PKIX PEM), made by openssl in `work`.
fn ed25519_public_key(work: &Workdir) -> String {
    let key = work.path().join("dev.pem");
    let k = key.to_str().unwrap();
    let args = ["genpkey", "-algorithm", "ED25519", "-out", k];
    common::run_ok("openssl", args, work.path());
    common::run_ok("openssl", ["pkey", "-in", k, "-pubout"], work.path())
}

#[test]
fn serve_on_scylla_without_nodes_or_with_a_bad_keyspace_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", "scylla"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("ROLLOUT_SCYLLA_NODES")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(serve(&[]).contains("--scylla-nodes"));
    let bad = serve(&[
        "--scylla-nodes",
        "127.0.0.1:9",
        "--scylla-keyspace",
        "Bad-Name",
    ]);
    assert!(bad.contains("keyspace \"Bad-Name\""), "{bad}");
    let half = serve(&["--scylla-nodes", "127.0.0.1:9", "--scylla-user", "u"]);
    assert!(half.contains("--scylla-password-file"), "{half}");
}

#[tokio::test]
async fn a_device_that_starts_matching_on_one_node_joins_a_dynamic_deployment_run_by_another() {
    let first = Server::start().await;
    let Some(second) = Server::start_beside(&first).await else {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
        return;
    };
    let work = Workdir::new();
    let built = work.single_file("dyn-1", &["dev-a"], &[]);
    first.as_user("acme").upload_ok(&built.path, "").await;
    // Created on the first node, which claims it and runs its actor.
    let body = serde_json::json!({
        "name": "dynamic", "artifact_name": "dyn-1",
        "filter": {"terms": [{"scope": "inventory", "attribute": "site", "type": "$eq", "value": "oslo"}]},
    });
    let resp = common::send(
        first
            .http()
            .post(first.url("/api/management/v2/deployments/deployments"))
            .bearer_auth(first.user_token("acme"))
            .json(&body),
    )
    .await;
    let id = common::fleet::deployment_id(resp).await;
    // The device reports its inventory to the second node, and checks in there.
    let device = second.device("acme", "far-away");
    let attrs = serde_json::json!([{"name": "site", "value": "oslo"}]);
    let req = second
        .http()
        .patch(second.url("/api/devices/v1/inventory/device/attributes"))
        .bearer_auth(second.device_token_for("acme", "far-away"))
        .json(&attrs);
    assert_eq!(common::send(req).await.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if device.check_in().await == Some(id.clone()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second node never routed the joined device to the deployment"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let d = common::json_ok(
        first
            .as_user("acme")
            .get(&format!("/deployments/{id}"))
            .await,
    )
    .await;
    assert_eq!(d["device_count"], serde_json::json!(1), "{d}");
}
