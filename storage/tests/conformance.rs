//! One behaviour suite for every [`MetaStore`] implementation: each case runs on the
//! embedded store and on a real Cassandra/ScyllaDB node.
//!
//! The CQL variant connects to `ROLLOUT_TEST_CQL` (`host:port`, e.g. the address
//! `scripts/cassandra-node start DIR` prints) and uses the keyspace `ROLLOUT_TEST_KEYSPACE`
//! (default `rollout_conformance`). Without `ROLLOUT_TEST_CQL` it fails when `CI=true` and
//! is skipped, loudly, otherwise. Every case works in tenants of its own, so cases run in
//! parallel and again on the same keyspace without seeing each other's rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use storage::lease::{self, Claim};
use storage::{
    ArtifactInfo, ArtifactMeta, ArtifactRecord, AuthSet, DeploymentRecord, DeploymentStatus,
    DeviceAuthRecord, DeviceAuthStatus, DeviceDeploymentRecord, DeviceStatus, EmbeddedStore,
    LogMessage, MetaStore, ScyllaConfig, ScyllaStore, TenantId, Write,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A store under test, and what it needs to be opened again.
struct Subject {
    store: Arc<dyn MetaStore>,
    backend: Backend,
}

enum Backend {
    Embedded(tempfile::TempDir),
    Cql(ScyllaConfig),
}

impl Subject {
    fn embedded() -> Subject {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("opening the embedded store");
        Subject {
            store: Arc::new(store),
            backend: Backend::Embedded(dir),
        }
    }

    /// `None` (after a loud notice) when no node is configured outside CI.
    async fn cql() -> Option<Subject> {
        let Ok(node) = std::env::var("ROLLOUT_TEST_CQL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but ROLLOUT_TEST_CQL is not set: start a node with \
                 `scripts/cassandra-node start DIR` and export the address it prints"
            );
            eprintln!(
                "\n!!! SKIPPED: the Cassandra variant needs ROLLOUT_TEST_CQL=host:port \
                 (scripts/cassandra-node start DIR prints it) !!!\n"
            );
            return None;
        };
        let keyspace =
            std::env::var("ROLLOUT_TEST_KEYSPACE").unwrap_or_else(|_| "rollout_conformance".into());
        let config = ScyllaConfig {
            nodes: vec![node],
            keyspace: keyspace.parse().expect("a valid ROLLOUT_TEST_KEYSPACE"),
            replication: Default::default(),
            consistency: Default::default(),
            credentials: None,
        };
        let store = ScyllaStore::connect(&config)
            .await
            .expect("connecting to ROLLOUT_TEST_CQL");
        Some(Subject {
            store: Arc::new(store),
            backend: Backend::Cql(config),
        })
    }

    /// Drop the store and open it again on the same data.
    async fn reopen(self) -> Subject {
        let Subject { store, backend } = self;
        drop(store);
        let store: Arc<dyn MetaStore> = match &backend {
            Backend::Embedded(dir) => {
                // The committer thread releases the database once its queue is dropped.
                let mut tries = 0;
                loop {
                    match EmbeddedStore::open(dir.path()) {
                        Ok(s) => break Arc::new(s),
                        Err(e) if tries < 50 => {
                            tries += 1;
                            let _ = e;
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("reopening the embedded store: {e}"),
                    }
                }
            }
            Backend::Cql(config) => {
                Arc::new(ScyllaStore::connect(config).await.expect("reconnecting"))
            }
        };
        Subject { store, backend }
    }
}

/// Generate the embedded and the CQL variant of a case `async fn name(Subject)`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$case(super::Subject::embedded()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cassandra() {
                if let Some(subject) = super::Subject::cql().await {
                    super::$case(subject).await;
                }
            }
        }
    )*};
}

conformance!(
    artifacts_are_kept_per_tenant_and_counted,
    deployments_leave_the_unfinished_list_when_finished,
    a_million_id_device_list_reads_back_whole_and_by_chunk,
    device_records_and_logs_stay_in_their_deployment,
    last_finished_times_are_read_per_device,
    inventory_and_device_auth_round_trip_in_id_order,
    the_default_tenant_is_a_tenant_like_any_other,
    replaying_a_batch_changes_nothing,
    batches_submitted_in_order_are_applied_in_order,
    the_last_write_of_a_key_in_a_batch_wins,
    concurrent_submits_all_become_durable,
    committed_writes_survive_reopening,
    an_artifact_name_is_held_by_one_artifact_per_device_type,
    device_auth_is_replaced_only_if_unchanged,
    an_inventory_is_replaced_only_if_unchanged,
    a_lease_has_one_holder_and_a_new_epoch_with_each_new_holder,
    concurrent_claims_of_a_lease_grant_it_once,
    heartbeats_keep_one_record_per_node,
    inventories_list_a_tenant_in_id_order,
    saved_filters_are_kept_per_tenant_until_deleted,
    a_device_auth_record_is_removed_only_if_unchanged_and_revocations_are_kept,
);

