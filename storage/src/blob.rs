//! Artifact blobs on OpenDAL: the local filesystem by default, S3 when configured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use opendal::layers::RetryLayer;
use opendal::{services, Operator};
use uuid::Uuid;

use crate::{Result, StoreError, TenantId};

/// Where blobs live.
#[derive(Debug, Clone)]
pub enum BlobConfig {
    /// A directory on the local filesystem.
    Fs {
        /// Root directory.
        root: PathBuf,
    },
    /// An S3-compatible bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Region (`us-east-1` if unsure).
        region: String,
        /// Custom endpoint (MinIO, …); `None` for AWS.
        endpoint: Option<String>,
        /// Key prefix inside the bucket.
        root: String,
    },
}

/// A stored blob's size and modification time.
#[derive(Debug, Clone, Copy)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, if the backend knows it.
    pub modified: Option<time::OffsetDateTime>,
}

/// The blob store.
#[derive(Clone)]
pub struct BlobStore {
    op: Operator,
    /// Whether blobs are served through presigned backend URLs (S3) rather than by rollout.
    presigns: bool,
    /// Where the filesystem backend stages blobs until they are complete; `None` on S3,
    /// where an unfinished multipart upload never becomes an object.
    staging: Option<PathBuf>,
}

/// What [`BlobStore::remove_partial_uploads`] found and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialUploads {
    /// Files removed.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// An open writer for a new blob.
pub struct BlobWriter {
    inner: opendal::Writer,
    written: u64,
}

impl BlobWriter {
    /// Append a chunk.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.written += chunk.len() as u64;
        self.inner.write(chunk).await?;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finish the blob; it becomes visible.
    pub async fn close(mut self) -> Result<u64> {
        self.inner.close().await?;
        Ok(self.written)
    }

    /// Abandon the blob; nothing is left behind.
    pub async fn abort(mut self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(error = %e, "aborting a blob upload failed");
        }
    }
}

impl BlobStore {
    /// Build the store from its configuration.
    pub fn new(config: &BlobConfig) -> Result<Self> {
        match config {
            BlobConfig::Fs { root } => {
                std::fs::create_dir_all(root)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", root.display())))?;
                // Blobs are written under `.partial` and renamed into place when complete,
                // so a refused or interrupted upload never leaves a file behind.
                let partial = root.join(".partial");
                std::fs::create_dir_all(&partial)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", partial.display())))?;
                let utf8 = |p: &std::path::Path| {
                    p.to_str()
                        .map(str::to_owned)
                        .ok_or_else(|| StoreError::Config("blob root is not UTF-8".into()))
                };
                let op = Operator::new(
                    services::Fs::default()
                        .root(&utf8(root)?)
                        .atomic_write_dir(&utf8(&partial)?),
                )?;
                Ok(BlobStore {
                    op,
                    presigns: false,
                    staging: Some(partial),
                })
            }
            BlobConfig::S3 {
                bucket,
                region,
                endpoint,
                root,
            } => {
                let mut b = services::S3::default()
                    .bucket(bucket)
                    .region(region)
                    .root(root);
                if let Some(ep) = endpoint {
                    b = b.endpoint(ep);
                }
                // OpenDAL's HTTP services need a process-wide transport (idempotent).
                opendal::install_default();
                // Throttling (503 SlowDown) and dropped connections are routine on S3.
                let op = Operator::new(b)?.layer(RetryLayer::new());
                Ok(BlobStore {
                    op,
                    presigns: true,
                    staging: None,
                })
            }
        }
    }

    /// Whether downloads should use [`BlobStore::presign`] (S3) instead of rollout's own
    /// signed links.
    pub fn presigns(&self) -> bool {
        self.presigns
    }

