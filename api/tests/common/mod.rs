//! Shared harness of the API tests: start the real `rollout` binary on an ephemeral port
//! with a temporary data dir, mint tokens, talk HTTP to it, and build artifacts with the
//! real `mender-artifact`.
//!
//! Each test binary uses a different subset of these helpers, hence the `dead_code` allow.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

mod cql;
pub mod fleet;
pub mod raw;
pub mod s3;
mod tools;
pub use tools::*;

/// Base path of the management deployments API.
pub const MANAGEMENT: &str = "/api/management/v1/deployments";

/// How long the server may take to print its address (a loaded CI machine can be slow to
/// open the store).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `rollout serve` process. Killed on drop; [`Server::stop`] stops it gracefully.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The data dir the server runs on.
    pub data_dir: PathBuf,
    /// Extra `serve` flags, kept for [`Server::restart`].
    args: Vec<String>,
    child: Option<Child>,
    /// Lines the server printed before its `listening on` line (such as
    /// `metrics listening on …`), from its latest start.
    pub early_stdout: Vec<String>,
    /// Owns the data dir and the log file; it outlives restarts.
    _dir: TempDir,
    log: PathBuf,
    client: reqwest::Client,
    /// The server's keyspace when the suites run on Cassandra (see [`cql`]).
    _keyspace: Option<cql::TestKeyspace>,
    /// The server's bucket when the suites run with blobs on S3 (see [`s3`]).
    bucket: Option<std::sync::Arc<s3::TestBucket>>,
}

impl Server {
    /// Start a server with default settings.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Start a server with extra `serve` flags, e.g. `["--max-artifact-size", "1000"]`.
    pub async fn start_with(args: &[&str]) -> Server {
        Server::start_on(args, s3::TestBucket::from_env()).await
    }

    /// Start a server with extra `serve` flags, its blobs in `bucket` when given.
    pub async fn start_on(args: &[&str], bucket: Option<s3::TestBucket>) -> Server {
        Server::start_prepared(args, bucket, |_| {}).await
    }

    /// Start a server on a data dir that `prepare` fills first (it gets the path, which
    /// does not exist yet), e.g. with `rollout restore`.
    pub async fn start_prepared(
        args: &[&str],
        bucket: Option<s3::TestBucket>,
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let keyspace = cql::TestKeyspace::from_env();
        let bucket = bucket.map(std::sync::Arc::new);
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(keyspace.iter().flat_map(cql::TestKeyspace::serve_args));
        args.extend(bucket.iter().flat_map(|b| b.serve_args()));
        let mut server = Server {
            base: String::new(),
            data_dir,
            args,
            child: None,
            early_stdout: Vec::new(),
            _dir: dir,
            log,
            client: reqwest::Client::new(),
            _keyspace: keyspace,
            bucket,
        };
        prepare(&server.data_dir);
        server.spawn();
        server
    }

