//! Crash safety: a `kill -9` of the server while devices report progress loses nothing
//! that was acknowledged. A 204 to a status report promises the change is durable, so after
//! a restart on the same data dir every acknowledged report must show in `/devices`, the
//! statistics must equal counting the records, and the devices must be able to finish.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{Device, Fleet};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Notify;

const TENANT: &str = "acme";
/// Devices in the deployment, all updating at once.
const DEVICES: usize = 200;
/// What each device reports after it got the deployment.
const STAGES: [&str; 3] = ["downloading", "installing", "success"];
/// The server is killed once this many reports have been acknowledged: well before all
/// `DEVICES * STAGES` are, so that reports are in flight when it dies.
const KILL_AFTER: usize = 150;
/// Bound on every wait, so a hang fails the test instead of stalling it.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the server acknowledged before it was killed.
#[derive(Default)]
struct Acks {
    /// Device → how many of [`STAGES`] were answered 204.
    reached: Mutex<HashMap<String, usize>>,
    /// All 204s so far.
    total: AtomicUsize,
    /// Woken once `total` reaches [`KILL_AFTER`].
    enough: Notify,
    /// Answers other than the expected 200/204 (each is a server bug).
    unexpected: Mutex<Vec<String>>,
}

impl Acks {
    fn acknowledged(&self, device: &str, stage: usize) {
        self.reached
            .lock()
            .unwrap()
            .insert(device.to_owned(), stage + 1);
        if self.total.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
            self.enough.notify_one();
        }
    }

    fn unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// Position of a status in the device's progress.
fn rank(status: &str) -> usize {
    match status {
        "pending" => 0,
        s => {
            STAGES
                .iter()
                .position(|x| *x == s)
                .unwrap_or_else(|| panic!("a device ended up {s}"))
                + 1
        }
    }
}

/// One device until the server dies: check in, then report every stage. Transport errors
/// (the server was killed) end it quietly.
async fn run_device(device: Device, deployment: String, acks: Arc<Acks>) {
    let Ok(resp) = device.try_check_in().await else {
        return;
    };
    if resp.status() != StatusCode::OK {
        return acks.unexpected(format!(
            "{}: check-in answered {}",
            device.id,
            resp.status()
        ));
    }
    let Ok(body) = resp.json::<Value>().await else {
        return;
    };
    if body["id"] != json!(deployment) {
        return acks.unexpected(format!("{}: got deployment {}", device.id, body["id"]));
    }
    for (i, status) in STAGES.iter().enumerate() {
        let Ok(resp) = device.try_report(&deployment, status).await else {
            return;
        };
        if resp.status() != StatusCode::NO_CONTENT {
            return acks.unexpected(format!(
                "{}: {status} answered {}",
                device.id,
                resp.status()
            ));
        }
        acks.acknowledged(&device.id, i);
    }
}

/// After the restart: check in again and finish whatever is left.
async fn finish_device(device: Device, deployment: String) {
    if let Some(id) = device.check_in().await {
        assert_eq!(id, deployment);
        device.report_all(&deployment, &STAGES).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_reports_survive_a_kill_9() {
    let mut f = Fleet::start(TENANT).await;
    let names: Vec<String> = (0..DEVICES).map(|i| format!("crash-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let id = f.deploy(&refs).await;
    let devices: Vec<Device> = names.iter().map(|d| f.device(d)).collect();

    let acks = Arc::new(Acks::default());
    let tasks: Vec<_> = devices
        .iter()
        .map(|d| tokio::spawn(run_device(d.clone(), id.clone(), acks.clone())))
        .collect();
    tokio::time::timeout(PATIENCE, acks.enough.notified())
        .await
        .expect("the devices made no progress");
    tokio::task::block_in_place(|| f.server.crash_and_restart());
    for t in tasks {
        tokio::time::timeout(PATIENCE, t)
            .await
            .expect("a device hung after the kill")
            .expect("a device task panicked");
    }
    let unexpected = acks.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let total = acks.total.load(Ordering::SeqCst);
    eprintln!("{total} reports were acknowledged before the kill");
    assert!(
        total < DEVICES * STAGES.len(),
        "every report was acknowledged before the kill; nothing was in flight"
    );

    let stats = f.statistics(&id).await;
    let records: HashMap<String, Value> = f
        .devices(&id)
        .await
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(records.len(), DEVICES);
    let reached = acks.reached.lock().unwrap().clone();
    for (device, stage) in &reached {
        let rec = &records[device];
        let status = rec["status"].as_str().unwrap();
        assert!(
            rank(status) >= *stage,
            "{device}: {} was acknowledged, but after the restart it is {status}",
            STAGES[stage - 1]
        );
        assert_eq!(rec["attempts"], json!(1), "{device}: {rec}");
    }
    let successes = reached.values().filter(|s| **s == STAGES.len()).count() as u64;
    assert!(stats["success"].as_u64().unwrap() >= successes, "{stats}");

    // Every device can carry on against the restarted server.
    let finishing: Vec<_> = devices
        .iter()
        .map(|d| tokio::spawn(finish_device(d.at(&f.server), id.clone())))
        .collect();
    for t in finishing {
        tokio::time::timeout(PATIENCE, t)
            .await
            .expect("a device hung after the restart")
            .expect("a device failed after the restart");
    }
    let stats = f.statistics(&id).await;
    assert_eq!(stats["success"], json!(DEVICES), "{stats}");
    let d = f.deployment(&id).await;
    assert_eq!(d["status"], json!("finished"));
    assert_eq!(d["phases"][0]["device_count"], json!(DEVICES));
}
