//! The artifact service: upload (stream-parsed while it is written to the blob store),
//! listing, editing, deleting, releases, storage accounting and generation.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use storage::{
    ArtifactMeta, ArtifactRecord, BlobStore, DeploymentStatus, MetaStore, TenantId, Write,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use uuid::Uuid;

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
    /// of the same release cannot both pass the check. Uploads stream outside of it.
    catalog: Mutex<()>,
}

impl ArtifactService {
    /// A service over the given stores.
    pub fn new(store: Arc<dyn MetaStore>, blobs: BlobStore, limits: ArtifactLimits) -> Self {
        ArtifactService {
            store,
            blobs,
            limits,
            catalog: Mutex::new(()),
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
        Ok(groups
            .into_iter()
            .map(|(name, artifacts)| Release { name, artifacts })
            .collect())
    }

    /// The tenant's storage limit and usage.
    pub async fn usage(&self, tenant: &TenantId) -> Result<StorageUsage> {
        let usage = self
            .store
            .artifacts(tenant)
            .await?
            .iter()
            .map(|a| a.size)
            .sum();
        Ok(StorageUsage {
            limit: self.limits.tenant_storage,
            usage,
        })
    }

    /// Change an artifact's description; refused once a deployment has used it.
    pub async fn edit_description(
        &self,
        tenant: &TenantId,
        id: Uuid,
        description: String,
    ) -> Result<()> {
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(EngineError::Invalid(format!(
                "description is longer than {MAX_DESCRIPTION} characters"
            )));
        }
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
        let record = self.get(tenant, id).await?;
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
        self.release_names(&record).await;
        self.blobs.delete(&BlobStore::path(tenant, id)).await?;
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
    /// same time, through the artifact parser on a blocking thread; nothing is kept in
    /// memory beyond one chunk per side. A parse failure, a conflict or a size limit
    /// removes the blob again and stores nothing.
    pub async fn upload<S>(
        &self,
        tenant: &TenantId,
        description: String,
        body: S,
    ) -> Result<ArtifactRecord>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(EngineError::Invalid(format!(
                "description is longer than {MAX_DESCRIPTION} characters"
            )));
        }
        let id = Uuid::new_v4();
        let path = BlobStore::path(tenant, id);
        let budget = self.upload_budget(tenant).await?;
        let mut writer = self.blobs.writer(&path).await?;
        let streamed = stream_and_parse(body, &mut writer, budget).await;
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
        if let Err(e) = self.store_new(record.clone()).await {
            self.blobs.delete(&path).await?;
            return Err(e);
        }
        Ok(record)
    }

    async fn store_new(&self, record: ArtifactRecord) -> Result<()> {
        let _guard = self.catalog.lock().await;
        let existing = self.store.artifacts(&record.tenant).await?;
        if let Some(other) = existing.iter().find(|a| conflicts(&a.meta, &record.meta)) {
            return Err(EngineError::Conflict(format!(
                "an artifact named {:?} for an overlapping set of device types already exists ({})",
                other.meta.name, other.id
            )));
        }
        self.claim_names(&record).await?;
        if let Err(e) = self
            .store
            .commit(vec![Write::PutArtifact(record.clone())])
            .await
        {
            self.release_names(&record).await;
            return Err(e.into());
        }
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

    async fn upload_budget(&self, tenant: &TenantId) -> Result<Budget> {
        let mut budget = Budget {
            bytes: self.limits.max_upload,
            reason: format!(
                "the artifact is larger than the maximum upload size of {} bytes",
                self.limits.max_upload
            ),
        };
        let StorageUsage { limit, usage } = self.usage(tenant).await?;
        if limit > 0 && limit.saturating_sub(usage) < budget.bytes {
            budget = Budget {
                bytes: limit.saturating_sub(usage),
                reason: format!(
                    "the artifact would exceed the tenant's storage limit of {limit} bytes ({usage} in use)"
                ),
            };
        }
        Ok(budget)
    }

    /// Build a single-file artifact and store it like an upload.
    pub async fn generate(
        &self,
        tenant: &TenantId,
        req: GenerateRequest,
        file: std::fs::File,
    ) -> Result<ArtifactRecord> {
        let spec = req.spec.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let size = file
                .metadata()
                .map_err(|e| EngineError::Internal(e.to_string()))?
                .len();
            let mut out = tempfile_in_tmp()?;
            write_single_file_artifact(&mut out, &spec, file, size)?;
            use std::io::Seek;
            out.rewind()
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            Ok(out)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;
        let stream = file_stream(built);
        self.upload(tenant, req.description, stream).await
    }
}

struct Budget {
    bytes: u64,
    reason: String,
}

/// Two artifacts conflict when they share a name and a device type.
fn conflicts(a: &ArtifactMeta, b: &ArtifactMeta) -> bool {
    a.name == b.name
        && a.device_types_compatible
            .iter()
            .any(|t| b.device_types_compatible.contains(t))
}

/// Feed `body` to the blob writer and, in parallel, to the parser.
async fn stream_and_parse<S>(
    mut body: S,
    writer: &mut storage::blob::BlobWriter,
    budget: Budget,
) -> Result<ArtifactMeta>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut tx = Some(tx);
    let mut parser: Option<JoinHandle<Result<ArtifactMeta, ArtifactError>>> =
        Some(tokio::task::spawn_blocking(move || {
            read_artifact(ChannelReader::new(rx))
        }));
    let mut parsed = None;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| EngineError::Invalid(format!("reading the upload failed: {e}")))?;
        if writer.written() + chunk.len() as u64 > budget.bytes {
            return Err(EngineError::TooLarge(budget.reason));
        }
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

async fn join_parser(
    parser: Option<JoinHandle<Result<ArtifactMeta, ArtifactError>>>,
) -> Result<ArtifactMeta> {
    let handle = parser.ok_or_else(|| EngineError::Internal("parser joined twice".into()))?;
    let result = handle
        .await
        .map_err(|e| EngineError::Internal(format!("artifact parser crashed: {e}")))?;
    Ok(result?)
}

/// A blocking [`Read`] over chunks arriving on a channel; EOF when the sender is dropped.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn tempfile_in_tmp() -> Result<std::fs::File> {
    tempfile::tempfile().map_err(|e| EngineError::Internal(format!("temporary file: {e}")))
}

/// Stream a file in 256 KiB chunks from a blocking thread.
pub fn file_stream(
    mut file: std::fs::File,
) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
