//! The ScyllaDB store: [`MetaStore`] on a ScyllaDB (or Apache Cassandra) cluster through the
//! [`scylla`](https://docs.rs/scylla) driver, for fleets that outgrow one box.
//!
//! The tables are in `ops/scylla/schema.cql` (applied at [`ScyllaStore::connect`]). Every
//! read names its partitions; multi-row reads are paged; tenant-wide lists are split into a
//! few buckets by a hash of the row id so that no partition grows without bound. How a
//! batch stays durable, ordered and idempotent without a group commit is in [`writes`].

mod buckets;
mod config;
mod error;
mod lwt;
mod session;
mod statements;
mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt as _, TryStreamExt as _};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use config::{Consistency, Credentials, Keyspace, Replication, ScyllaConfig};

use crate::model::*;
use crate::{
    DeviceAuthRecord, Durable, Lease, MetaStore, NodeRecord, Result, Revocation, SavedFilter,
    StoreError, Write,
};
use error::CqlError;
use statements::Statements;
use writes::WriteClock;

/// Point reads one caller keeps in flight when it looks up many partitions at once: enough
/// to hide the round trips, few enough not to crowd out other requests.
const LOOKUPS_IN_FLIGHT: usize = 64;

/// [`MetaStore`] on a ScyllaDB or Cassandra cluster.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
    /// Batches run as tasks on the runtime that connected, so a batch proceeds (and keeps
    /// its place in the order) even if its submitter never awaits it.
    runtime: tokio::runtime::Handle,
}

/// What the write tasks share.
pub(crate) struct Inner {
    session: Session,
    st: Statements,
    clock: WriteClock,
}

impl ScyllaStore {
    /// Connect, create the keyspace and tables if missing, and prepare every statement.
    /// Must be called inside a tokio runtime; the store runs its writes on it.
    pub async fn connect(config: &ScyllaConfig) -> Result<Self> {
        let session = session::connect(config).await?;
        let st = Statements::prepare(&session, &config.keyspace, config.consistency).await?;
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                st,
                clock: WriteClock::default(),
            }),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Inner {
    /// Every row of a (paged) read.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, CqlError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self.session.execute_iter(statement.clone(), values).await?;
        let rows = pager.rows_stream::<R>()?;
        Ok(rows.try_collect().await?)
    }

    /// The first column of the one row a point read finds.
    async fn one<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<T>, CqlError>
    where
        (T,): for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.session.execute_unpaged(statement, values).await?;
        let row = result.into_rows_result()?.maybe_first_row::<(T,)>()?;
        Ok(row.map(|(v,)| v))
    }

    /// The one row a point read finds, whole.
    async fn one_row<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, CqlError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.session.execute_unpaged(statement, values).await?;
        Ok(result.into_rows_result()?.maybe_first_row::<R>()?)
    }

    /// The JSON bodies of every bucket of a bucketed partition, decoded.
    async fn bucketed<T: DeserializeOwned>(
        &self,
        statement: &PreparedStatement,
        what: &str,
        tenant: &TenantId,
        count: u16,
    ) -> Result<Vec<T>> {
        let reads =
            buckets::all(count).map(|b| self.rows::<(String,)>(statement, (tenant.as_str(), b)));
        let pages = futures_util::future::try_join_all(reads).await?;
        let mut out = Vec::new();
        for (body,) in pages.into_iter().flatten() {
            out.push(decode(what, &body)?);
        }
        Ok(out)
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|source| StoreError::Corrupt {
        key: what.to_owned(),
        source,
    })
}

fn decode_opt<T: DeserializeOwned>(
    what: impl FnOnce() -> String,
    body: Option<String>,
) -> Result<Option<T>> {
    body.map(|b| decode(&what(), &b)).transpose()
}

