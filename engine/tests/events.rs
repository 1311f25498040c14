//! Live progress: a follower sees where a deployment stands, then its phase starts,
//! statistics (at most every quarter second), pause and resume, auto-abort and end; a
//! follower that falls a buffer behind is dropped while the deployment goes on; a finished
//! deployment has nothing to follow.

mod deployment_support;

use std::time::Duration;

use deployment_support::*;
use engine::deployment::events::BUFFER;
use engine::{DeploymentEvent, FollowItem, NewDeployment};
use storage::{AbortAction, AutoAbort, DeploymentStatus, DeviceStatus};

/// The next event, with time moved on enough for a statistics publication.
async fn next(followed: &mut engine::Followed) -> Option<FollowItem> {
    tokio::select! {
        item = followed.next() => item,
        () = async {
            loop {
                tokio::time::advance(Duration::from_millis(50)).await;
                tokio::task::yield_now().await;
            }
        } => unreachable!(),
    }
}

fn statistics_of(item: Option<FollowItem>) -> (DeploymentStatus, engine::deployment::Statistics) {
    match item {
        Some(FollowItem::Event(DeploymentEvent::Statistics { status, statistics })) => {
            (status, statistics)
        }
        other => panic!("expected statistics, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_sees_phases_statistics_pauses_and_the_end() {
    let f = Fixture::new().await;
    let new = NewDeployment {
        auto_abort: Some(AutoAbort {
            failure_percent: 100,
            min_finished: 2,
            action: AbortAction::Abort,
        }),
        ..f.new_deployment(devices(3))
    };
    let id = f.deploy(new).await;
    let mut followed = f.svc.follow(&f.tenant, id).await.unwrap();
    assert_eq!(followed.snapshot.stats.get(DeviceStatus::Pending), 3);

    assert_eq!(f.check_in("d00").await, Some(id));
    assert_eq!(
        next(&mut followed).await,
        Some(FollowItem::Event(DeploymentEvent::PhaseStarted {
            phase: 1
        }))
    );
    f.report("d00", id, DeviceStatus::Downloading)
        .await
        .unwrap();
    f.report("d00", id, DeviceStatus::Installing).await.unwrap();
    // Two changes within a quarter second: one publication, of where things stand.
    let (status, stats) = statistics_of(next(&mut followed).await);
    assert_eq!(status, DeploymentStatus::Inprogress);
    assert_eq!(stats.get(DeviceStatus::Installing), 1);
    assert_eq!(stats.get(DeviceStatus::Pending), 2);

    f.svc.set_paused(&f.tenant, id, true).await.unwrap();
    f.svc.set_paused(&f.tenant, id, false).await.unwrap();
    assert_eq!(
        next(&mut followed).await,
        Some(FollowItem::Event(DeploymentEvent::Paused))
    );
    assert_eq!(
        next(&mut followed).await,
        Some(FollowItem::Event(DeploymentEvent::Resumed))
    );

    f.report("d00", id, DeviceStatus::Failure).await.unwrap();
    assert_eq!(f.check_in("d01").await, Some(id));
    f.run_update("d01", id, DeviceStatus::Failure).await;
    let mut seen = Vec::new();
    while let Some(item) = next(&mut followed).await {
        seen.push(item);
    }
    let reason = match seen.iter().find_map(|i| match i {
        FollowItem::Event(DeploymentEvent::AutoAbort { reason, action }) => {
            Some((reason.clone(), *action))
        }
        _ => None,
    }) {
        Some((reason, AbortAction::Abort)) => reason,
        other => panic!("expected an auto-abort in {seen:?}, got {other:?}"),
    };
    match seen.last() {
        Some(FollowItem::Event(DeploymentEvent::Finished {
            aborted: true,
            abort_reason: Some(r),
            statistics,
        })) => {
            assert_eq!(*r, reason);
            assert_eq!(statistics.get(DeviceStatus::Failure), 2);
            assert_eq!(statistics.get(DeviceStatus::Aborted), 1);
        }
        other => panic!("expected the end last, got {other:?} in {seen:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_falls_a_buffer_behind_is_dropped_and_the_deployment_goes_on() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(2))).await;
    let mut slow = f.svc.follow(&f.tenant, id).await.unwrap();
    let mut keen = f.svc.follow(&f.tenant, id).await.unwrap();
    for _ in 0..BUFFER {
        // Each round publishes two events (before the calls return); the keen follower
        // reads them, the slow one does not.
        f.svc.set_paused(&f.tenant, id, true).await.unwrap();
        f.svc.set_paused(&f.tenant, id, false).await.unwrap();
        let pair = (keen.next().await, keen.next().await);
        assert_eq!(
            pair,
            (
                Some(FollowItem::Event(DeploymentEvent::Paused)),
                Some(FollowItem::Event(DeploymentEvent::Resumed))
            ),
            "a follower that reads keeps up"
        );
    }
    assert_eq!(slow.next().await, Some(FollowItem::Dropped));
    assert_eq!(slow.next().await, None, "nothing after being dropped");
    // The deployment never waited for it.
    assert_eq!(f.check_in("d00").await, Some(id));
    assert!(!f.snapshot(id).await.header.safety.paused);
}

#[tokio::test(start_paused = true)]
async fn a_finished_deployment_has_nothing_to_follow() {
    let f = Fixture::new().await;
    let id = f.deploy(f.new_deployment(devices(1))).await;
    assert_eq!(f.check_in("d00").await, Some(id));
    f.run_update("d00", id, DeviceStatus::Success).await;
    let mut followed = f.svc.follow(&f.tenant, id).await.unwrap();
    assert_eq!(followed.snapshot.header.status, DeploymentStatus::Finished);
    assert_eq!(followed.snapshot.stats.get(DeviceStatus::Success), 1);
    assert_eq!(followed.next().await, None);
    let other = f.svc.follow(&globex(), id).await;
    assert!(
        matches!(other, Err(engine::EngineError::NotFound(_))),
        "another tenant's deployment"
    );
}
