//! The deployment service end to end on a real embedded store: phases, retries, abort,
//! decommission, check-in side effects, deployment order, tenants and rehydration after a
//! restart. Time is tokio's paused clock; phases open with `tokio::time::advance`, never
//! with real sleeps. Every test checks that the statistics equal counting the records.

mod deployment_support;

use std::time::Duration;

use deployment_support::*;
use engine::{Delivery, EngineError, NewDeployment, Snapshot};
use storage::{
    DeploymentStatus, DeviceDeploymentRecord, DeviceStatus, LogMessage, MetaStore, TenantId, Write,
};
use uuid::Uuid;

#[tokio::test(start_paused = true)]
async fn a_status_report_cannot_jump_the_phases() {
    let f = Fixture::new().await;
    let now = f.clock.now();
    let mut new = f.new_deployment(devices(4));
    new.phases = Some(vec![
        phase(Some(50), Some(now + HOUR)),
        phase(None, Some(now + 2 * HOUR)),
    ]);
    let id = f.deploy(new).await;
    let refused = f.report("d00", id, DeviceStatus::Success).await;
    assert!(
        matches!(refused, Err(EngineError::Conflict(_))),
        "{refused:?}"
    );
    let waiting = f.record(id, "d00").await;
    assert_eq!(
        (waiting.status, waiting.attempts, waiting.phase),
        (DeviceStatus::Pending, 0, None)
    );
    let snap = f.snapshot(id).await;
    assert_eq!(snap.header.status, DeploymentStatus::Scheduled);
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 4);

    // Once the first phase opens, a device that reports before it checks in is admitted
    // by its report, as its check-in would have admitted it.
    tokio::time::advance(HOUR).await;
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    let started = f.record(id, "d00").await;
    assert_eq!((started.attempts, started.phase), (1, Some(0)));
    assert_eq!(f.check_in("d01").await, Some(id));
    assert_eq!(f.phase_counts(id).await, vec![2, 0]);
    assert_eq!(f.check_in("d02").await, None, "the first phase is full");
    let refused = f.report("d02", id, DeviceStatus::Downloading).await;
    assert!(
        matches!(refused, Err(EngineError::Conflict(_))),
        "{refused:?}"
    );
    let stored = f.store.device_records(&f.tenant, id).await.unwrap();
    let d00 = stored.iter().find(|r| r.device_id == "d00").unwrap();
    assert_eq!(
        (d00.status, d00.phase),
        (DeviceStatus::Downloading, Some(0))
    );
    assert_eq!(f.phase_counts(id).await, vec![2, 0]);
}

#[tokio::test(start_paused = true)]
async fn phases_admit_devices_batch_by_batch_as_they_open() {
    let f = Fixture::new().await;
    let now = f.clock.now();
    let mut new = f.new_deployment(devices(10));
    new.phases = Some(vec![
        phase(Some(20), None),
        phase(Some(30), Some(now + HOUR)),
        phase(None, Some(now + 2 * HOUR)),
    ]);
    let id = f.deploy(new).await;
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Pending
    );

    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.check_in("d01").await, Some(id));
    assert_eq!(
        f.check_in("d02").await,
        None,
        "the first phase holds 2 devices"
    );
    let waiting = f.record(id, "d02").await;
    assert_eq!(
        (waiting.status, waiting.attempts, waiting.phase),
        (DeviceStatus::Pending, 0, None)
    );
    assert_eq!(f.phase_counts(id).await, vec![2, 0, 0]);
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Pending,
        "handed out, but no device has gone past pending"
    );

    tokio::time::advance(HOUR).await;
    for d in ["d02", "d03", "d04"] {
        assert_eq!(
            f.check_in(d).await,
            Some(id),
            "{d} after the second phase opened"
        );
    }
    assert_eq!(
        f.check_in("d05").await,
        None,
        "the second phase holds 3 devices"
    );
    assert_eq!(f.phase_counts(id).await, vec![2, 3, 0]);

    tokio::time::advance(HOUR).await;
    for d in devices(10).iter().skip(5) {
        assert_eq!(f.check_in(d).await, Some(id), "{d} in the last phase");
    }
    assert_eq!(f.phase_counts(id).await, vec![2, 3, 5]);
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 10);
    assert!(f
        .svc
        .devices(&f.tenant, id)
        .await
        .unwrap()
        .iter()
        .all(|r| r.attempts == 1));
}