#[async_trait]
impl MetaStore for ScyllaStore {
    fn submit(&self, writes: Vec<Write>) -> Durable {
        let ts = self.inner.clock.next();
        let task = self
            .runtime
            .spawn(writes::apply_batch(self.inner.clone(), writes, ts));
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::from(CqlError::Task(e.to_string())))?
                .map_err(StoreError::from)
        })
    }

    async fn artifact(&self, tenant: &TenantId, id: Uuid) -> Result<Option<ArtifactRecord>> {
        let bucket = buckets::of(id.as_bytes(), buckets::ARTIFACTS);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_artifact, (tenant.as_str(), bucket, id))
            .await?;
        decode_opt(|| format!("artifacts/{tenant}/{id}"), body)
    }

    async fn artifacts(&self, tenant: &TenantId) -> Result<Vec<ArtifactRecord>> {
        let st = &self.inner.st.list_artifacts;
        let what = format!("artifacts/{tenant}");
        self.inner
            .bucketed(st, &what, tenant, buckets::ARTIFACTS)
            .await
    }

    async fn artifact_bytes_by_tenant(&self) -> Result<BTreeMap<TenantId, u64>> {
        let rows: Vec<(String, i64)> = self.inner.rows(&self.inner.st.list_usage, ()).await?;
        Ok(rows
            .into_iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(tenant, bytes)| (TenantId(tenant), u64::try_from(bytes).unwrap_or(0)))
            .collect())
    }

    async fn deployment(&self, tenant: &TenantId, id: Uuid) -> Result<Option<DeploymentRecord>> {
        let bucket = buckets::of(id.as_bytes(), buckets::DEPLOYMENTS);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_deployment, (tenant.as_str(), bucket, id))
            .await?;
        decode_opt(|| format!("deployments/{tenant}/{id}"), body)
    }

    async fn deployments(&self, tenant: &TenantId) -> Result<Vec<DeploymentRecord>> {
        let st = &self.inner.st.list_deployments;
        let what = format!("deployments/{tenant}");
        self.inner
            .bucketed(st, &what, tenant, buckets::DEPLOYMENTS)
            .await
    }

    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let st = &self.inner.st.list_unfinished;
        let reads = buckets::all(buckets::UNFINISHED)
            .map(|shard| self.inner.rows::<(String,)>(st, (shard,)));
        let pages = futures_util::future::try_join_all(reads).await?;
        pages
            .into_iter()
            .flatten()
            .map(|(body,)| decode("unfinished_deployments", &body))
            .collect()
    }

    async fn device_list(&self, tenant: &TenantId, deployment: Uuid) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut chunk = 0;
        while let Some(ids) = self.device_list_chunk(tenant, deployment, chunk).await? {
            out.extend(ids);
            chunk += 1;
        }
        Ok(out)
    }

    async fn device_list_chunk(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        chunk: u32,
    ) -> Result<Option<Vec<String>>> {
        let Ok(chunk) = i32::try_from(chunk) else {
            return Ok(None);
        };
        let values = (tenant.as_str(), deployment, chunk);
        Ok(self
            .inner
            .one::<Vec<String>>(&self.inner.st.get_device_list, values)
            .await?)
    }

    async fn device_record(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<DeviceDeploymentRecord>> {
        let bucket = buckets::of(device.as_bytes(), buckets::DEVICE_RECORDS);
        let values = (tenant.as_str(), deployment, bucket, device);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_device, values)
            .await?;
        decode_opt(
            || format!("device_records/{tenant}/{deployment}/{device}"),
            body,
        )
    }

    async fn device_records(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
    ) -> Result<Vec<DeviceDeploymentRecord>> {
        let st = &self.inner.st.list_devices;
        let reads = buckets::all(buckets::DEVICE_RECORDS).map(|b| {
            self.inner
                .rows::<(String,)>(st, (tenant.as_str(), deployment, b))
        });
        let pages = futures_util::future::try_join_all(reads).await?;
        let what = format!("device_records/{tenant}/{deployment}");
        let mut out: Vec<DeviceDeploymentRecord> = pages
            .into_iter()
            .flatten()
            .map(|(body,)| decode(&what, &body))
            .collect::<Result<_>>()?;
        // The embedded store lists them by device id; keep that order.
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    async fn log(
        &self,
        tenant: &TenantId,
        deployment: Uuid,
        device: &str,
    ) -> Result<Option<Vec<LogMessage>>> {
        let values = (tenant.as_str(), deployment, device);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_log, values)
            .await?;
        decode_opt(|| format!("logs/{tenant}/{deployment}/{device}"), body)
    }

    async fn last_finished(
        &self,
        tenant: &TenantId,
        devices: &[String],
    ) -> Result<Vec<Option<i128>>> {
        // One partition per device: many point reads in flight, in order.
        let st = &self.inner.st.get_last_finished;
        let mut reads = Vec::with_capacity(devices.len());
        for device in devices {
            reads.push(
                self.inner
                    .one::<Vec<u8>>(st, (tenant.as_str(), device.as_str())),
            );
        }
        let found: Vec<Option<Vec<u8>>> = futures_util::stream::iter(reads)
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .map(|created| {
                created
                    .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
                    .map(i128::from_be_bytes)
            })
            .collect())
    }

    async fn inventory(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Option<serde_json::Value>> {
        let bucket = buckets::of(device.as_bytes(), buckets::INVENTORIES);
        let st = &self.inner.st;
        let mut body = self
            .inner
            .one::<String>(&st.get_inventory, (tenant.as_str(), bucket, device))
            .await?;
        if body.is_none() {
            // Not written since the bucketed table: the first releases' row, if any.
            let values = (tenant.as_str(), device);
            body = self
                .inner
                .one::<String>(&st.get_legacy_inventory, values)
                .await?;
        }
        decode_opt(|| format!("inventory/{tenant}/{device}"), body)
    }

    async fn inventories(&self, tenant: &TenantId) -> Result<Vec<(String, serde_json::Value)>> {
        let st = &self.inner.st.list_inventories;
        let reads = buckets::all(buckets::INVENTORIES).map(|b| {
            self.inner
                .rows::<(String, String)>(st, (tenant.as_str(), b))
        });
        let pages = futures_util::future::try_join_all(reads).await?;
        let mut out = Vec::new();
        for (device, body) in pages.into_iter().flatten() {
            let attributes = decode(&format!("inventory/{tenant}/{device}"), &body)?;
            out.push((device, attributes));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn filter(&self, tenant: &TenantId, id: Uuid) -> Result<Option<SavedFilter>> {
        let bucket = buckets::of(id.as_bytes(), buckets::FILTERS);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_filter, (tenant.as_str(), bucket, id))
            .await?;
        decode_opt(|| format!("saved_filters/{tenant}/{id}"), body)
    }

    async fn filters(&self, tenant: &TenantId) -> Result<Vec<SavedFilter>> {
        let st = &self.inner.st.list_filters;
        let what = format!("saved_filters/{tenant}");
        self.inner
            .bucketed(st, &what, tenant, buckets::FILTERS)
            .await
    }

    async fn device_auth(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Option<DeviceAuthRecord>> {
        let bucket = buckets::of(device.as_bytes(), buckets::DEVICE_AUTH);
        let values = (tenant.as_str(), bucket, device);
        let body = self
            .inner
            .one::<String>(&self.inner.st.get_device_auth, values)
            .await?;
        decode_opt(|| format!("device_auth/{tenant}/{device}"), body)
    }

    async fn device_auths(&self, tenant: &TenantId) -> Result<Vec<DeviceAuthRecord>> {
        let st = &self.inner.st.list_device_auth;
        let what = format!("device_auth/{tenant}");
        let mut out: Vec<DeviceAuthRecord> = self
            .inner
            .bucketed(st, &what, tenant, buckets::DEVICE_AUTH)
            .await?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        let st = &self.inner.st.list_revocations;
        let reads =
            buckets::all(buckets::REVOCATIONS).map(|s| self.inner.rows::<(String,)>(st, (s,)));
        let pages = futures_util::future::try_join_all(reads).await?;
        pages
            .into_iter()
            .flatten()
            .map(|(body,)| decode("device_revocations", &body))
            .collect()
    }

    async fn remove_device_auth(&self, expected: &DeviceAuthRecord) -> Result<bool> {
        self.inner.remove_device_auth(expected).await
    }

    async fn claim_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<Uuid> {
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
    ) -> Result<()> {
        self.inner
            .release_artifact_name(tenant, name, device_type, artifact)
            .await
    }

    async fn replace_device_auth(
        &self,
        expected: Option<&DeviceAuthRecord>,
        record: DeviceAuthRecord,
    ) -> Result<bool> {
        self.inner.replace_device_auth(expected, record).await
    }

    async fn replace_inventory(
        &self,
        tenant: &TenantId,
        device: &str,
        expected: Option<&serde_json::Value>,
        attributes: serde_json::Value,
    ) -> Result<bool> {
        self.inner
            .replace_inventory(tenant, device, expected, attributes)
            .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = self
            .inner
            .rows::<(String,)>(&self.inner.st.list_nodes, ())
            .await?;
        rows.into_iter()
            .map(|(body,)| decode("nodes", &body))
            .collect()
    }

    async fn lease(&self, tenant: &TenantId, deployment: Uuid) -> Result<Option<Lease>> {
        self.inner.lease(tenant, deployment).await
    }

    async fn replace_lease(&self, expected: Option<&Lease>, lease: Lease) -> Result<bool> {
        self.inner.replace_lease(expected, lease).await
    }
}
