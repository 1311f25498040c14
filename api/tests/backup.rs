//! `rollout backup` and `rollout restore` against the real binary: a backup taken from a
//! running server, restored into a fresh data dir, answers every listing of the API as the
//! original did, keeps its tokens and files, and keeps every status report the original
//! acknowledged before the backup began, though reports kept coming while it ran. Wrong
//! uses (no server, a used data dir, a cut file, an existing target) fail clearly and
//! change nothing. scripts/test runs them again with the original server's blobs on S3
//! (the restored server keeps its blobs in its data dir).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::fleet::{Fleet, DEVICE_TYPE};
use common::{json_ok, run_ok, send, Server, Workdir, MANAGEMENT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const INVENTORY_V1: &str = "/api/management/v1/inventory";
const INVENTORY_V2: &str = "/api/management/v2/inventory";
const DEVAUTH: &str = "/api/management/v2/devauth/devices";
const REPORT: &str = "/api/devices/v1/inventory/device/attributes";

/// Run the `rollout` binary.
fn rollout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running rollout")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rollout backup` of the server on `data_dir` into `to`.
fn run_backup(data_dir: &Path, to: &Path) -> Output {
    rollout(&[
        "backup",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ])
}

/// `rollout backup` of `server` into `to`, asserting success; what it printed.
fn backup(server: &Server, to: &Path) -> String {
    let out = run_backup(&server.data_dir, to);
    assert!(
        out.status.success(),
        "rollout backup failed: {}\nserver log:\n{}",
        text(&out.stderr),
        server.log_text()
    );
    text(&out.stdout)
}

/// `rollout restore` of `from` into `data_dir`.
fn restore(from: &Path, data_dir: &Path) -> Output {
    rollout(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// A server on a data dir restored from `from`.
async fn restored(from: &Path) -> Server {
    Server::start_prepared(&[], None, |dir| {
        let out = restore(from, dir);
        assert!(
            out.status.success(),
            "rollout restore failed: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("restored into"),
            "{}",
            text(&out.stdout)
        );
    })
    .await
}

/// A management request to any path with `token`, asserting 2xx; status, the paging
/// headers and the body.
async fn listing(server: &Server, token: &str, path: &str) -> (u16, Option<String>, Value) {
    let resp = send(server.http().get(server.url(path)).bearer_auth(token)).await;
    let status = resp.status();
    assert!(status.is_success(), "GET {path}: {status}");
    let total = resp
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status.as_u16(), total, body)
}

/// Every listing of the API for the fleet's tenant, with the ids it holds.
fn listings(deployments: &[String], artifact: &str, devices: &[&str]) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/deployments",
        "/deployments?sort=asc",
        "/artifacts",
        "/artifacts/list",
        "/deployments/releases",
        "/deployments/releases/list",
    ]
    .iter()
    .map(|p| format!("{MANAGEMENT}{p}"))
    .collect();
    paths.push(format!("{MANAGEMENT}/artifacts/{artifact}"));
    for id in deployments {
        for tail in ["", "/statistics", "/devices", "/devices/list"] {
            paths.push(format!("{MANAGEMENT}/deployments/{id}{tail}"));
        }
    }
    for device in devices {
        paths.push(format!("{MANAGEMENT}/deployments/devices/{device}"));
        paths.push(format!("{INVENTORY_V1}/devices/{device}"));
    }
    paths.push(format!(
        "{MANAGEMENT}/deployments/{}/devices/{}/log",
        deployments[0], devices[1]
    ));
    for p in ["/devices", "/groups"] {
        paths.push(format!("{INVENTORY_V1}{p}"));
    }
    paths.push(format!("{INVENTORY_V2}/filters"));
    paths.push(DEVAUTH.to_owned());
    paths
}

/// A PKIX PEM public key made by openssl.
fn public_key(work: &Workdir) -> String {
    let key = work.path().join("device.pem");
    let k = key.to_str().unwrap();
    run_ok(
        "openssl",
        ["genpkey", "-algorithm", "ED25519", "-out", k],
        work.path(),
    );
    run_ok("openssl", ["pkey", "-in", k, "-pubout"], work.path())
}

