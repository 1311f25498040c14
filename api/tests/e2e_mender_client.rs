//! End to end with the real Debian `mender` daemon (mender-client 3.4) and `mender-cli`:
//! the device authenticates with its own key, reports inventory, takes a deployment,
//! installs (or fails to install) it through an update module, and reports back.
//!
//! The daemon runs in a private mount namespace (`unshare -m`) where per-test directories
//! are bind-mounted over its hard-coded paths (/etc/mender, /usr/share/mender/…), so the
//! host is left untouched; this needs root, as CI has. Polls are 1 s and every wait is
//! bounded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_ok, send, Api, Server, Workdir};
use reqwest::StatusCode;
use serde_json::json;

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
const DEVICE_TYPE: &str = "dev-a";
const DEVAUTH: &str = "/api/management/v2/devauth/devices";

/// Fail clearly when a tool the end-to-end tests need is missing or we are not root.
fn require_tools() {
    for tool in ["/usr/bin/mender", "/usr/bin/unshare", "/usr/bin/timeout"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the end-to-end tests need the real Mender client \
             (apt-get install mender-client mender-cli mender-artifact)"
        );
    }
    let uid = common::run_ok("id", ["-u"], Path::new("/"));
    assert_eq!(
        uid.trim(),
        "0",
        "the mender-client end-to-end tests need root (unshare -m and bind mounts)"
    );
}

/// A mender-client daemon with its own config, identity, modules, key and data dir.
struct Device {
    /// Owns the work dir.
    work: Workdir,
    child: Option<Child>,
}

impl Device {
    /// Prepare the work dir W: config pointing at `server`, identity `mac`, the shipped
    /// update modules plus `extra_modules` (name, script), and a pre-seeded RSA-2048 key.
    fn setup(server: &Server, mac: &str, extra_modules: &[(&str, &str)]) -> Device {
        require_tools();
        let work = Workdir::new();
        let w = work.path();
        for d in [
            "etc",
            "identity",
            "inventory",
            "modules",
            "data",
            "installed",
        ] {
            std::fs::create_dir_all(w.join(d)).unwrap();
        }
        let conf = json!({
            "ServerURL": server.base,
            "UpdatePollIntervalSeconds": 1,
            "InventoryPollIntervalSeconds": 1,
            "RetryPollIntervalSeconds": 1,
            "DBus": {"Enabled": false},
        });
        std::fs::write(w.join("etc/mender.conf"), conf.to_string()).unwrap();
        std::fs::write(w.join("etc/artifact_info"), "artifact_name=base-1\n").unwrap();
        std::fs::write(
            w.join("data/device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .unwrap();
        let identity = format!("#!/bin/sh\necho \"mac={mac}\"\n");
        executable(&w.join("identity/mender-device-identity"), &identity);
        executable(
            &w.join("inventory/mender-inventory-e2e"),
            "#!/bin/sh\necho \"os=e2e test\"\n",
        );
        for entry in std::fs::read_dir("/usr/share/mender/modules/v3").unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), w.join("modules").join(entry.file_name())).unwrap();
        }
        for (name, script) in extra_modules {
            executable(&w.join("modules").join(name), script);
        }
        let key = w.join("data/mender-agent.pem");
        let args = [
            "genrsa",
            "-traditional",
            "-out",
            key.to_str().unwrap(),
            "2048",
        ];
        common::run_ok("openssl", args, w);
        set_mode(&key, 0o600);
        Device { work, child: None }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// Where the single-file module installs.
    fn installed(&self) -> PathBuf {
        self.dir().join("installed")
    }

