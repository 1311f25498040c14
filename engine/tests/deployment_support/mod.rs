//! Shared by the deployment tests: a deployment service on a real embedded store in a
//! temporary directory, artifacts inserted straight into the store, and helpers that act as
//! devices and check that statistics always equal counting the records.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use engine::deployment::{NewPhase, Statistics};
use engine::{Clock, Delivery, DeploymentService, EngineError, NewDeployment, Snapshot};
use storage::{
    ArtifactInfo, ArtifactMeta, ArtifactRecord, DeploymentRecord, DeviceAuthRecord,
    DeviceDeploymentRecord, DeviceStatus, Durable, EmbeddedStore, Lease, LogMessage, MetaStore,
    StoreError, TenantId, Write,
};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

/// The release every test deploys.
pub const RELEASE: &str = "app-1.0";
/// What devices run before the update.
pub const OLD: &str = "app-0.9";
/// The device type the release's artifact installs on.
pub const TYPE: &str = "dev-a";
/// Phases in the tests open an hour apart.
pub const HOUR: Duration = Duration::from_secs(3600);

/// Keeps paused time from jumping ahead on its own while the test waits for the store.
///
/// The store commits on a real thread. While a test awaits an fsync, the runtime is idle,
/// and a paused tokio clock would auto-advance to the next timer: to the next phase's
/// opening. A running `spawn_blocking` task inhibits that, so time only moves when a test
/// calls `tokio::time::advance`.
pub struct HoldTime(std::sync::mpsc::Sender<()>);

/// Hold paused time until the guard is dropped (see [`HoldTime`]).
pub fn hold_time() -> HoldTime {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        // Returns once the sender (the guard) is dropped.
        let _ = rx.recv();
    });
    HoldTime(tx)
}

/// A deployment service on a store in a temporary directory, with artifacts of
/// [`RELEASE`] for [`TYPE`] in tenants `acme` and `globex`.
pub struct Fixture {
    pub svc: DeploymentService,
    pub store: Arc<FaultyStore>,
    pub clock: Clock,
    pub tenant: TenantId,
    /// Owns the store's directory, unless the test manages it (restarts).
    _dir: Option<TempDir>,
    _hold: HoldTime,
}

/// An artifact record of `name` for `types`, as the artifact service would store it.
pub fn artifact(tenant: &TenantId, name: &str, types: &[&str], size: u64) -> ArtifactRecord {
    ArtifactRecord {
        id: Uuid::new_v4(),
        tenant: tenant.clone(),
        description: String::new(),
        meta: ArtifactMeta {
            name: name.into(),
            device_types_compatible: types.iter().map(|t| t.to_string()).collect(),
            info: ArtifactInfo {
                format: "mender".into(),
                version: 3,
            },
            signed: false,
            updates: Vec::new(),
            artifact_provides: BTreeMap::new(),
            artifact_depends: BTreeMap::new(),
            clears_artifact_provides: Vec::new(),
        },
        size,
        modified: OffsetDateTime::now_utc(),
    }
}

/// The tenant the tests act in.
pub fn acme() -> TenantId {
    TenantId("acme".into())
}

/// Another tenant, which must see nothing of `acme`.
pub fn globex() -> TenantId {
    TenantId("globex".into())
}

/// `n` device ids: `d00`, `d01`, ….
pub fn devices(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:02}")).collect()
}

/// A requested phase.
pub fn phase(batch_size: Option<u32>, start_ts: Option<OffsetDateTime>) -> NewPhase {
    NewPhase {
        batch_size,
        start_ts,
        ..NewPhase::default()
    }
}

impl Fixture {
    /// A fresh store with the release's artifacts in `acme` and `globex`.
    pub async fn new() -> Fixture {
        Fixture::new_with(Clock::new()).await
    }

    /// Like [`Fixture::new`], on a clock that reads `wall` now.
    pub async fn new_at(wall: OffsetDateTime) -> Fixture {
        Fixture::new_with(Clock::at(wall)).await
    }

