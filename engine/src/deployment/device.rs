//! The per-device state machine of one deployment: what a check-in or a status report does
//! to a device's record. Pure functions; the actor persists what they change.

use storage::{DeploymentRecord, DeviceDeploymentRecord, DeviceStatus};
use time::OffsetDateTime;

/// A status change of one device (`from == to` never appears: that is a no-op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Old status.
    pub from: DeviceStatus,
    /// New status.
    pub to: DeviceStatus,
}

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Devices cannot report this status (`pending`, `noartifact`, `aborted`, …).
    #[error("devices cannot report the status {0}")]
    NotReportable(DeviceStatus),
    /// The deployment was aborted or the device decommissioned, or a finished device
    /// reported an active status.
    #[error("the device's deployment is over ({0}); it can no longer change its status")]
    Over(DeviceStatus),
}

/// Whether a device may report `s`.
pub fn reportable(s: DeviceStatus) -> bool {
    !matches!(
        s,
        DeviceStatus::Pending
            | DeviceStatus::Noartifact
            | DeviceStatus::Aborted
            | DeviceStatus::Decommissioned
    )
}

/// What a status report changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// Nothing: the device repeated its status and substate.
    Unchanged,
    /// Only the substate: the record changes (and is persisted), the statistics do not.
    Substate,
    /// The status.
    Moved(Change),
}

/// What of its deployment a device's report is judged by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terms {
    /// Extra attempts after a failure.
    pub retries: u32,
    /// An operator aborted the deployment: the contract answers 409 ("the device's
    /// deployment was aborted") to any change, also from a device that had finished before
    /// the abort, so the outcome stays what it was when it was aborted.
    pub aborted: bool,
}

impl Terms {
    /// The terms of `deployment`.
    pub fn of(deployment: &DeploymentRecord) -> Self {
        Terms {
            retries: deployment.retries,
            aborted: deployment.aborted,
        }
    }
}

/// Apply a status report.
pub fn report(
    rec: &mut DeviceDeploymentRecord,
    status: DeviceStatus,
    substate: Option<String>,
    terms: Terms,
    now: OffsetDateTime,
) -> Result<Reported, ReportError> {
    if !reportable(status) {
        return Err(ReportError::NotReportable(status));
    }
    if terms.aborted {
        // A repeat of the device's status stays a no-op; nothing else goes.
        return if rec.status == status {
            Ok(Reported::Unchanged)
        } else {
            Err(ReportError::Over(rec.status))
        };
    }
    if rec.status == status {
        if substate.is_some() && rec.substate != substate {
            rec.substate = substate;
            return Ok(Reported::Substate);
        }
        return Ok(Reported::Unchanged);
    }
    if rec.status.is_terminal() {
        return replace_final(rec, status, substate, now);
    }
    if status == DeviceStatus::Failure && awaits_retry(rec) {
        // This attempt's failure was counted already. The client repeats a report whose
        // answer it lost; the repeat must not spend another attempt.
        return Ok(Reported::Unchanged);
    }
    if rec.status == DeviceStatus::Pending && rec.artifact_id.is_none() {
        // The device leaves pending without having been handed the update in this attempt
        // (it never checked in, or lost the answer): the attempt counts all the same, or a
        // failure would send it back to pending whatever `retries` says.
        rec.attempts += 1;
    }
    let from = rec.status;
    let to = if status == DeviceStatus::Failure && rec.attempts <= terms.retries {
        // Attempts left: back to pending; the next check-in hands out the deployment again.
        DeviceStatus::Pending
    } else {
        status
    };
    set_status(rec, to, now);
    rec.substate = substate;
    if to == DeviceStatus::Pending {
        // A new attempt: the next check-in hands the update out (and counts) again.
        rec.artifact_id = None;
    }
    Ok(Reported::Moved(Change { from, to }))
}

/// Whether the record went back to pending after a failed attempt and waits for the
/// check-in that starts the next one: only a failure sends a device that had an attempt
/// back to pending, and a check-in that hands the update out again records its artifact.
fn awaits_retry(rec: &DeviceDeploymentRecord) -> bool {
    rec.status == DeviceStatus::Pending && rec.artifact_id.is_none() && rec.attempts > 0
}

