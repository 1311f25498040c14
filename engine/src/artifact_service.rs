//! The artifact service: upload (stream-parsed while it is written to the blob store),
//! listing, editing, deleting, releases, storage accounting and generation.

mod ledger;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use storage::{
    ArtifactMeta, ArtifactRecord, BlobStore, DeploymentStatus, MetaStore, TenantId, Write,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, Mutex, Semaphore};
use uuid::Uuid;

use self::ledger::{Ledger, Reservation};
use self::worker::{ChannelReader, Slot};
use crate::artifact::{read_artifact, write_single_file_artifact, ArtifactError, SingleFileSpec};
use crate::error::{EngineError, Result};

/// Longest description an operator may set.
pub const MAX_DESCRIPTION: usize = 4096;

/// Size limits on artifacts.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactLimits {
    /// Largest single upload, in bytes.
    pub max_upload: u64,
    /// Storage limit per tenant in bytes; 0 means none.
    pub tenant_storage: u64,
    /// Uploads and generations in progress at once. Each holds a few threads and, until it
    /// ends, temporary and blob storage; past the bound uploads are refused as busy.
    pub max_concurrent_uploads: usize,
}

/// `GET /limits/storage`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StorageUsage {
    /// The tenant's limit (0 = none).
    pub limit: u64,
    /// Bytes stored.
    pub usage: u64,
}

/// A release: the artifacts that share one name.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// The artifact name.
    pub name: String,
    /// Its artifacts.
    pub artifacts: Vec<ArtifactRecord>,
}

/// What `POST /artifacts/generate` asks for (`type=single_file`).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Its description.
    pub description: String,
    /// What to build: name, device types and the single-file arguments.
    pub spec: SingleFileSpec,
}

/// Artifacts of all tenants.
pub struct ArtifactService {
    store: Arc<dyn MetaStore>,
    blobs: BlobStore,
    limits: ArtifactLimits,
    /// Serializes "check for a conflicting artifact, then store" so two concurrent uploads
    /// of the same release cannot both pass the check, and keeps the storage ledger in step
    /// with the recorded artifacts. Uploads stream outside of it.
    catalog: Mutex<()>,
    /// Bytes each tenant has stored and reserved, for the storage limit.
    ledger: Ledger,
    /// Upload slots: `max_concurrent_uploads` permits.
    uploads: Arc<Semaphore>,
}

impl ArtifactService {
    /// A service over the given stores.
    pub fn new(store: Arc<dyn MetaStore>, blobs: BlobStore, limits: ArtifactLimits) -> Self {
        ArtifactService {
            store,
            blobs,
            limits,
            catalog: Mutex::new(()),
            ledger: Ledger::new(limits.tenant_storage),
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
        }
    }

    /// The blob store (downloads read from it).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// All artifacts of a tenant, newest first.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<ArtifactRecord>> {
        let mut all = self.store.artifacts(tenant).await?;
        all.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// One artifact.
    pub async fn get(&self, tenant: &TenantId, id: Uuid) -> Result<ArtifactRecord> {
        self.store
            .artifact(tenant, id)
            .await?
            .ok_or(EngineError::NotFound("artifact"))
    }

    /// Artifacts grouped by name, optionally only the release called `name`.
    pub async fn releases(&self, tenant: &TenantId, name: Option<&str>) -> Result<Vec<Release>> {
        let mut groups: BTreeMap<String, Vec<ArtifactRecord>> = BTreeMap::new();
        for a in self.list(tenant).await? {
            if name.is_none_or(|n| n == a.meta.name) {
                groups.entry(a.meta.name.clone()).or_default().push(a);
            }
        }
        // Within a release, in upload order (oldest first), as upstream lists them.
        Ok(groups
            .into_iter()
            .map(|(name, mut artifacts)| {
                artifacts.reverse();
                Release { name, artifacts }
            })
            .collect())
    }

    /// The tenant's storage limit and usage.
    pub async fn usage(&self, tenant: &TenantId) -> Result<StorageUsage> {
        Ok(StorageUsage {
            limit: self.limits.tenant_storage,
            usage: self.stored_bytes(tenant).await?,
        })
    }

    /// Change an artifact's description; refused once a deployment has used it.
    pub async fn edit_description(
        &self,
        tenant: &TenantId,
        id: Uuid,
        description: String,
    ) -> Result<()> {
        check_description(&description)?;
        let _guard = self.catalog.lock().await;
        let mut a = self.get(tenant, id).await?;
        if self.used_by(tenant, id, |_| true).await? {
            return Err(EngineError::Unprocessable(
                "the artifact has been used in a deployment and cannot be edited".into(),
            ));
        }
        a.description = description;
        a.modified = OffsetDateTime::now_utc();
        self.store.commit(vec![Write::PutArtifact(a)]).await?;
        Ok(())
    }

