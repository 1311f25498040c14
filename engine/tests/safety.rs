//! Safety rules of a deployment, under paused time: the auto-abort (abort, or stop
//! admitting) at its exact threshold and minimum count, pacing and its ramp, the in-progress
//! timeout with and without retries, pausing and resuming (kept across a restart), phases
//! held by a gate or an approval, maintenance windows (across midnight and a daylight saving
//! change) and the end time, and update control maps.

mod deployment_support;

use std::time::Duration;

use deployment_support::*;
use engine::deployment::NewPhase;
use engine::{Delivery, EngineError, NewDeployment};
use storage::{
    AbortAction, AutoAbort, ControlAction, ControlPoint, DeploymentEnd, DeploymentStatus,
    DeviceStatus, EndAction, MaintenanceWindow, MetaStore, Pacing, PhaseGate, PointControl,
    UpdateControlMap,
};
use time::macros::datetime;
use time::OffsetDateTime;

fn auto_abort(failure_percent: u32, min_finished: u64, action: AbortAction) -> AutoAbort {
    AutoAbort {
        failure_percent,
        min_finished,
        action,
    }
}

fn pacing(per_minute: u32, ramp: Option<(f64, u64)>) -> Pacing {
    Pacing {
        per_minute,
        factor: ramp.map(|r| r.0),
        step: ramp.map(|r| r.1),
        max_per_minute: None,
    }
}

/// Check in, download, install and report `last`.
async fn update(f: &Fixture, id: uuid::Uuid, device: &str, last: DeviceStatus) {
    assert_eq!(
        f.check_in(device).await,
        Some(id),
        "{device} gets the update"
    );
    f.run_update(device, id, last).await;
}

#[tokio::test(start_paused = true)]
async fn the_auto_abort_aborts_once_the_failure_share_reaches_its_threshold() {
    let f = Fixture::new().await;
    let new = NewDeployment {
        auto_abort: Some(auto_abort(50, 4, AbortAction::Abort)),
        ..f.new_deployment(devices(10))
    };
    let id = f.deploy(new).await;
    update(&f, id, "d00", DeviceStatus::Failure).await;
    update(&f, id, "d01", DeviceStatus::Failure).await;
    update(&f, id, "d02", DeviceStatus::Success).await;
    // 2 of 3 failed: over the share, but fewer than 4 finished.
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Inprogress
    );
    assert_eq!(f.check_in("d03").await, Some(id));
    f.report("d03", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    update(&f, id, "d04", DeviceStatus::Success).await;
    // 2 of 4: exactly 50 %.
    let snap = f.snapshot(id).await;
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
    assert!(snap.header.aborted);
    let reason = snap.header.safety.abort_reason.clone().expect("a reason");
    assert!(
        reason.starts_with("2 of 4 finished devices failed"),
        "{reason}"
    );
    assert_eq!(
        snap.stats.get(DeviceStatus::Aborted),
        6,
        "d03 and the pending ones"
    );
    assert_eq!(snap.stats.get(DeviceStatus::Success), 2);
    let stored = f.store.deployment(&f.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.safety.abort_reason, Some(reason), "persisted");
    assert_eq!(f.check_in("d05").await, None);
}

#[tokio::test(start_paused = true)]
async fn stop_admitting_lets_started_devices_finish_and_starts_no_more_until_resumed() {
    let f = Fixture::new().await;
    let new = NewDeployment {
        auto_abort: Some(auto_abort(100, 2, AbortAction::StopAdmitting)),
        ..f.new_deployment(devices(4))
    };
    let id = f.deploy(new).await;
    assert_eq!(f.check_in("d03").await, Some(id));
    f.report("d03", id, DeviceStatus::Installing).await.unwrap();
    update(&f, id, "d00", DeviceStatus::Failure).await;
    update(&f, id, "d01", DeviceStatus::Failure).await;
    let snap = f.snapshot(id).await;
    assert!(snap.header.safety.halted);
    assert!(snap.header.safety.abort_reason.is_some());
    assert_eq!(
        snap.header.status,
        DeploymentStatus::Inprogress,
        "not aborted"
    );
    assert_eq!(f.check_in("d02").await, None, "no new start");
    assert_eq!(
        f.check_in("d03").await,
        Some(id),
        "a started device still gets it"
    );
    f.report("d03", id, DeviceStatus::Success).await.unwrap();

    f.svc.set_paused(&f.tenant, id, false).await.unwrap();
    let snap = f.snapshot(id).await;
    assert!(!snap.header.safety.halted);
    update(&f, id, "d02", DeviceStatus::Failure).await;
    // The rule tripped once; it does not stop the deployment again.
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Finished
    );
}

