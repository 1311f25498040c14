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
use std::process::{Command, Stdio};

use common::{rollout_binary, start_server, Server, TempDir};
use serde_json::Value;

const DEVICES: u64 = 10_000;
/// A random running deployment actor is crashed this often (milliseconds).
const CRASH_EVERY_MS: &str = "150";

#[test]
fn a_rollout_survives_deployment_actors_crashing_at_random() {
    let dir = TempDir::new();
    let server = start_server(&dir.0, &["--chaos-crash-every", CRASH_EVERY_MS]);
    let out = Command::new(env!("CARGO_BIN_EXE_rollout-load"))
        .args(["--server", &server.base, "--data-dir"])
        .arg(dir.0.join("data"))
        .args([
            "--mode",
            "rollout",
            "--create-deployment",
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
            "--json",
            "--no-progress",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running rollout-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let server_log = || std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        out.status.success(),
        "rollout-load exited with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&server_log(), 60)
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");

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
    let (statistics, counted) = statistics_and_records(&server, &dir, id);
    assert_eq!(statistics, counted, "statistics equal the device records");
    assert_eq!(counted.values().sum::<u64>(), DEVICES);
}

/// `GET /deployments/{id}/statistics`, and the statuses of `GET /deployments/{id}/devices`
/// counted, every status key present in both.
fn statistics_and_records(
    server: &Server,
    dir: &TempDir,
    id: &str,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let token = Command::new(rollout_binary())
        .args(["token", "user", "--subject", "chaos-test", "--data-dir"])
        .arg(dir.0.join("data"))
        .output()
        .expect("minting a user token");
    assert!(token.status.success(), "rollout token user failed");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let base = format!(
        "{}/api/management/v1/deployments/deployments/{id}",
        server.base
    );
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
