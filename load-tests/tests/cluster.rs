//! A phased rollout with retries through three rollout nodes sharing one Cassandra keyspace:
//! `rollout-load` spreads the devices over the nodes (`--server` three times), so most
//! requests reach a node that does not run the deployment and are forwarded to the one
//! that does. At the end every device has finished, the statistics equal what the devices
//! did, and, through every node, they equal counting the device records.
//!
//! Needs `ROLLOUT_TEST_CQL=host:port` (a Cassandra or ScyllaDB node; `scripts/test` starts
//! one) and `target/debug/rollout`; without a node the test says loudly that it was skipped.

mod common;

use common::{report_of, rollout_load, start_node, statistics_and_records, tail, Server, TempDir};

const DEVICES: u64 = 3_000;

#[test]
fn a_phased_rollout_through_three_nodes_finishes_with_statistics_equal_to_the_devices() {
    let Ok(cql) = std::env::var("ROLLOUT_TEST_CQL") else {
        eprintln!("\n!!! SKIPPED: needs ROLLOUT_TEST_CQL=host:port of a Cassandra node !!!\n");
        return;
    };
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let keyspace = format!("load_cluster_{}", std::process::id());
    let store = [
        "--store",
        "scylla",
        "--scylla-nodes",
        &cql,
        "--scylla-keyspace",
        &keyspace,
    ];
    let nodes: Vec<Server> = (0..3)
        .map(|i| start_node(&dir.0.join(format!("node-{i}.log")), &data, &store))
        .collect();
    let bases: Vec<&str> = nodes.iter().map(|n| n.base.as_str()).collect();
    let logs = || {
        nodes
            .iter()
            .map(|n| tail(&std::fs::read_to_string(&n.log).unwrap_or_default(), 30))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let out = rollout_load(
        &bases,
        &data,
        &[
            "--devices",
            &DEVICES.to_string(),
            "--phases",
            "20,80",
            "--phase-interval-secs",
            "2",
            "--retries",
            "1",
            "--fail-share",
            "0.05",
            "--poll-interval-ms",
            "500",
            "--concurrency",
            "32",
            "--timeout",
            "150s",
        ],
    )
    .output()
    .expect("running rollout-load");
    let report = report_of(&out, logs);
    assert_eq!(report["fleet"]["finished"], DEVICES, "{report:#}");
    assert_eq!(
        report["deployment"]["statistics"]["ok"], true,
        "the statistics match the devices: {report:#}"
    );
    assert_eq!(report["deployment"]["status"], "finished", "{report:#}");
    let id = report["deployment"]["id"].as_str().expect("deployment id");
    for n in &nodes {
        let (statistics, counted) = statistics_and_records(&n.base, &data, id);
        assert_eq!(
            statistics, counted,
            "{}: statistics equal the records",
            n.base
        );
        assert_eq!(counted.values().sum::<u64>(), DEVICES);
    }
    // The deployment ran on one node; the other two forwarded their devices' requests.
    let owners = nodes
        .iter()
        .filter(|n| {
            std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .contains("took a deployment's lease")
        })
        .count();
    assert_eq!(owners, 1, "one node took the lease:\n{}", logs());
}