/// A report from a device that has finished. An aborted or decommissioned device can
/// report nothing more (409: the client rolls back). Any other final status may be replaced
/// by another final one, as upstream allows and the contract implies (it refuses reports
/// only after an abort or a decommission; see [`Terms::aborted`] for a deployment that
/// was aborted): a client that reported `success` and then failed to commit reports
/// `failure`, and that is what it ends with. A finished device cannot go
/// back to an active status: it is no longer handed the deployment.
fn replace_final(
    rec: &mut DeviceDeploymentRecord,
    status: DeviceStatus,
    substate: Option<String>,
    now: OffsetDateTime,
) -> Result<Reported, ReportError> {
    let interrupted = matches!(
        rec.status,
        DeviceStatus::Aborted | DeviceStatus::Decommissioned
    );
    if interrupted || !status.is_terminal() {
        return Err(ReportError::Over(rec.status));
    }
    let from = rec.status;
    set_status(rec, status, now);
    rec.substate = substate;
    Ok(Reported::Moved(Change { from, to: status }))
}

/// Force a status (check-in side effects, abort, decommission).
pub fn set_status(rec: &mut DeviceDeploymentRecord, to: DeviceStatus, now: OffsetDateTime) {
    rec.status = to;
    if to.is_terminal() {
        rec.finished = Some(now);
    }
}