    /// Start `mender daemon` in its namespace; `timeout` ends it even if the test dies.
    fn start(&mut self) {
        let script = r#"set -e
mount --bind "$0/etc" /etc/mender
mount --bind "$0/identity" /usr/share/mender/identity
mount --bind "$0/inventory" /usr/share/mender/inventory
mount --bind "$0/modules" /usr/share/mender/modules/v3
exec mender --no-syslog -l debug -b "$0/none.conf" -d "$0/data" daemon"#;
        let log = std::fs::File::create(self.dir().join("daemon.log")).unwrap();
        let child = Command::new("timeout")
            .args([
                "--kill-after=5",
                "300",
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", script])
            .arg(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the mender daemon");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `timeout` passes SIGTERM on to the daemon; SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- mender daemon log ---\n{}", self.log());
        }
    }
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Poll `check` every 250 ms until it gives a value, failing after [`WAIT`] with `what`.
async fn wait_for<T, F, Fut>(what: &str, device: &Device, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; daemon log:\n{}",
            device.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until the daemon has authenticated; returns its device id.
async fn device_id(server: &Server, device: &Device) -> String {
    let token = server.user_token("");
    wait_for("the device to authenticate", device, || async {
        let req = server.http().get(server.url(DEVAUTH)).bearer_auth(&token);
        let list = json_ok(send(req).await).await;
        let dev = list.as_array()?.first()?.clone();
        (dev["status"] == json!("accepted")).then(|| dev["id"].as_str().unwrap().to_owned())
    })
    .await
}

/// Create a deployment of `artifact_name` to `device`; returns its id.
async fn deploy(user: &Api<'_>, artifact_name: &str, device: &str) -> String {
    let body = json!({"name": "e2e", "artifact_name": artifact_name, "devices": [device]});
    create(user, &body).await
}

/// `POST /deployments` with `body`, asserting 201; returns the new deployment's id.
async fn create(user: &Api<'_>, body: &serde_json::Value) -> String {
    let resp = send(
        user.request(reqwest::Method::POST, "/deployments")
            .json(body),
    )
    .await;
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap()
    );
    location.unwrap().rsplit('/').next().unwrap().to_owned()
}

/// Wait until the deployment is finished with `count` devices in `outcome`.
async fn wait_finished(user: &Api<'_>, device: &Device, deployment: &str, outcome: &str) {
    let what = format!("deployment {deployment} to finish with {outcome}");
    wait_for(&what, device, || async {
        let stats = json_ok(
            user.get(&format!("/deployments/{deployment}/statistics"))
                .await,
        )
        .await;
        let d = json_ok(user.get(&format!("/deployments/{deployment}")).await).await;
        (stats[outcome] == json!(1) && d["status"] == json!("finished")).then_some(())
    })
    .await;
}

/// Generate a single-file artifact `name` that installs `payload` as `hello.txt` in the
/// device's installed dir.
async fn generate_hello(user: &Api<'_>, device: &Device, name: &str, payload: &str) {
    let args = json!({"dest_dir": device.installed(), "filename": "hello.txt"});
    let form = reqwest::multipart::Form::new()
        .text("name", name.to_owned())
        .text("device_types_compatible", DEVICE_TYPE)
        .text("type", "single_file")
        .text("args", args.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(payload.as_bytes().to_vec()).file_name("hello.txt"),
        );
    let resp = user.post_form("/artifacts/generate", form).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap()
    );
}

/// Wait until `hello.txt` holds `payload`.
async fn wait_installed(device: &Device, payload: &str) {
    let file = device.installed().join("hello.txt");
    wait_for("hello.txt to be installed", device, || async {
        std::fs::read_to_string(&file).ok().filter(|t| t == payload)
    })
    .await;
}

#[tokio::test]
async fn mender_client_installs_a_generated_single_file_artifact() {
    let server = Server::start().await;
    let mut device = Device::setup(&server, "02:00:00:00:00:01", &[]);
    let user = server.as_user("");
    let payload = "hello from rollout\n";
    generate_hello(&user, &device, "app-1.0", payload).await;

    device.start();
    let id = device_id(&server, &device).await;
    let deployment = deploy(&user, "app-1.0", &id).await;
    wait_installed(&device, payload).await;
    wait_finished(&user, &device, &deployment, "success").await;
}

/// Mender's update control map with the real client: it stops before installing and says
/// so (`pause_before_installing`), stays paused while it refreshes the map (its map would
/// expire, and fail the update, after 2 s without a refresh), and installs once the
/// operator's new map says `continue`.
#[tokio::test]
async fn mender_client_pauses_before_installing_until_the_operator_lets_it_continue() {
    let server = Server::start().await;
    let mut device = Device::setup(&server, "02:00:00:00:00:04", &[]);
    let user = server.as_user("");
    let payload = "installed after a pause\n";
    generate_hello(&user, &device, "app-1.0", payload).await;
    device.start();
    let id = device_id(&server, &device).await;
    let pause = json!({"states": {"ArtifactInstall_Enter": {"action": "pause"}}});
    let body = json!({"name": "paused", "artifact_name": "app-1.0", "devices": [id],
                      "update_control_map": pause});
    let deployment = create(&user, &body).await;
    let devices = format!("/deployments/{deployment}/devices");
    let status = || async {
        let list = json_ok(user.get(&devices).await).await;
        list[0]["status"].as_str().map(str::to_owned)
    };
    wait_for("the device to pause before installing", &device, || async {
        (status().await.as_deref() == Some("pause_before_installing")).then_some(())
    })
    .await;
    // Longer than the map's expiry: only refreshes keep the device paused.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        status().await.as_deref(),
        Some("pause_before_installing"),
        "daemon log:\n{}",
        device.log()
    );
    assert!(!device.installed().join("hello.txt").exists());

