//! `fleet-bench`: the memory and lookup speed of the fleet index (device → the unfinished
//! deployments it takes part in) at fleet scale, beside a baseline measured in the same
//! run: a plain `HashMap` of the same device keys with nothing in it but the keys, the
//! least any index of devices holds.
//!
//!   cargo run --release -p bench --bin fleet-bench                   # 10,000,000 devices
//!   cargo run --release -p bench --bin fleet-bench -- --devices 1000000

use std::collections::HashMap;

use bench::{rate, row, rss_bytes, timed};
use clap::Parser;
use engine::deployment::fleet::{device_key, DeviceKey, Fleet, Membership};
use storage::TenantId;

#[derive(Parser)]
struct Args {
    /// Devices in the index.
    #[arg(long, default_value_t = 10_000_000)]
    devices: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tenant = TenantId::parse("bench")?;
    let keys: Vec<DeviceKey> = (0..args.devices)
        .map(|i| device_key(&tenant, &format!("dev-{i:08}")))
        .collect();
    println!(
        "fleet-bench: {} devices in one deployment, {} cores",
        args.devices,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let devices = f64::from(args.devices.max(1));

    let before = rss_bytes();
    let (baseline, took) = timed(|| {
        let mut map: HashMap<DeviceKey, ()> = HashMap::with_capacity(keys.len());
        map.extend(keys.iter().map(|k| (*k, ())));
        map
    });
    let baseline_bytes = rss_bytes().saturating_sub(before) as f64 / devices;
    row(
        "baseline: HashMap of the keys, memory",
        baseline_bytes,
        "B/device",
        "RSS growth",
    );
    row(
        "baseline: insert",
        rate(keys.len() as u64, took),
        "keys/s",
        "",
    );
    let (found, took) = timed(|| keys.iter().filter(|k| baseline.contains_key(k)).count());
    row(
        "baseline: lookup",
        rate(found as u64, took),
        "lookups/s",
        "",
    );
    drop(baseline);

    let before = rss_bytes();
    let fleet = Fleet::new();
    let membership = Membership {
        created: 1,
        deployment: uuid::Uuid::new_v4(),
    };
    let ((), took) = timed(|| fleet.add_all(keys.iter().copied(), membership));
    let fleet_bytes = rss_bytes().saturating_sub(before) as f64 / devices;
    row(
        "fleet index: memory",
        fleet_bytes,
        "B/device",
        &format!(
            "RSS growth; x{:.2} of baseline (target <= 64 B)",
            fleet_bytes / baseline_bytes.max(1e-9)
        ),
    );
    row(
        "fleet index: add",
        rate(keys.len() as u64, took),
        "devices/s",
        "",
    );
    let (found, took) = timed(|| keys.iter().filter(|k| fleet.oldest(**k).is_some()).count());
    anyhow::ensure!(
        found == keys.len(),
        "{found} of {} devices found",
        keys.len()
    );
    row(
        "fleet index: oldest membership",
        rate(found as u64, took),
        "lookups/s",
        "one thread",
    );
    Ok(())
}