/// Abort or decommission a device: only devices that have not finished change.
pub fn interrupt(
    rec: &mut DeviceDeploymentRecord,
    to: DeviceStatus,
    now: OffsetDateTime,
) -> Option<Change> {
    if rec.status.is_terminal() {
        return None;
    }
    let from = rec.status;
    set_status(rec, to, now);
    Some(Change { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::deployment::stats::Statistics;

    /// Terms with `n` retries, not aborted.
    fn retries(n: u32) -> Terms {
        Terms {
            retries: n,
            aborted: false,
        }
    }

    fn rec() -> DeviceDeploymentRecord {
        let mut r = DeviceDeploymentRecord::pending("d".into(), OffsetDateTime::now_utc());
        r.attempts = 1;
        r
    }

    #[test]
    fn repeated_statuses_are_no_ops() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            report(&mut r, DeviceStatus::Downloading, None, retries(0), now),
            Ok(Reported::Moved(_))
        ));
        assert_eq!(
            report(&mut r, DeviceStatus::Downloading, None, retries(0), now),
            Ok(Reported::Unchanged)
        );
    }

    #[test]
    fn a_new_substate_alone_changes_the_record() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        let sub = |s: &str| Some(s.to_owned());
        report(&mut r, DeviceStatus::Installing, sub("a"), retries(0), now).unwrap();
        assert_eq!(
            report(&mut r, DeviceStatus::Installing, sub("b"), retries(0), now),
            Ok(Reported::Substate)
        );
        assert_eq!(r.substate.as_deref(), Some("b"));
        assert_eq!(
            report(&mut r, DeviceStatus::Installing, None, retries(0), now),
            Ok(Reported::Unchanged),
            "no substate keeps the last one"
        );
    }

    #[test]
    fn failure_of_a_device_never_handed_the_update_uses_up_an_attempt() {
        let now = OffsetDateTime::now_utc();
        let mut r = DeviceDeploymentRecord::pending("d".into(), now);
        let moved = report(&mut r, DeviceStatus::Failure, None, retries(0), now).unwrap();
        assert_eq!(
            moved,
            Reported::Moved(Change {
                from: DeviceStatus::Pending,
                to: DeviceStatus::Failure
            }),
            "without retries the first failure is final"
        );
        assert_eq!(r.attempts, 1);

        let mut r = DeviceDeploymentRecord::pending("d".into(), now);
        report(&mut r, DeviceStatus::Downloading, None, retries(1), now).unwrap();
        report(&mut r, DeviceStatus::Failure, None, retries(1), now).unwrap();
        assert_eq!((r.status, r.attempts), (DeviceStatus::Pending, 1));
        report(&mut r, DeviceStatus::Downloading, None, retries(1), now).unwrap();
        report(&mut r, DeviceStatus::Failure, None, retries(1), now).unwrap();
        assert_eq!(
            (r.status, r.attempts),
            (DeviceStatus::Failure, 2),
            "one retry, then final"
        );
    }

    #[test]
    fn failure_with_attempts_left_goes_back_to_pending() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        r.artifact_id = Some(uuid::Uuid::new_v4());
        let c = report(&mut r, DeviceStatus::Failure, None, retries(1), now).unwrap();
        assert!(matches!(c, Reported::Moved(c) if c.to == DeviceStatus::Pending));
        assert_eq!(
            r.artifact_id, None,
            "the next check-in starts a new attempt"
        );
        // The next check-in hands the update out again: the second attempt.
        r.attempts = 2;
        r.artifact_id = Some(uuid::Uuid::new_v4());
        let c = report(&mut r, DeviceStatus::Failure, None, retries(1), now).unwrap();
        assert!(matches!(c, Reported::Moved(c) if c.to == DeviceStatus::Failure));
        assert!(r.finished.is_some());
    }

    #[test]
    fn a_repeated_failure_does_not_spend_another_attempt() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        r.artifact_id = Some(uuid::Uuid::new_v4());
        report(&mut r, DeviceStatus::Downloading, None, retries(2), now).unwrap();
        report(&mut r, DeviceStatus::Failure, None, retries(2), now).unwrap();
        assert_eq!((r.status, r.attempts), (DeviceStatus::Pending, 1));
        for _ in 0..3 {
            assert_eq!(
                report(&mut r, DeviceStatus::Failure, None, retries(2), now),
                Ok(Reported::Unchanged)
            );
        }
        assert_eq!((r.status, r.attempts), (DeviceStatus::Pending, 1));
    }

    #[test]
    fn reports_after_abort_are_refused() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        interrupt(&mut r, DeviceStatus::Aborted, now);
        assert_eq!(
            report(&mut r, DeviceStatus::Success, None, retries(0), now),
            Err(ReportError::Over(DeviceStatus::Aborted))
        );
        assert_eq!(
            report(&mut r, DeviceStatus::Pending, None, retries(0), now),
            Err(ReportError::NotReportable(DeviceStatus::Pending))
        );
    }

    #[test]
    fn nothing_changes_in_an_aborted_deployment() {
        let now = OffsetDateTime::now_utc();
        let aborted = Terms {
            retries: 1,
            aborted: true,
        };
        let mut r = rec();
        report(&mut r, DeviceStatus::Success, None, retries(1), now).unwrap();
        for s in [DeviceStatus::Failure, DeviceStatus::Installing] {
            assert_eq!(
                report(&mut r, s, None, aborted, now),
                Err(ReportError::Over(DeviceStatus::Success))
            );
        }
        assert_eq!(
            report(
                &mut r,
                DeviceStatus::Success,
                Some("x".into()),
                aborted,
                now
            ),
            Ok(Reported::Unchanged),
            "a repeat stays a no-op"
        );
        assert_eq!((r.status, r.substate), (DeviceStatus::Success, None));
    }

    #[test]
    fn a_final_status_may_be_replaced_by_another_but_not_by_an_active_one() {
        let mut r = rec();
        let now = OffsetDateTime::now_utc();
        report(&mut r, DeviceStatus::Success, None, retries(1), now).unwrap();
        let c = report(&mut r, DeviceStatus::Failure, None, retries(1), now).unwrap();
        // No retry from a final status, whatever `retries` allows.
        assert_eq!(
            c,
            Reported::Moved(Change {
                from: DeviceStatus::Success,
                to: DeviceStatus::Failure
            })
        );
        assert_eq!(
            report(&mut r, DeviceStatus::Downloading, None, retries(1), now),
            Err(ReportError::Over(DeviceStatus::Failure))
        );
        assert_eq!(r.status, DeviceStatus::Failure);
    }

    fn any_status() -> impl Strategy<Value = DeviceStatus> {
        prop::sample::select(DeviceStatus::ALL.to_vec())
    }

    proptest! {
        /// Whatever devices report, in whatever order, the incrementally kept statistics
        /// equal counting the records.
        #[test]
        fn statistics_always_equal_the_records(
            ops in prop::collection::vec((0usize..8, any_status(), 0u32..3, any::<bool>()), 0..200),
            extra in 0u32..3,
        ) {
            let now = OffsetDateTime::now_utc();
            let mut recs: Vec<DeviceDeploymentRecord> = (0..8)
                .map(|i| DeviceDeploymentRecord::pending(format!("d{i}"), now))
                .collect();
            let mut stats = Statistics::all_pending(8);
            for (dev, status, attempts, interrupt_it) in ops {
                let r = &mut recs[dev];
                r.attempts = r.attempts.max(attempts);
                let change = if interrupt_it && !reportable(status) {
                    interrupt(r, DeviceStatus::Aborted, now)
                } else {
                    match report(r, status, None, self::retries(extra), now) {
                        Ok(Reported::Moved(c)) => Some(c),
                        _ => None,
                    }
                };
                if let Some(c) = change {
                    stats.moved(c.from, c.to);
                }
                prop_assert!(!(r.status.is_terminal() && r.finished.is_none()));
            }
            prop_assert_eq!(stats, Statistics::count(recs.iter().map(|r| &r.status)));
        }
    }
}
