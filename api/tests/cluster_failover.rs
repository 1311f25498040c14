//! Three rollout processes over one Cassandra keyspace acting as one service: a deployment's
//! actor runs on the node holding its lease, any node serves any device, and when the owner
//! is killed or paused another node takes the deployment over without losing or doubling
//! anything acknowledged. Artifacts are on the S3 test server when it runs. Runs when the suites run on the cluster store
//! (`ROLLOUT_TEST_STORE=scylla`, see `common/cql.rs`); with the embedded store the cases say
//! loudly that they were skipped.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::fleet::{create, deployment_id, statistics, Device, DEVICE_TYPE, OLD_RELEASE, RELEASE};
use common::{json_ok, Server, Workdir};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TENANT: &str = "acme";

/// Three nodes sharing a keyspace and, when the S3 test server runs (`ROLLOUT_TEST_S3`,
/// started by `scripts/test`), a bucket, with the release uploaded.
struct Cluster {
    nodes: Vec<Server>,
    _work: Workdir,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        let bucket = std::env::var("ROLLOUT_TEST_S3")
            .ok()
            .map(common::s3::TestBucket::create);
        let first = Server::start_on(&[], bucket).await;
        let second = Server::start_beside(&first).await?;
        let third = Server::start_beside(&first).await?;
        let work = Workdir::new();
        let artifact = work.single_file(RELEASE, &[DEVICE_TYPE], &[]);
        first
            .as_user(TENANT)
            .upload_ok(&artifact.path, "the release")
            .await;
        Some(Cluster {
            nodes: vec![first, second, third],
            _work: work,
        })
    }

    /// Device `i`, talking to node `i % 3`.
    fn device(&self, i: usize) -> Device {
        let node = &self.nodes[i % self.nodes.len()];
        node.device(TENANT, &format!("dev-{i:03}"))
    }

    /// The same device through another node.
    fn device_via(&self, i: usize, node: usize) -> Device {
        self.device(i).at(&self.nodes[node])
    }

    /// Create a deployment through `node`; its id.
    async fn deploy(&self, node: usize, devices: usize, extra: Value) -> String {
        let ids: Vec<String> = (0..devices).map(|i| format!("dev-{i:03}")).collect();
        let mut body = json!({"name": "cluster", "artifact_name": RELEASE, "devices": ids});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        deployment_id(create(&self.nodes[node].as_user(TENANT), &body).await).await
    }

    /// `rollout cluster status`.
    fn status_text(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
            .args(["cluster", "status", "--data-dir"])
            .arg(&self.nodes[0].data_dir)
            .args(self.nodes[0].store_args())
            .output()
            .expect("running rollout cluster status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Which node holds the deployment's lease (from `rollout cluster status`).
    fn owner(&self, deployment: &str) -> Option<usize> {
        let text = self.status_text();
        let line = text.lines().find(|l| l.starts_with(deployment))?;
        let owner = line.split_whitespace().nth(2)?;
        let port = owner.rsplit(':').next()?;
        self.nodes
            .iter()
            .position(|n| n.base.ends_with(&format!(":{port}")))
    }

    /// Wait until the deployment has an owner other than `not`; which one, and how long
    /// it took.
    async fn wait_owner_other_than(
        &self,
        deployment: &str,
        not: usize,
        within: Duration,
    ) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            if let Some(o) = self.owner(deployment).filter(|o| *o != not) {
                return (o, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "no other node took deployment {deployment} over within {within:?}:\n{}",
                self.status_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn api(&self, node: usize) -> common::Api<'_> {
        self.nodes[node].as_user(TENANT)
    }
}

fn skipped() {
    eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL !!!\n");
}

/// Check in until the update comes (the device's phase may open later); the deployment id.
async fn check_in_until_update(device: &Device, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let resp = device.next_as(OLD_RELEASE, DEVICE_TYPE).await;
        match resp.status() {
            StatusCode::OK => {
                let body = json_ok(resp).await;
                return body["id"].as_str().expect("id").to_owned();
            }
            StatusCode::NO_CONTENT | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!(
                "{}: check-in answered {other}: {}",
                device.id,
                resp.text().await.unwrap_or_default()
            ),
        }
        assert!(
            started.elapsed() < within,
            "{} got no update within {within:?}",
            device.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Report `status` until it is acknowledged (a 503 while a deployment moves is retried, as
/// mender-client does).
async fn report_acked(device: &Device, deployment: &str, status: &str) {
    let started = Instant::now();
    loop {
        let resp = device.report(deployment, status).await;
        match resp.status() {
            StatusCode::NO_CONTENT => return,
            StatusCode::SERVICE_UNAVAILABLE if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!(
                "{} reporting {status}: {other} {}",
                device.id,
                resp.text().await.unwrap_or_default()
            ),
        }
    }
}

/// Every device's status in the deployment, as any node shows it.
async fn statuses(api: &common::Api<'_>, deployment: &str) -> HashMap<String, String> {
    let list = json_ok(api.get(&format!("/deployments/{deployment}/devices")).await).await;
    list.as_array()
        .expect("devices is an array")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_nodes_run_a_phased_deployment_with_retries_as_one_service() {
    let Some(cluster) = Cluster::start().await else {
        return skipped();
    };
    const DEVICES: usize = 12;
    let second_phase = (time::OffsetDateTime::now_utc() + time::Duration::seconds(4))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = cluster
        .deploy(
            1,
            DEVICES,
            json!({"retries": 1, "phases": [{"batch_size": 50}, {"start_ts": second_phase}]}),
        )
        .await;
    // Every node knows the deployment, whoever runs it.
    for node in 0..3 {
        let d = json_ok(cluster.api(node).get(&format!("/deployments/{id}")).await).await;
        assert_eq!(d["id"], json!(id), "node {node}: {d}");
    }
    let mut tasks = Vec::new();
    for i in 0..DEVICES {
        let device = cluster.device(i);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let got = check_in_until_update(&device, Duration::from_secs(30)).await;
            assert_eq!(got, id);
            report_acked(&device, &id, "downloading").await;
            report_acked(&device, &id, "installing").await;
            if i % 4 == 0 {
                // A failure with a retry left: the device gets the update again.
                report_acked(&device, &id, "failure").await;
                let again = check_in_until_update(&device, Duration::from_secs(30)).await;
                assert_eq!(again, id);
                report_acked(&device, &id, "installing").await;
            }
            report_acked(&device, &id, "success").await;
        }));
    }
    for t in tasks {
        t.await.expect("a device failed");
    }
    for node in 0..3 {
        let d = json_ok(cluster.api(node).get(&format!("/deployments/{id}")).await).await;
        assert_eq!(d["status"], json!("finished"), "node {node}: {d}");
        let stats = statistics(&cluster.api(node), &id).await;
        assert_eq!(stats["success"], json!(DEVICES), "node {node}: {stats}");
        let phases = d["phases"].as_array().expect("phases");
        let admitted: u64 = phases
            .iter()
            .map(|p| p["device_count"].as_u64().unwrap())
            .sum();
        assert_eq!(admitted, DEVICES as u64, "each device admitted once: {d}");
    }
}

#[tokio::test]
async fn killing_the_owner_moves_its_deployment_within_seconds_and_loses_nothing() {
    let Some(mut cluster) = Cluster::start().await else {
        return skipped();
    };
    const DEVICES: usize = 9;
    let id = cluster.deploy(0, DEVICES, json!({})).await;
    let owner = cluster.owner(&id).expect("the deployment has an owner");
    let survivor = (owner + 1) % 3;
    // Every device gets the update and reports half way, through the surviving nodes.
    for i in 0..DEVICES {
        let device = cluster.device_via(
            i,
            if i % 2 == 0 {
                survivor
            } else {
                (owner + 2) % 3
            },
        );
        check_in_until_update(&device, Duration::from_secs(10)).await;
        report_acked(&device, &id, "downloading").await;
        if i < 5 {
            report_acked(&device, &id, "installing").await;
        }
    }
    let before = statuses(&cluster.api(survivor), &id).await;
    cluster.nodes[owner].kill();
    let (new_owner, took) = cluster
        .wait_owner_other_than(&id, owner, Duration::from_secs(10))
        .await;
    assert_ne!(new_owner, owner);
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    // Nothing acknowledged before the kill is lost.
    assert_eq!(statuses(&cluster.api(survivor), &id).await, before);
    for i in 0..DEVICES {
        let device = cluster.device_via(i, survivor);
        if i >= 5 {
            report_acked(&device, &id, "installing").await;
        }
        report_acked(&device, &id, "success").await;
    }
    let d = json_ok(
        cluster
            .api(survivor)
            .get(&format!("/deployments/{id}"))
            .await,
    )
    .await;
    assert_eq!(d["status"], json!("finished"), "{d}");
    assert_eq!(
        d["phases"][0]["device_count"],
        json!(DEVICES),
        "no device admitted twice: {d}"
    );
    let stats = statistics(&cluster.api(new_owner), &id).await;
    assert_eq!(stats["success"], json!(DEVICES), "{stats}");
}

#[tokio::test]
async fn a_paused_owner_writes_nothing_once_its_lease_has_moved() {
    let Some(cluster) = Cluster::start().await else {
        return skipped();
    };
    const DEVICES: usize = 6;
    let id = cluster.deploy(0, DEVICES, json!({})).await;
    let owner = cluster.owner(&id).expect("the deployment has an owner");
    let other = (owner + 1) % 3;
    for i in 0..DEVICES {
        let device = cluster.device_via(i, other);
        check_in_until_update(&device, Duration::from_secs(10)).await;
        report_acked(&device, &id, "downloading").await;
    }
    cluster.nodes[owner].signal("STOP");
    let (new_owner, _) = cluster
        .wait_owner_other_than(&id, owner, Duration::from_secs(15))
        .await;
    // While the old owner sleeps, all devices but the last finish through the new one...
    let last = DEVICES - 1;
    for i in 0..last {
        report_acked(&cluster.device_via(i, new_owner), &id, "success").await;
    }
    // ...and send the paused node `installing` reports, queued in its socket. The paused
    // node still believes them `downloading`, so its actor would accept them and write
    // `installing` over `success`, were it not fenced; the new owner refuses them (a
    // finished device cannot become active again).
    let stale: Vec<_> = (0..last)
        .map(|i| {
            let device = cluster.device_via(i, owner);
            let id = id.clone();
            tokio::spawn(async move { device.report(&id, "installing").await.status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[owner].signal("CONT");
    for (i, t) in stale.into_iter().enumerate() {
        let status = t.await.unwrap();
        // 503: the stale owner refused to write; 409: the request reached the new owner,
        // for which the device is over.
        assert!(
            [StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "dev-{i:03}: a stale report was answered {status}"
        );
    }
    let now = statuses(&cluster.api(new_owner), &id).await;
    for i in 0..last {
        assert_eq!(now[&format!("dev-{i:03}")], "success", "{now:?}");
    }
    let stats = statistics(&cluster.api(new_owner), &id).await;
    assert_eq!(stats["success"], json!(last), "{stats}");
    assert_eq!(stats["installing"], json!(0), "{stats}");
    // The woken node serves again, forwarding to the new owner.
    report_acked(&cluster.device_via(last, owner), &id, "success").await;
    let d = json_ok(cluster.api(owner).get(&format!("/deployments/{id}")).await).await;
    assert_eq!(d["status"], json!("finished"), "{d}");
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_hands_its_deployments_over_at_once() {
    let Some(mut cluster) = Cluster::start().await else {
        return skipped();
    };
    let id = cluster.deploy(0, 3, json!({})).await;
    let owner = cluster.owner(&id).expect("the deployment has an owner");
    let other = (owner + 1) % 3;
    let device = cluster.device_via(0, other);
    check_in_until_update(&device, Duration::from_secs(10)).await;
    report_acked(&device, &id, "downloading").await;
    let stopped = Instant::now();
    let status = cluster.nodes[owner].stop();
    assert!(status.success(), "{status}");
    let (_, _) = cluster
        .wait_owner_other_than(&id, owner, Duration::from_secs(10))
        .await;
    // Released, not lapsed: taken at the next lease round of another node (a third of the
    // 3 s lease), well before the lease would have run out.
    let took = stopped.elapsed();
    assert!(took < Duration::from_millis(2500), "handover took {took:?}");
    report_acked(&device, &id, "installing").await;
    assert_eq!(
        statuses(&cluster.api(other), &id).await["dev-000"],
        "installing"
    );
}