fn tenant() -> TenantId {
    TenantId(format!("t-{}", Uuid::new_v4()))
}

fn now() -> OffsetDateTime {
    // Stores keep RFC 3339 with full precision; a whole second keeps comparisons simple.
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
        .expect("a valid time")
}

fn artifact(tenant: &TenantId, name: &str, size: u64) -> ArtifactRecord {
    ArtifactRecord {
        id: Uuid::new_v4(),
        tenant: tenant.clone(),
        description: format!("{name} description"),
        meta: ArtifactMeta {
            name: name.into(),
            device_types_compatible: vec!["raspberrypi4".into()],
            info: ArtifactInfo {
                format: "mender".into(),
                version: 3,
            },
            signed: false,
            updates: vec![],
            artifact_provides: BTreeMap::from([("artifact_name".into(), name.into())]),
            artifact_depends: BTreeMap::new(),
            clears_artifact_provides: vec![],
        },
        size,
        modified: now(),
    }
}

fn deployment(tenant: &TenantId, status: DeploymentStatus) -> DeploymentRecord {
    DeploymentRecord {
        id: Uuid::new_v4(),
        tenant: tenant.clone(),
        name: "d".into(),
        artifact_name: "release-1".into(),
        created: now(),
        finished: None,
        status,
        device_count: 2,
        retries: 1,
        phases: vec![],
        aborted: false,
        artifacts: vec![Uuid::new_v4()],
        final_statistics: None,
        dynamic: false,
        filter: None,
        max_devices: None,
        initial_device_count: None,
        force_installation: false,
        safety: Default::default(),
    }
}

fn device(tenant: &TenantId, deployment: Uuid, id: &str, status: DeviceStatus) -> Write {
    let mut record = DeviceDeploymentRecord::pending(id.into(), now());
    record.status = status;
    Write::PutDevice {
        tenant: tenant.clone(),
        deployment,
        record,
    }
}

/// A plain keyed write, for the cases about batches.
fn last_done(tenant: &TenantId, device: &str, created_nanos: i128) -> Write {
    Write::PutLastFinished {
        tenant: tenant.clone(),
        device: device.into(),
        created_nanos,
    }
}

async fn last_done_of(store: &Arc<dyn MetaStore>, tenant: &TenantId, device: &str) -> Option<i128> {
    store
        .last_finished(tenant, &[device.to_owned()])
        .await
        .unwrap()[0]
}

/// Store a first inventory or a first auth record (compare-and-set from nothing).
async fn put_inventory(
    store: &Arc<dyn MetaStore>,
    t: &TenantId,
    device: &str,
    value: serde_json::Value,
) {
    assert!(store
        .replace_inventory(t, device, None, value)
        .await
        .unwrap());
}

async fn put_auth(store: &Arc<dyn MetaStore>, record: DeviceAuthRecord) {
    assert!(store.replace_device_auth(None, record).await.unwrap());
}

fn auth(tenant: &TenantId, id: &str, status: DeviceAuthStatus) -> DeviceAuthRecord {
    DeviceAuthRecord {
        id: id.into(),
        tenant: tenant.clone(),
        identity_data: serde_json::json!({"mac": id}),
        auth_sets: vec![AuthSet {
            id: format!("{id}-key"),
            pubkey: "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n".into(),
            status,
            ts: now(),
        }],
        created: now(),
        updated: now(),
    }
}

fn by_id(mut v: Vec<ArtifactRecord>) -> Vec<ArtifactRecord> {
    v.sort_by_key(|a| a.id);
    v
}

