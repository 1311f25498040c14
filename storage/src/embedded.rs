//! The embedded metadata store: fjall in the data dir, with a group committer.
//!
//! Durability costs one fsync per commit (~200 µs here) whatever the batch size, so every
//! write goes through one committer thread. It takes the first waiting batch, drains every
//! batch queued behind it (up to [`MAX_GROUP`] writes), applies them all in one fjall write
//! batch, syncs the journal once, and then wakes every submitter. Under load many callers
//! share one fsync; alone, a caller pays exactly one. Submitters encode their records
//! before they queue them, so the committer's serial loop does no serialization.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::keys;
use crate::model::*;

mod backup;
use crate::stripes::Stripes;
use crate::{
    DeviceAuthRecord, Durable, Lease, MetaStore, NodeRecord, Result, Revocation, SavedFilter,
    StoreError, Write,
};
pub use backup::{RawRecord, TableSnapshot, BACKED_UP_TABLES};

/// Upper bound on writes applied in one durable commit.
pub const MAX_GROUP: usize = 16_384;

/// The keyspaces (tables) of the embedded store.
#[derive(Clone)]
struct Tables {
    artifacts: Keyspace,
    deployments: Keyspace,
    device_lists: Keyspace,
    devices: Keyspace,
    logs: Keyspace,
    last_finished: Keyspace,
    inventory: Keyspace,
    device_auth: Keyspace,
    leases: Keyspace,
    nodes: Keyspace,
    filters: Keyspace,
    revocations: Keyspace,
}

impl Tables {
    fn open(db: &Database) -> Result<Self> {
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Tables {
            artifacts: ks("artifacts")?,
            deployments: ks("deployments")?,
            device_lists: ks("device_lists")?,
            devices: ks("devices")?,
            logs: ks("logs")?,
            last_finished: ks("last_finished")?,
            inventory: ks("inventory")?,
            device_auth: ks("device_auth")?,
            leases: ks("leases")?,
            nodes: ks("nodes")?,
            filters: ks("filters")?,
            revocations: ks("revocations")?,
        })
    }
}

/// A batch waiting for the committer, with the channel that tells its submitter.
struct Pending {
    changes: Vec<Change>,
    done: oneshot::Sender<Result<()>>,
}

/// One key's new value, or its removal, already encoded: the submitter does the encoding
/// on its own thread, so the committer's loop (the one serial step of every durable
/// write) only copies bytes into the journal and the memtable.
enum Change {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Remove(Keyspace, Vec<u8>),
}

impl Change {
    fn put(ks: &Keyspace, key: Vec<u8>, value: Vec<u8>) -> Self {
        Change::Put(ks.clone(), key, value)
    }

    fn remove(ks: &Keyspace, key: Vec<u8>) -> Self {
        Change::Remove(ks.clone(), key)
    }
}

/// Commit statistics the committer reports through a callback (for metrics).
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    /// Writes in the commit.
    pub writes: usize,
    /// Batches (submitters) served by the commit.
    pub batches: usize,
    /// Wall time of apply + fsync.
    pub latency: std::time::Duration,
}

/// Callback invoked after every durable commit.
pub type CommitObserver = Box<dyn Fn(CommitStats) + Send + Sync>;

/// fjall-backed [`MetaStore`].
#[derive(Clone)]
pub struct EmbeddedStore {
    /// For cross-table snapshots ([`EmbeddedStore::snapshot`]) and restores.
    db: Database,
    tables: Tables,
    queue: std_mpsc::Sender<Pending>,
    /// Artifact-name claims not yet released. Only this process uses the data dir, so
    /// claims need no persistence: after a restart the stored artifacts hold their names.
    claims: Arc<Mutex<HashMap<NameClaim, Uuid>>>,
    /// Serialises the compare-and-set writes (read, compare, commit) of one record against
    /// each other; different devices rarely share a stripe, so their commits still group.
    swaps: Arc<Stripes>,
}

/// Tenant, artifact name, device type.
type NameClaim = (TenantId, String, String);

