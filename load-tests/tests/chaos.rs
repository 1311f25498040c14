//! Chaos: a 10,000-device phased rollout driven by `rollout-load` while the server crashes
//! the deployment's actor at random (`rollout serve --chaos-crash-every`). Devices must never
//! be told anything they would act on: no `409` (mender-client aborts the update) and no
//! `5xx`, except `503` with `Retry-After`, which the simulated devices wait out and retry as
//! mender-client retries a failed report. At the end every device has finished, the
//! statistics equal what the devices did, and they equal counting the server's own device
//! records.
//!
//! Needs `target/debug/rollout` (`cargo build -p api --bin rollout`; `scripts/test` builds
//! every binary first).

mod common;

use std::collections::BTreeMap;

use common::{report_of, rollout_load, start_server, statistics_and_records, tail, TempDir};

const DEVICES: u64 = 10_000;
/// A random running deployment actor is crashed this often (milliseconds).
const CRASH_EVERY_MS: &str = "150";

#[test]
fn a_rollout_survives_deployment_actors_crashing_at_random() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &["--chaos-crash-every", CRASH_EVERY_MS]);
    let server_log = || std::fs::read_to_string(&server.log).unwrap_or_default();
    let out = rollout_load(
        &[&server.base],
        &dir.0.join("data"),
        &[
            "--devices",
            &DEVICES.to_string(),
            "--phases",
            "10,30,60",
            "--phase-interval-secs",
            "2",
            "--retries",
            "1",
            "--fail-share",
            "0.05",
            "--poll-interval-ms",
            "500",
            "--concurrency",
            "64",
            "--timeout",
            "150s",
        ],
    )
    .output()
    .expect("running rollout-load");
    let report = report_of(&out, || tail(&server_log(), 60));

    let crashes = server_log()
        .matches("chaos drill: crashed its actor")
        .count();
    assert!(
        crashes >= 10,
        "only {crashes} crashes happened during the rollout"
    );

    for (kind, k) in report["kinds"].as_object().expect("kinds") {
        let statuses: BTreeMap<u16, u64> =
            serde_json::from_value(k["statuses"].clone()).unwrap_or_default();
        assert_eq!(
            statuses.get(&409),
            None,
            "{kind}: devices were told 409 ({report:#})"
        );
        for (code, n) in &statuses {
            assert!(
                *code < 500 || *code == 503,
                "{kind}: {n} answers {code} ({report:#})"
            );
        }
        let unavailable = statuses.get(&503).copied().unwrap_or(0);
        assert_eq!(
            k["retried"].as_u64(),
            Some(unavailable),
            "{kind}: every 503 carried Retry-After and was retried ({report:#})"
        );
    }

    assert_eq!(report["fleet"]["finished"], DEVICES, "{report:#}");
    assert_eq!(report["fleet"]["stopped"], 0, "{report:#}");
    let stats = &report["deployment"]["statistics"];
    assert_eq!(
        stats["ok"], true,
        "the statistics match the devices: {report:#}"
    );
    assert_eq!(report["deployment"]["status"], "finished", "{report:#}");

    let unavailable: u64 = report["kinds"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|k| k["statuses"]["503"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    eprintln!(
        "{DEVICES} devices in {:.1} s, {crashes} actor crashes, {unavailable} answers 503 (retried)",
        report["elapsed_secs"].as_f64().unwrap_or(0.0)
    );
    let id = report["deployment"]["id"].as_str().expect("deployment id");
    let (statistics, counted) = statistics_and_records(&server.base, &dir.0.join("data"), id);
    assert_eq!(statistics, counted, "statistics equal the device records");
    assert_eq!(counted.values().sum::<u64>(), DEVICES);
}
