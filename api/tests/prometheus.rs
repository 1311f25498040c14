//! rollout under the real Prometheus: the Debian `prometheus` scrapes a running rollout
//! through a small rollout, the recording rules of `ops/prometheus` evaluate on the live
//! series, `promtool check metrics` accepts the `/metrics` text, and the files under
//! `ops/` pass `promtool`.
//!
//! Needs `prometheus`, `promtool` (both in Debian's `prometheus` package) and
//! `mender-artifact`; a missing tool fails the test rather than skipping it.

mod common;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_error, json_ok, no_body, send, Server, Workdir};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

const TENANT: &str = "acme";

/// The device API's deployments base.
const DEVICE_API: &str = "/api/devices/v1/deployments/device/deployments";

/// How long Prometheus may take to get ready, and then to show a scraped value.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);

/// `ops/` at the workspace root.
fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

/// Fail clearly when a required tool is missing.
fn not_installed(program: &str) -> ! {
    panic!(
        "`{program}` is not installed, and this test needs it: \
         apt-get install prometheus mender-artifact"
    )
}

/// Run a tool (stdin from `input`) and return its output.
fn run(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_installed(program),
        Err(e) => panic!("running {program}: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("writing to the tool's stdin");
    drop(stdin);
    child.wait_with_output().expect("waiting for the tool")
}

/// Run a tool and assert it exits 0.
fn run_ok(program: &str, args: &[&str], input: &[u8]) {
    let out = run(program, args, input);
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `prometheus` that scrapes one target every second and evaluates the recording
/// rules of `ops/prometheus`. Killed on drop.
struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    base: String,
    child: Child,
    client: reqwest::Client,
    log: PathBuf,
    /// Owns the config, the TSDB and the log (`None` only while handing it to a retry).
    dir: Option<TempDir>,
}

/// `ops/prometheus` copied into `dir` with `token` in the `credentials_file` it names, and
/// with `edit` applied to `prometheus.yml`; returns the config's path.
fn ops_config(dir: &Path, token: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let from = ops().join("prometheus");
    std::fs::create_dir_all(dir.join("rules")).expect("creating rules/");
    for rule in std::fs::read_dir(from.join("rules")).expect("reading ops rules") {
        let rule = rule.expect("a rules entry").path();
        let name = rule.file_name().expect("a file name").to_owned();
        std::fs::copy(&rule, dir.join("rules").join(name)).expect("copying a rule file");
    }
    std::fs::write(dir.join(TOKEN_FILE), format!("{token}\n")).expect("writing the token");
    let text = std::fs::read_to_string(from.join("prometheus.yml")).expect("reading the config");
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, edit(text)).expect("writing the Prometheus config");
    config
}

/// The `credentials_file` of `ops/prometheus/prometheus.yml`, relative to the config.
const TOKEN_FILE: &str = "rollout-metrics.token";

/// `text` with `from` replaced by `to`, failing if `from` is not there.
fn replaced(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} is not in ops/prometheus/prometheus.yml"
    );
    text.replace(from, to)
}