async fn artifacts_are_kept_per_tenant_and_counted(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    let (a, b, c) = (
        artifact(&t1, "a", 100),
        artifact(&t1, "b", 23),
        artifact(&t2, "c", 7),
    );
    store
        .commit(vec![
            Write::PutArtifact(a.clone()),
            Write::PutArtifact(b.clone()),
            Write::PutArtifact(c.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(store.artifact(&t1, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.artifact(&t2, a.id).await.unwrap(),
        None,
        "another tenant's artifact"
    );
    assert_eq!(
        by_id(store.artifacts(&t1).await.unwrap()),
        by_id(vec![a.clone(), b.clone()])
    );
    assert_eq!(store.artifacts(&t2).await.unwrap(), vec![c.clone()]);
    let bytes = store.artifact_bytes_by_tenant().await.unwrap();
    assert_eq!((bytes.get(&t1), bytes.get(&t2)), (Some(&123), Some(&7)));

    let mut edited = b.clone();
    edited.description = "edited".into();
    store
        .commit(vec![
            Write::DeleteArtifact {
                tenant: t1.clone(),
                id: a.id,
            },
            Write::PutArtifact(edited.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(store.artifact(&t1, a.id).await.unwrap(), None);
    assert_eq!(store.artifacts(&t1).await.unwrap(), vec![edited]);
    let bytes = store.artifact_bytes_by_tenant().await.unwrap();
    assert_eq!((bytes.get(&t1), bytes.get(&t2)), (Some(&23), Some(&7)));

    store
        .commit(vec![Write::DeleteArtifact {
            tenant: t2.clone(),
            id: c.id,
        }])
        .await
        .unwrap();
    let bytes = store.artifact_bytes_by_tenant().await.unwrap();
    assert_eq!(
        bytes.get(&t2),
        None,
        "a tenant without artifacts has no bytes"
    );
}

async fn deployments_leave_the_unfinished_list_when_finished(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    let running = deployment(&t1, DeploymentStatus::Inprogress);
    let scheduled = deployment(&t2, DeploymentStatus::Scheduled);
    let done = deployment(&t1, DeploymentStatus::Finished);
    for d in [&running, &scheduled, &done] {
        store
            .commit(vec![Write::PutDeployment(Box::new(d.clone()))])
            .await
            .unwrap();
    }
    assert_eq!(
        store.deployment(&t1, running.id).await.unwrap(),
        Some(running.clone())
    );
    assert_eq!(store.deployment(&t2, running.id).await.unwrap(), None);
    let mut listed = store.deployments(&t1).await.unwrap();
    listed.sort_by_key(|d| d.id);
    let mut expected = vec![running.clone(), done.clone()];
    expected.sort_by_key(|d| d.id);
    assert_eq!(listed, expected);

    let ours = |all: Vec<DeploymentRecord>| {
        let mut ids: Vec<Uuid> = all
            .into_iter()
            .filter(|d| d.tenant == t1 || d.tenant == t2)
            .map(|d| d.id)
            .collect();
        ids.sort();
        ids
    };
    let mut unfinished = vec![running.id, scheduled.id];
    unfinished.sort();
    assert_eq!(
        ours(store.unfinished_deployments().await.unwrap()),
        unfinished
    );

    let mut finished = running.clone();
    finished.status = DeploymentStatus::Finished;
    finished.finished = Some(now());
    store
        .commit(vec![Write::PutDeployment(Box::new(finished.clone()))])
        .await
        .unwrap();
    assert_eq!(
        ours(store.unfinished_deployments().await.unwrap()),
        vec![scheduled.id]
    );
    assert_eq!(
        store.deployment(&t1, running.id).await.unwrap(),
        Some(finished)
    );
}

async fn a_million_id_device_list_reads_back_whole_and_by_chunk(s: Subject) {
    const CHUNK: usize = 10_000;
    const DEVICES: usize = 1_000_000;
    let store = &s.store;
    let t = tenant();
    let dep = Uuid::new_v4();
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("{i:08x}-device")).collect();
    let writes: Vec<Write> = ids
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| Write::PutDeviceList {
            tenant: t.clone(),
            deployment: dep,
            chunk: i as u32,
            devices: c.to_vec(),
        })
        .collect();
    store.commit(writes).await.unwrap();

    let whole = store.device_list(&t, dep).await.unwrap();
    assert_eq!(whole.len(), DEVICES);
    assert!(whole == ids, "the list comes back in creation order");
    let third = store.device_list_chunk(&t, dep, 3).await.unwrap().unwrap();
    assert_eq!(third, ids[3 * CHUNK..4 * CHUNK].to_vec());
    let past = (DEVICES / CHUNK) as u32;
    assert_eq!(store.device_list_chunk(&t, dep, past).await.unwrap(), None);
    assert_eq!(
        store.device_list(&tenant(), dep).await.unwrap(),
        Vec::<String>::new()
    );
}

async fn device_records_and_logs_stay_in_their_deployment(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let (d1, d2) = (Uuid::new_v4(), Uuid::new_v4());
    let mut writes: Vec<Write> = (0..100)
        .map(|i| device(&t, d1, &format!("dev-{i:03}"), DeviceStatus::Pending))
        .collect();
    writes.push(device(&t, d2, "dev-000", DeviceStatus::Success));
    let log = vec![LogMessage {
        timestamp: "2024-01-01T00:00:00Z".into(),
        level: "error".into(),
        message: "disk full".into(),
    }];
    writes.push(Write::PutLog {
        tenant: t.clone(),
        deployment: d1,
        device: "dev-007".into(),
        messages: log.clone(),
    });
    store.commit(writes).await.unwrap();
    store
        .commit(vec![device(&t, d1, "dev-042", DeviceStatus::Downloading)])
        .await
        .unwrap();

    let records = store.device_records(&t, d1).await.unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.device_id.as_str()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("dev-{i:03}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(records[42].status, DeviceStatus::Downloading);
    assert_eq!(records[41].status, DeviceStatus::Pending);
    let one = store.device_record(&t, d1, "dev-042").await.unwrap();
    assert_eq!(one.map(|r| r.status), Some(DeviceStatus::Downloading));
    let other = store.device_record(&t, d2, "dev-000").await.unwrap();
    assert_eq!(other.map(|r| r.status), Some(DeviceStatus::Success));
    assert_eq!(store.device_record(&t, d2, "dev-001").await.unwrap(), None);
    let other = store.device_records(&t, d2).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].status, DeviceStatus::Success);
    assert!(store
        .device_records(&tenant(), d1)
        .await
        .unwrap()
        .is_empty());

    assert_eq!(store.log(&t, d1, "dev-007").await.unwrap(), Some(log));
    assert_eq!(store.log(&t, d2, "dev-007").await.unwrap(), None);
    assert_eq!(store.log(&tenant(), d1, "dev-007").await.unwrap(), None);
}

async fn last_finished_times_are_read_per_device(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    let big = i128::from(i64::MAX) * 1_000 + 7;
    store
        .commit(vec![
            last_done(&t1, "a", 1),
            last_done(&t1, "b", big),
            last_done(&t2, "a", -5),
        ])
        .await
        .unwrap();
    store.commit(vec![last_done(&t1, "a", 2)]).await.unwrap();
    let asked: Vec<String> = ["b", "none", "a", "b"].map(String::from).to_vec();
    assert_eq!(
        store.last_finished(&t1, &asked).await.unwrap(),
        vec![Some(big), None, Some(2), Some(big)],
        "answers in the order asked"
    );
    assert_eq!(
        store.last_finished(&t2, &asked).await.unwrap(),
        vec![None, None, Some(-5), None]
    );
    assert!(store.last_finished(&t1, &[]).await.unwrap().is_empty());
    // Thousands at once (start-up asks a whole device-list chunk).
    let many: Vec<String> = (0..3_000).map(|i| format!("dev-{i}")).collect();
    let writes = many
        .iter()
        .step_by(3)
        .map(|d| last_done(&t2, d, 9))
        .collect();
    store.commit(writes).await.unwrap();
    let found = store.last_finished(&t2, &many).await.unwrap();
    assert_eq!(found.len(), 3_000);
    for (i, f) in found.iter().enumerate() {
        assert_eq!(*f, (i % 3 == 0).then_some(9), "dev-{i}");
    }
}

async fn inventory_and_device_auth_round_trip_in_id_order(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    let attrs = serde_json::json!({"device_type": "rpi4", "n": [1, 2, 3]});
    let records: Vec<DeviceAuthRecord> = ["m", "c", "x", "a", "k"]
        .iter()
        .map(|id| auth(&t1, id, DeviceAuthStatus::Pending))
        .collect();
    put_inventory(store, &t1, "dev", attrs.clone()).await;
    for r in &records {
        put_auth(store, r.clone()).await;
    }
    let accepted = auth(&t1, "c", DeviceAuthStatus::Accepted);
    assert!(store
        .replace_device_auth(Some(&records[1]), accepted.clone())
        .await
        .unwrap());

    assert_eq!(store.inventory(&t1, "dev").await.unwrap(), Some(attrs));
    assert_eq!(store.inventory(&t2, "dev").await.unwrap(), None);
    assert_eq!(store.device_auth(&t1, "c").await.unwrap(), Some(accepted));
    assert_eq!(store.device_auth(&t2, "c").await.unwrap(), None);
    let ids: Vec<String> = store
        .device_auths(&t1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["a", "c", "k", "m", "x"]);
    assert!(store.device_auths(&t2).await.unwrap().is_empty());
}

async fn the_default_tenant_is_a_tenant_like_any_other(s: Subject) {
    let store = &s.store;
    let default = TenantId::default_tenant();
    let device_id = Uuid::new_v4().to_string();
    let d = deployment(&default, DeploymentStatus::Pending);
    put_inventory(store, &default, &device_id, serde_json::json!({"a": 1})).await;
    put_auth(
        store,
        auth(&default, &device_id, DeviceAuthStatus::Accepted),
    )
    .await;
    store
        .commit(vec![Write::PutDeployment(Box::new(d.clone()))])
        .await
        .unwrap();
    assert_eq!(
        store.inventory(&default, &device_id).await.unwrap(),
        Some(serde_json::json!({"a": 1}))
    );
    assert!(store
        .device_auth(&default, &device_id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.deployment(&default, d.id).await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(store.inventory(&tenant(), &device_id).await.unwrap(), None);
    // Leave no unfinished deployment of the default tenant behind in a shared keyspace.
    let mut finished = d;
    finished.status = DeploymentStatus::Finished;
    store
        .commit(vec![Write::PutDeployment(Box::new(finished))])
        .await
        .unwrap();
}

async fn replaying_a_batch_changes_nothing(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let dep = Uuid::new_v4();
    let a = artifact(&t, "a", 1_000);
    let batch = vec![
        Write::PutArtifact(a.clone()),
        device(&t, dep, "dev-1", DeviceStatus::Installing),
        last_done(&t, "dev-1", 1),
    ];
    store.commit(batch.clone()).await.unwrap();
    let before = (
        store.artifacts(&t).await.unwrap(),
        store.device_records(&t, dep).await.unwrap(),
        store
            .artifact_bytes_by_tenant()
            .await
            .unwrap()
            .get(&t)
            .copied(),
    );
    store.commit(batch.clone()).await.unwrap();
    store.commit(batch).await.unwrap();
    let after = (
        store.artifacts(&t).await.unwrap(),
        store.device_records(&t, dep).await.unwrap(),
        store
            .artifact_bytes_by_tenant()
            .await
            .unwrap()
            .get(&t)
            .copied(),
    );
    assert_eq!(before, after);
    assert_eq!(
        after.2,
        Some(1_000),
        "replays do not count an artifact twice"
    );
}

async fn batches_submitted_in_order_are_applied_in_order(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let dep = Uuid::new_v4();
    // Many batches on the same keys, all in flight at once: the last submitted must win.
    let pending: Vec<_> = (0..200)
        .map(|i| {
            let status = if i % 2 == 0 {
                DeviceStatus::Downloading
            } else {
                DeviceStatus::Installing
            };
            store.submit(vec![
                last_done(&t, "dev", i),
                device(&t, dep, "dev", status),
            ])
        })
        .collect();
    let a = artifact(&t, "a", 5);
    let put = store.submit(vec![Write::PutArtifact(a.clone())]);
    let delete = store.submit(vec![Write::DeleteArtifact {
        tenant: t.clone(),
        id: a.id,
    }]);
    for p in pending {
        p.await.unwrap();
    }
    delete.await.unwrap();
    put.await.unwrap();
    assert_eq!(last_done_of(store, &t, "dev").await, Some(199));
    let records = store.device_records(&t, dep).await.unwrap();
    assert_eq!(records[0].status, DeviceStatus::Installing);
    assert_eq!(
        store.artifact(&t, a.id).await.unwrap(),
        None,
        "the later delete wins"
    );
}

async fn the_last_write_of_a_key_in_a_batch_wins(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let a = artifact(&t, "a", 5);
    store
        .commit(vec![
            last_done(&t, "dev", 1),
            last_done(&t, "dev", 2),
            Write::DeleteArtifact {
                tenant: t.clone(),
                id: a.id,
            },
            Write::PutArtifact(a.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(last_done_of(store, &t, "dev").await, Some(2));
    assert_eq!(store.artifact(&t, a.id).await.unwrap(), Some(a));
}

async fn concurrent_submits_all_become_durable(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let dep = Uuid::new_v4();
    let futs: Vec<_> = (0..300)
        .map(|i| {
            store.submit(vec![device(
                &t,
                dep,
                &format!("dev-{i:03}"),
                DeviceStatus::Pending,
            )])
        })
        .collect();
    for f in futures_util::future::join_all(futs).await {
        f.unwrap();
    }
    assert_eq!(store.device_records(&t, dep).await.unwrap().len(), 300);
}

async fn committed_writes_survive_reopening(s: Subject) {
    let t = tenant();
    let d = deployment(&t, DeploymentStatus::Pending);
    s.store
        .commit(vec![
            Write::PutDeployment(Box::new(d.clone())),
            last_done(&t, "dev", 3),
        ])
        .await
        .unwrap();
    put_inventory(&s.store, &t, "dev", serde_json::json!({"k": "v"})).await;
    put_auth(&s.store, auth(&t, "dev", DeviceAuthStatus::Pending)).await;
    let s = s.reopen().await;
    assert_eq!(last_done_of(&s.store, &t, "dev").await, Some(3));
    assert!(s.store.device_auth(&t, "dev").await.unwrap().is_some());
    assert_eq!(s.store.deployment(&t, d.id).await.unwrap(), Some(d.clone()));
    assert_eq!(
        s.store.inventory(&t, "dev").await.unwrap(),
        Some(serde_json::json!({"k": "v"}))
    );
    let mut finished = d;
    finished.status = DeploymentStatus::Finished;
    s.store
        .commit(vec![Write::PutDeployment(Box::new(finished))])
        .await
        .unwrap();
}

async fn an_artifact_name_is_held_by_one_artifact_per_device_type(s: Subject) {
    let store = &s.store;
    let (t, other) = (tenant(), tenant());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "rpi", a)
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "rpi", a)
            .await
            .unwrap(),
        a,
        "idempotent"
    );
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "rpi", b)
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "x86", b)
            .await
            .unwrap(),
        b
    );
    assert_eq!(
        store
            .claim_artifact_name(&other, "app", "rpi", b)
            .await
            .unwrap(),
        b
    );
    store
        .release_artifact_name(&t, "app", "rpi", b)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "rpi", b)
            .await
            .unwrap(),
        a,
        "only the holder releases"
    );
    store
        .release_artifact_name(&t, "app", "rpi", a)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_artifact_name(&t, "app", "rpi", b)
            .await
            .unwrap(),
        b
    );

    // Many claimants at once: exactly one wins and everyone is told the same holder.
    let ids: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let claims = ids
        .iter()
        .map(|id| store.claim_artifact_name(&t, "race", "rpi", *id));
    let holders: Vec<Uuid> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(ids.contains(&holders[0]));
    assert!(holders.iter().all(|h| *h == holders[0]), "{holders:?}");
}