impl EmbeddedStore {
    /// Open (or create) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_observer(dir, Box::new(|_| {}))
    }

    /// Open the store and report every commit to `observer`.
    pub fn open_with_observer(dir: &Path, observer: CommitObserver) -> Result<Self> {
        let db = Database::builder(dir)
            // We sync explicitly once per group; no background syncs are needed.
            .manual_journal_persist(true)
            // Write stalls: fjall slows writers once the journal grows past this bound
            // and forces memtable flushes. The default stalls a 1M-device deployment
            // creation; let the journal grow to 1 GiB before it pushes back.
            .max_journaling_size(1024 * 1024 * 1024)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tables = Tables::open(&db)?;
        let (queue, rx) = std_mpsc::channel();
        let committer_db = db.clone();
        thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || run_committer(committer_db, rx, observer))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(EmbeddedStore {
            db,
            tables,
            queue,
            claims: Arc::default(),
            swaps: Arc::new(Stripes::new(64)),
        })
    }

    fn enqueue(&self, changes: Vec<Change>) -> Durable {
        let (done, rx) = oneshot::channel();
        let sent = self.queue.send(Pending { changes, done });
        Box::pin(async move {
            sent.map_err(|_| StoreError::CommitterGone)?;
            rx.await.map_err(|_| StoreError::CommitterGone)?
        })
    }

    fn get_json<T: DeserializeOwned>(ks: &Keyspace, key: &[u8]) -> Result<Option<T>> {
        match ks.get(key)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn scan_json<T: DeserializeOwned>(ks: &Keyspace, prefix: &[u8]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for guard in ks.prefix(prefix) {
            let (k, v) = guard.into_inner()?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain data (no maps with non-string keys): serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn run_committer(db: Database, rx: std_mpsc::Receiver<Pending>, observer: CommitObserver) {
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut changes = first.changes;
        let mut done = vec![first.done];
        while changes.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => {
                    changes.extend(p.changes);
                    done.push(p.done);
                }
                Err(_) => break,
            }
        }
        let writes = changes.len();
        let result = apply_group(&db, changes);
        if result.is_ok() {
            observer(CommitStats {
                writes,
                batches: done.len(),
                latency: started.elapsed(),
            });
        }
        for d in done {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Task(e.to_string())),
            };
            let _ = d.send(r);
        }
    }
}

fn apply_group(db: &Database, changes: Vec<Change>) -> Result<()> {
    let mut batch = db.batch();
    for change in changes {
        match change {
            Change::Put(ks, key, value) => batch.insert(&ks, key, value),
            Change::Remove(ks, key) => batch.remove(&ks, key),
        }
    }
    batch.commit()?;
    db.persist(PersistMode::SyncAll)?;
    Ok(())
}