    let go_on = json!({"update_control_map":
        {"states": {"ArtifactInstall_Enter": {"action": "continue"}}}});
    let path = format!("/deployments/{deployment}");
    let resp = send(user.request(reqwest::Method::PATCH, &path).json(&go_on)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    wait_installed(&device, payload).await;
    wait_finished(&user, &device, &deployment, "success").await;
}

/// A dynamic deployment made before the device is known: the real client authenticates,
/// reports the inventory its script gives (`os=e2e test`), joins because that matches the
/// filter, installs, and the deployment finishes once `max_devices` devices have.
#[tokio::test]
async fn a_device_whose_inventory_matches_joins_a_dynamic_deployment() {
    let server = Server::start().await;
    let mut device = Device::setup(&server, "02:00:00:00:00:04", &[]);
    let user = server.as_user("");
    let payload = "joined a dynamic deployment\n";
    generate_hello(&user, &device, "app-2.0", payload).await;
    let filter = json!({"terms": [
        {"scope": "inventory", "attribute": "os", "type": "$eq", "value": "e2e test"},
    ]});
    let body =
        json!({"name": "dyn", "artifact_name": "app-2.0", "filter": filter, "max_devices": 1});
    let req = server
        .http()
        .post(server.url("/api/management/v2/deployments/deployments"))
        .bearer_auth(server.user_token(""))
        .json(&body);
    let deployment = common::location_id(send(req).await, "deployments").await;
    let before = json_ok(user.get(&format!("/deployments/{deployment}")).await).await;
    assert_eq!(before["dynamic"], json!(true), "{before}");
    assert_eq!(before["initial_device_count"], json!(0), "{before}");
    assert_eq!(before["max_devices"], json!(1), "{before}");

    device.start();
    let id = device_id(&server, &device).await;
    wait_installed(&device, payload).await;
    wait_finished(&user, &device, &deployment, "success").await;
    let path = format!("/api/management/v1/inventory/devices/{id}");
    let req = server
        .http()
        .get(server.url(&path))
        .bearer_auth(server.user_token(""));
    let inventory = json_ok(send(req).await).await;
    let os = inventory["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == json!("os")))
        .unwrap_or_else(|| panic!("no os attribute in {inventory}"));
    assert_eq!(os["value"], json!("e2e test"), "{inventory}");
    assert_eq!(os["scope"], json!("inventory"), "{inventory}");
}

/// An update module that fails its install step.
const FAIL_MODULE: &str = r#"#!/bin/sh
case "$1" in
  NeedsArtifactReboot) echo "No" ;;
  SupportsRollback) echo "No" ;;
  ArtifactInstall) echo "fail-module refuses to install" >&2; exit 1 ;;