async fn device_auth_is_replaced_only_if_unchanged(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let pending = auth(&t, "dev", DeviceAuthStatus::Pending);
    assert!(store
        .replace_device_auth(None, pending.clone())
        .await
        .unwrap());
    let preauthorized = auth(&t, "dev", DeviceAuthStatus::Preauthorized);
    assert!(
        !store
            .replace_device_auth(None, preauthorized.clone())
            .await
            .unwrap(),
        "a record exists"
    );
    let accepted = auth(&t, "dev", DeviceAuthStatus::Accepted);
    assert!(store
        .replace_device_auth(Some(&pending), accepted.clone())
        .await
        .unwrap());
    assert!(
        !store
            .replace_device_auth(Some(&pending), preauthorized)
            .await
            .unwrap(),
        "the record changed"
    );
    assert_eq!(
        store.device_auth(&t, "dev").await.unwrap(),
        Some(accepted.clone())
    );

    // Concurrent replacements of the same record: exactly one applies.
    let attempts = (0..8).map(|i| {
        let mut next = accepted.clone();
        next.auth_sets[0].pubkey = format!("key-{i}");
        store.replace_device_auth(Some(&accepted), next)
    });
    let applied = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(applied, 1);
}

async fn an_inventory_is_replaced_only_if_unchanged(s: Subject) {
    let store = &s.store;
    let (t, other) = (tenant(), tenant());
    let first = serde_json::json!([{"name": "a", "value": 1}]);
    let second = serde_json::json!([{"name": "a", "value": 1}, {"name": "b", "value": "x"}]);
    assert!(store
        .replace_inventory(&t, "dev", None, first.clone())
        .await
        .unwrap());
    assert!(
        !store
            .replace_inventory(&t, "dev", None, second.clone())
            .await
            .unwrap(),
        "an inventory exists"
    );
    assert!(
        !store
            .replace_inventory(&t, "dev", Some(&second), first.clone())
            .await
            .unwrap(),
        "the stored one is not the expected one"
    );
    assert!(store
        .replace_inventory(&t, "dev", Some(&first), second.clone())
        .await
        .unwrap());
    assert_eq!(
        store.inventory(&t, "dev").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.inventory(&other, "dev").await.unwrap(), None);

    // Concurrent merges from the same read: exactly one applies.
    let attempts = (0..8).map(|i| {
        let next = serde_json::json!([{"name": "n", "value": i}]);
        store.replace_inventory(&t, "dev", Some(&second), next)
    });
    let applied = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(applied, 1);
}

