//! Shared by the end-to-end tests: a temporary directory and a debug `rollout serve` on a
//! free port.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("rollout-load-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `rollout serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/debug/rollout`, next to this test's own `deps/` directory.
pub fn rollout_binary() -> PathBuf {
    let name = format!("rollout{}", std::env::consts::EXE_SUFFIX);
    let beside_deps = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(&name)));
    let candidates = beside_deps.into_iter().chain(std::iter::once(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(&name),
    ));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!("target/debug/rollout is missing: build it with `cargo build -p api --bin rollout`");
}

/// Start `rollout serve` on a free port with its data in `dir/data`, plus `extra` flags.
pub fn start_server(dir: &Path, extra: &[&str]) -> Server {
    start_node(&dir.join("server.log"), &dir.join("data"), extra)
}

/// Start `rollout serve` on a free port with its data in `data`, its log in `log`, plus
/// `extra` flags (several nodes of a cluster share a data dir, each with its own log).
pub fn start_node(log: &Path, data: &Path, extra: &[&str]) -> Server {
    let log = log.to_path_buf();
    let log_file = std::fs::File::create(&log).expect("creating the server log");
    let mut child = Command::new(rollout_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("starting rollout serve");
    let stdout = child.stdout.take().expect("the server's stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let mut server = Server {
        child,
        base: String::new(),
        log,
    };
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(base) => server.base = base,
        Err(_) => panic!(
            "rollout serve printed no address; its log:\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        ),
    }
    server
}

/// `GET /deployments/{id}/statistics`, and the statuses of `GET /deployments/{id}/devices`
/// counted, every status key present in both.
pub fn statistics_and_records(
    server: &str,
    data_dir: &Path,
    id: &str,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let token = Command::new(rollout_binary())
        .args(["token", "user", "--subject", "load-test", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("minting a user token");
    assert!(token.status.success(), "rollout token user failed");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let base = format!("{}/api/management/v1/deployments/deployments/{id}", server);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let get = |path: &'static str| {
            let req = http.get(format!("{base}/{path}")).bearer_auth(&token);
            async move {
                let resp = req.send().await.expect("the server answers");
                assert!(resp.status().is_success(), "{path}: {}", resp.status());
                resp.json::<Value>().await.expect("JSON")
            }
        };
        let statistics: BTreeMap<String, u64> =
            serde_json::from_value(get("statistics").await).expect("statistics");
        let mut counted: BTreeMap<String, u64> =
            statistics.keys().map(|k| (k.clone(), 0)).collect();
        for d in get("devices").await.as_array().expect("devices") {
            let status = d["status"].as_str().expect("status").to_owned();
            *counted.entry(status).or_default() += 1;
        }
        (statistics, counted)
    })
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `rollout-load --mode rollout --create-deployment` against `servers`, with tokens from the
/// data dir `data`, a JSON report and no progress line; `scenario` adds the rest.
pub fn rollout_load(servers: &[&str], data: &Path, scenario: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollout-load"));
    for s in servers {
        cmd.args(["--server", s]);
    }
    cmd.arg("--data-dir")
        .arg(data)
        .args([
            "--mode",
            "rollout",
            "--create-deployment",
            "--json",
            "--no-progress",
        ])
        .args(scenario)
        .stdin(Stdio::null());
    cmd
}

/// The JSON report of a rollout-load run that had to succeed; on failure, its output and
/// `logs` (the servers') say why.
pub fn report_of(out: &Output, logs: impl Fn() -> String) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rollout-load exited with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver logs (tails):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    serde_json::from_str(&stdout).expect("the report is JSON")
}
