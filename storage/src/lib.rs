//! Persistence for rollout: where artifacts, deployments, per-device records and logs live.
//!
//! Two ports, each with an implementation picked at start-up:
//! - [`MetaStore`]: the metadata store. [`EmbeddedStore`] keeps it in the data dir on
//!   [fjall](https://docs.rs/fjall), an LSM-tree in pure Rust. We chose fjall by measurement
//!   (`cargo run --release -p bench --features engines --bin store-bench`, figures in
//!   BENCHMARKS.md): one fsync'd commit costs the same in every engine, so throughput
//!   comes from putting many writes in one commit, and there fjall wrote ~1.0M raw
//!   writes/s against ~0.7M for SQLite (WAL, FULL) and ~0.4M for redb, with no C to build.
//!   Every write goes through a group committer ([`embedded`]) that puts the writes of all
//!   concurrent callers into one durable batch.
//!   [`ScyllaStore`] keeps it in a ScyllaDB (or Apache Cassandra) cluster for fleets that
//!   outgrow one box ([`scylla`]; schema in `ops/scylla/schema.cql`). Both pass one
//!   conformance suite (`storage/tests/conformance.rs`).
//! - [`BlobStore`]: artifact files on [OpenDAL](https://docs.rs/opendal): the local
//!   filesystem under the data dir by default, S3 when configured.
//!
//! The trait is shaped for ScyllaDB: every read names its partition (tenant, deployment,
//! device), there are no cross-partition transactions, and every write is an idempotent
//! upsert, so replaying a batch after a crash is harmless. Keys always carry the tenant.

pub mod blob;
pub mod device_auth;
pub mod embedded;
pub mod error;
pub mod filter;
pub mod keys;
pub mod lease;
pub mod membership;
pub mod model;
pub mod scylla;
mod stripes;
pub mod tenant;

use async_trait::async_trait;
use uuid::Uuid;

pub use self::scylla::{ScyllaConfig, ScyllaStore};
pub use blob::{BlobConfig, BlobStore};
pub use device_auth::{AuthSet, DeviceAuthRecord, DeviceAuthStatus, Revocation};
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use filter::{DeploymentFilter, FilterOp, FilterTerm, SavedFilter};
pub use lease::{Claim, Lease};
pub use membership::NodeRecord;
pub use model::*;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One idempotent upsert or delete. A batch of them is committed durably (see [`MetaStore::submit`]).
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace an artifact.
    PutArtifact(ArtifactRecord),
    /// Remove an artifact's metadata.
    DeleteArtifact {
        /// Owner.
        tenant: TenantId,
        /// Artifact id.
        id: Uuid,
    },
    /// Insert or replace a deployment header.
    PutDeployment(Box<DeploymentRecord>),
    /// Store a chunk of a deployment's device list (ids in creation order).
    PutDeviceList {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        deployment: Uuid,
        /// Chunk number, from 0.
        chunk: u32,
        /// The device ids of this chunk.
        devices: Vec<String>,
    },
    /// Insert or replace one device's record in a deployment.
    PutDevice {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        deployment: Uuid,
        /// The record.
        record: DeviceDeploymentRecord,
    },
    /// Insert or replace the log of a device in a deployment.
    PutLog {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        deployment: Uuid,
        /// Device.
        device: String,
        /// The log lines.
        messages: Vec<LogMessage>,
    },
    /// Remember the creation time of the newest deployment a device finished, so that it
    /// never receives an older one.
    PutLastFinished {
        /// Owner.
        tenant: TenantId,
        /// Device.
        device: String,
        /// Creation time of that deployment, Unix nanoseconds.
        created_nanos: i128,
    },
    /// A node's heartbeat: insert or replace its record.
    PutNode(NodeRecord),
    /// Insert or replace a saved inventory filter.
    PutFilter(SavedFilter),
    /// Remove a saved inventory filter.
    DeleteFilter {
        /// Owner.
        tenant: TenantId,
        /// Filter id.
        id: Uuid,
    },
    /// Refuse a decommissioned device's tokens issued until now.
    PutRevocation(Revocation),
}