async fn a_lease_has_one_holder_and_a_new_epoch_with_each_new_holder(s: Subject) {
    let store = s.store.as_ref();
    let (t, d) = (tenant(), Uuid::new_v4());
    let ttl = std::time::Duration::from_secs(60);
    assert_eq!(store.lease(&t, d).await.unwrap(), None);

    let Claim::Granted(first) = lease::claim(store, &t, d, "node-a", ttl).await.unwrap() else {
        panic!("a free lease is granted");
    };
    assert_eq!((first.owner.as_str(), first.epoch), ("node-a", 1));
    assert_eq!(store.lease(&t, d).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.lease(&tenant(), d).await.unwrap(),
        None,
        "leases stay in their tenant"
    );

    match lease::claim(store, &t, d, "node-b", ttl).await.unwrap() {
        Claim::Held(held) => assert_eq!(held, first),
        other => panic!("another node's live lease must be held: {other:?}"),
    }
    let Claim::Granted(renewed) = lease::claim(store, &t, d, "node-a", ttl).await.unwrap() else {
        panic!("the holder renews");
    };
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.expires >= first.expires);

    // Handed over at shutdown: the next holder gets a higher epoch at once.
    assert!(lease::release(store, &renewed).await.unwrap());
    assert!(
        !lease::release(store, &renewed).await.unwrap(),
        "already released"
    );
    let Claim::Granted(taken) = lease::claim(store, &t, d, "node-b", ttl).await.unwrap() else {
        panic!("a released lease is granted");
    };
    assert_eq!((taken.owner.as_str(), taken.epoch), ("node-b", 2));
    match lease::claim(store, &t, d, "node-a", ttl).await.unwrap() {
        Claim::Held(held) => assert_eq!(held.epoch, 2, "the stale holder sees the new epoch"),
        other => panic!("{other:?}"),
    }

    // A lease nobody renews lapses and is taken over.
    let short = std::time::Duration::from_millis(300);
    assert!(lease::release(store, &taken).await.unwrap());
    let Claim::Granted(brief) = lease::claim(store, &t, d, "node-c", short).await.unwrap() else {
        panic!("granted");
    };
    tokio::time::sleep(short + std::time::Duration::from_millis(100)).await;
    let Claim::Granted(after) = lease::claim(store, &t, d, "node-a", ttl).await.unwrap() else {
        panic!("a lapsed lease is taken over");
    };
    assert_eq!(
        (after.owner.as_str(), after.epoch),
        ("node-a", brief.epoch + 1)
    );
}

