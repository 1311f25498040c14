//! Statuses as the contract defines them: a deployment is `pending` until a device goes past
//! pending; a report that only changes the substate is persisted like any other; a failure
//! reported by a device that never checked in counts as an attempt.

mod deployment_support;

use deployment_support::*;
use engine::Snapshot;
use storage::{DeploymentStatus, DeviceStatus, MetaStore};

#[tokio::test(start_paused = true)]
async fn a_deployment_is_pending_until_a_device_goes_past_pending_then_stays_in_progress() {
    let f = Fixture::new().await;
    let mut new = f.new_deployment(devices(2));
    new.retries = Some(1);
    let id = f.deploy(new).await;
    let status = |snap: Snapshot| snap.header.status;
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(status(f.snapshot(id).await), DeploymentStatus::Pending);
    let stored = f.store.deployment(&f.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeploymentStatus::Pending, "as listed");

    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(status(f.snapshot(id).await), DeploymentStatus::Inprogress);
    // The failure sends d00 back to pending for its retry: no device is past pending now,
    // but the deployment has started.
    f.report("d00", id, DeviceStatus::Failure).await.unwrap();
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Pending);
    assert_eq!(status(f.snapshot(id).await), DeploymentStatus::Inprogress);
    let stored = f.store.deployment(&f.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeploymentStatus::Inprogress);
}

#[tokio::test(start_paused = true)]
async fn substate_only_reports_are_persisted() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    for sub in ["writing rootfs", "verifying rootfs"] {
        f.svc
            .report(
                &f.tenant,
                "d00",
                id,
                DeviceStatus::Installing,
                Some(sub.into()),
            )
            .await
            .unwrap();
    }
    let stored = f.store.device_records(&f.tenant, id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, DeviceStatus::Installing);
    assert_eq!(stored[0].substate.as_deref(), Some("verifying rootfs"));
    assert_eq!(
        f.record(id, "d00").await.substate.as_deref(),
        Some("verifying rootfs")
    );
}

#[tokio::test(start_paused = true)]
async fn failure_reported_without_a_check_in_is_final_without_retries() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    // d00 never checked in here (it lost the answer) and reports its failure.
    f.report("d00", id, DeviceStatus::Failure).await.unwrap();
    let rec = f.record(id, "d00").await;
    assert_eq!((rec.status, rec.attempts), (DeviceStatus::Failure, 1));
    assert!(rec.finished.is_some());
    assert_eq!(f.check_in("d00").await, None, "no second attempt");
    assert_eq!(f.snapshot(id).await.stats.get(DeviceStatus::Failure), 1);

    // With one retry, the same report leaves exactly one more attempt.
    let mut new = f.new_deployment(vec!["r".into()]);
    new.retries = Some(1);
    let id = f.deploy(new).await;
    f.report("r", id, DeviceStatus::Failure).await.unwrap();
    assert_eq!(f.status(id, "r").await, DeviceStatus::Pending);
    assert_eq!(f.check_in("r").await, Some(id));
    f.run_update("r", id, DeviceStatus::Failure).await;
    let rec = f.record(id, "r").await;
    assert_eq!((rec.status, rec.attempts), (DeviceStatus::Failure, 2));
}

#[tokio::test(start_paused = true)]
async fn a_repeated_failure_report_keeps_the_retries_it_had() {
    let f = Fixture::new().await;
    let mut new = f.new_deployment(devices(1));
    new.retries = Some(2);
    let id = f.deploy(new).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    // The client lost the answers to its failure report and sends it three times.
    for _ in 0..3 {
        f.report("d00", id, DeviceStatus::Failure).await.unwrap();
    }
    let rec = f.record(id, "d00").await;
    assert_eq!((rec.status, rec.attempts), (DeviceStatus::Pending, 1));
    let stored = f.store.device_records(&f.tenant, id).await.unwrap();
    assert_eq!(
        (stored[0].status, stored[0].attempts),
        (DeviceStatus::Pending, 1)
    );
    // Both retries are left: the next check-in starts the second attempt, and so on.
    for attempt in 2..=3 {
        assert_eq!(f.check_in("d00").await, Some(id), "attempt {attempt}");
        f.run_update("d00", id, DeviceStatus::Failure).await;
        assert_eq!(f.record(id, "d00").await.attempts, attempt);
    }
    assert_eq!(f.status(id, "d00").await, DeviceStatus::Failure);
    assert_eq!(f.check_in("d00").await, None, "no fourth attempt");
}

#[tokio::test(start_paused = true)]
async fn a_device_that_reported_progress_before_its_check_in_gets_the_update() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    // d00 lost the answer of its check-in, and goes on to report its progress.
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    // Active in this deployment, it is handed this deployment's update when it asks,
    // and again with the same answer when it asks again.
    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(f.check_in("d00").await, Some(id));
    let rec = f.record(id, "d00").await;
    assert_eq!(rec.status, DeviceStatus::Downloading);
    assert_eq!(
        rec.attempts, 1,
        "the report started the attempt, the check-in adds none"
    );
    assert!(
        rec.artifact_id.is_some(),
        "the handed-out artifact is recorded"
    );
    let stored = f.store.device_records(&f.tenant, id).await.unwrap();
    let d00 = stored.iter().find(|r| r.device_id == "d00").unwrap();
    assert_eq!(d00.artifact_id, rec.artifact_id, "and persisted");
    // A device type no artifact of the release fits finishes it `noartifact`.
    f.report("d01", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    assert_eq!(f.check_in_as("d01", "toaster", OLD).await.unwrap(), None);
    assert_eq!(f.status(id, "d01").await, DeviceStatus::Noartifact);
}
