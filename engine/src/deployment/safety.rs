//! A deployment's safety rules as the actor applies them: the auto-abort's failure counts
//! (overall and per phase), pacing (how many devices may start the update now), and the
//! in-progress timeout (which devices have been downloading, installing or rebooting too
//! long). Pure state and arithmetic; the actor decides what to write.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use storage::{AutoAbort, DeviceStatus, Pacing, PhaseGate, Safety, UpdateControlMap};
use time::OffsetDateTime;

use super::device::Change;
use super::fleet::DeviceKey;
use super::plan::NewDeployment;
use super::windows::Windows;
use crate::error::{EngineError, Result};

/// The longest in-progress timeout accepted: a device stuck for a month is a device to look
/// at, not one to wait for.
const MAX_DEVICE_TIMEOUT: u64 = 30 * 24 * 3600;

/// The rules of a new deployment, checked (`now`: its creation time).
pub(crate) fn rules(new: &NewDeployment, now: OffsetDateTime) -> Result<Safety> {
    if let Some(a) = &new.auto_abort {
        if !(1..=100).contains(&a.failure_percent) {
            return Err(invalid("auto_abort.failure_percent must be 1 to 100"));
        }
    }
    if let Some(p) = &new.pacing {
        check_pacing(p)?;
    }
    if let Some(t) = new.device_timeout_seconds {
        if !(1..=MAX_DEVICE_TIMEOUT).contains(&t) {
            return Err(invalid(format!(
                "device_timeout_seconds must be 1 to {MAX_DEVICE_TIMEOUT}"
            )));
        }
    }
    Windows::compile(&new.maintenance_windows, now)?;
    if new.end.is_some_and(|e| e.at <= now) {
        return Err(invalid("end.at must be in the future"));
    }
    if let Some(m) = &new.update_control_map {
        check_control_map(m)?;
    }
    Ok(Safety {
        auto_abort: new.auto_abort,
        pacing: new.pacing,
        device_timeout_secs: new.device_timeout_seconds,
        maintenance_windows: new.maintenance_windows.clone(),
        end: new.end,
        update_control_map: new.update_control_map.clone(),
        ..Safety::default()
    })
}

/// What the Mender client would refuse in a map (it drops the whole answer then).
pub(crate) fn check_control_map(m: &UpdateControlMap) -> Result<()> {
    if !(-10..=10).contains(&m.priority) {
        return Err(invalid("update_control_map.priority must be -10 to 10"));
    }
    Ok(())
}

fn check_pacing(p: &Pacing) -> Result<()> {
    if p.per_minute == 0 {
        return Err(invalid("pacing.per_minute must be at least 1"));
    }
    match (p.factor, p.step) {
        (None, None) => {}
        (Some(f), Some(step)) => {
            if !(f.is_finite() && f > 1.0 && f <= 100.0) {
                return Err(invalid("pacing.factor must be over 1 and at most 100"));
            }
            if step == 0 {
                return Err(invalid("pacing.step must be at least 1"));
            }
        }
        _ => {
            return Err(invalid(
                "pacing.factor and pacing.step go together (a ramp)",
            ))
        }
    }
    if p.max_per_minute.is_some_and(|m| m < p.per_minute) {
        return Err(invalid("pacing.max_per_minute must be at least per_minute"));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// Devices that ended with an install outcome, and how many of those failed. Devices that
/// ended otherwise (already installed, no artifact, aborted, decommissioned) say nothing
/// about the release and are not counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcomes {
    pub(crate) finished: u64,
    pub(crate) failed: u64,
}

impl Outcomes {
    fn apply(&mut self, status: DeviceStatus, add: bool) {
        let (finished, failed) = match status {
            DeviceStatus::Success => (1, 0),
            DeviceStatus::Failure => (1, 1),
            _ => return,
        };
        if add {
            self.finished += finished;
            self.failed += failed;
        } else {
            self.finished = self.finished.saturating_sub(finished);
            self.failed = self.failed.saturating_sub(failed);
        }
    }

    /// Whether `rule` trips on these counts: at least `min_finished` finished (and at least
    /// one), of which at least `failure_percent` failed.
    fn trips(&self, rule: &AutoAbort) -> bool {
        self.finished > 0
            && self.finished >= rule.min_finished
            && self.failed * 100 >= u64::from(rule.failure_percent) * self.finished
    }
}

/// Install outcomes overall and per phase, for the auto-abort.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    overall: Outcomes,
    phases: Vec<Outcomes>,
}

impl Tally {
    /// Count final statuses, each with the phase its device was admitted into.
    pub(crate) fn count(finals: impl Iterator<Item = (Option<u32>, DeviceStatus)>) -> Self {
        let mut t = Tally::default();
        for (phase, status) in finals {
            t.moved(phase, None, status);
        }
        t
    }