/// Fill the fleet's server with one of everything a listing shows: two deployments
/// (devices at every stage, a log), inventory, a group, a saved filter, a preauthorized
/// device. Returns the deployment ids.
async fn populate(fleet: &Fleet, devices: &[&str], work: &Workdir) -> Vec<String> {
    let first = fleet.deploy(&devices[..3]).await;
    let second = fleet
        .deploy_with(&devices[2..], json!({"name": "second"}))
        .await;
    let success = fleet.device(devices[0]);
    assert!(success.check_in().await.is_some());
    success
        .report_all(&first, &["downloading", "installing", "success"])
        .await;
    let failure = fleet.device(devices[1]);
    assert!(failure.check_in().await.is_some());
    let log = json!({"messages": [{"timestamp": "2026-12-02T10:00:00Z", "level": "error", "message": "disk full"}]});
    let resp = failure.put(&first, "log", &log).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    failure
        .report_all(&first, &["downloading", "failure"])
        .await;
    let busy = fleet.device(devices[2]);
    assert!(busy.check_in().await.is_some());
    busy.report_all(&first, &["downloading"]).await;
    let server = &fleet.server;
    for (i, device) in devices.iter().enumerate() {
        let attrs = json!([{"name": "device_type", "value": DEVICE_TYPE}, {"name": "mem", "value": 512 * (i + 1)}]);
        let req = server
            .http()
            .patch(server.url(REPORT))
            .bearer_auth(server.device_token_for(&fleet.tenant, device))
            .json(&attrs);
        assert_eq!(send(req).await.status(), StatusCode::OK);
    }
    let user = fleet.user();
    let group = format!("{INVENTORY_V1}/devices/{}/group", devices[3]);
    let resp = send(
        server
            .http()
            .put(server.url(&group))
            .bearer_auth(user.token())
            .json(&json!({"group": "canary"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let filter = json!({"name": "big", "terms": [{"scope": "inventory", "attribute": "mem", "type": "$gte", "value": 1024}]});
    let resp = send(
        server
            .http()
            .post(server.url(&format!("{INVENTORY_V2}/filters")))
            .bearer_auth(user.token())
            .json(&filter),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let preauth =
        json!({"identity_data": {"mac": "00:11:22:33:44:55"}, "pubkey": public_key(work)});
    let resp = send(
        server
            .http()
            .post(server.url(DEVAUTH))
            .bearer_auth(user.token())
            .json(&preauth),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    vec![first, second]
}

#[tokio::test]
async fn a_restored_server_answers_every_listing_as_the_original_did() {
    let fleet = Fleet::start("acme").await;
    let work = Workdir::new();
    let devices = ["dev-1", "dev-2", "dev-3", "dev-4"];
    let deployments = populate(&fleet, &devices, &work).await;
    let file = work.path().join("rollout.backup");
    let said = backup(&fleet.server, &file);
    assert!(said.contains("backup written to"), "{said}");
    assert!(said.contains("1 artifact files"), "{said}");
    let copy = restored(&file).await;

    // The old server's tokens work on the copy: the signing key came along.
    let token = fleet.user().token().to_owned();
    for path in listings(&deployments, &fleet.artifact_id, &devices) {
        let original = listing(&fleet.server, &token, &path).await;
        let restored = listing(&copy, &token, &path).await;
        assert_eq!(original, restored, "GET {path} differs after the restore");
    }
    // The artifact's file came along too.
    let link = json_ok(
        send(
            copy.http()
                .get(copy.url(&format!(
                    "{MANAGEMENT}/artifacts/{}/download",
                    fleet.artifact_id
                )))
                .bearer_auth(&token),
        )
        .await,
    )
    .await;
    let uri = link["uri"].as_str().expect("a download uri");
    let bytes = send(copy.http().get(uri)).await.bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), fleet.artifact.bytes().as_slice());

    // The copy carries on: the busy device finishes there.
    let busy = fleet.device(devices[2]).at(&copy);
    busy.report_all(&deployments[0], &["installing", "success"])
        .await;
    let stats = common::fleet::statistics(&copy.api(token.clone()), &deployments[0]).await;
    assert_eq!(stats["success"], json!(2));
    assert_eq!(stats["failure"], json!(1));
}

#[tokio::test]
async fn a_backup_taken_while_devices_report_keeps_every_report_acknowledged_before_it() {
    const DEVICES: usize = 60;
    let fleet = Fleet::start("acme").await;
    let names: Vec<String> = (0..DEVICES).map(|i| format!("busy-{i}")).collect();
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    let deployment = fleet.deploy(&ids).await;
    // Each device reports its stages in a loop until told to stop; what was acknowledged
    // is noted the moment the 204 arrives.
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for name in &names {
        let device = fleet.device(name);
        let (acked, stop, deployment) = (acked.clone(), stop.clone(), deployment.clone());
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            assert!(device.check_in().await.is_some());
            for (stage, status) in ["downloading", "installing", "rebooting", "success"]
                .iter()
                .enumerate()
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let resp = device.report(&deployment, status).await;
                assert_eq!(resp.status(), StatusCode::NO_CONTENT);
                acked.lock().unwrap().push((name.clone(), stage));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let before: Vec<(String, usize)> = acked.lock().unwrap().clone();
    let work = Workdir::new();
    let file = work.path().join("busy.backup");
    let server_dir = fleet.server.data_dir.clone();
    let file_for_backup = file.clone();
    let backup = tokio::task::spawn_blocking(move || run_backup(&server_dir, &file_for_backup))
        .await
        .unwrap();
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        !before.is_empty(),
        "no report was acknowledged before the backup"
    );

    let copy = restored(&file).await;
    let user = copy.api(fleet.user().token().to_owned());
    let listed = json_ok(
        user.get(&format!("/deployments/{deployment}/devices"))
            .await,
    )
    .await;
    let rank = |status: &str| {
        [
            "pending",
            "downloading",
            "installing",
            "rebooting",
            "success",
        ]
        .iter()
        .position(|s| *s == status)
        .unwrap_or_else(|| panic!("unexpected status {status}"))
    };
    for (device, stage) in &before {
        let record = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == json!(device))
            .expect("every device is listed");
        let status = record["status"].as_str().unwrap();
        assert!(
            rank(status) > *stage,
            "{device} was acknowledged at stage {stage} before the backup, restored as {status}"
        );
    }
    // Internally consistent: the statistics count the restored device records.
    common::fleet::statistics(&user, &deployment).await;
}

#[tokio::test]
async fn wrong_uses_fail_clearly_and_change_nothing() {
    let fleet = Fleet::start("acme").await;
    let work = Workdir::new();

    // No server on the data dir.
    let nowhere = work.path().join("nowhere");
    let target = work.path().join("x.backup");
    let out = run_backup(&nowhere, &target);
    fails_saying(&out, "no running server to back up");
    assert!(!target.exists() && !nowhere.exists());

    // An existing target file is never overwritten.
    let existing = work.file("existing.backup", b"keep me");
    let out = run_backup(&fleet.server.data_dir, &existing);
    fails_saying(&out, "exists already");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let file = work.path().join("good.backup");
    backup(&fleet.server, &file);
    let whole = std::fs::read(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the backup holds keys: only its owner may read it"
        );
    }

    // A used data dir is refused and left as it was.
    let used = work.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("notes.txt"), b"mine").unwrap();
    let out = restore(&file, &used);
    fails_saying(&out, "is not empty");
    assert_eq!(entries(&used), vec![used.join("notes.txt")]);

    // A cut file is refused, and what it restored before the cut is removed.
    let cut = work.file("cut.backup", &whole[..whole.len() / 2]);
    let target_dir = work.path().join("from-cut");
    let out = restore(&cut, &target_dir);
    assert!(!out.status.success(), "a cut backup was restored");
    assert!(
        entries(&target_dir).is_empty(),
        "left {:?}",
        entries(&target_dir)
    );
    // Not a backup at all.
    let junk = work.file("junk.backup", b"not a backup");
    let out = restore(&junk, &work.path().join("from-junk"));
    assert!(!out.status.success());

    // The whole file still restores, into the dir the cut one left empty.
    let out = restore(&file, &target_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The server that was backed up three times is unharmed.
    let resp = fleet.user().get("/artifacts").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        fleet
            .user()
            .request(Method::GET, "/deployments")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Assert that a command failed and said `words` on stderr.
fn fails_saying(out: &Output, words: &str) {
    assert!(!out.status.success(), "it succeeded");
    let said = text(&out.stderr);
    assert!(said.contains(words), "{said}");
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
