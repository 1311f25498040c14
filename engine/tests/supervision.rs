//! A deployment actor that panics is restarted from its persisted state: every change it
//! acknowledged survives, and devices carry on.

use std::sync::Arc;
use std::time::Duration;

use engine::{Clock, Delivery, DeploymentService, NewDeployment};
use storage::{DeviceStatus, EmbeddedStore, MetaStore, TenantId, Write};

mod deployment_support;
use deployment_support::artifact;

#[tokio::test]
async fn a_crashed_deployment_actor_is_restarted_with_its_acknowledged_state() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let t = TenantId("acme".into());
    store
        .commit(vec![Write::PutArtifact(artifact(
            &t,
            "app-1.0",
            &["dev-a"],
            5120,
        ))])
        .await
        .unwrap();
    let svc = DeploymentService::start(store, Clock::new()).await.unwrap();
    let d = svc
        .create(
            &t,
            NewDeployment {
                name: "d".into(),
                artifact_name: "app-1.0".into(),
                devices: vec!["a".into(), "b".into()],
                phases: None,
                retries: None,
            },
        )
        .await
        .unwrap();
    let got = svc.check_in(&t, "a", "dev-a", "base").await.unwrap();
    assert!(matches!(got, Delivery::Update { .. }));
    svc.report(&t, "a", d.id, DeviceStatus::Installing, None)
        .await
        .unwrap();

    assert!(svc.crash(d.id));
    // The supervisor restarts the actor; wait (bounded) until it answers again.
    let mut restarted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if svc.running() == 1 && svc.get(&t, d.id).await.is_ok() {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "the deployment actor was not restarted");
    let snap = svc.get(&t, d.id).await.unwrap();
    assert_eq!(snap.stats.get(DeviceStatus::Installing), 1);
    assert_eq!(snap.stats.get(DeviceStatus::Pending), 1);

    svc.report(&t, "a", d.id, DeviceStatus::Success, None)
        .await
        .unwrap();
    let got = svc.check_in(&t, "b", "dev-a", "base").await.unwrap();
    assert!(matches!(got, Delivery::Update { .. }));
    svc.report(&t, "b", d.id, DeviceStatus::Success, None)
        .await
        .unwrap();
    let snap = svc.get(&t, d.id).await.unwrap();
    assert_eq!(snap.stats.get(DeviceStatus::Success), 2);
    assert_eq!(snap.header.status, storage::DeploymentStatus::Finished);
}