/// What `w` changes, encoded.
fn change(t: &Tables, w: &Write) -> Change {
    match w {
        Write::PutArtifact(a) => {
            Change::put(&t.artifacts, keys::tenant_id(&a.tenant, a.id), encode(a))
        }
        Write::DeleteArtifact { tenant, id } => {
            Change::remove(&t.artifacts, keys::tenant_id(tenant, *id))
        }
        Write::PutDeployment(d) => {
            Change::put(&t.deployments, keys::tenant_id(&d.tenant, d.id), encode(d))
        }
        Write::PutDeviceList {
            tenant,
            deployment,
            chunk,
            devices,
        } => Change::put(
            &t.device_lists,
            keys::device_list_chunk(tenant, *deployment, *chunk),
            encode(devices),
        ),
        Write::PutDevice {
            tenant,
            deployment,
            record,
        } => Change::put(
            &t.devices,
            keys::deployment_device(tenant, *deployment, &record.device_id),
            encode(record),
        ),
        Write::PutLog {
            tenant,
            deployment,
            device,
            messages,
        } => Change::put(
            &t.logs,
            keys::deployment_device(tenant, *deployment, device),
            encode(messages),
        ),
        Write::PutLastFinished {
            tenant,
            device,
            created_nanos,
        } => Change::put(
            &t.last_finished,
            keys::tenant_device(tenant, device),
            created_nanos.to_be_bytes().to_vec(),
        ),
        Write::PutNode(n) => Change::put(&t.nodes, n.id.as_bytes().to_vec(), encode(n)),
        Write::PutFilter(f) => Change::put(&t.filters, keys::tenant_id(&f.tenant, f.id), encode(f)),
        Write::DeleteFilter { tenant, id } => {
            Change::remove(&t.filters, keys::tenant_id(tenant, *id))
        }
        Write::PutRevocation(r) => Change::put(
            &t.revocations,
            keys::tenant_device(&r.tenant, &r.device),
            encode(r),
        ),
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    fn submit(&self, writes: Vec<Write>) -> Durable {
        self.enqueue(writes.iter().map(|w| change(&self.tables, w)).collect())
    }

    async fn artifact(&self, tenant: &TenantId, id: Uuid) -> Result<Option<ArtifactRecord>> {
        Self::get_json(&self.tables.artifacts, &keys::tenant_id(tenant, id))
    }

    async fn artifacts(&self, tenant: &TenantId) -> Result<Vec<ArtifactRecord>> {
        Self::scan_json(&self.tables.artifacts, &keys::tenant_prefix(tenant))
    }

    async fn artifact_bytes_by_tenant(&self) -> Result<std::collections::BTreeMap<TenantId, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for a in Self::scan_json::<ArtifactRecord>(&self.tables.artifacts, b"")? {
            *out.entry(a.tenant).or_insert(0) += a.size;
        }
        Ok(out)
    }

    async fn deployment(&self, tenant: &TenantId, id: Uuid) -> Result<Option<DeploymentRecord>> {
        Self::get_json(&self.tables.deployments, &keys::tenant_id(tenant, id))
    }

    async fn deployments(&self, tenant: &TenantId) -> Result<Vec<DeploymentRecord>> {
        Self::scan_json(&self.tables.deployments, &keys::tenant_prefix(tenant))
    }

    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let all: Vec<DeploymentRecord> = Self::scan_json(&self.tables.deployments, b"")?;
        Ok(all
            .into_iter()
            .filter(|d| d.status != DeploymentStatus::Finished)
            .collect())
    }

    async fn device_list(&self, tenant: &TenantId, deployment: Uuid) -> Result<Vec<String>> {
        let chunks: Vec<Vec<String>> = Self::scan_json(
            &self.tables.device_lists,
            &keys::deployment_prefix(tenant, deployment),
        )?;
        Ok(chunks.into_iter().flatten().collect())
    }

    async fn device_list_chunk(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        chunk: u32,
    ) -> Result<Option<Vec<String>>> {
        Self::get_json(
            &self.tables.device_lists,
            &keys::device_list_chunk(tenant, deployment, chunk),
        )
    }

    async fn device_records(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
    ) -> Result<Vec<DeviceDeploymentRecord>> {
        Self::scan_json(
            &self.tables.devices,
            &keys::deployment_prefix(tenant, deployment),
        )
    }

    async fn device_record(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<DeviceDeploymentRecord>> {
        Self::get_json(
            &self.tables.devices,
            &keys::deployment_device(tenant, deployment, device),
        )
    }

    async fn log(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<Vec<LogMessage>>> {
        Self::get_json(
            &self.tables.logs,
            &keys::deployment_device(tenant, deployment, device),
        )
    }

    async fn last_finished(
        &self,
        tenant: &TenantId,
        devices: &[String],
    ) -> Result<Vec<Option<i128>>> {
        devices
            .iter()
            .map(|device| {
                let stored = self
                    .tables
                    .last_finished
                    .get(keys::tenant_device(tenant, device))?;
                Ok(stored
                    .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
                    .map(i128::from_be_bytes))
            })
            .collect()
    }

    async fn inventory(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Option<serde_json::Value>> {
        Self::get_json(&self.tables.inventory, &keys::tenant_device(tenant, device))
    }

    async fn inventories(&self, tenant: &TenantId) -> Result<Vec<(String, serde_json::Value)>> {
        let prefix = keys::tenant_prefix(tenant);
        let mut out = Vec::new();
        for guard in self.tables.inventory.prefix(&prefix) {
            let (k, v) = guard.into_inner()?;
            let device = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((device, decode(&k, &v)?));
        }
        Ok(out)
    }

    async fn filter(&self, tenant: &TenantId, id: Uuid) -> Result<Option<SavedFilter>> {
        Self::get_json(&self.tables.filters, &keys::tenant_id(tenant, id))
    }

    async fn filters(&self, tenant: &TenantId) -> Result<Vec<SavedFilter>> {
        Self::scan_json(&self.tables.filters, &keys::tenant_prefix(tenant))
    }

    async fn device_auth(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Option<DeviceAuthRecord>> {
        Self::get_json(
            &self.tables.device_auth,
            &keys::tenant_device(tenant, device),
        )
    }

    async fn device_auths(&self, tenant: &TenantId) -> Result<Vec<DeviceAuthRecord>> {
        Self::scan_json(&self.tables.device_auth, &keys::tenant_prefix(tenant))
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        Self::scan_json(&self.tables.revocations, b"")
    }

    async fn claim_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<Uuid> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.clone(), name.to_owned(), device_type.to_owned());
        if let Some(holder) = claims.get(&key) {
            return Ok(*holder);
        }
        let stored: Vec<ArtifactRecord> =
            Self::scan_json(&self.tables.artifacts, &keys::tenant_prefix(tenant))?;
        let holder = stored.iter().find(|a| {
            a.id != artifact
                && a.meta.name == name
                && a.meta
                    .device_types_compatible
                    .iter()
                    .any(|t| t == device_type)
        });
        if let Some(other) = holder {
            return Ok(other.id);
        }
        claims.insert(key, artifact);
        Ok(artifact)
    }

    async fn release_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<()> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.clone(), name.to_owned(), device_type.to_owned());
        if claims.get(&key) == Some(&artifact) {
            claims.remove(&key);
        }
        Ok(())
    }

    async fn replace_device_auth(
        &self,
        expected: Option<&DeviceAuthRecord>,
        record: DeviceAuthRecord,
    ) -> Result<bool> {
        let _serial = self.swaps.lock((&record.tenant, &record.id)).await;
        let stored = self.device_auth(&record.tenant, &record.id).await?;
        if stored.as_ref() != expected {
            return Ok(false);
        }
        let key = keys::tenant_device(&record.tenant, &record.id);
        let put = Change::put(&self.tables.device_auth, key, encode(&record));
        self.enqueue(vec![put]).await?;
        Ok(true)
    }

    async fn remove_device_auth(&self, expected: &DeviceAuthRecord) -> Result<bool> {
        let _serial = self.swaps.lock((&expected.tenant, &expected.id)).await;
        let stored = self.device_auth(&expected.tenant, &expected.id).await?;
        if stored.as_ref() != Some(expected) {
            return Ok(false);
        }
        let key = keys::tenant_device(&expected.tenant, &expected.id);
        let remove = Change::remove(&self.tables.device_auth, key);
        self.enqueue(vec![remove]).await?;
        Ok(true)
    }

    async fn replace_inventory(
        &self,
        tenant: &TenantId,
        device: &str,
        expected: Option<&serde_json::Value>,
        attributes: serde_json::Value,
    ) -> Result<bool> {
        let _serial = self.swaps.lock((tenant, device)).await;
        if self.inventory(tenant, device).await?.as_ref() != expected {
            return Ok(false);
        }
        let key = keys::tenant_device(tenant, device);
        let put = Change::put(&self.tables.inventory, key, encode(&attributes));
        self.enqueue(vec![put]).await?;
        Ok(true)
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        Self::scan_json(&self.tables.nodes, b"")
    }

    async fn lease(&self, tenant: &TenantId, deployment: Uuid) -> Result<Option<Lease>> {
        Self::get_json(&self.tables.leases, &keys::tenant_id(tenant, deployment))
    }

    async fn replace_lease(&self, expected: Option<&Lease>, lease: Lease) -> Result<bool> {
        let _serial = self.swaps.lock((&lease.tenant, lease.deployment)).await;
        if self.lease(&lease.tenant, lease.deployment).await?.as_ref() != expected {
            return Ok(false);
        }
        let key = keys::tenant_id(&lease.tenant, lease.deployment);
        let put = Change::put(&self.tables.leases, key, encode(&lease));
        self.enqueue(vec![put]).await?;
        Ok(true)
    }
}