    async fn new_with(clock: Clock) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::open_with(dir.path(), clock).await;
        f.store
            .commit(vec![
                Write::PutArtifact(artifact(&acme(), RELEASE, &[TYPE], 1000)),
                Write::PutArtifact(artifact(&globex(), RELEASE, &[TYPE], 1000)),
            ])
            .await
            .unwrap();
        Fixture {
            _dir: Some(dir),
            ..f
        }
    }

    /// A service on the store in `dir`, rehydrating what is there.
    pub async fn open(dir: &std::path::Path) -> Fixture {
        Fixture::open_with(dir, Clock::new()).await
    }

    async fn open_with(dir: &std::path::Path, clock: Clock) -> Fixture {
        let hold = hold_time();
        let store = Arc::new(FaultyStore::new(EmbeddedStore::open(dir).unwrap()));
        let svc = DeploymentService::start(store.clone(), clock)
            .await
            .unwrap();
        Fixture {
            svc,
            store,
            clock,
            tenant: acme(),
            _dir: None,
            _hold: hold,
        }
    }

    /// Store an artifact of [`RELEASE`] in `acme` (for fixtures opened on a fresh dir).
    pub async fn with_release(self) -> Fixture {
        let release = artifact(&acme(), RELEASE, &[TYPE], 1);
        self.store
            .commit(vec![Write::PutArtifact(release)])
            .await
            .unwrap();
        self
    }

    /// A deployment of [`RELEASE`] to `devices`, all at once, without retries.
    pub fn new_deployment(&self, devices: Vec<String>) -> NewDeployment {
        NewDeployment {
            name: "rollout test".into(),
            artifact_name: RELEASE.into(),
            devices,
            ..NewDeployment::default()
        }
    }

    /// Create it in the fixture's tenant; its id.
    pub async fn deploy(&self, new: NewDeployment) -> Uuid {
        self.svc.create(&self.tenant, new).await.unwrap().id
    }

    /// Check in as a [`TYPE`] device running [`OLD`]; the deployment delivered, if any.
    pub async fn check_in(&self, device: &str) -> Option<Uuid> {
        self.check_in_as(device, TYPE, OLD).await.unwrap()
    }

    /// Check in with the given device type and installed artifact.
    pub async fn check_in_as(
        &self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<Option<Uuid>, EngineError> {
        match self
            .svc
            .check_in(&self.tenant, device, device_type, artifact_name)
            .await?
        {
            Delivery::Update {
                deployment,
                artifact,
                ..
            } => {
                assert_eq!(artifact.meta.name, RELEASE);
                Ok(Some(deployment))
            }
            Delivery::Nothing | Delivery::AlreadyInstalled | Delivery::NoArtifact => Ok(None),
        }
    }

    /// Report a status (no substate).
    pub async fn report(&self, device: &str, id: Uuid, status: DeviceStatus) -> engine::Result<()> {
        self.svc
            .report(&self.tenant, device, id, status, None)
            .await
    }

    /// Download, install and report `last`.
    pub async fn run_update(&self, device: &str, id: Uuid, last: DeviceStatus) {
        for s in [DeviceStatus::Downloading, DeviceStatus::Installing, last] {
            self.report(device, id, s).await.unwrap();
        }
    }

    /// The device's record in the deployment.
    pub async fn record(&self, id: Uuid, device: &str) -> DeviceDeploymentRecord {
        self.svc
            .devices(&self.tenant, id)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.device_id == device)
            .unwrap_or_else(|| panic!("{device} is not in {id}"))
    }

    /// The device's status in the deployment.
    pub async fn status(&self, id: Uuid, device: &str) -> DeviceStatus {
        self.record(id, device).await.status
    }

    /// The deployment, after asserting that its statistics equal counting its records.
    pub async fn snapshot(&self, id: Uuid) -> Snapshot {
        let snap = self.svc.get(&self.tenant, id).await.unwrap();
        let records = self.svc.devices(&self.tenant, id).await.unwrap();
        assert_eq!(records.len() as u64, snap.header.device_count);
        let counted = Statistics::count(records.iter().map(|r| &r.status));
        assert_eq!(snap.stats, counted, "statistics differ from the records");
        snap
    }

    /// `device_count` of each phase.
    pub async fn phase_counts(&self, id: Uuid) -> Vec<u64> {
        let snap = self.snapshot(id).await;
        snap.header.phases.iter().map(|p| p.device_count).collect()
    }
}

/// Run `body` on a fresh paused runtime and shut the runtime down afterwards, as a process
/// exit would: every actor and store handle is dropped, so the store can be reopened.
pub fn on_runtime<T>(body: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(body)
}

/// The embedded store with faults a test can switch on: failing commits (a full or broken
/// disk), and device list reads that hang until released (a slow store).
pub struct FaultyStore {
    inner: EmbeddedStore,
    fail_commits: AtomicBool,
    hold_device_lists: watch::Sender<bool>,
}

impl FaultyStore {
    pub fn new(inner: EmbeddedStore) -> Self {
        FaultyStore {
            inner,
            fail_commits: AtomicBool::new(false),
            hold_device_lists: watch::channel(false).0,
        }
    }

    /// Every commit fails from now on (or works again).
    pub fn fail_commits(&self, on: bool) {
        self.fail_commits.store(on, Ordering::SeqCst);
    }

    /// Device list reads wait until this is switched off again.
    pub fn hold_device_lists(&self, on: bool) {
        self.hold_device_lists.send_replace(on);
    }
}