    /// A second server on the same data dir and store as `first`, as a second node of a
    /// cluster: `Some` only when the suites run on a shared store (`ROLLOUT_TEST_STORE=scylla`;
    /// the embedded store allows one process per data dir).
    pub async fn start_beside(first: &Server) -> Option<Server> {
        first._keyspace.as_ref()?;
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let log = dir.path().join("server.log");
        let mut server = Server {
            base: String::new(),
            data_dir: first.data_dir.clone(),
            args: first.args.clone(),
            child: None,
            early_stdout: Vec::new(),
            _dir: dir,
            log,
            client: reqwest::Client::new(),
            _keyspace: None,
            bucket: first.bucket.clone(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollout"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .envs(s3::CREDENTIALS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the rollout binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Pass every line on (the address line and what comes before it matter), and keep
        // draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.ok());
            }
            let _ = tx.send(None);
        });
        self.child = Some(child);
        self.early_stdout.clear();
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(wait) {
                Ok(Some(line)) => line,
                other => panic!(
                    "rollout did not print its address ({other:?}); log:\n{}",
                    self.log_text()
                ),
            };
            match line.strip_prefix("listening on ") {
                Some(addr) => break addr.to_owned(),
                None => self.early_stdout.push(line),
            }
        };
        assert!(addr.starts_with("http://"), "unexpected address {addr:?}");
        self.base = addr.trim().to_owned();
    }

    /// `http://ADDR` of `--metrics-listen`, from the `metrics listening on` line.
    pub fn metrics_base(&self) -> String {
        self.early_stdout
            .iter()
            .find_map(|l| l.strip_prefix("metrics listening on "))
            .unwrap_or_else(|| panic!("no metrics address line in {:?}", self.early_stdout))
            .trim()
            .to_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Whether the process has been started and not killed or stopped by the test.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kill the process with SIGKILL and reap it (nothing flushed, no shutdown).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("sending SIGKILL");
        child.wait().expect("reaping the killed server");
    }

    /// Send a signal by name (`STOP`, `CONT`…) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The server's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send SIGTERM and wait for the process to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for rollout") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rollout did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop gracefully (asserting a clean exit) and start again on the same data dir. The
    /// port changes; [`Server::base`] is updated.
    pub async fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "rollout exited with {status} after SIGTERM; log:\n{}",
            self.log_text()
        );
        self.spawn();
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A management API token of a user of `tenant` (a fresh random user id), signed with
    /// the server's key by `rollout token user --data-dir DIR`.
    pub fn user_token(&self, tenant: &str) -> String {
        let subject = uuid::Uuid::new_v4().to_string();
        mint_token(
            &self.data_dir,
            &[
                "user",
                "--tenant",
                tenant,
                "--subject",
                &subject,
                "--ttl",
                "3600",
            ],
        )
    }

    /// A device token of `tenant` for a fresh random device id (refused by the management
    /// API), signed by `rollout token device --data-dir DIR`.
    pub fn device_token(&self, tenant: &str) -> String {
        let device = uuid::Uuid::new_v4().to_string();
        mint_token(
            &self.data_dir,
            &[
                "device", "--tenant", tenant, "--device", &device, "--ttl", "3600",
            ],
        )
    }

    /// A token with the claims of a user of `tenant` that the server did not sign.
    pub fn forged_user_token(&self, tenant: &str) -> String {
        jwt(&json!({
            "sub": uuid::Uuid::new_v4().to_string(),
            "mender.user": true,
            "mender.tenant": tenant,
            "iat": now(),
            "exp": now() + 3600,
        }))
    }

    /// A client that sends `token` as bearer token.
    pub fn api(&self, token: String) -> Api<'_> {
        Api {
            server: self,
            token: Some(token),
        }
    }

    /// A client for a user of `tenant`.
    pub fn as_user(&self, tenant: &str) -> Api<'_> {
        self.api(self.user_token(tenant))
    }

    /// A client without credentials.
    pub fn anonymous(&self) -> Api<'_> {
        Api {
            server: self,
            token: None,
        }
    }

    /// The plain HTTP client (no credentials), for download links.
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// The server's peak resident memory so far, in KiB (`VmHWM` in `/proc/PID/status`).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("reading the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// The `--store …` flags of the server's metadata store (none for the embedded one),
    /// for offline commands that take them.
    pub fn store_args(&self) -> Vec<String> {
        self._keyspace
            .as_ref()
            .map(cql::TestKeyspace::serve_args)
            .unwrap_or_default()
    }

    /// Every stored blob: the regular files under `DATA_DIR/blobs`, or on S3 the bucket's
    /// objects and open multipart uploads.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        if let Some(bucket) = &self.bucket {
            return bucket.files();
        }
        let mut out = Vec::new();
        walk(&self.data_dir.join("blobs"), &mut out);
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- rollout log ---\n{}", self.log_text());
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `rollout token ARGS… --data-dir DIR`: a token signed with the data dir's key.
fn mint_token(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("running rollout token");
    assert!(
        out.status.success(),
        "rollout token {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("the token is text")
        .trim()
        .to_owned()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `base64url(header).base64url(claims).base64url("sig")`: a JWT with a bogus signature.
fn jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT"});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("sig")
    )
}

/// Requests to the management API as one caller.
pub struct Api<'a> {
    server: &'a Server,
    token: Option<String>,
}