esac
exit 0
"#;

#[tokio::test]
async fn a_failing_update_module_is_reported_with_its_log() {
    let server = Server::start().await;
    let mut device = Device::setup(
        &server,
        "02:00:00:00:00:02",
        &[("fail-module", FAIL_MODULE)],
    );
    let user = server.as_user("");
    let work = Workdir::new();
    let payload = work.file("payload.txt", b"payload\n");
    let artifact = work.path().join("fail.mender");
    let args = [
        "write",
        "module-image",
        "-T",
        "fail-module",
        "-n",
        "fail-1.0",
        "-t",
        DEVICE_TYPE,
        "-f",
        payload.to_str().unwrap(),
        "-o",
        artifact.to_str().unwrap(),
    ];
    common::run_ok("mender-artifact", args, work.path());
    user.upload_ok(&artifact, "fails").await;

    device.start();
    let id = device_id(&server, &device).await;
    let deployment = deploy(&user, "fail-1.0", &id).await;
    wait_finished(&user, &device, &deployment, "failure").await;
    let path = format!("/deployments/{deployment}/devices/{id}/log");
    let log = wait_for("the failure log", &device, || async {
        let resp = user.get(&path).await;
        if resp.status() != StatusCode::OK {
            return None;
        }
        Some(resp.text().await.unwrap())
    })
    .await;
    assert!(
        log.contains("exit status 1"),
        "log lacks the module's exit status:\n{log}"
    );
}

/// `mender-cli --server BASE ARGS…` with `HOME` in `home`.
fn mender_cli(server: &Server, home: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--server", server.base.as_str()];
    all.extend_from_slice(args);
    let cache = home.join(".cache");
    let env = [("HOME", home), ("XDG_CACHE_HOME", cache.as_path())];
    let out = common::run_tool("mender-cli", all, home, &env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn mender_cli_logs_in_and_lists_artifacts_and_devices() {
    let work = Workdir::new();
    let password = work.file("password", b"cli-secret\n");
    let server = Server::start_with(&[
        "--admin-user",
        "ops@example.com",
        "--admin-password-file",
        password.to_str().unwrap(),
    ])
    .await;
    let built = work.single_file("cli-app-1.0", &[DEVICE_TYPE], &[]);
    server.as_user("").upload_ok(&built.path, "").await;
    let home = Workdir::new();

    let wrong = [
        "login",
        "--username",
        "ops@example.com",
        "--password",
        "nope",
    ];
    let (ok, text) = mender_cli(&server, home.path(), &wrong);
    assert!(
        !ok && text.contains("401"),
        "a wrong password must fail:\n{text}"
    );

    let login = [
        "login",
        "--username",
        "ops@example.com",
        "--password",
        "cli-secret",
    ];
    let (ok, text) = mender_cli(&server, home.path(), &login);
    assert!(ok, "mender-cli login failed:\n{text}");
    let token = std::fs::read_to_string(home.path().join(".cache/mender/authtoken")).unwrap();
    assert_eq!(
        token.split('.').count(),
        3,
        "the saved token is not a JWT: {token}"
    );

    let (ok, text) = mender_cli(&server, home.path(), &["artifacts", "list"]);
    assert!(
        ok && text.contains("cli-app-1.0"),
        "artifacts list:\n{text}"
    );

    // A preauthorized device shows in `devices list`.
    let key = work.ec_key();
    let pubkey = common::run_ok(
        "openssl",
        ["ec", "-in", key.to_str().unwrap(), "-pubout"],
        work.path(),
    );
    let body = json!({"identity_data": {"mac": "02:00:00:00:00:03"}, "pubkey": pubkey});
    let req = server
        .http()
        .post(server.url(DEVAUTH))
        .bearer_auth(token.trim())
        .json(&body);
    let resp = send(req).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap();
    let (ok, text) = mender_cli(&server, home.path(), &["devices", "list"]);
    assert!(ok && text.contains(id), "devices list lacks {id}:\n{text}");
}