impl Prometheus {
    /// Start Prometheus with the config of `ops/prometheus` scraping `target` (`HOST:PORT`)
    /// every second, with `token` in its `credentials_file`, and wait until it is ready.
    ///
    /// Prometheus cannot listen on port 0 and report the port, so this picks a free port by
    /// binding to port 0 and releasing it, and retries if another process took the port in
    /// between.
    async fn start(target: &str, token: &str) -> Prometheus {
        let mut dir = tempfile::tempdir().expect("creating a temp dir");
        let config = ops_config(dir.path(), token, |text| {
            let text = replaced(text, "rollout.example.internal:8080", target);
            let text = replaced(text, "scrape_timeout: 10s", "scrape_timeout: 1s");
            replaced(text, "15s", "1s")
        });
        let log = dir.path().join("prometheus.log");
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("finding a free port")
                .port();
            let log_file = std::fs::File::create(&log).expect("creating the Prometheus log");
            let child = match Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("cloning the log handle"))
                .stderr(log_file)
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_installed("prometheus"),
                Err(e) => panic!("starting prometheus: {e}"),
            };
            let mut prometheus = Prometheus {
                base: format!("http://127.0.0.1:{port}"),
                child,
                client: reqwest::Client::new(),
                log: log.clone(),
                dir: Some(dir),
            };
            if prometheus.wait_ready().await {
                return prometheus;
            }
            // It exited, most likely because the port was taken: try another one.
            eprintln!(
                "prometheus exited before it was ready, retrying; log:\n{}",
                prometheus.log_text()
            );
            dir = prometheus.into_dir();
        }
        panic!("prometheus did not start in 5 attempts; see the logs above");
    }

    /// Poll `/-/ready` until 200; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            if self
                .child
                .try_wait()
                .expect("waiting for prometheus")
                .is_some()
            {
                return false;
            }
            let ready = self.client.get(format!("{}/-/ready", self.base));
            if let Ok(resp) = ready.send().await {
                if resp.status() == StatusCode::OK {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within {PROMETHEUS_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop (the process has exited already) and hand back the temp dir for another try.
    fn into_dir(mut self) -> TempDir {
        self.dir.take().expect("the temp dir")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=…`: the result vector.
    async fn query(&self, query: &str) -> Vec<Value> {
        let resp = send(
            self.client
                .get(format!("{}/api/v1/query", self.base))
                .query(&[("query", query)]),
        )
        .await;
        let body = json_ok(resp).await;
        assert_eq!(body["status"], "success", "query {query}: {body}");
        match &body["data"]["result"] {
            Value::Array(result) => result.clone(),
            other => panic!("query {query}: result is not a vector: {other}"),
        }
    }

    /// Poll `query` until it returns exactly one sample and `accept` likes its value; returns
    /// that sample. Fails after [`PROMETHEUS_TIMEOUT`] with the last result.
    async fn wait_for(&self, query: &str, accept: impl Fn(f64) -> bool) -> Value {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            let result = self.query(query).await;
            if let [sample] = result.as_slice() {
                let value: f64 = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("query {query}: odd sample {sample}"));
                if accept(value) {
                    return sample.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "query {query} still returns {result:?} after {PROMETHEUS_TIMEOUT:?}; \
                 targets: {}",
                self.targets().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `/api/v1/targets`, for failure messages (shows the last scrape error).
    async fn targets(&self) -> Value {
        json_ok(send(self.client.get(format!("{}/api/v1/targets", self.base))).await).await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log_text());
        }
    }
}

/// The `sub` claim of a token minted by the harness: the device's id.
fn subject(token: &str) -> String {
    let claims = token.split('.').nth(1).expect("a JWT has claims");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64url claims"))
            .expect("JSON claims");
    claims["sub"].as_str().expect("sub is a string").to_owned()
}

/// A device: its id and token.
struct Device {
    id: String,
    token: String,
}

impl Device {
    fn new(server: &Server) -> Device {
        let token = server.device_token(TENANT);
        Device {
            id: subject(&token),
            token,
        }
    }

    /// Check in as a device on `base` running dev-a, and return the offered deployment id.
    async fn check_in(&self, server: &Server) -> String {
        let url = server.url(&format!(
            "{DEVICE_API}/next?artifact_name=base&device_type=dev-a"
        ));
        let body = json_ok(send(server.http().get(&url).bearer_auth(&self.token)).await).await;
        body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("check-in offered no deployment: {body}"))
            .to_owned()
    }

    /// Report `status` for `deployment`, asserting 204.
    async fn report(&self, server: &Server, deployment: &str, status: &str) {
        let url = server.url(&format!("{DEVICE_API}/{deployment}/status"));
        let req = server
            .http()
            .put(&url)
            .bearer_auth(&self.token)
            .json(&json!({ "status": status }));
        no_body(send(req).await, StatusCode::NO_CONTENT).await;
    }
}

/// A metrics token file in `work`, and its token.
fn token_file(work: &Workdir) -> (PathBuf, String) {
    let token = format!("scrape-{}", uuid::Uuid::new_v4().simple());
    (
        work.file("metrics.token", format!("{token}\n").as_bytes()),
        token,
    )
}

#[tokio::test]
async fn prometheus_scrapes_live_rollout_progress() {
    let work = Workdir::new();
    let (token_path, token) = token_file(&work);
    let server = Server::start_with(&["--metrics-token-file", token_path.to_str().unwrap()]).await;
    let work = Workdir::new();
    let built = work.single_file("app-1.0", &["dev-a"], &[]);
    let user = server.as_user(TENANT);
    user.upload_ok(&built.path, "").await;

    let devices: Vec<Device> = (0..3).map(|_| Device::new(&server)).collect();
    let resp = send(user.request(Method::POST, "/deployments").json(&json!({
        "name": "metrics-rollout",
        "artifact_name": "app-1.0",
        "devices": devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
    })))
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "creating the deployment"
    );
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let deployment = location.rsplit('/').next().unwrap().to_owned();

    // Two devices succeed; the third never checks in, so the deployment stays unfinished and
    // its series stay on /metrics.
    for device in &devices[..2] {
        assert_eq!(device.check_in(&server).await, deployment);
        for status in ["downloading", "installing", "success"] {
            device.report(&server, &deployment, status).await;
        }
    }

    let target = server.base.strip_prefix("http://").unwrap();
    let prometheus = Prometheus::start(target, &token).await;
    let sample = prometheus
        .wait_for(r#"rollout_deployment_devices{status="success"}"#, |v| {
            v == 2.0
        })
        .await;
    let labels = &sample["metric"];
    assert_eq!(labels["deployment_id"], json!(deployment), "{sample}");
    assert_eq!(labels["deployment_name"], "metrics-rollout", "{sample}");
    assert_eq!(labels["tenant"], TENANT, "{sample}");
    prometheus
        .wait_for(r#"rollout_deployment_devices{status="pending"}"#, |v| {
            v == 1.0
        })
        .await;
    // The recording rules of ops/ evaluate on the live series: 2 of 3 devices are done.
    prometheus
        .wait_for("deployment:rollout_progress:ratio", |v| {
            (v - 2.0 / 3.0).abs() < 1e-9
        })
        .await;
    prometheus
        .wait_for("deployment:rollout_failure:ratio", |v| v == 0.0)
        .await;

    // Without the token, or with another one, the API address refuses to show them.
    let url = server.url("/metrics");
    assert_error(
        send(server.http().get(&url)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let wrong = server.http().get(&url).bearer_auth(format!("{token}x"));
    assert_error(send(wrong).await, StatusCode::UNAUTHORIZED).await;

    // The exposition itself passes promtool's parser and linter (HELP on every metric, …).
    let metrics = send(server.http().get(&url).bearer_auth(&token))
        .await
        .text()
        .await
        .expect("reading /metrics");
    assert!(
        metrics.contains("rollout_deployment_devices{") && metrics.contains("# HELP "),
        "/metrics lacks the rollout series:\n{metrics}"
    );
    run_ok("promtool", &["check", "metrics"], metrics.as_bytes());
    // The commit-size histogram counts writes (the dashboard's p99 batch size reads its
    // buckets), not seconds.
    assert!(
        metrics.contains(r#"rollout_store_commit_writes_bucket{le="1"}"#)
            && metrics.contains(r#"rollout_store_commit_writes_bucket{le="1024"}"#)
            && !metrics.contains(r#"rollout_store_commit_writes_bucket{le="0.0005"}"#),
        "commit-size buckets are not counts:\n{metrics}"
    );
}

/// Counters are on /metrics from the start (at 0, so that `increase()` and alerts such as
/// `RolloutAutoAborted` and `RolloutActorRestarts` see the first event) and count what
/// happened.
#[tokio::test]
async fn prometheus_sees_an_auto_abort_counted_from_zero() {
    let work = Workdir::new();
    let (token_path, token) = token_file(&work);
    let server = Server::start_with(&["--metrics-token-file", token_path.to_str().unwrap()]).await;
    let target = server.base.strip_prefix("http://").unwrap();
    let prometheus = Prometheus::start(target, &token).await;
    let aborted = r#"rollout_deployments_auto_aborted_total{action="abort"}"#;
    prometheus.wait_for(aborted, |v| v == 0.0).await;
    for series in [
        "rollout_devices_timed_out_total",
        "rollout_deployment_actor_restarts_total",
        "rollout_deployments_finished_total",
        r#"rollout_status_reports_total{status="failure"}"#,
        r#"rollout_check_ins_total{outcome="update"}"#,
    ] {
        prometheus.wait_for(series, |v| v == 0.0).await;
    }

    let built = work.single_file("app-1.0", &["dev-a"], &[]);
    let user = server.as_user(TENANT);
    user.upload_ok(&built.path, "").await;
    let devices: Vec<Device> = (0..2).map(|_| Device::new(&server)).collect();
    let resp = send(user.request(Method::POST, "/deployments").json(&json!({
        "name": "bad release",
        "artifact_name": "app-1.0",
        "devices": devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        "auto_abort": {"failure_percent": 100, "min_finished": 1},
    })))
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let deployment = location.rsplit('/').next().unwrap().to_owned();
    assert_eq!(devices[0].check_in(&server).await, deployment);
    for status in ["downloading", "failure"] {
        devices[0].report(&server, &deployment, status).await;
    }
    prometheus.wait_for(aborted, |v| v == 1.0).await;
    prometheus
        .wait_for("rollout_deployments_finished_total", |v| v == 1.0)
        .await;
}

#[test]
fn ops_prometheus_files_pass_promtool() {
    let prometheus = ops().join("prometheus");
    // promtool checks that the credentials_file exists: check a copy with a token beside it.
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let config = ops_config(dir.path(), "token", |text| text);
    run_ok(
        "promtool",
        &["check", "config", config.to_str().unwrap()],
        b"",
    );
    let mut tests: Vec<PathBuf> = std::fs::read_dir(prometheus.join("tests"))
        .expect("reading ops/prometheus/tests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no rule tests in ops/prometheus/tests");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(|p| p.to_str().unwrap()));
    run_ok("promtool", &args, b"");
}

#[test]
fn grafana_dashboard_is_importable_json() {
    let path = ops().join("grafana/rollout-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let input = &dashboard["__inputs"][0];
    assert_eq!(input["type"], "datasource", "{input}");
    assert_eq!(input["pluginId"], "prometheus", "{input}");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "the dashboard has no panels");
}
