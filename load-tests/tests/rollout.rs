//! End to end: a debug `rollout serve` and a 200-device phased rollout driven by
//! `rollout-load`, which must finish every device and find the server's statistics equal to
//! what the devices did.
//!
//! Needs `target/debug/rollout` (`cargo build -p api --bin rollout`; `scripts/test` builds
//! every binary first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
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
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/debug/rollout`, next to this test's own `deps/` directory.
fn rollout_binary() -> PathBuf {
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

fn start_server(dir: &Path) -> Server {
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).expect("creating the server log");
    let mut child = Command::new(rollout_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
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

#[test]
fn a_phased_rollout_of_200_devices_finishes_with_matching_statistics() {
    let dir = TempDir::new();
    let server = start_server(&dir.0);
    let out = Command::new(env!("CARGO_BIN_EXE_rollout-load"))
        .args(["--server", &server.base, "--data-dir"])
        .arg(dir.0.join("data"))
        .args([
            "--mode",
            "rollout",
            "--create-deployment",
            "--devices",
            "200",
            "--phases",
            "10,30,60",
            "--phase-interval-secs",
            "1",
            "--retries",
            "1",
            "--poll-interval-ms",
            "200",
            "--concurrency",
            "32",
            "--timeout",
            "120s",
            "--json",
            "--no-progress",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running rollout-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rollout-load exited with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["fleet"]["finished"], 200, "{report:#}");
    assert_eq!(report["fleet"]["unfinished"], 0, "{report:#}");
    let stats = &report["deployment"]["statistics"];
    assert_eq!(stats["ok"], true, "{report:#}");
    assert_eq!(
        stats["actual"]["success"].as_u64().unwrap_or(0)
            + stats["actual"]["failure"].as_u64().unwrap_or(0),
        200,
        "{report:#}"
    );
    assert_eq!(report["deployment"]["status"], "finished", "{report:#}");
    let phases = report["deployment"]["phases"].as_array().expect("phases");
    let admitted: Vec<u64> = phases
        .iter()
        .filter_map(|p| p["admitted"].as_u64())
        .collect();
    assert_eq!(admitted, vec![20, 60, 120], "{report:#}");
}