    /// A device of `phase` moved from `from` (none: it was not counted) to `to`.
    pub(crate) fn moved(
        &mut self,
        phase: Option<u32>,
        from: Option<DeviceStatus>,
        to: DeviceStatus,
    ) {
        let slot = phase.map(|p| {
            let p = p as usize;
            if self.phases.len() <= p {
                self.phases.resize(p + 1, Outcomes::default());
            }
            p
        });
        for counts in [Some(&mut self.overall), slot.map(|p| &mut self.phases[p])]
            .into_iter()
            .flatten()
        {
            if let Some(from) = from {
                counts.apply(from, false);
            }
            counts.apply(to, true);
        }
    }

    /// Whether phase `i`'s gate passes on the outcomes of phase `i - 1`: at least
    /// `min_finished` finished (and at least one), of which `success_percent` succeeded.
    pub(crate) fn gate_passed(&self, i: usize, gate: &PhaseGate) -> bool {
        let Some(previous) = i.checked_sub(1) else {
            return true;
        };
        let o = self.phases.get(previous).copied().unwrap_or_default();
        let succeeded = o.finished - o.failed;
        o.finished > 0
            && o.finished >= gate.min_finished
            && succeeded * 100 >= u64::from(gate.success_percent) * o.finished
    }

    /// Why `rule` trips, if it does (overall first, then the first phase that trips it).
    pub(crate) fn verdict(&self, rule: &AutoAbort) -> Option<String> {
        let why = |o: &Outcomes, scope: String| {
            format!(
                "{} of {} finished devices{scope} failed, at least {}% (auto_abort)",
                o.failed, o.finished, rule.failure_percent
            )
        };
        if self.overall.trips(rule) {
            return Some(why(&self.overall, String::new()));
        }
        self.phases
            .iter()
            .enumerate()
            .find(|(_, o)| o.trips(rule))
            .map(|(i, o)| why(o, format!(" in phase {}", i + 1)))
    }
}

/// When devices started the update in the last minute, to hold the pacing rate. Kept in
/// memory only: after a restart the deployment may admit up to one minute's worth again.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    starts: VecDeque<OffsetDateTime>,
}

impl Pacer {
    /// Whether one more device may start now, given how many have succeeded (the ramp).
    pub(crate) fn allows(&mut self, p: &Pacing, succeeded: u64, now: OffsetDateTime) -> bool {
        let minute_ago = now - Duration::from_secs(60);
        while self.starts.front().is_some_and(|t| *t <= minute_ago) {
            self.starts.pop_front();
        }
        (self.starts.len() as u64) < rate(p, succeeded)
    }

    /// A device started the update now.
    pub(crate) fn started(&mut self, now: OffsetDateTime) {
        self.starts.push_back(now);
    }
}

/// The devices per minute `p` allows after `succeeded` successes.
pub(crate) fn rate(p: &Pacing, succeeded: u64) -> u64 {
    let base = u64::from(p.per_minute);
    let cap = p.max_per_minute.map_or(u64::MAX, u64::from);
    let (Some(factor), Some(step)) = (p.factor, p.step) else {
        return base.min(cap);
    };
    let steps = (succeeded / step.max(1)).min(i32::MAX as u64) as i32;
    let grown = base as f64 * factor.powi(steps);
    if grown >= cap as f64 {
        cap
    } else {
        grown as u64
    }
}

/// When each device downloading, installing or rebooting entered that status, to time it
/// out. Kept in memory only: after a restart a device's time counts from the load.
#[derive(Debug, Default)]
pub(crate) struct Timeouts {
    since: HashMap<DeviceKey, OffsetDateTime>,
}

/// Whether the in-progress timeout applies to a device in `s` (paused states wait for an
/// operator, not the device).
pub(crate) fn timed(s: DeviceStatus) -> bool {
    matches!(
        s,
        DeviceStatus::Downloading | DeviceStatus::Installing | DeviceStatus::Rebooting
    )
}

impl Timeouts {
    /// Start timing devices loaded in a timed status.
    pub(crate) fn load(keys: impl Iterator<Item = DeviceKey>, now: OffsetDateTime) -> Self {
        Timeouts {
            since: keys.map(|k| (k, now)).collect(),
        }
    }

    /// A device changed status.
    pub(crate) fn moved(&mut self, key: DeviceKey, change: Change, now: OffsetDateTime) {
        if timed(change.to) {
            self.since.insert(key, now);
        } else {
            self.since.remove(&key);
        }
    }