#[tokio::test(start_paused = true)]
async fn scheduled_deployment_turns_pending_when_its_first_phase_opens() {
    let f = Fixture::new().await;
    let now = f.clock.now();
    let mut new = f.new_deployment(devices(2));
    new.phases = Some(vec![
        phase(Some(50), Some(now + HOUR)),
        phase(None, Some(now + 2 * HOUR)),
    ]);
    let id = f.deploy(new).await;
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Scheduled
    );
    assert_eq!(f.check_in("d00").await, None, "no phase is open yet");
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Pending);

    tokio::time::advance(HOUR).await;
    let mut status = DeploymentStatus::Scheduled;
    for _ in 0..100 {
        status = f.snapshot(id).await.header.status;
        if status != DeploymentStatus::Scheduled {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, DeploymentStatus::Pending, "the phase timer fired");
    assert_eq!(f.check_in("d00").await, Some(id));
}

#[tokio::test(start_paused = true)]
async fn failure_with_retries_left_sends_the_device_back_to_pending() {
    let f = Fixture::new().await;
    let mut new = f.new_deployment(devices(1));
    new.retries = Some(1);
    let id = f.deploy(new).await;
    assert_eq!(f.snapshot(id).await.header.retries, 1);

    assert_eq!(f.check_in("d00").await, Some(id));
    f.run_update("d00", id, DeviceStatus::Failure).await;
    let rec = f.record(id, "d00").await;
    assert_eq!((rec.status, rec.attempts), (DeviceStatus::Pending, 1));
    assert_eq!(rec.finished, None);
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Failure), 0);
    assert_ne!(snap.header.status, DeploymentStatus::Finished);

    assert_eq!(
        f.check_in("d00").await,
        Some(id),
        "the retry delivers again"
    );
    assert_eq!(f.record(id, "d00").await.attempts, 2);
    f.run_update("d00", id, DeviceStatus::Success).await;
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Success), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Failure), 0);
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
    assert!(snap.header.finished.is_some());
}

#[tokio::test(start_paused = true)]
async fn failure_after_the_last_retry_is_final() {
    let f = Fixture::new().await;
    let mut new = f.new_deployment(devices(2));
    new.retries = Some(1);
    let id = f.deploy(new).await;
    for attempt in 1..=2 {
        assert_eq!(f.check_in("d00").await, Some(id), "attempt {attempt}");
        f.run_update("d00", id, DeviceStatus::Failure).await;
    }
    let rec = f.record(id, "d00").await;
    assert_eq!((rec.status, rec.attempts), (DeviceStatus::Failure, 2));
    assert!(rec.finished.is_some());
    assert_eq!(f.check_in("d00").await, None, "no third attempt");
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Failure), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 1);

    // Without retries the first failure is final.
    let id = f.deploy(f.new_deployment(vec!["solo".into()])).await;
    assert_eq!(f.check_in("solo").await, Some(id));
    f.run_update("solo", id, DeviceStatus::Failure).await;
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Failure), 1);
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn abort_keeps_finished_devices_status_and_aborts_the_rest() {
    let f = Fixture::new().await;
    let now = f.clock.now();
    let mut new = f.new_deployment(devices(6));
    new.phases = Some(vec![phase(Some(50), None), phase(None, Some(now + HOUR))]);
    let id = f.deploy(new).await;
    for d in ["d00", "d01", "d02"] {
        assert_eq!(f.check_in(d).await, Some(id));
    }
    f.run_update("d00", id, DeviceStatus::Success).await;
    f.run_update("d01", id, DeviceStatus::Failure).await;
    f.report("d02", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(f.check_in("d03").await, None, "waits for the second phase");

    f.svc.abort(&f.tenant, id).await.unwrap();
    let expected = [
        ("d00", DeviceStatus::Success),
        ("d01", DeviceStatus::Failure),
        ("d02", DeviceStatus::Aborted),
        ("d03", DeviceStatus::Aborted),
        ("d04", DeviceStatus::Aborted),
        ("d05", DeviceStatus::Aborted),
    ];
    for (d, s) in expected {
        let rec = f.record(id, d).await;
        assert_eq!(rec.status, s, "{d}");
        assert!(rec.finished.is_some(), "{d} has no finished time");
    }
    let snap = f.snapshot(id).await;
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
    assert!(snap.header.finished.is_some());
    assert_eq!(snap.stats.get(DeviceStatus::Aborted), 4);

    assert!(matches!(
        f.report("d02", id, DeviceStatus::Success).await,
        Err(EngineError::Conflict(_))
    ));
    f.report("d00", id, DeviceStatus::Success)
        .await
        .expect("repeating the final status is a no-op");
    // The outcome is what it was at the abort: a device that had finished cannot change it.
    for (d, s) in [
        ("d00", DeviceStatus::Failure),
        ("d01", DeviceStatus::Success),
    ] {
        assert!(
            matches!(f.report(d, id, s).await, Err(EngineError::Conflict(_))),
            "{d}"
        );
    }
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Success);
    assert!(matches!(
        f.svc.abort(&f.tenant, id).await,
        Err(EngineError::Unprocessable(_))
    ));
    tokio::time::advance(HOUR).await;
    assert_eq!(f.check_in("d03").await, None);
    assert_eq!(f.snapshot(id).await.stats, snap.stats);
}