async fn concurrent_claims_of_a_lease_grant_it_once(s: Subject) {
    let store = s.store.as_ref();
    let (t, d) = (tenant(), Uuid::new_v4());
    let ttl = std::time::Duration::from_secs(60);
    let nodes: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
    let claims = nodes.iter().map(|n| lease::claim(store, &t, d, n, ttl));
    let answers = futures_util::future::join_all(claims).await;
    let granted: Vec<_> = answers
        .into_iter()
        .filter_map(|a| match a.unwrap() {
            Claim::Granted(l) => Some(l),
            Claim::Held(_) => None,
        })
        .collect();
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(granted[0].epoch, 1);
    assert_eq!(store.lease(&t, d).await.unwrap(), Some(granted[0].clone()));
}

async fn heartbeats_keep_one_record_per_node(s: Subject) {
    let store = &s.store;
    let run = Uuid::new_v4();
    let node = |name: &str, seen: OffsetDateTime| storage::NodeRecord {
        id: format!("{run}-{name}"),
        address: format!("http://{name}:8080"),
        cluster: Some(format!("{name}:7946")),
        started: now(),
        seen,
    };
    let (a, b) = (node("a", now()), node("b", now()));
    store
        .commit(vec![Write::PutNode(b.clone()), Write::PutNode(a.clone())])
        .await
        .unwrap();
    let later = node("a", now() + time::Duration::seconds(5));
    store
        .commit(vec![Write::PutNode(later.clone())])
        .await
        .unwrap();
    let mine: Vec<_> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.id.starts_with(&run.to_string()))
        .collect();
    assert_eq!(
        mine,
        vec![later, b],
        "one record per node, the latest, ordered by id"
    );
}