    /// Devices in a timed status since before `deadline`.
    pub(crate) fn expired(&self, deadline: OffsetDateTime) -> Vec<DeviceKey> {
        self.since
            .iter()
            .filter(|(_, t)| **t <= deadline)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// How often the actor looks for timed-out devices: a tenth of the timeout, between a
/// second and a minute, so a device fails at most that late.
pub(crate) fn sweep_every(timeout_secs: u64) -> Duration {
    Duration::from_secs((timeout_secs / 10).clamp(1, 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::AbortAction;

    fn rule(percent: u32, min: u64) -> AutoAbort {
        AutoAbort {
            failure_percent: percent,
            min_finished: min,
            action: AbortAction::Abort,
        }
    }

    #[test]
    fn the_auto_abort_trips_at_the_exact_share_once_enough_devices_finished() {
        let mut t = Tally::default();
        let r = rule(20, 10);
        for _ in 0..7 {
            t.moved(Some(0), None, DeviceStatus::Success);
        }
        for _ in 0..2 {
            t.moved(Some(0), None, DeviceStatus::Failure);
        }
        // 2 of 9: over 20 %, but fewer than 10 finished.
        assert_eq!(t.verdict(&r), None);
        t.moved(Some(0), None, DeviceStatus::Success);
        // 2 of 10: exactly 20 %.
        let why = t.verdict(&r).expect("trips");
        assert!(why.starts_with("2 of 10 finished devices failed"), "{why}");
        // 2 of 11 is under 20 %.
        t.moved(Some(0), None, DeviceStatus::Success);
        assert_eq!(t.verdict(&r), None);
    }

    #[test]
    fn a_phase_trips_alone_and_a_replaced_final_status_is_recounted() {
        let mut t = Tally::default();
        let r = rule(50, 2);
        for _ in 0..8 {
            t.moved(Some(0), None, DeviceStatus::Success);
        }
        t.moved(Some(1), None, DeviceStatus::Success);
        t.moved(Some(1), None, DeviceStatus::Failure);
        let why = t.verdict(&r).expect("phase 2 trips");
        assert!(why.contains("in phase 2"), "{why}");
        // The failed device's earlier success is replaced, not added.
        t.moved(Some(1), Some(DeviceStatus::Failure), DeviceStatus::Success);
        assert_eq!(t.verdict(&r), None);
        assert_eq!(
            t.overall,
            Outcomes {
                finished: 10,
                failed: 0
            }
        );
        // Statuses that say nothing about the release are not counted.
        t.moved(Some(1), None, DeviceStatus::AlreadyInstalled);
        t.moved(Some(1), None, DeviceStatus::Aborted);
        assert_eq!(t.overall.finished, 10);
    }

    #[test]
    fn a_gate_passes_on_the_previous_phase_s_success_share_once_enough_finished() {
        let mut t = Tally::default();
        let gate = PhaseGate {
            success_percent: 75,
            min_finished: 4,
        };
        assert!(!t.gate_passed(1, &gate), "nothing finished");
        for _ in 0..3 {
            t.moved(Some(0), None, DeviceStatus::Success);
        }
        assert!(
            !t.gate_passed(1, &gate),
            "3 of 3, but fewer than 4 finished"
        );
        t.moved(Some(0), None, DeviceStatus::Failure);
        assert!(t.gate_passed(1, &gate), "3 of 4: exactly 75 %");
        t.moved(Some(0), None, DeviceStatus::Failure);
        assert!(!t.gate_passed(1, &gate), "3 of 5");
        assert!(!t.gate_passed(2, &gate), "phase 2 has no outcomes");
    }

    #[test]
    fn the_ramp_multiplies_the_rate_per_step_of_successes_up_to_the_cap() {
        let p = Pacing {
            per_minute: 10,
            factor: Some(2.0),
            step: Some(100),
            max_per_minute: Some(50),
        };
        assert_eq!(rate(&p, 0), 10);
        assert_eq!(rate(&p, 99), 10);
        assert_eq!(rate(&p, 100), 20);
        assert_eq!(rate(&p, 250), 40);
        assert_eq!(rate(&p, 300), 50, "capped");
        assert_eq!(rate(&p, u64::MAX), 50, "no overflow");
        let flat = Pacing {
            factor: None,
            step: None,
            ..p
        };
        assert_eq!(rate(&flat, 10_000), 10);
    }

    #[test]
    fn the_pacer_admits_per_minute_on_a_sliding_window() {
        let p = Pacing {
            per_minute: 2,
            factor: None,
            step: None,
            max_per_minute: None,
        };
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut pacer = Pacer::default();
        assert!(pacer.allows(&p, 0, t0));
        pacer.started(t0);
        pacer.started(t0 + Duration::from_secs(30));
        assert!(!pacer.allows(&p, 0, t0 + Duration::from_secs(59)));
        assert!(pacer.allows(&p, 0, t0 + Duration::from_secs(60)));
    }
}