#[tokio::test(start_paused = true)]
async fn pacing_admits_per_minute_and_the_ramp_grows_with_successes() {
    let f = Fixture::new().await;
    let new = NewDeployment {
        pacing: Some(pacing(2, None)),
        ..f.new_deployment(devices(5))
    };
    let id = f.deploy(new).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.check_in("d01").await, Some(id));
    assert_eq!(f.check_in("d02").await, None, "two per minute");
    assert_eq!(
        f.check_in("d00").await,
        Some(id),
        "a started device is not paced"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(f.check_in("d02").await, Some(id));

    let new = NewDeployment {
        name: "ramp".into(),
        pacing: Some(pacing(1, Some((2.0, 1)))),
        ..f.new_deployment(devices(10)[5..].to_vec())
    };
    let ramp = f.deploy(new).await;
    update(&f, ramp, "d05", DeviceStatus::Success).await;
    // One success doubles the rate to two a minute: one more now.
    assert_eq!(f.check_in("d06").await, Some(ramp));
    assert_eq!(f.check_in("d07").await, None);
}

#[tokio::test(start_paused = true)]
async fn a_device_stuck_in_progress_times_out_then_is_retried_then_fails() {
    let f = Fixture::new().await;
    let new = NewDeployment {
        device_timeout_seconds: Some(600),
        retries: Some(1),
        ..f.new_deployment(devices(2))
    };
    let id = f.deploy(new).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(f.check_in("d01").await, Some(id));
    f.report("d01", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(300)).await;
    // d01 moves on: its time in installing starts again.
    f.report("d01", id, DeviceStatus::Installing).await.unwrap();
    tokio::time::advance(Duration::from_secs(360)).await;
    tokio::task::yield_now().await;

    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::Pending, "retried");
    assert_eq!(
        rec.substate.as_deref(),
        Some("timed out: downloading for over 600 s")
    );
    assert_eq!(f.status(id, "d01").await, DeviceStatus::Installing);

    assert_eq!(f.check_in("d00").await, Some(id), "its second attempt");
    f.report("d00", id, DeviceStatus::Installing).await.unwrap();
    tokio::time::advance(Duration::from_secs(700)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        f.status(id, "d00").await,
        DeviceStatus::Failure,
        "no attempt left"
    );
    assert_eq!(
        f.status(id, "d01").await,
        DeviceStatus::Pending,
        "its retry"
    );
    f.snapshot(id).await;
}