async fn inventories_list_a_tenant_in_id_order(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    for (i, id) in ["m", "c", "x"].iter().enumerate() {
        put_inventory(
            store,
            &t1,
            id,
            serde_json::json!([{"name": "n", "value": i}]),
        )
        .await;
    }
    put_inventory(store, &t2, "other", serde_json::json!([])).await;
    let updated = serde_json::json!([{"name": "n", "value": 9}]);
    let first = store.inventory(&t1, "c").await.unwrap();
    assert!(store
        .replace_inventory(&t1, "c", first.as_ref(), updated.clone())
        .await
        .unwrap());

    let listed = store.inventories(&t1).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(ids, ["c", "m", "x"]);
    assert_eq!(listed[0].1, updated);
    assert_eq!(store.inventories(&t2).await.unwrap().len(), 1);
    assert!(store.inventories(&tenant()).await.unwrap().is_empty());
}

async fn saved_filters_are_kept_per_tenant_until_deleted(s: Subject) {
    let store = &s.store;
    let (t1, t2) = (tenant(), tenant());
    let filter = |t: &TenantId, name: &str| storage::SavedFilter {
        id: Uuid::new_v4(),
        tenant: t.clone(),
        name: name.into(),
        terms: vec![storage::FilterTerm {
            scope: "inventory".into(),
            attribute: "device_type".into(),
            op: storage::FilterOp::In,
            value: serde_json::json!(["rpi4", "qemu"]),
        }],
    };
    let (a, b, c) = (filter(&t1, "a"), filter(&t1, "b"), filter(&t2, "c"));
    let puts = [&a, &b, &c].map(|f| Write::PutFilter(f.clone()));
    store.commit(puts.to_vec()).await.unwrap();

    assert_eq!(store.filter(&t1, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.filter(&t2, a.id).await.unwrap(), None);
    let mut names: Vec<String> = store
        .filters(&t1)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);

    let delete = Write::DeleteFilter {
        tenant: t1.clone(),
        id: a.id,
    };
    store.commit(vec![delete]).await.unwrap();
    assert_eq!(store.filter(&t1, a.id).await.unwrap(), None);
    assert_eq!(store.filters(&t1).await.unwrap(), vec![b]);
    assert_eq!(store.filters(&t2).await.unwrap(), vec![c]);
}

async fn a_device_auth_record_is_removed_only_if_unchanged_and_revocations_are_kept(s: Subject) {
    let store = &s.store;
    let t = tenant();
    let pending = auth(&t, "d1", DeviceAuthStatus::Pending);
    put_auth(store, pending.clone()).await;
    let accepted = auth(&t, "d1", DeviceAuthStatus::Accepted);
    assert!(store
        .replace_device_auth(Some(&pending), accepted.clone())
        .await
        .unwrap());
    assert!(!store.remove_device_auth(&pending).await.unwrap(), "stale");
    assert!(store.device_auth(&t, "d1").await.unwrap().is_some());
    assert!(store.remove_device_auth(&accepted).await.unwrap());
    assert_eq!(store.device_auth(&t, "d1").await.unwrap(), None);
    assert!(!store.remove_device_auth(&accepted).await.unwrap(), "gone");

    let r = storage::Revocation {
        tenant: t.clone(),
        device: "d1".into(),
        revoked_at: 1_700_000_000,
    };
    store
        .commit(vec![Write::PutRevocation(r.clone())])
        .await
        .unwrap();
    let all = store.revocations().await.unwrap();
    assert!(all.contains(&r), "{all:?}");
}