impl Api<'_> {
    /// The caller's token (empty for an anonymous caller).
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }

    /// A request to `MANAGEMENT + path` with the caller's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .server
            .client
            .request(method, self.server.url(&format!("{MANAGEMENT}{path}")));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `GET MANAGEMENT + path`.
    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    /// `DELETE MANAGEMENT + path`.
    pub async fn delete(&self, path: &str) -> Response {
        send(self.request(Method::DELETE, path)).await
    }

    /// `PUT MANAGEMENT + path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Response {
        send(self.request(Method::PUT, path).json(body)).await
    }

    /// `POST MANAGEMENT + path` with a multipart form.
    pub async fn post_form(&self, path: &str, form: reqwest::multipart::Form) -> Response {
        send(self.request(Method::POST, path).multipart(form)).await
    }

    /// `POST /artifacts/generate` with text `fields` and then `file` as the `file` part.
    pub async fn generate(&self, fields: &[(&str, &str)], file: &[u8]) -> Response {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let part = reqwest::multipart::Part::bytes(file.to_vec())
            .file_name("app.conf")
            .mime_str("application/octet-stream")
            .unwrap();
        self.post_form("/artifacts/generate", form.part("file", part))
            .await
    }

    /// Upload an artifact file the way mender-cli does (size, description, artifact).
    pub async fn upload(&self, file: &Path, description: &str) -> Response {
        let bytes = std::fs::read(file).expect("reading the artifact");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let form = reqwest::multipart::Form::new()
            .text("size", bytes.len().to_string())
            .text("description", description.to_owned())
            .part(
                "artifact",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(name)
                    .mime_str("application/octet-stream")
                    .unwrap(),
            );
        self.post_form("/artifacts", form).await
    }

    /// Upload, assert 201 with a Location, and return the new artifact's id.
    pub async fn upload_ok(&self, file: &Path, description: &str) -> String {
        created_id(self.upload(file, description).await).await
    }

    /// Upload and assert that it is refused with `status`; returns the error message.
    pub async fn upload_refused(&self, file: &Path, status: StatusCode) -> String {
        assert_error(self.upload(file, "").await, status).await
    }

    /// `GET /artifacts`, asserting 200 and a JSON array.
    pub async fn artifacts(&self) -> Vec<Value> {
        match json_ok(self.get("/artifacts").await).await {
            Value::Array(list) => list,
            other => panic!("GET /artifacts is not an array: {other}"),
        }
    }

    /// `GET /artifacts/{id}`, asserting 200.
    pub async fn artifact(&self, id: &str) -> Value {
        json_ok(self.get(&format!("/artifacts/{id}")).await).await
    }

    /// `GET /artifacts/{id}/download`, asserting 200; the `{uri, expire}` link.
    pub async fn link(&self, id: &str) -> Value {
        json_ok(self.get(&format!("/artifacts/{id}/download")).await).await
    }

    /// The link's URI.
    pub async fn link_uri(&self, id: &str) -> String {
        let link = self.link(id).await;
        link["uri"].as_str().expect("uri is a string").to_owned()
    }

    /// Download an artifact through a fresh link (without credentials), asserting 200.
    pub async fn download(&self, id: &str) -> Vec<u8> {
        let uri = self.link_uri(id).await;
        let resp = send(self.server.client.get(&uri)).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {uri}");
        resp.bytes().await.expect("reading the download").to_vec()
    }

    /// `GET /limits/storage`, asserting 200.
    pub async fn storage(&self) -> Value {
        json_ok(self.get("/limits/storage").await).await
    }
}

/// Send a request; a transport error fails the test.
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("the request reached the server")
}

/// The request id header's value.
pub fn request_id(resp: &Response) -> String {
    resp.headers()
        .get("x-men-requestid")
        .unwrap_or_else(|| panic!("no X-MEN-RequestID on {} {}", resp.status(), resp.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Assert `status` and return the body parsed as JSON.
pub async fn json_with(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.expect("reading the body");
    assert_eq!(got, status, "{url}: body {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body {text:?} is not JSON: {e}"))
}

/// Assert 200 and return the JSON body.
pub async fn json_ok(resp: Response) -> Value {
    json_with(resp, StatusCode::OK).await
}

/// Assert `status` with an empty body (204, 304, …).
pub async fn no_body(resp: Response, status: StatusCode) {
    let got = resp.status();
    let text = resp.text().await.expect("reading the body");
    assert_eq!(got, status, "body {text}");
    assert!(text.is_empty(), "expected no body, got {text:?}");
}

/// Assert an error answer: `status`, a JSON body of exactly `{"error", "request_id"}` with a
/// non-empty message and the same id as the `X-MEN-RequestID` header. Returns the message.
pub async fn assert_error(resp: Response, status: StatusCode) -> String {
    let id = request_id(&resp);
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = json_with(resp, status).await;
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let obj = body.as_object().expect("the error body is an object");
    assert_eq!(obj.len(), 2, "error body has other fields: {body}");
    assert_eq!(
        body["request_id"],
        json!(id),
        "request_id differs from header"
    );
    let message = body["error"].as_str().expect("error is a string");
    assert!(!message.is_empty(), "empty error message");
    message.to_owned()
}

/// Assert 201 with `Location: MANAGEMENT/artifacts/{id}` and return the id.
pub async fn created_id(resp: Response) -> String {
    location_id(resp, "artifacts").await
}

/// Assert 201 with `Location: MANAGEMENT/{collection}/{id}` (a UUID) and return the id.
pub async fn location_id(resp: Response, collection: &str) -> String {
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "body {text}");
    let location = location.expect("201 without Location");
    let id = location
        .strip_prefix(&format!("{MANAGEMENT}/{collection}/"))
        .unwrap_or_else(|| panic!("unexpected Location {location}"));
    uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("Location id {id} is not a UUID"));
    id.to_owned()
}

/// Assert that `value` is an RFC 3339 date-time string.
pub fn assert_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
}

/// Assert that `text` contains each of `expected`.
pub fn assert_contains_all<S: AsRef<str>>(text: &str, expected: &[S]) {
    for e in expected {
        assert!(
            text.contains(e.as_ref()),
            "{:?} missing from:\n{text}",
            e.as_ref()
        );
    }
}

/// The artifact with `id` in a list.
pub fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|a| a["id"] == json!(id))
        .unwrap_or_else(|| panic!("artifact {id} is not in {list:?}"))
}
