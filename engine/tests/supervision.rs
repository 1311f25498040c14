//! Supervision: a deployment actor that panics is restarted from its persisted state, every
//! change it acknowledged survives, and devices carry on without being told anything they
//! would act on. A deployment that crashes in a burst is given up (aborted) and frees its
//! devices; nothing that fails while restarting stops the supervisor. Time is tokio's paused
//! clock.

mod deployment_support;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use deployment_support::*;
use engine::deployment::service::{ASK_TIMEOUT, RESTART_WAIT};
use engine::deployment::supervisor::{MAX_RESTARTS, RESTART_WINDOW};
use engine::{Crash, Delivery, EngineError, NewDeployment};
use storage::{DeploymentStatus, DeviceStatus, LogMessage, MetaStore, Write};
use uuid::Uuid;

/// Crash the deployment's actor as a bug would.
fn crash(f: &Fixture, id: Uuid) {
    assert!(f.svc.crash(id, Crash::Fault), "{id} has no running actor");
}

/// Let spawned tasks and actors run (paused time stands still meanwhile).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// The artifact a check-in hands out.
async fn delivered(f: &Fixture, device: &str) -> Uuid {
    match f.svc.check_in(&f.tenant, device, TYPE, OLD).await.unwrap() {
        Delivery::Update { artifact, .. } => artifact.id,
        _ => panic!("{device} got no update"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_deployment_actor_is_restarted_with_its_acknowledged_state() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.report("d00", id, DeviceStatus::Installing).await.unwrap();

    crash(&f, id);
    let snap = f.snapshot(id).await;
    assert_eq!(f.svc.running(), 1, "restarted");
    assert_eq!(snap.stats.get(DeviceStatus::Installing), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 1);

    f.report("d00", id, DeviceStatus::Success).await.unwrap();
    assert_eq!(f.check_in("d01").await, Some(id));
    f.report("d01", id, DeviceStatus::Success).await.unwrap();
    let snap = f.snapshot(id).await;
    assert_eq!(snap.stats.get(DeviceStatus::Success), 2);
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn requests_that_arrive_while_the_actor_restarts_wait_for_it() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();

    // Each request is queued behind the crash, so the actor dies with it in its mailbox.
    // A 409 here would make mender-client abandon the update.
    crash(&f, id);
    f.report("d00", id, DeviceStatus::Installing)
        .await
        .expect("a report during a restart is not refused");
    crash(&f, id);
    let line = LogMessage {
        timestamp: "2024-01-02T03:04:05Z".into(),
        level: "info".into(),
        message: "installing".into(),
    };
    f.svc
        .upload_log(&f.tenant, "d00", id, vec![line.clone()])
        .await
        .unwrap();
    crash(&f, id);
    assert_eq!(
        f.check_in("d01").await,
        Some(id),
        "a check-in during a restart gets the update"
    );

    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::Installing);
    assert!(rec.log);
    assert_eq!(f.svc.log(&f.tenant, id, "d00").await.unwrap(), vec![line]);
    f.run_update("d00", id, DeviceStatus::Success).await;
    f.run_update("d01", id, DeviceStatus::Success).await;
    assert_eq!(
        f.snapshot(id).await.header.status,
        DeploymentStatus::Finished
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_deployment_does_not_take_back_devices_that_finished_a_newer_one() {
    let f = Fixture::new().await;
    let oldest = f.deploy(f.new_deployment(devices(2))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let middle = f.deploy(f.new_deployment(devices(1))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    // Another name: the same request twice while `middle` is active would be a 409.
    let newest = NewDeployment {
        name: "newest".into(),
        ..f.new_deployment(devices(1))
    };
    let newest = f.deploy(newest).await;
    // d00 finishes `middle`, so it must never receive `oldest`.
    f.svc.abort(&f.tenant, middle).await.unwrap();

    crash(&f, oldest);
    f.snapshot(oldest).await;
    assert_eq!(f.check_in("d00").await, Some(newest));
    assert_eq!(f.check_in("d01").await, Some(oldest));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_deployment_hands_out_only_the_artifacts_it_was_created_with() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    let original = delivered(&f, "d00").await;
    // A smaller artifact of the same release, uploaded after the deployment was created. The
    // deployment does not use it, so the artifact service lets it be deleted at any time.
    let late = artifact(&f.tenant, RELEASE, &[TYPE], 10);
    f.store
        .commit(vec![Write::PutArtifact(late.clone())])
        .await
        .unwrap();

    crash(&f, id);
    assert_eq!(delivered(&f, "d01").await, original);
    assert_eq!(delivered(&f, "d00").await, original);
}

#[tokio::test(start_paused = true)]
async fn an_artifact_of_the_release_uploaded_later_for_another_device_type_is_taken_up() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(3))).await;
    let as_b = |device: &'static str| f.svc.check_in(&f.tenant, device, "dev-b", OLD);
    assert!(matches!(as_b("d00").await.unwrap(), Delivery::NoArtifact));
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Noartifact);

    let later = artifact(&f.tenant, RELEASE, &["dev-b"], 10);
    f.store
        .commit(vec![Write::PutArtifact(later.clone())])
        .await
        .unwrap();
    // The store is searched at most once a second.
    tokio::time::advance(Duration::from_secs(1)).await;
    let Delivery::Update { artifact: got, .. } = as_b("d01").await.unwrap() else {
        panic!("d01 got no update");
    };
    assert_eq!(got.id, later.id);
    let stored = f.store.deployment(&f.tenant, id).await.unwrap().unwrap();
    assert!(
        stored.artifacts.contains(&later.id),
        "{:?}",
        stored.artifacts
    );
    assert_ne!(
        delivered(&f, "d02").await,
        later.id,
        "dev-a keeps its artifact"
    );

    crash(&f, id);
    let Delivery::Update {
        artifact: again, ..
    } = as_b("d01").await.unwrap()
    else {
        panic!("d01 got no update after the restart");
    };
    assert_eq!(again.id, later.id);
}

#[tokio::test(start_paused = true)]
async fn crashes_spread_over_time_never_use_up_the_restart_budget() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    for i in 0..3 * MAX_RESTARTS {
        crash(&f, id);
        let snap = f.snapshot(id).await;
        assert_ne!(snap.header.status, DeploymentStatus::Finished, "crash {i}");
        assert_eq!(f.svc.running(), 1, "restarted after crash {i}");
        tokio::time::advance(RESTART_WINDOW / 4).await;
    }
    assert_eq!(f.check_in("d00").await, Some(id));
}