#[tokio::test(start_paused = true)]
async fn decommission_ends_the_device_in_every_active_deployment() {
    let f = Fixture::new().await;
    let first = f.deploy(f.new_deployment(devices(3))).await;
    // Paused time stands still: without this both would have the same creation time.
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(first));
    f.report("d00", first, DeviceStatus::Installing)
        .await
        .unwrap();
    assert_eq!(f.check_in("d01").await, Some(first));
    f.run_update("d01", first, DeviceStatus::Success).await;

    f.svc.decommission(&f.tenant, "d00").await.unwrap();
    f.svc.decommission(&f.tenant, "d01").await.unwrap();
    f.svc.decommission(&f.tenant, "nobody").await.unwrap();
    assert_eq!(f.status(first, "d00").await, DeviceStatus::Decommissioned);
    assert_eq!(f.status(second, "d00").await, DeviceStatus::Decommissioned);
    assert_eq!(f.status(first, "d01").await, DeviceStatus::Success);
    assert_eq!(f.status(first, "d02").await, DeviceStatus::Pending);
    assert!(matches!(
        f.report("d00", first, DeviceStatus::Success).await,
        Err(EngineError::Conflict(_))
    ));
    assert_eq!(f.check_in("d00").await, None);

    let snap = f.snapshot(first).await;
    assert_eq!(snap.stats.get(DeviceStatus::Decommissioned), 1);
    assert_eq!(snap.header.status, DeploymentStatus::Inprogress);
    let snap = f.snapshot(second).await;
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn incompatible_device_type_finishes_the_device_as_noartifact() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    let got = f
        .svc
        .check_in(&f.tenant, "d00", "dev-b", OLD)
        .await
        .unwrap();
    assert!(matches!(got, Delivery::NoArtifact));
    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::Noartifact);
    assert!(rec.finished.is_some());
    assert_eq!(f.check_in("d00").await, None, "noartifact is final");
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Noartifact), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 1);
}

#[tokio::test(start_paused = true)]
async fn device_already_running_the_release_is_marked_already_installed() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    let got = f
        .svc
        .check_in(&f.tenant, "d00", TYPE, RELEASE)
        .await
        .unwrap();
    assert!(matches!(got, Delivery::AlreadyInstalled));
    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::AlreadyInstalled);
    assert!(rec.finished.is_some());
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::AlreadyInstalled), 1);
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn device_changing_its_type_mid_deployment_gets_conflict_and_fails() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(
        f.check_in("d00").await,
        Some(id),
        "same data: same deployment"
    );
    let err = f.check_in_as("d00", "dev-b", OLD).await.unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::Failure);
    assert!(rec.finished.is_some());
    assert_eq!(f.snapshot(id).await.stats.get(DeviceStatus::Failure), 1);
}