#[test]
fn a_paused_deployment_starts_no_device_and_stays_paused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = on_runtime(async {
        let f = Fixture::open(dir.path()).await.with_release().await;
        let id = f.deploy(f.new_deployment(devices(3))).await;
        assert_eq!(f.check_in("d00").await, Some(id));
        f.svc.set_paused(&f.tenant, id, true).await.unwrap();
        assert!(f.snapshot(id).await.header.safety.paused);
        assert_eq!(f.check_in("d01").await, None);
        assert_eq!(
            f.check_in("d00").await,
            Some(id),
            "a started device goes on"
        );
        id
    });
    on_runtime(async {
        let f = Fixture::open(dir.path()).await;
        assert_eq!(f.check_in("d01").await, None, "still paused");
        f.svc.set_paused(&f.tenant, id, false).await.unwrap();
        assert_eq!(f.check_in("d01").await, Some(id));
        f.svc.abort(&f.tenant, id).await.unwrap();
        let finished = f.svc.set_paused(&f.tenant, id, true).await;
        assert!(
            matches!(finished, Err(EngineError::Unprocessable(_))),
            "{finished:?}"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn rules_out_of_range_are_refused_and_create_nothing() {
    let f = Fixture::new().await;
    let bad = [
        NewDeployment {
            auto_abort: Some(auto_abort(0, 1, AbortAction::Abort)),
            ..f.new_deployment(devices(1))
        },
        NewDeployment {
            auto_abort: Some(auto_abort(101, 1, AbortAction::Abort)),
            ..f.new_deployment(devices(1))
        },
        NewDeployment {
            pacing: Some(pacing(0, None)),
            ..f.new_deployment(devices(1))
        },
        NewDeployment {
            pacing: Some(pacing(1, Some((1.0, 5)))),
            ..f.new_deployment(devices(1))
        },
        NewDeployment {
            pacing: Some(Pacing {
                factor: Some(2.0),
                ..pacing(1, None)
            }),
            ..f.new_deployment(devices(1))
        },
        NewDeployment {
            device_timeout_seconds: Some(0),
            ..f.new_deployment(devices(1))
        },
    ];
    for new in bad {
        let r = f.svc.create(&f.tenant, new.clone()).await;
        assert!(matches!(r, Err(EngineError::Invalid(_))), "{new:?}: {r:?}");
    }
    assert!(f.store.deployments(&f.tenant).await.unwrap().is_empty());
}

/// Two phases of half the devices each; the second held by `gate` and/or an approval, and
/// opening at `start_ts` if given.
fn gated(
    f: &Fixture,
    n: usize,
    gate: Option<PhaseGate>,
    needs_approval: bool,
    start_ts: Option<time::OffsetDateTime>,
) -> NewDeployment {
    NewDeployment {
        phases: Some(vec![
            phase(Some(50), None),
            NewPhase {
                gate,
                needs_approval,
                ..phase(None, start_ts)
            },
        ]),
        ..f.new_deployment(devices(n))
    }
}

#[tokio::test(start_paused = true)]
async fn a_gated_phase_opens_once_the_previous_phase_succeeded_well_enough() {
    let f = Fixture::new().await;
    let gate = PhaseGate {
        success_percent: 100,
        min_finished: 2,
    };
    let id = f.deploy(gated(&f, 4, Some(gate), false, None)).await;
    update(&f, id, "d00", DeviceStatus::Success).await;
    assert_eq!(f.check_in("d01").await, Some(id), "phase 1 has room");
    assert_eq!(
        f.check_in("d02").await,
        None,
        "phase 1 is full, the gate is closed"
    );
    f.run_update("d01", id, DeviceStatus::Success).await;
    assert_eq!(f.check_in("d02").await, Some(id), "2 of 2 succeeded");
    assert_eq!(f.phase_counts(id).await, vec![2, 1]);
    f.run_update("d02", id, DeviceStatus::Success).await;

    // A failure in phase 1 keeps the gate closed (d00 to d02 finished the first one).
    let id = f
        .deploy(NewDeployment {
            name: "failing".into(),
            ..gated(&f, 4, Some(gate), false, None)
        })
        .await;
    update(&f, id, "d00", DeviceStatus::Success).await;
    update(&f, id, "d01", DeviceStatus::Failure).await;
    assert_eq!(f.check_in("d02").await, None, "1 of 2 succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_phase_needing_approval_opens_once_approved_and_at_its_start_time() {
    let f = Fixture::new().await;
    let later = f.clock.now() + HOUR;
    let id = f.deploy(gated(&f, 2, None, true, Some(later))).await;
    update(&f, id, "d00", DeviceStatus::Success).await;
    assert_eq!(f.check_in("d01").await, None);
    let wrong = f.svc.approve_phase(&f.tenant, id, 1).await;
    assert!(matches!(wrong, Err(EngineError::Conflict(_))), "{wrong:?}");
    let missing = f.svc.approve_phase(&f.tenant, id, 3).await;
    assert!(
        matches!(missing, Err(EngineError::NotFound(_))),
        "{missing:?}"
    );
    f.svc.approve_phase(&f.tenant, id, 2).await.unwrap();
    f.svc.approve_phase(&f.tenant, id, 2).await.unwrap();
    let approved = f.snapshot(id).await.header.phases[1].approved;
    assert!(approved.is_some());
    assert_eq!(
        f.check_in("d01").await,
        None,
        "approved, but not yet at its start"
    );
    tokio::time::advance(HOUR).await;
    assert_eq!(f.check_in("d01").await, Some(id));
    let stored = f.store.deployment(&f.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.phases[1].approved, approved, "persisted");
}

#[tokio::test(start_paused = true)]
async fn gates_and_approvals_are_checked_at_creation() {
    let f = Fixture::new().await;
    let gate = |success_percent| PhaseGate {
        success_percent,
        min_finished: 1,
    };
    let on_first = NewDeployment {
        phases: Some(vec![NewPhase {
            gate: Some(gate(50)),
            ..phase(Some(50), None)
        }]),
        ..f.new_deployment(devices(2))
    };
    let bad = [
        on_first,
        gated(&f, 2, Some(gate(0)), false, None),
        gated(&f, 2, Some(gate(101)), false, None),
        gated(&f, 2, None, false, None),
    ];
    for new in bad {
        let r = f.svc.create(&f.tenant, new.clone()).await;
        assert!(matches!(r, Err(EngineError::Invalid(_))), "{new:?}: {r:?}");
    }
}

fn window(cron: &str, time_zone: &str, duration_minutes: u32) -> MaintenanceWindow {
    MaintenanceWindow {
        cron: cron.into(),
        time_zone: time_zone.into(),
        duration_minutes,
    }
}

/// Move the fixture's clock forward to `t`.
async fn advance_to(f: &Fixture, t: OffsetDateTime) {
    let d: Duration = (t - f.clock.now()).try_into().expect("a time ahead");
    tokio::time::advance(d).await;
}

#[tokio::test(start_paused = true)]
async fn a_window_admits_across_midnight_and_follows_berlin_time_over_the_dst_change() {
    // 23:30 to 01:30 Berlin time: 22:30–00:30 UTC in winter (CET), 21:30–23:30 UTC from
    // 29 March 2026 on (CEST).
    let f = Fixture::new_at(datetime!(2026-03-27 12:00 UTC)).await;
    let new = NewDeployment {
        maintenance_windows: vec![window("30 23 * * *", "Europe/Berlin", 120)],
        ..f.new_deployment(devices(3))
    };
    let id = f.deploy(new).await;
    assert_eq!(f.check_in("d00").await, None, "noon: closed");
    advance_to(&f, datetime!(2026-03-27 22:29:59 UTC)).await;
    assert_eq!(f.check_in("d00").await, None, "a second before it opens");
    advance_to(&f, datetime!(2026-03-27 22:30 UTC)).await;
    assert_eq!(f.check_in("d00").await, Some(id), "23:30 in Berlin");
    advance_to(&f, datetime!(2026-03-28 00:29 UTC)).await;
    assert_eq!(
        f.check_in("d01").await,
        Some(id),
        "after midnight, still open"
    );
    f.report("d01", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    advance_to(&f, datetime!(2026-03-28 00:30 UTC)).await;
    assert_eq!(f.check_in("d02").await, None, "01:30 in Berlin: closed");
    assert_eq!(
        f.check_in("d01").await,
        Some(id),
        "a started device goes on outside the window"
    );
    f.report("d01", id, DeviceStatus::Success).await.unwrap();
    // After the change to summer time the window opens an hour earlier in UTC.
    advance_to(&f, datetime!(2026-03-29 21:29 UTC)).await;
    assert_eq!(f.check_in("d02").await, None);
    advance_to(&f, datetime!(2026-03-29 21:30 UTC)).await;
    assert_eq!(f.check_in("d02").await, Some(id), "23:30 CEST");
    let shown = f.snapshot(id).await.header.safety.maintenance_windows;
    assert_eq!(shown, vec![window("30 23 * * *", "Europe/Berlin", 120)]);
}

#[tokio::test(start_paused = true)]
async fn at_its_end_a_deployment_stops_admitting_or_aborts() {
    let f = Fixture::new().await;
    let end = |action| DeploymentEnd {
        at: f.clock.now() + time::Duration::hours(1),
        action,
    };
    let quiet = f
        .deploy(NewDeployment {
            end: Some(end(EndAction::StopAdmitting)),
            ..f.new_deployment(devices(2))
        })
        .await;
    let loud = f
        .deploy(NewDeployment {
            name: "ends in an abort".into(),
            end: Some(end(EndAction::Abort)),
            ..f.new_deployment(devices(4)[2..].to_vec())
        })
        .await;
    assert_eq!(f.check_in("d00").await, Some(quiet));
    assert_eq!(f.check_in("d02").await, Some(loud));
    tokio::time::advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;

    assert_eq!(f.check_in("d01").await, None, "no start after the end");
    assert_eq!(
        f.check_in("d00").await,
        Some(quiet),
        "a started device goes on"
    );
    f.run_update("d00", quiet, DeviceStatus::Success).await;
    let snap = f.snapshot(quiet).await;
    assert_eq!(snap.header.status, DeploymentStatus::Inprogress);
    assert!(snap.header.safety.abort_reason.is_none());

    let snap = f.snapshot(loud).await;
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
    assert!(snap.header.aborted);
    assert_eq!(snap.stats.get(DeviceStatus::Aborted), 2);
    let reason = snap.header.safety.abort_reason.expect("why it stopped");
    assert!(reason.contains("end time"), "{reason}");
    let stored = f.store.deployment(&f.tenant, loud).await.unwrap().unwrap();
    assert_eq!(stored.safety.abort_reason, Some(reason), "persisted");
}

#[tokio::test(start_paused = true)]
async fn windows_and_ends_are_checked_at_creation() {
    let f = Fixture::new().await;
    let past = DeploymentEnd {
        at: f.clock.now() - time::Duration::seconds(1),
        action: EndAction::Abort,
    };
    let bad = [
        vec![window("0 2 * * *", "Nowhere/Special", 60)],
        vec![window("0 25 * * *", "UTC", 60)],
        vec![window("0 2 * * *", "UTC", 0)],
        vec![window("0 0 31 2 *", "UTC", 60)],
    ];
    for windows in bad {
        let new = NewDeployment {
            maintenance_windows: windows.clone(),
            ..f.new_deployment(devices(1))
        };
        let r = f.svc.create(&f.tenant, new).await;
        assert!(
            matches!(r, Err(EngineError::Invalid(_))),
            "{windows:?}: {r:?}"
        );
    }
    let new = NewDeployment {
        end: Some(past),
        ..f.new_deployment(devices(1))
    };
    let r = f.svc.create(&f.tenant, new).await;
    assert!(
        matches!(r, Err(EngineError::Invalid(ref m)) if m.contains("end.at")),
        "{r:?}"
    );
    assert!(f.store.deployments(&f.tenant).await.unwrap().is_empty());
}

fn pause_at_install() -> UpdateControlMap {
    let pause = PointControl {
        action: ControlAction::Pause,
        ..PointControl::default()
    };
    UpdateControlMap {
        priority: 1,
        states: [(ControlPoint::ArtifactInstallEnter, pause)].into(),
    }
}

/// The map handed out at check-in and refreshed by devices in the middle of the update;
/// replacing it (to let paused devices go on) is kept across a restart.
#[test]
fn the_update_control_map_is_handed_out_refreshed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let id = on_runtime(async {
        let f = Fixture::open(dir.path()).await.with_release().await;
        let out_of_range = NewDeployment {
            update_control_map: Some(UpdateControlMap {
                priority: 11,
                ..pause_at_install()
            }),
            ..f.new_deployment(devices(2))
        };
        let refused = f.svc.create(&f.tenant, out_of_range).await;
        assert!(
            matches!(refused, Err(EngineError::Invalid(_))),
            "{refused:?}"
        );
        let new = NewDeployment {
            update_control_map: Some(pause_at_install()),
            ..f.new_deployment(devices(2))
        };
        let id = f.deploy(new).await;
        let delivery = f.svc.check_in(&f.tenant, "d00", TYPE, OLD).await.unwrap();
        let Delivery::Update { control_map, .. } = delivery else {
            panic!("d00 gets the update");
        };
        assert_eq!(control_map, Some(pause_at_install()));
        f.report("d00", id, DeviceStatus::PauseBeforeInstalling)
            .await
            .unwrap();
        let map = f.svc.control_map(&f.tenant, "d00", id).await.unwrap();
        assert_eq!(map, pause_at_install());
        let stranger = f.svc.control_map(&f.tenant, "nobody", id).await;
        assert!(
            matches!(stranger, Err(EngineError::NotFound(_))),
            "{stranger:?}"
        );
        let invalid = UpdateControlMap {
            priority: -11,
            ..UpdateControlMap::default()
        };
        let refused = f.svc.set_control_map(&f.tenant, id, invalid).await;
        assert!(
            matches!(refused, Err(EngineError::Invalid(_))),
            "{refused:?}"
        );
        id
    });
    on_runtime(async {
        let f = Fixture::open(dir.path()).await;
        let map = f.svc.control_map(&f.tenant, "d00", id).await.unwrap();
        assert_eq!(map, pause_at_install(), "the map survives a restart");
        let go_on = UpdateControlMap::default();
        f.svc
            .set_control_map(&f.tenant, id, go_on.clone())
            .await
            .unwrap();
        assert_eq!(
            f.snapshot(id).await.header.safety.update_control_map,
            Some(go_on.clone())
        );
        f.run_update("d00", id, DeviceStatus::Success).await;
        let finished = f.svc.control_map(&f.tenant, "d00", id).await;
        assert!(
            matches!(finished, Err(EngineError::NotFound(_))),
            "{finished:?}"
        );
        f.svc.abort(&f.tenant, id).await.unwrap();
        let over = f.svc.set_control_map(&f.tenant, id, go_on).await;
        assert!(
            matches!(over, Err(EngineError::Unprocessable(_))),
            "{over:?}"
        );
    });
}
