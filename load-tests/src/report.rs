//! The end-of-run report, as a table for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::Mode;
use crate::stats::KindSummary;
use crate::verify::{PhaseTimeline, StatisticsCheck};

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `checkin`, `rollout` or `mixed`.
    pub mode: Mode,
    /// Base URL of the server.
    pub server: String,
    /// Fleet size.
    pub devices: u32,
    /// Workers (cap on requests in flight).
    pub concurrency: u32,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Wall time of the request loop.
    pub elapsed_secs: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests with an unexpected answer.
    pub errors: u64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// CPU this client used during the run (user + system), in % of one core: near 100 %
    /// per core it can use, the client, not the server, set the pace. `None` where the
    /// process's CPU time cannot be read (`/proc`).
    pub client_cpu_percent: Option<f64>,
    /// Figures per kind of request, by kind name.
    pub kinds: BTreeMap<&'static str, KindSummary>,
    /// Device outcomes (`rollout` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
    /// The created deployment (`--create-deployment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentReport>,
    /// The error that ended the run early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ctrl-C ended the run: the figures cover it until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// How the devices of a rollout ended.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Devices that reached an end.
    pub finished: u64,
    /// Reported `success`.
    pub success: u64,
    /// Reported their final `failure`.
    pub failure: u64,
    /// Were told their deployment is over (aborted, decommissioned).
    pub stopped: u64,
    /// Had not finished when the run ended.
    pub unfinished: u64,
}

/// The deployment created for the run.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentReport {
    /// Deployment id.
    pub id: String,
    /// Deployed release.
    pub artifact_name: String,
    /// Whether rollout-load uploaded the artifact (false: it existed).
    pub artifact_uploaded: bool,
    /// Deployment status when last read.
    pub status: String,
    /// Why it stopped by itself (`--auto-abort`), if it did: then `finished_secs` is when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// Seconds from creation until it was seen finished.
    pub finished_secs: Option<f64>,
    /// Per-phase timeline.
    pub phases: Vec<PhaseTimeline>,
    /// The statistics check (`rollout` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<StatisticsCheck>,
}

impl Report {
    /// The report as a human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let shape = match self.rate {
            Some(r) => format!("open loop at {r} req/s (cap {})", self.concurrency),
            None => format!("closed loop, concurrency {}", self.concurrency),
        };
        let _ = writeln!(
            s,
            "rollout-load: mode {}, {} devices, {shape}, server {}",
            self.mode.name(),
            self.devices,
            self.server
        );
        if self.interrupted {
            let _ = writeln!(
                s,
                "interrupted (Ctrl-C): the figures cover the run until then"
            );
        }
        let _ = writeln!(
            s,
            "{:.2} s, {} requests, {:.1} req/s, {} errors, client CPU {}\n",
            self.elapsed_secs,
            self.requests,
            self.throughput_rps,
            self.errors,
            self.client_cpu_percent
                .map_or("unknown".to_owned(), |p| format!("{p:.0} % of one core"))
        );
        let _ = writeln!(
            s,
            "{:<14} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "kind", "count", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for k in self.kinds.values() {
            let _ = writeln!(
                s,
                "{:<14} {:>9} {:>7} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                k.kind, k.count, k.errors, k.rps, k.p50_ms, k.p90_ms, k.p99_ms, k.p999_ms, k.max_ms
            );
        }
        for k in self.kinds.values().filter(|k| !k.statuses.is_empty()) {
            let codes: Vec<String> = k
                .statuses
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let _ = writeln!(
                s,
                "{:<14} answers that were not a success: {} ({} retried after 503)",
                k.kind,
                codes.join(", "),
                k.retried
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                s,
                "\ndevices: {} finished ({} success, {} failure, {} stopped), {} unfinished",
                f.finished, f.success, f.failure, f.stopped, f.unfinished
            );
        }
        if let Some(d) = &self.deployment {
            self.deployment_table(&mut s, d);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\nerror: {e}");
        }
        s
    }

    fn deployment_table(&self, s: &mut String, d: &DeploymentReport) {
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
        let _ = writeln!(
            s,
            "\ndeployment {} of {} ({}): {}, finished after {}",
            d.id,
            d.artifact_name,
            if d.artifact_uploaded {
                "artifact uploaded"
            } else {
                "artifact existed"
            },
            d.status,
            secs(d.finished_secs)
        );
        if let Some(reason) = &d.abort_reason {
            let _ = writeln!(s, "auto-abort after {}: {reason}", secs(d.finished_secs));
        }
        for p in &d.phases {
            let pct = p
                .batch_percent
                .map_or("rest".to_owned(), |b| format!("{b} %"));
            let _ = writeln!(
                s,
                "  phase {} ({pct}, {}/{} devices): opens {:.1} s, first device {}, full {}, took {}",
                p.phase,
                p.admitted,
                p.capacity,
                p.opens_secs,
                secs(p.first_admitted_secs),
                secs(p.full_secs),
                secs(p.took_secs)
            );
        }
        if let Some(c) = &d.statistics {
            if c.ok {
                let _ = writeln!(
                    s,
                    "statistics: OK (success {}, failure {})",
                    c.expected.get("success").unwrap_or(&0),
                    c.expected.get("failure").unwrap_or(&0)
                );
            } else {
                let _ = writeln!(s, "statistics: MISMATCH");
                for m in &c.mismatches {
                    let _ = writeln!(s, "  {m}");
                }
            }
        }
    }
}

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat` (Linux; in clock ticks of 1/100 s, the USER_HZ of every Linux
/// architecture rollout builds for).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split(' ').skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

#[cfg(test)]
mod cpu_tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let before = super::cpu_seconds().expect("/proc/self/stat is readable on Linux");
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = super::cpu_seconds().unwrap();
        assert!(after - before >= 0.1, "{before} -> {after}");
    }
}