#[tokio::test(start_paused = true)]
async fn drills_are_restarted_without_using_up_the_restart_budget() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    for _ in 0..3 * MAX_RESTARTS {
        assert!(f.svc.crash(id, Crash::Drill));
        f.snapshot(id).await;
        assert_eq!(f.svc.running(), 1);
    }
    assert_eq!(f.check_in("d00").await, Some(id));
}

#[tokio::test(start_paused = true)]
async fn a_deployment_crashing_in_a_burst_is_aborted_and_frees_its_devices() {
    let f = Fixture::new().await;
    let doomed = f.deploy(f.new_deployment(devices(3))).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let newer = f.deploy(f.new_deployment(devices(2))).await;
    assert_eq!(f.check_in("d00").await, Some(doomed));
    f.run_update("d00", doomed, DeviceStatus::Success).await;
    assert_eq!(f.check_in("d01").await, Some(doomed));
    f.report("d01", doomed, DeviceStatus::Downloading)
        .await
        .unwrap();

    for _ in 0..MAX_RESTARTS {
        crash(&f, doomed);
        f.snapshot(doomed).await;
    }
    assert_eq!(f.svc.running(), 2, "restarted within the budget");
    crash(&f, doomed);
    let snap = f.snapshot(doomed).await;
    assert_eq!(snap.header.status, DeploymentStatus::Finished);
    assert!(snap.header.aborted);
    assert!(snap.header.finished.is_some());
    assert_eq!(snap.stats.get(DeviceStatus::Success), 1, "kept");
    assert_eq!(snap.stats.get(DeviceStatus::Aborted), 2);
    assert_eq!(f.svc.running(), 1, "only the newer deployment runs");
    assert!(
        matches!(
            f.report("d01", doomed, DeviceStatus::Installing).await,
            Err(EngineError::Conflict(_))
        ),
        "the device in the middle of it rolls back, as after an abort"
    );
    // Its devices are free for newer deployments.
    assert_eq!(f.check_in("d01").await, Some(newer));
    assert_eq!(f.check_in("d00").await, Some(newer));
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_during_a_restart_does_not_stop_the_supervisor() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(id));

    f.store.fail_commits(true);
    crash(&f, id);
    let svc = f.svc.clone();
    let tenant = f.tenant.clone();
    let waiting = tokio::spawn(async move {
        svc.report(&tenant, "d00", id, DeviceStatus::Downloading, None)
            .await
    });
    for _ in 0..(RESTART_WAIT.as_secs() + 1) {
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    settle().await;
    assert!(waiting.is_finished(), "the wait for the restart is bounded");
    match waiting.await.unwrap() {
        Err(EngineError::Unavailable { retry_after, .. }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // The store heals; the supervisor's next try restarts the actor.
    f.store.fail_commits(false);
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..500 {
        if f.svc.running() == 1 {
            break;
        }
        // Real time for the store's commit thread; paused time stays where it is.
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
            .await
            .unwrap();
    }
    assert_eq!(f.svc.running(), 1, "restarted once the store works");
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .expect("restarted once the store works");
    assert_eq!(f.svc.running(), 1);
    let other = f.deploy(f.new_deployment(vec!["x".into()])).await;
    assert_eq!(
        f.check_in("x").await,
        Some(other),
        "the supervisor still starts actors"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stuck_actor_makes_callers_come_back_later_instead_of_waiting_forever() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    // The actor reads the device list while answering this, and the store hangs.
    f.store.hold_device_lists(true);
    let (svc, tenant) = (f.svc.clone(), f.tenant.clone());
    let stuck = tokio::spawn(async move { svc.devices(&tenant, id).await });
    settle().await;
    let (svc, tenant) = (f.svc.clone(), f.tenant.clone());
    let report = tokio::spawn(async move {
        svc.report(&tenant, "d00", id, DeviceStatus::Downloading, None)
            .await
    });
    settle().await;
    tokio::time::advance(ASK_TIMEOUT + Duration::from_secs(1)).await;
    settle().await;
    assert!(report.is_finished(), "the ask is bounded");
    assert!(matches!(
        report.await.unwrap(),
        Err(EngineError::Unavailable { .. })
    ));

    f.store.hold_device_lists(false);
    let _ = stuck.await.unwrap();
    // The queued report was still handled; repeating it is a no-op.
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Downloading);
    assert_eq!(engine::metrics::mailbox_backlog(), 0);
}

/// A device that has its update and asks again is answered without its deployment's actor
/// (here busy in a store read that hangs); a device asking for the first time, or asking
/// with other data, waits for the actor, and after any change to a device its next ask
/// goes to the actor again.
#[tokio::test(start_paused = true)]
async fn a_repeated_check_in_is_answered_while_the_actor_is_busy() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(3))).await;
    for device in ["d00", "d00", "d02", "d02"] {
        assert_eq!(f.check_in(device).await, Some(id));
    }
    f.report("d02", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    f.store.hold_device_lists(true);
    let (svc, tenant) = (f.svc.clone(), f.tenant.clone());
    let stuck = tokio::spawn(async move { svc.devices(&tenant, id).await });
    settle().await;

    let ask = |device: &'static str, artifact_name: &'static str| {
        let (svc, tenant) = (f.svc.clone(), f.tenant.clone());
        tokio::spawn(async move { svc.check_in(&tenant, device, TYPE, artifact_name).await })
    };
    let again = ask("d00", OLD);
    settle().await;
    assert!(again.is_finished(), "a repeated ask waited for the actor");
    assert!(matches!(
        again.await.unwrap(),
        Ok(Delivery::Update { deployment, .. }) if deployment == id
    ));
    let first = ask("d01", OLD);
    let changed = ask("d00", "app-0.8");
    let reported = ask("d02", OLD);
    settle().await;
    for (what, task) in [("a first ask", &first), ("other data", &changed)] {
        assert!(!task.is_finished(), "{what} was answered without the actor");
    }
    assert!(
        !reported.is_finished(),
        "a device that reported since was answered without the actor"
    );

    f.store.hold_device_lists(false);
    let _ = stuck.await.unwrap();
    assert!(matches!(
        first.await.unwrap(),
        Ok(Delivery::Update { deployment, .. }) if deployment == id
    ));
    assert!(matches!(
        changed.await.unwrap(),
        Err(EngineError::Conflict(_))
    ));
    assert!(matches!(
        reported.await.unwrap(),
        Ok(Delivery::Update { deployment, .. }) if deployment == id
    ));
    // The conflict failed d00: it gets nothing more, from the actor or elsewhere.
    assert_eq!(f.check_in("d00").await, None);
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Failure);
}

#[tokio::test(start_paused = true)]
async fn callers_that_give_up_leave_no_trace_in_the_mailbox_backlog() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(engine::metrics::mailbox_backlog(), 0);
    for _ in 0..10 {
        // Send the report, then drop it before the answer, as when a client disconnects.
        let mut report = std::pin::pin!(f.report("d00", id, DeviceStatus::Downloading));
        let first = std::future::poll_fn(|cx| Poll::Ready(report.as_mut().poll(cx))).await;
        assert!(first.is_pending());
    }
    f.snapshot(id).await;
    assert_eq!(engine::metrics::mailbox_backlog(), 0);
}
