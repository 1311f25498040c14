//! End to end: a debug `rollout serve` and a 200-device phased rollout driven by
//! `rollout-load`, which must finish every device and find the server's statistics equal to
//! what the devices did.
//!
//! Needs `target/debug/rollout` (`cargo build -p api --bin rollout`; `scripts/test` builds
//! every binary first).

mod common;

use std::process::{Command, Stdio};

use common::{start_server, TempDir};

#[test]
fn a_phased_rollout_of_200_devices_finishes_with_matching_statistics() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &[]);
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