    /// Delete an artifact and its blob; refused while an unfinished deployment uses it.
    pub async fn delete(&self, tenant: &TenantId, id: Uuid) -> Result<()> {
        let _guard = self.catalog.lock().await;
        let artifact = self.get(tenant, id).await?;
        if self
            .used_by(tenant, id, |s| s != DeploymentStatus::Finished)
            .await?
        {
            return Err(EngineError::Conflict(
                "the artifact is used by an active deployment".into(),
            ));
        }
        self.store
            .commit(vec![Write::DeleteArtifact {
                tenant: tenant.clone(),
                id,
            }])
            .await?;
        self.ledger.removed(tenant, artifact.size);
        crate::metrics::artifact_bytes_changed(tenant, -(artifact.size as f64));
        self.release_names(&artifact).await;
        self.blobs.delete(&BlobStore::path(tenant, id)).await?;
        tracing::info!(artifact = %id, tenant = %tenant, name = %artifact.meta.name, "artifact deleted");
        Ok(())
    }

    async fn used_by(
        &self,
        tenant: &TenantId,
        id: Uuid,
        counts: impl Fn(DeploymentStatus) -> bool,
    ) -> Result<bool> {
        Ok(self
            .store
            .deployments(tenant)
            .await?
            .iter()
            .any(|d| counts(d.status) && d.artifacts.contains(&id)))
    }