#[async_trait]
impl MetaStore for FaultyStore {
    fn submit(&self, writes: Vec<Write>) -> Durable {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::CommitterGone) });
        }
        self.inner.submit(writes)
    }
    async fn artifact(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> storage::Result<Option<ArtifactRecord>> {
        self.inner.artifact(tenant, id).await
    }
    async fn artifacts(&self, tenant: &TenantId) -> storage::Result<Vec<ArtifactRecord>> {
        self.inner.artifacts(tenant).await
    }
    async fn artifact_bytes_by_tenant(&self) -> storage::Result<BTreeMap<TenantId, u64>> {
        self.inner.artifact_bytes_by_tenant().await
    }
    async fn deployment(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> storage::Result<Option<DeploymentRecord>> {
        self.inner.deployment(tenant, id).await
    }
    async fn deployments(&self, tenant: &TenantId) -> storage::Result<Vec<DeploymentRecord>> {
        self.inner.deployments(tenant).await
    }
    async fn unfinished_deployments(&self) -> storage::Result<Vec<DeploymentRecord>> {
        self.inner.unfinished_deployments().await
    }
    async fn device_list(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
    ) -> storage::Result<Vec<String>> {
        let mut held = self.hold_device_lists.subscribe();
        let _ = held.wait_for(|on| !*on).await;
        self.inner.device_list(tenant, deployment).await
    }
    async fn device_list_chunk(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        chunk: u32,
    ) -> storage::Result<Option<Vec<String>>> {
        self.inner
            .device_list_chunk(tenant, deployment, chunk)
            .await
    }
    async fn device_records(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
    ) -> storage::Result<Vec<DeviceDeploymentRecord>> {
        self.inner.device_records(tenant, deployment).await
    }
    async fn log(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> storage::Result<Option<Vec<LogMessage>>> {
        self.inner.log(tenant, deployment, device).await
    }
    async fn last_finished(
        &self,
        tenant: &TenantId,
        devices: &[String],
    ) -> storage::Result<Vec<Option<i128>>> {
        self.inner.last_finished(tenant, devices).await
    }
    async fn inventory(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> storage::Result<Option<serde_json::Value>> {
        self.inner.inventory(tenant, device).await
    }
    async fn device_record(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> storage::Result<Option<DeviceDeploymentRecord>> {
        self.inner.device_record(tenant, deployment, device).await
    }
    async fn inventories(
        &self,
        tenant: &TenantId,
    ) -> storage::Result<Vec<(String, serde_json::Value)>> {
        self.inner.inventories(tenant).await
    }
    async fn filter(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> storage::Result<Option<storage::SavedFilter>> {
        self.inner.filter(tenant, id).await
    }
    async fn filters(&self, tenant: &TenantId) -> storage::Result<Vec<storage::SavedFilter>> {
        self.inner.filters(tenant).await
    }
    async fn device_auth(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> storage::Result<Option<DeviceAuthRecord>> {
        self.inner.device_auth(tenant, device).await
    }
    async fn revocations(&self) -> storage::Result<Vec<storage::Revocation>> {
        self.inner.revocations().await
    }
    async fn remove_device_auth(&self, expected: &DeviceAuthRecord) -> storage::Result<bool> {
        self.inner.remove_device_auth(expected).await
    }
    async fn device_auths(&self, tenant: &TenantId) -> storage::Result<Vec<DeviceAuthRecord>> {
        self.inner.device_auths(tenant).await
    }
    async fn claim_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> storage::Result<Uuid> {
        self.inner
            .claim_artifact_name(tenant, name, device_type, artifact)
            .await
    }
    async fn release_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> storage::Result<()> {
        self.inner
            .release_artifact_name(tenant, name, device_type, artifact)
            .await
    }
    async fn replace_device_auth(
        &self,
        expected: Option<&DeviceAuthRecord>,
        record: DeviceAuthRecord,
    ) -> storage::Result<bool> {
        self.inner.replace_device_auth(expected, record).await
    }
    async fn replace_inventory(
        &self,
        tenant: &TenantId,
        device: &str,
        expected: Option<&serde_json::Value>,
        attributes: serde_json::Value,
    ) -> storage::Result<bool> {
        self.inner
            .replace_inventory(tenant, device, expected, attributes)
            .await
    }
    async fn nodes(&self) -> storage::Result<Vec<storage::NodeRecord>> {
        self.inner.nodes().await
    }
    async fn lease(&self, tenant: &TenantId, deployment: Uuid) -> storage::Result<Option<Lease>> {
        self.inner.lease(tenant, deployment).await
    }
    async fn replace_lease(&self, expected: Option<&Lease>, lease: Lease) -> storage::Result<bool> {
        self.inner.replace_lease(expected, lease).await
    }
}
