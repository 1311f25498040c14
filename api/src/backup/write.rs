//! The running server's side of a backup: everything in the store at one instant, the
//! artifact files it names, and the keys, as one tar stream.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use storage::embedded::{TableSnapshot, BACKED_UP_TABLES};
use storage::{BlobStore, EmbeddedStore};
use tokio::runtime::Handle;

use super::{chunk_path, file_header, push_record, Manifest, Summary, CHUNK_BYTES, FORMAT};
use super::{KEY_FILES, MANIFEST, SUMMARY};

/// What a backup is made of: the server's store, blobs and data dir.
#[derive(Clone)]
pub(crate) struct BackupSource {
    pub store: EmbeddedStore,
    pub blobs: BlobStore,
    pub data_dir: PathBuf,
}

/// Write a whole backup to `out`. Blocking: run it off the runtime (`runtime` reads the
/// blobs). The tables are read at one instant; the blobs after it, so an artifact deleted
/// meanwhile is left out whole (its record too).
pub(crate) fn write(
    source: &BackupSource,
    runtime: &Handle,
    out: impl Write,
) -> anyhow::Result<Summary> {
    let snapshot = source.store.snapshot();
    let mut tar = tar::Builder::new(out);
    let manifest = Manifest {
        format: FORMAT,
        rollout: env!("CARGO_PKG_VERSION").to_owned(),
        created: time::OffsetDateTime::now_utc(),
    };
    append(&mut tar, MANIFEST, &serde_json::to_vec_pretty(&manifest)?)?;
    for name in KEY_FILES {
        let path = source.data_dir.join(name);
        let key = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        append(&mut tar, &format!("keys/{name}"), &key)?;
    }
    let mut summary = Summary::default();
    let left_out = write_blobs(source, &snapshot, runtime, &mut tar, &mut summary)?;
    for table in BACKED_UP_TABLES {
        let skip = if table == "artifacts" {
            &left_out
        } else {
            &HashSet::new()
        };
        let records = write_table(&snapshot, table, skip, &mut tar)?;
        summary.tables.insert(table.to_owned(), records);
    }
    append(&mut tar, SUMMARY, &serde_json::to_vec_pretty(&summary)?)?;
    tar.into_inner()?.flush()?;
    Ok(summary)
}

fn append(tar: &mut tar::Builder<impl Write>, path: &str, data: &[u8]) -> anyhow::Result<()> {
    let mut header = file_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .with_context(|| format!("writing {path} to the backup"))
}

/// Copy the file of every artifact in `snapshot`; the keys of the artifacts whose file is
/// gone (deleted after the snapshot) come back.
fn write_blobs(
    source: &BackupSource,
    snapshot: &TableSnapshot,
    runtime: &Handle,
    tar: &mut tar::Builder<impl Write>,
    summary: &mut Summary,
) -> anyhow::Result<HashSet<Vec<u8>>> {
    let mut left_out = HashSet::new();
    for (key, artifact) in snapshot.artifacts()? {
        let path = BlobStore::path(&artifact.tenant, artifact.id);
        let Some(meta) = runtime.block_on(source.blobs.stat(&path))? else {
            left_out.insert(key);
            summary.artifacts_left_out += 1;
            continue;
        };
        let stream = runtime.block_on(source.blobs.read_range(&path, 0, meta.size))?;
        let reader = BlobReader {
            runtime: runtime.clone(),
            stream: stream.boxed(),
            pending: Bytes::new(),
        };
        let mut header = file_header(meta.size);
        tar.append_data(&mut header, format!("blobs/{path}"), reader)
            .with_context(|| format!("copying the file of artifact {}", artifact.id))?;
        summary.blobs += 1;
        summary.blob_bytes += meta.size;
    }
    Ok(left_out)
}

/// Write the records of `table` in chunks; returns how many.
fn write_table(
    snapshot: &TableSnapshot,
    table: &str,
    skip: &HashSet<Vec<u8>>,
    tar: &mut tar::Builder<impl Write>,
) -> anyhow::Result<u64> {
    let mut chunk = Vec::new();
    let mut chunks = 0;
    let mut records = 0;
    for record in snapshot.records(table)? {
        let (key, value) = record?;
        if skip.contains(&key) {
            continue;
        }
        push_record(&mut chunk, &key, &value);
        records += 1;
        if chunk.len() >= CHUNK_BYTES {
            append(tar, &chunk_path(table, chunks), &chunk)?;
            chunks += 1;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        append(tar, &chunk_path(table, chunks), &chunk)?;
    }
    Ok(records)
}

/// A blob's byte stream as a blocking reader, for the tar writer.
struct BlobReader {
    runtime: Handle,
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    pending: Bytes,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(chunk) => self.pending = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