    /// Store a new artifact from its byte stream. The bytes go to the blob store and, at the
    /// same time, through the artifact parser on a thread of its own; nothing is kept in
    /// memory beyond one chunk per side. A parse failure, a conflict or a size limit
    /// removes the blob again and stores nothing. Refused with [`EngineError::Busy`] while
    /// `max_concurrent_uploads` uploads are in progress.
    pub async fn upload<S>(
        &self,
        tenant: &TenantId,
        description: String,
        body: S,
    ) -> Result<ArtifactRecord>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        check_description(&description)?;
        let slot = self.upload_slot()?;
        self.store_upload(&slot, tenant, description, body).await
    }

    /// Build a single-file artifact from `file` and store it like an upload. The file is
    /// refused as soon as it passes the maximum upload size, before it is written further.
    pub async fn generate<S>(
        &self,
        tenant: &TenantId,
        req: GenerateRequest,
        file: S,
    ) -> Result<ArtifactRecord>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        check_description(&req.description)?;
        let slot = self.upload_slot()?;
        let max = self.limits.max_upload;
        let too_large =
            || format!("the file is larger than the maximum upload size of {max} bytes");
        let file = worker::spool(file, max, too_large, &slot).await?;
        let spec = req.spec.clone();
        let built = worker::spawn(
            "artifact-writer",
            &slot,
            move || -> Result<std::fs::File> {
                let size = file
                    .metadata()
                    .map_err(|e| EngineError::Internal(e.to_string()))?
                    .len();
                let mut out = tempfile::tempfile()
                    .map_err(|e| EngineError::Internal(format!("temporary file: {e}")))?;
                write_single_file_artifact(&mut out, &spec, file, size)?;
                use std::io::Seek;
                out.rewind()
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                Ok(out)
            },
        )?
        .join()
        .await??;
        let stream = worker::file_stream(built, &slot)?;
        self.store_upload(&slot, tenant, req.description, stream)
            .await
    }

    /// One of the `max_concurrent_uploads` upload slots, or [`EngineError::Busy`].
    fn upload_slot(&self) -> Result<Slot> {
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            EngineError::Busy(format!(
                "{} uploads are in progress already; try again later",
                self.limits.max_concurrent_uploads
            ))
        })?;
        Ok(Arc::new(permit))
    }

    async fn store_upload<S>(
        &self,
        slot: &Slot,
        tenant: &TenantId,
        description: String,
        body: S,
    ) -> Result<ArtifactRecord>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let id = Uuid::new_v4();
        let path = BlobStore::path(tenant, id);
        let mut reservation = self.reserve(tenant).await?;
        let mut writer = self.blobs.writer(&path).await?;
        let streamed = self
            .stream_and_parse(body, &mut writer, &mut reservation, slot)
            .await;
        let meta = match streamed {
            Ok(meta) => meta,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let size = writer.close().await?;
        let record = ArtifactRecord {
            id,
            tenant: tenant.clone(),
            description,
            meta,
            size,
            modified: OffsetDateTime::now_utc(),
        };
        if let Err(e) = self.store_new(record.clone(), reservation).await {
            self.blobs.delete(&path).await?;
            return Err(e);
        }
        tracing::info!(
            artifact = %id,
            tenant = %tenant,
            name = %record.meta.name,
            size,
            "artifact stored"
        );
        Ok(record)
    }

    /// Open the tenant's account for one more upload, with its stored bytes read under the
    /// catalog lock so that no artifact is recorded or deleted in between.
    async fn reserve(&self, tenant: &TenantId) -> Result<Reservation<'_>> {
        let _guard = self.catalog.lock().await;
        let stored = if self.ledger.limited() {
            self.stored_bytes(tenant).await?
        } else {
            0
        };
        Ok(self.ledger.open(tenant, stored))
    }

    async fn stored_bytes(&self, tenant: &TenantId) -> Result<u64> {
        Ok(self
            .store
            .artifacts(tenant)
            .await?
            .iter()
            .map(|a| a.size)
            .sum())
    }

    /// Record the artifact and turn its reservation into stored bytes, in one step under the
    /// catalog lock.
    async fn store_new(&self, record: ArtifactRecord, reservation: Reservation<'_>) -> Result<()> {
        let _guard = self.catalog.lock().await;
        let existing = self.store.artifacts(&record.tenant).await?;
        if let Some(other) = existing.iter().find(|a| conflicts(&a.meta, &record.meta)) {
            return Err(EngineError::Conflict(format!(
                "an artifact named {:?} for an overlapping set of device types already exists ({})",
                other.meta.name, other.id
            )));
        }
        self.claim_names(&record).await?;
        let (tenant, size) = (record.tenant.clone(), record.size);
        if let Err(e) = self
            .store
            .commit(vec![Write::PutArtifact(record.clone())])
            .await
        {
            self.release_names(&record).await;
            return Err(e.into());
        }
        reservation.settle(size);
        crate::metrics::artifact_bytes_changed(&tenant, size as f64);
        Ok(())
    }

    /// Claim the artifact's name for each of its device types in the store, which holds
    /// across rollout processes sharing a cluster (the catalog lock holds only in this one).
    async fn claim_names(&self, record: &ArtifactRecord) -> Result<()> {
        let meta = &record.meta;
        for (i, device_type) in meta.device_types_compatible.iter().enumerate() {
            let claim = self
                .store
                .claim_artifact_name(&record.tenant, &meta.name, device_type, record.id)
                .await;
            let conflict = match claim {
                Ok(holder) if holder == record.id => continue,
                Ok(holder) => EngineError::Conflict(format!(
                    "an artifact named {:?} for an overlapping set of device types already exists ({holder})",
                    meta.name
                )),
                Err(e) => e.into(),
            };
            for taken in &meta.device_types_compatible[..i] {
                let _ = self
                    .store
                    .release_artifact_name(&record.tenant, &meta.name, taken, record.id)
                    .await;
            }
            return Err(conflict);
        }
        Ok(())
    }

    /// Release the artifact's name claims (after a delete or a failed store). A claim left
    /// behind by a failure here is taken over once its artifact is found missing.
    async fn release_names(&self, record: &ArtifactRecord) {
        for device_type in &record.meta.device_types_compatible {
            let released = self
                .store
                .release_artifact_name(&record.tenant, &record.meta.name, device_type, record.id)
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, artifact = %record.id, "releasing an artifact name");
            }
        }
    }

    /// Feed `body` to the blob writer and, in parallel, to the parser, reserving every chunk
    /// against the tenant's storage limit before it is written.
    async fn stream_and_parse<S>(
        &self,
        mut body: S,
        writer: &mut storage::blob::BlobWriter,
        reservation: &mut Reservation<'_>,
        slot: &Slot,
    ) -> Result<ArtifactMeta>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let max = self.limits.max_upload;
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let mut tx = Some(tx);
        let mut parser = Some(worker::spawn("artifact-parser", slot, move || {
            read_artifact(ChannelReader::new(rx))
        })?);
        let mut parsed = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            let len = chunk.len() as u64;
            if writer.written() + len > max {
                return Err(EngineError::TooLarge(format!(
                    "the artifact is larger than the maximum upload size of {max} bytes"
                )));
            }
            reservation
                .grow(len)
                .map_err(|e| EngineError::TooLarge(e.to_string()))?;
            writer.write(chunk.clone()).await?;
            if let Some(sender) = &tx {
                if sender.send(chunk).await.is_err() {
                    // The parser stopped reading: it either failed (stop now) or reached the
                    // end of the archive (keep storing the padding after it).
                    tx = None;
                    parsed = Some(join_parser(parser.take()).await?);
                }
            }
        }
        drop(tx);
        match parsed {
            Some(meta) => Ok(meta),
            None => join_parser(parser.take()).await,
        }
    }
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(EngineError::Invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

/// What a failed read of the client's body means: a body that stopped arriving
/// (`TimedOut`, set by the HTTP layer's read timeout) or a broken one.
fn body_error(e: std::io::Error) -> EngineError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        EngineError::TimedOut(format!("reading the upload: {e}"))
    } else {
        EngineError::Invalid(format!("reading the upload failed: {e}"))
    }
}

/// Two artifacts conflict when they share a name and a device type.
fn conflicts(a: &ArtifactMeta, b: &ArtifactMeta) -> bool {
    a.name == b.name
        && a.device_types_compatible
            .iter()
            .any(|t| b.device_types_compatible.contains(t))
}

async fn join_parser(
    parser: Option<worker::Job<Result<ArtifactMeta, ArtifactError>>>,
) -> Result<ArtifactMeta> {
    let job = parser.ok_or_else(|| EngineError::Internal("parser joined twice".into()))?;
    Ok(job.join().await??)
}