    /// Remove the partial files of uploads that never finished. A refused or failed upload
    /// removes its own, but a process killed mid-upload (`kill -9`, power loss) leaves its
    /// file in the staging directory, uncounted by any tenant's usage, forever. Call it at
    /// start-up, before serving: an upload in flight would lose its file.
    pub async fn remove_partial_uploads(&self) -> Result<PartialUploads> {
        let Some(dir) = self.staging.clone() else {
            return Ok(PartialUploads::default());
        };
        tokio::task::spawn_blocking(move || {
            let mut found = PartialUploads::default();
            empty_dir(&dir, &mut found)
                .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
            Ok(found)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The path of an artifact's blob, in a folder of its own per tenant
    /// ([`TenantId::storage_name`]).
    pub fn path(tenant: &TenantId, id: Uuid) -> String {
        format!("artifacts/{}/{id}", tenant.storage_name())
    }

    /// Start writing a blob.
    pub async fn writer(&self, path: &str) -> Result<BlobWriter> {
        // On S3, OpenDAL buffers parts up to the 5 MiB minimum that S3 accepts.
        Ok(BlobWriter {
            inner: self.op.writer(path).await?,
            written: 0,
        })
    }

    /// Write a whole blob at once.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        self.op.write(path, data).await?;
        Ok(())
    }

    /// Size and modification time of a blob, `None` if absent.
    pub async fn stat(&self, path: &str) -> Result<Option<BlobMeta>> {
        match self.op.stat(path).await {
            Ok(m) => Ok(Some(BlobMeta {
                size: m.content_length(),
                modified: m.last_modified().and_then(|t| {
                    time::OffsetDateTime::from_unix_timestamp(t.into_inner().as_second()).ok()
                }),
            })),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stream the bytes `start..end` of a blob.
    pub async fn read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
        let reader = self.op.reader_with(path).chunk(256 * 1024).await?;
        let stream = reader.into_bytes_stream(start..end).await?;
        Ok(stream.map(|r| r.map_err(std::io::Error::other)))
    }

    /// Remove a blob (absent is fine).
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.op.delete(path).await?;
        Ok(())
    }

    /// A presigned GET URL valid for `ttl` (S3 only).
    pub async fn presign(&self, path: &str, ttl: Duration) -> Result<String> {
        let req = self.op.presign_read(path, ttl).await?;
        Ok(req.uri().to_string())
    }
}

/// Remove everything inside `dir` (not `dir` itself), counting the files in `found`.
fn empty_dir(dir: &Path, found: &mut PartialUploads) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            empty_dir(&path, found)?;
            std::fs::remove_dir(&path)?;
        } else {
            found.files += 1;
            found.bytes += meta.len();
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_uploads_are_removed_and_complete_blobs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let store = BlobStore::new(&BlobConfig::Fs { root: root.clone() }).unwrap();
        store
            .put("artifacts/t/kept", Bytes::from_static(b"done"))
            .await
            .unwrap();
        // What a process killed mid-upload leaves: an open writer's staged file.
        let mut writer = store.writer("artifacts/t/cut").await.unwrap();
        writer.write(Bytes::from(vec![7u8; 1000])).await.unwrap();
        std::mem::forget(writer);
        std::fs::create_dir_all(root.join(".partial/nested")).unwrap();
        std::fs::write(root.join(".partial/nested/old"), b"12345").unwrap();

        let removed = store.remove_partial_uploads().await.unwrap();

        // The writer may not have flushed its bytes yet; its file exists all the same.
        assert_eq!(removed.files, 2);
        assert!(removed.bytes >= 5, "{removed:?}");
        assert_eq!(std::fs::read_dir(root.join(".partial")).unwrap().count(), 0);
        assert!(store.stat("artifacts/t/kept").await.unwrap().is_some());
        assert!(store.stat("artifacts/t/cut").await.unwrap().is_none());
        // The store still works after the sweep.
        let mut writer = store.writer("artifacts/t/new").await.unwrap();
        writer.write(Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(writer.close().await.unwrap(), 1);
    }
}
