//! Watching a created deployment while the fleet runs it — when each phase admitted its
//! first device and when it was full — and checking its final statistics against what the
//! simulated devices did.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::manage::Management;

/// How often the watcher reads the deployment.
const POLL: Duration = Duration::from_millis(200);

/// The timeline of one phase, in seconds since the deployment was created.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTimeline {
    /// Phase number, from 1.
    pub phase: usize,
    /// Requested share of the devices.
    pub batch_percent: Option<u32>,
    /// Devices the phase holds.
    pub capacity: u64,
    /// Devices admitted when last read.
    pub admitted: u64,
    /// When the phase was scheduled to open.
    pub opens_secs: f64,
    /// When its first device was seen admitted.
    pub first_admitted_secs: Option<f64>,
    /// When it was seen full.
    pub full_secs: Option<f64>,
    /// From opening to full.
    pub took_secs: Option<f64>,
}

/// Reads the deployment until it finishes or is told to stop.
pub struct PhaseWatch {
    stop: Arc<AtomicBool>,
    /// Set once the deployment is seen finished.
    pub over: Arc<AtomicBool>,
    task: JoinHandle<(Vec<PhaseTimeline>, Option<f64>)>,
}

impl PhaseWatch {
    /// Start watching deployment `id`, created at `created`, whose phases open every
    /// `interval` and hold `capacities` devices.
    pub fn start(
        mgmt: Management,
        id: String,
        created: Instant,
        percents: Vec<u32>,
        capacities: Vec<u64>,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let over = Arc::new(AtomicBool::new(false));
        let seen_over = over.clone();
        let task = tokio::spawn(async move {
            let mut phases: Vec<PhaseTimeline> = capacities
                .iter()
                .enumerate()
                .map(|(k, &capacity)| PhaseTimeline {
                    phase: k + 1,
                    batch_percent: percents.get(k).copied(),
                    capacity,
                    admitted: 0,
                    opens_secs: (interval * k as u32).as_secs_f64(),
                    first_admitted_secs: None,
                    full_secs: None,
                    took_secs: None,
                })
                .collect();
            let mut finished_secs = None;
            loop {
                let last_round = flag.load(Ordering::Relaxed);
                if let Ok(d) = mgmt.deployment(&id).await {
                    let now = created.elapsed().as_secs_f64();
                    for (t, p) in phases.iter_mut().zip(&d.phases) {
                        t.admitted = p.device_count;
                        if p.device_count > 0 && t.first_admitted_secs.is_none() {
                            t.first_admitted_secs = Some(now);
                        }
                        if p.device_count >= t.capacity && t.full_secs.is_none() {
                            t.full_secs = Some(now);
                            t.took_secs = Some((now - t.opens_secs).max(0.0));
                        }
                    }
                    if d.status == "finished" {
                        finished_secs.get_or_insert(now);
                        seen_over.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                if last_round {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            (phases, finished_secs)
        });
        PhaseWatch { stop, over, task }
    }

    /// Read once more and return the timeline and when the deployment was seen finished.
    pub async fn finish(self) -> (Vec<PhaseTimeline>, Option<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The statistics check of a rollout run.
#[derive(Debug, Clone, Serialize)]
pub struct StatisticsCheck {
    /// Whether the server agrees with the devices.
    pub ok: bool,
    /// What the devices did: `success`, `failure`, and the unfinished ones.
    pub expected: BTreeMap<String, u64>,
    /// `GET /deployments/{id}/statistics`.
    pub actual: BTreeMap<String, u64>,
    /// Each disagreement, readable.
    pub mismatches: Vec<String>,
}

/// Compare the server's statistics with the devices' outcomes: `success` and `failure` must
/// match, stopped devices must be `aborted` or `decommissioned`, and every device must be
/// counted once.
pub fn check_statistics(
    actual: BTreeMap<String, u64>,
    devices: u64,
    success: u64,
    failure: u64,
    stopped: u64,
) -> StatisticsCheck {
    let get = |k: &str| actual.get(k).copied().unwrap_or(0);
    let mut mismatches = Vec::new();
    for (key, want) in [("success", success), ("failure", failure)] {
        if get(key) != want {
            mismatches.push(format!(
                "{key}: the server counts {}, the devices {want}",
                get(key)
            ));
        }
    }
    let interrupted = get("aborted") + get("decommissioned");
    if interrupted != stopped {
        mismatches.push(format!(
            "aborted + decommissioned: the server counts {interrupted}, the devices {stopped}"
        ));
    }
    let total: u64 = actual.values().sum();
    if total != devices {
        mismatches.push(format!(
            "the statistics count {total} devices, the deployment has {devices}"
        ));
    }
    let expected = BTreeMap::from([
        ("success".to_owned(), success),
        ("failure".to_owned(), failure),
        ("stopped".to_owned(), stopped),
        (
            "unfinished".to_owned(),
            devices.saturating_sub(success + failure + stopped),
        ),
    ]);
    StatisticsCheck {
        ok: mismatches.is_empty(),
        expected,
        actual,
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn matching_statistics_pass() {
        let c = check_statistics(
            stats(&[("success", 9), ("failure", 1), ("pending", 0)]),
            10,
            9,
            1,
            0,
        );
        assert!(c.ok, "{:?}", c.mismatches);
    }

    #[test]
    fn every_disagreement_is_named() {
        let c = check_statistics(stats(&[("success", 8), ("pending", 2)]), 10, 9, 1, 0);
        assert!(!c.ok);
        assert_eq!(c.mismatches.len(), 2, "{:?}", c.mismatches);
        assert!(c.mismatches[0].contains("success: the server counts 8, the devices 9"));
    }
}
