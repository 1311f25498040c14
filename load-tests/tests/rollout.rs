//! End to end: a debug `rollout serve` and a 200-device phased rollout driven by
//! `rollout-load`, which must finish every device and find the server's statistics equal to
//! what the devices did; and a 1,000-device rollout in which a tenth of the devices fail and
//! the auto-abort stops it, which the report shows with when and why.
//!
//! Needs `target/debug/rollout` (`cargo build -p api --bin rollout`; `scripts/test` builds
//! every binary first).

mod common;

use std::process::{Command, Stdio};

use common::{report_of, rollout_load, start_server, tail, Server, TempDir};
use serde_json::Value;

/// Run `rollout-load` with `scenario` against `server`; its JSON report (the server's log
/// tail in the panic message when there is none).
fn run_scenario(server: &Server, dir: &TempDir, scenario: &[&str]) -> Value {
    let out = rollout_load(&[&server.base], &dir.0.join("data"), scenario)
        .output()
        .expect("running rollout-load");
    report_of(&out, || {
        tail(
            &std::fs::read_to_string(&server.log).unwrap_or_default(),
            60,
        )
    })
}

#[test]
fn a_phased_rollout_of_200_devices_finishes_with_matching_statistics() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &[]);
    let report = run_scenario(
        &server,
        &dir,
        &[
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
        ],
    );
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

#[test]
fn with_a_tenth_of_devices_failing_the_auto_abort_stops_the_rollout_at_its_threshold() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &[]);
    let report = run_scenario(
        &server,
        &dir,
        &[
            "--devices",
            "1000",
            "--fail-share",
            "0.1",
            "--auto-abort",
            "5:50",
            "--phases",
            "10,90",
            "--phase-interval-secs",
            "2",
            "--poll-interval-ms",
            "200",
            "--concurrency",
            "32",
            "--timeout",
            "120s",
        ],
    );
    let d = &report["deployment"];
    assert_eq!(d["status"], "finished", "{report:#}");
    let reason = d["abort_reason"].as_str().expect("an abort reason");
    assert!(reason.contains("failed, at least 5%"), "{reason}");
    assert!(d["finished_secs"].as_f64().is_some(), "when: {report:#}");
    let stats = &d["statistics"];
    assert_eq!(
        stats["ok"], true,
        "statistics match what devices saw: {report:#}"
    );
    let actual = &stats["actual"];
    let installed =
        actual["success"].as_u64().unwrap_or(0) + actual["failure"].as_u64().unwrap_or(0);
    assert!(
        (50..1000).contains(&installed),
        "at least the minimum finished, and the rest was stopped: {report:#}"
    );
    assert!(actual["aborted"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert_eq!(report["fleet"]["unfinished"], 0, "{report:#}");
}

/// Ctrl-C mid-rollout: a report of the run so far (exit 130), and the deployment the run
/// created is aborted rather than left holding its devices.
#[test]
fn ctrl_c_reports_the_run_so_far_and_aborts_the_created_deployment() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &[]);
    let child = rollout_load(
        &[&server.base],
        &dir.0.join("data"),
        &[
            "--devices",
            "200",
            "--phases",
            "10,90",
            "--phase-interval-secs",
            "600",
            "--poll-interval-ms",
            "200",
            "--timeout",
            "120s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting rollout-load");
    // The first phase finishes within seconds; the second waits ten minutes.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON report on stdout");
    assert_eq!(report["interrupted"], true, "{report:#}");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report:#}");
    let d = &report["deployment"];
    assert_eq!(d["status"], "finished", "aborted: {report:#}");
    assert!(
        d["statistics"]["actual"]["aborted"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
}