/// A future that resolves once a submitted batch is durable (or failed).
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// The metadata store.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Queue a batch of writes and return a future that resolves once it is durable: on
    /// disk (embedded) or acknowledged at the configured consistency (cluster). Every
    /// implementation guarantees:
    /// - batches submitted in order are applied in order (a later batch's value of a key
    ///   wins), and within a batch the last write of a key wins;
    /// - the batch is applied even if the future is dropped unawaited;
    /// - replaying a batch is harmless (every write is an idempotent upsert or delete).
    ///
    /// A batch is atomic in the embedded store only; on a cluster a failed batch may be
    /// partly applied, and the caller's retry (a replay) completes it.
    fn submit(&self, writes: Vec<Write>) -> Durable;

    /// Commit a batch and wait until it is durable.
    async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        self.submit(writes).await
    }

    /// One artifact of a tenant.
    async fn artifact(&self, tenant: &TenantId, id: Uuid) -> Result<Option<ArtifactRecord>>;
    /// All artifacts of a tenant.
    async fn artifacts(&self, tenant: &TenantId) -> Result<Vec<ArtifactRecord>>;
    /// Bytes of stored artifacts per tenant, for every tenant (metrics).
    async fn artifact_bytes_by_tenant(&self) -> Result<std::collections::BTreeMap<TenantId, u64>>;
    /// One deployment header.
    async fn deployment(&self, tenant: &TenantId, id: Uuid) -> Result<Option<DeploymentRecord>>;
    /// All deployment headers of a tenant.
    async fn deployments(&self, tenant: &TenantId) -> Result<Vec<DeploymentRecord>>;
    /// Unfinished deployments of every tenant (start-up rehydration).
    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>>;
    /// The device list of a deployment, in creation order.
    async fn device_list(&self, tenant: &TenantId, deployment: Uuid) -> Result<Vec<String>>;
    /// One chunk of a deployment's device list (`None` past the last), so large lists can
    /// be walked without holding them whole.
    async fn device_list_chunk(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        chunk: u32,
    ) -> Result<Option<Vec<String>>>;
    /// Device records that were written (devices never written are still `pending`).
    async fn device_records(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
    ) -> Result<Vec<DeviceDeploymentRecord>>;
    /// One device's record in a deployment, if it was ever written.
    async fn device_record(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<DeviceDeploymentRecord>>;
    /// The log of a device in a deployment.
    async fn log(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<Vec<LogMessage>>>;
    /// For each of `devices` (in order), the creation time (Unix nanoseconds) of the newest
    /// deployment it finished, if any. Start-up asks this of the devices an unfinished
    /// deployment would still hand its update to, so that none receives a deployment older
    /// than one it finished; per device, never a scan of every device that ever finished.
    async fn last_finished(
        &self,
        tenant: &TenantId,
        devices: &[String],
    ) -> Result<Vec<Option<i128>>>;
    /// A device's inventory attributes.
    async fn inventory(&self, tenant: &TenantId, device: &str)
        -> Result<Option<serde_json::Value>>;
    /// Every device inventory of a tenant, as (device id, attributes), ordered by device id.
    async fn inventories(&self, tenant: &TenantId) -> Result<Vec<(String, serde_json::Value)>>;
    /// One saved inventory filter.
    async fn filter(&self, tenant: &TenantId, id: Uuid) -> Result<Option<SavedFilter>>;
    /// Every saved inventory filter of a tenant.
    async fn filters(&self, tenant: &TenantId) -> Result<Vec<SavedFilter>>;
    /// A device's authentication record.
    async fn device_auth(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Option<DeviceAuthRecord>>;
    /// Every device authentication record of a tenant (ordered by device id).
    async fn device_auths(&self, tenant: &TenantId) -> Result<Vec<DeviceAuthRecord>>;
    /// Every token revocation, of every tenant (decommissioned devices; few).
    async fn revocations(&self) -> Result<Vec<Revocation>>;

    /// Claim artifact name `name` for `device_type` in a tenant on behalf of `artifact`,
    /// atomically across every process sharing the store (a lightweight transaction on a
    /// cluster; a process-local lock is not enough there). Returns the holder afterwards:
    /// `artifact` when the name was free or already its own, another artifact's id when it
    /// is taken. A claim lasts until released; a stored artifact holds its names too.
    async fn claim_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<Uuid>;

    /// Give up a claim `artifact` holds (nothing happens if another artifact holds it).
    async fn release_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<()>;

    /// Store `record` only if its device's stored record is still `expected` (`None`: there
    /// is none), atomically across processes. `false`: someone changed it first; read it
    /// again and decide again. The only way to write a device's authentication record:
    /// every change to it (an auth request, an operator's decision, a preauthorization)
    /// reads, decides and compares, so none is lost to a concurrent one on another node.
    async fn replace_device_auth(
        &self,
        expected: Option<&DeviceAuthRecord>,
        record: DeviceAuthRecord,
    ) -> Result<bool>;

    /// Delete a device's authentication record only if it is still `expected`, atomically
    /// across processes; `false`: it changed first.
    async fn remove_device_auth(&self, expected: &DeviceAuthRecord) -> Result<bool>;

    /// Store a device's inventory `attributes` only if the stored ones are still
    /// `expected` (`None`: there are none), atomically across processes; `false`: they
    /// changed first. The only way to write an inventory, so that a merge (`PATCH`) never
    /// loses attributes another request stored meanwhile.
    async fn replace_inventory(
        &self,
        tenant: &TenantId,
        device: &str,
        expected: Option<&serde_json::Value>,
        attributes: serde_json::Value,
    ) -> Result<bool>;

    /// Every node that sent a heartbeat ([`membership`]), ordered by id; a cluster store
    /// forgets a node a day after its last heartbeat.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;

    /// The lease of a deployment ([`lease`]), as the last compare-and-set left it.
    async fn lease(&self, tenant: &TenantId, deployment: Uuid) -> Result<Option<Lease>>;

    /// Store `lease` only if the deployment's stored lease is still `expected` (`None`:
    /// there is none), atomically across processes; `false`: it changed first. The only
    /// way to write a lease; [`lease::claim`] and [`lease::release`] decide what to write.
    async fn replace_lease(&self, expected: Option<&Lease>, lease: Lease) -> Result<bool>;
}