#[tokio::test(start_paused = true)]
async fn device_never_receives_a_deployment_older_than_one_it_finished() {
    let f = Fixture::new().await;
    let oldest = f.deploy(f.new_deployment(devices(2))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let middle = f.deploy(f.new_deployment(devices(1))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    // Another name, to tell them apart.
    let newest = NewDeployment {
        name: "newest".into(),
        ..f.new_deployment(devices(1))
    };
    let newest = f.deploy(newest).await;

    // d00 ends `middle` (aborted) without ever taking part in `oldest`.
    f.svc.abort(&f.tenant, middle).await.unwrap();
    assert_eq!(f.status(middle, "d00").await, DeviceStatus::Aborted);
    assert_eq!(f.check_in("d00").await, Some(newest), "skips the older one");
    f.run_update("d00", newest, DeviceStatus::Success).await;
    assert_eq!(f.check_in("d00").await, None);
    assert_eq!(f.status(oldest, "d00").await, DeviceStatus::Pending);

    // A device with nothing finished gets its oldest deployment.
    assert_eq!(f.check_in("d01").await, Some(oldest));
    f.snapshot(oldest).await;
}

/// A report admits a device only where its check-in would have: never into a newer
/// deployment while an older one waits for it, or it would be active in both and the
/// older one would never finish.
#[tokio::test(start_paused = true)]
async fn a_status_report_cannot_skip_the_older_deployment() {
    let f = Fixture::new().await;
    let older = f.deploy(f.new_deployment(devices(1))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let newer = f.deploy(f.new_deployment(devices(1))).await;

    let refused = f.report("d00", newer, DeviceStatus::Downloading).await;
    assert!(
        matches!(refused, Err(EngineError::Conflict(_))),
        "{refused:?}"
    );
    let untouched = f.record(newer, "d00").await;
    assert_eq!(
        (untouched.status, untouched.attempts, untouched.phase),
        (DeviceStatus::Pending, 0, None)
    );
    assert_eq!(f.snapshot(newer).await.stats.get(DeviceStatus::Pending), 1);

    // Once it has finished the older one, its report admits it to the newer one.
    assert_eq!(f.check_in("d00").await, Some(older));
    f.run_update("d00", older, DeviceStatus::Success).await;
    f.run_update("d00", newer, DeviceStatus::Success).await;
    assert_eq!(f.status(newer, "d00").await, DeviceStatus::Success);
    f.snapshot(newer).await;
}

#[test]
fn after_a_restart_a_device_still_never_receives_an_older_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let oldest = on_runtime(async {
        let f = Fixture::open(dir.path()).await.with_release().await;
        let oldest = f.deploy(f.new_deployment(devices(3))).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = f.deploy(f.new_deployment(vec!["d00".into()])).await;
        // d00 finishes the newer one (aborted) without ever taking part in the oldest.
        f.svc.abort(&f.tenant, newer).await.unwrap();
        oldest
    });

    on_runtime(async {
        let f = Fixture::open(dir.path()).await;
        assert_eq!(f.check_in("d00").await, None, "d00 finished a newer one");
        assert_eq!(f.status(oldest, "d00").await, DeviceStatus::Pending);
        assert_eq!(
            f.check_in("d02").await,
            Some(oldest),
            "d02 finished nothing"
        );
        f.snapshot(oldest).await;
    });
}

#[tokio::test(start_paused = true)]
async fn the_smallest_compatible_artifact_of_the_release_is_delivered() {
    let mut f = Fixture::new().await;
    f.tenant = TenantId("initech".into());
    let big = artifact(&f.tenant, RELEASE, &[TYPE], 5000);
    let small = artifact(&f.tenant, RELEASE, &[TYPE, "dev-b"], 300);
    let other = artifact(&f.tenant, RELEASE, &["dev-c"], 10);
    let writes = [&big, &small, &other].map(|a| Write::PutArtifact(a.clone()));
    f.store.commit(writes.to_vec()).await.unwrap();
    f.deploy(f.new_deployment(devices(3))).await;
    for (device, device_type, expected) in [
        ("d00", TYPE, &small),
        ("d01", "dev-b", &small),
        ("d02", "dev-c", &other),
    ] {
        match f
            .svc
            .check_in(&f.tenant, device, device_type, OLD)
            .await
            .unwrap()
        {
            Delivery::Update { artifact, .. } => assert_eq!(artifact.id, expected.id, "{device}"),
            _ => panic!("{device} got nothing"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn creation_needs_an_artifact_of_the_release_in_the_same_tenant() {
    let mut f = Fixture::new().await;
    let mut new = f.new_deployment(devices(1));
    new.artifact_name = "no-such-release".into();
    assert!(matches!(
        f.svc.create(&f.tenant, new).await,
        Err(EngineError::Unprocessable(_))
    ));
    f.tenant = TenantId("initech".into());
    assert!(matches!(
        f.svc.create(&f.tenant, f.new_deployment(devices(1))).await,
        Err(EngineError::Unprocessable(_))
    ));
    let mut new = f.new_deployment(vec!["a".into(), "a".into()]);
    new.name = "dup".into();
    assert!(matches!(
        f.svc.create(&acme(), new).await,
        Err(EngineError::Invalid(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn tenants_cannot_see_or_report_into_each_others_deployments() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    let other = globex();
    let not_found = |r: engine::Result<()>| matches!(r, Err(EngineError::NotFound(_)));

    assert!(matches!(
        f.svc.get(&other, id).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        f.svc.devices(&other, id).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        f.svc.device_list(&other, id).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(not_found(f.svc.abort(&other, id).await));
    let report = f
        .svc
        .report(&other, "d00", id, DeviceStatus::Success, None)
        .await;
    assert!(not_found(report));
    assert!(not_found(
        f.svc.upload_log(&other, "d00", id, Vec::new()).await
    ));
    let (list, total) = f
        .svc
        .list(
            &other,
            &engine::ListQuery {
                page: 1,
                per_page: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(list.is_empty() && total == 0);
    let nothing = f.svc.check_in(&other, "d00", TYPE, OLD).await.unwrap();
    assert!(
        matches!(nothing, Delivery::Nothing),
        "same device id, other tenant"
    );
    f.svc.decommission(&other, "d00").await.unwrap();

    assert_eq!(f.status(id, "d00").await, DeviceStatus::Pending);
    f.run_update("d00", id, DeviceStatus::Success).await;
    assert_eq!(f.snapshot(id).await.stats.get(DeviceStatus::Success), 1);
}

#[tokio::test(start_paused = true)]
async fn reports_and_logs_need_the_device_to_be_in_the_deployment() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("stranger").await, None);
    assert!(matches!(
        f.report("stranger", id, DeviceStatus::Downloading).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        f.report("d00", Uuid::new_v4(), DeviceStatus::Downloading)
            .await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        f.report("d00", id, DeviceStatus::Aborted).await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        f.svc.log(&f.tenant, id, "d00").await,
        Err(EngineError::NotFound(_))
    ));

    assert_eq!(f.check_in("d00").await, Some(id));
    f.run_update("d00", id, DeviceStatus::Failure).await;
    let line = LogMessage {
        timestamp: "2024-01-02T03:04:05Z".into(),
        level: "error".into(),
        message: "install failed".into(),
    };
    // Clients upload the log after their final status, when the deployment has finished.
    f.svc
        .upload_log(&f.tenant, "d00", id, vec![line.clone()])
        .await
        .unwrap();
    assert_eq!(f.svc.log(&f.tenant, id, "d00").await.unwrap(), vec![line]);
    assert!(f.record(id, "d00").await.log);
    assert!(matches!(
        f.svc
            .upload_log(&f.tenant, "stranger", id, Vec::new())
            .await,
        Err(EngineError::NotFound(_))
    ));
}

/// What a test saw before a restart.
struct Seen {
    running: Snapshot,
    running_devices: Vec<DeviceDeploymentRecord>,
    done: Snapshot,
}

#[test]
fn restart_rehydrates_deployments_and_devices_continue() {
    let dir = tempfile::tempdir().unwrap();
    let seen = on_runtime(async {
        let f = Fixture::open(dir.path()).await.with_release().await;
        let done = f.deploy(f.new_deployment(vec!["x".into()])).await;
        assert_eq!(f.check_in("x").await, Some(done));
        f.run_update("x", done, DeviceStatus::Success).await;

        let now = f.clock.now();
        let mut new = f.new_deployment(devices(6));
        new.retries = Some(1);
        new.phases = Some(vec![phase(Some(50), None), phase(None, Some(now + HOUR))]);
        let id = f.deploy(new).await;
        for d in ["d00", "d01", "d02"] {
            assert_eq!(f.check_in(d).await, Some(id));
        }
        f.run_update("d00", id, DeviceStatus::Success).await;
        f.run_update("d01", id, DeviceStatus::Failure).await;
        f.report("d02", id, DeviceStatus::Installing).await.unwrap();
        assert_eq!(f.check_in_as("d03", "dev-b", OLD).await.unwrap(), None);
        assert_eq!(f.check_in("d04").await, None, "the first phase is full");
        Seen {
            running: f.snapshot(id).await,
            running_devices: f.svc.devices(&f.tenant, id).await.unwrap(),
            done: f.snapshot(done).await,
        }
    });

    on_runtime(async {
        let f = Fixture::open(dir.path()).await;
        let id = seen.running.header.id;
        let done = seen.done.header.id;
        assert_eq!(
            f.svc.running(),
            1,
            "only the unfinished deployment is rehydrated"
        );
        let running = f.snapshot(id).await;
        assert_eq!(running.header, seen.running.header);
        assert_eq!(running.stats, seen.running.stats);
        assert_eq!(
            f.svc.devices(&f.tenant, id).await.unwrap(),
            seen.running_devices
        );
        let finished = f.snapshot(done).await;
        assert_eq!(finished.header, seen.done.header);
        assert_eq!(finished.stats, seen.done.stats);
        // Finished devices of a finished deployment cannot become active again.
        assert!(matches!(
            f.report("x", done, DeviceStatus::Downloading).await,
            Err(EngineError::Conflict(_))
        ));

        f.report("d02", id, DeviceStatus::Success).await.unwrap();
        assert_eq!(
            f.check_in("d01").await,
            Some(id),
            "the retry survives the restart"
        );
        assert_eq!(f.record(id, "d01").await.attempts, 2);
        f.run_update("d01", id, DeviceStatus::Success).await;
        assert_eq!(
            f.check_in("d03").await,
            None,
            "noartifact survives the restart"
        );
        assert_eq!(f.check_in("d04").await, None);
        tokio::time::advance(HOUR).await;
        for d in ["d04", "d05"] {
            assert_eq!(f.check_in(d).await, Some(id), "{d} in the second phase");
            f.run_update(d, id, DeviceStatus::Success).await;
        }
        let snap = f.snapshot(id).await;
        assert_eq!(snap.stats.get(DeviceStatus::Success), 5);
        assert_eq!(snap.stats.get(DeviceStatus::Noartifact), 1);
        assert_eq!(snap.header.status, DeploymentStatus::Finished);
        assert_eq!(
            snap.header
                .phases
                .iter()
                .map(|p| p.device_count)
                .collect::<Vec<_>>(),
            vec![3, 2]
        );
    });
}

#[tokio::test(start_paused = true)]
async fn check_ins_repeated_before_any_report_count_as_one_attempt() {
    let f = Fixture::new().await;
    let mut new = f.new_deployment(devices(1));
    new.retries = Some(1);
    let id = f.deploy(new).await;
    // The device lost the first answer and asked again.
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.record(id, "d00").await.attempts, 1);
    f.run_update("d00", id, DeviceStatus::Failure).await;
    assert_eq!(
        f.status(id, "d00").await,
        DeviceStatus::Pending,
        "one retry is left"
    );
}

#[tokio::test(start_paused = true)]
async fn device_type_change_after_delivery_is_a_conflict_even_before_reporting() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    let err = f.check_in_as("d00", "dev-b", OLD).await.unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Failure);
}