/// What an operator needs to know when the store does not open: which directory, and the
/// way out for the usual causes.
fn open_error(dir: &Path, e: fjall::Error) -> StoreError {
    let reason = match &e {
        fjall::Error::Locked => "another process has it open (is `rollout serve` already \
             running on this data dir?); one server per data dir"
            .to_owned(),
        fjall::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => format!(
            "permission denied ({io}); the data dir must be writable by the user running rollout"
        ),
        fjall::Error::Unrecoverable | fjall::Error::JournalRecovery(_) => format!(
            "{e}; the files are damaged: restore the data dir from a backup, or move it away \
             to start empty"
        ),
        _ => e.to_string(),
    };
    StoreError::Open {
        path: dir.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn deployment(tenant: &str) -> DeploymentRecord {
        DeploymentRecord {
            id: Uuid::new_v4(),
            tenant: TenantId(tenant.into()),
            name: "d".into(),
            artifact_name: "a".into(),
            created: OffsetDateTime::now_utc(),
            finished: None,
            status: DeploymentStatus::Pending,
            device_count: 2,
            retries: 0,
            phases: vec![],
            aborted: false,
            artifacts: vec![],
            final_statistics: None,
            dynamic: false,
            filter: None,
            max_devices: None,
            initial_device_count: None,
            force_installation: false,
            safety: Default::default(),
        }
    }

    #[tokio::test]
    async fn committed_writes_survive_reopen_and_stay_in_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let d = deployment("t1");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .commit(vec![
                    Write::PutDeployment(Box::new(d.clone())),
                    Write::PutDeviceList {
                        tenant: d.tenant.clone(),
                        deployment: d.id,
                        chunk: 0,
                        devices: vec!["a".into(), "b".into()],
                    },
                ])
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.deployment(&d.tenant, d.id).await.unwrap(),
            Some(d.clone())
        );
        assert_eq!(
            store
                .deployment(&TenantId("t2".into()), d.id)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.device_list(&d.tenant, d.id).await.unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(store.unfinished_deployments().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_submits_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let tenant = TenantId::default_tenant();
        let dep = Uuid::new_v4();
        let futs: Vec<_> = (0..200)
            .map(|i| {
                store.submit(vec![Write::PutDevice {
                    tenant: tenant.clone(),
                    deployment: dep,
                    record: DeviceDeploymentRecord::pending(
                        format!("dev-{i:03}"),
                        OffsetDateTime::now_utc(),
                    ),
                }])
            })
            .collect();
        for f in futs {
            f.await.unwrap();
        }
        assert_eq!(store.device_records(&tenant, dep).await.unwrap().len(), 200);
    }
}
