//! Benchmarks of rollout. Each binary prints its figures next to a baseline measured in the
//! same run on the same machine, so numbers from different machines are never compared:
//! - `store-bench`: durable writes per second, one per commit vs. grouped, fjall (and, with
//!   `--features engines`, redb and SQLite);
//! - `engine-bench`: deployment creation, check-ins and durable status reports through the
//!   engine (no HTTP), beside the raw store commit rate.

use std::time::{Duration, Instant};

/// Resident memory of this process in bytes (Linux), 0 elsewhere.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Operations per second.
pub fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Time a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Print one row of a results table.
pub fn row(name: &str, value: f64, unit: &str, note: &str) {
    println!("{name:<48} {value:>14.1} {unit:<10} {note}");
}
