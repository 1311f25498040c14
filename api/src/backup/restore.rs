//! `rollout restore --from FILE --data-dir DIR`: rebuild a data dir from a backup, offline,
//! into a directory that is new or empty (never over live data).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use flate2::read::GzDecoder;
use storage::{BlobConfig, BlobStore, EmbeddedStore};
use tokio::runtime::Handle;

use super::{check_manifest, parse_chunk, private_file, Summary, KEY_FILES, SUMMARY};

/// Size of the pieces an artifact file is written to the blob store in.
const BLOB_PIECE: usize = 1024 * 1024;

/// Restore `from` into `data_dir`, artifact files into the blob store `blobs` describes.
/// Blocking: run it off the runtime (`runtime` writes the blobs). On failure the data dir
/// is emptied again; blobs already written to S3 stay there.
pub(crate) fn restore(
    from: &Path,
    data_dir: &Path,
    blobs: &BlobConfig,
    runtime: &Handle,
) -> anyhow::Result<Summary> {
    let file = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    refuse_used_dir(data_dir)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let restored = restore_into(file, data_dir, blobs, runtime)
        .with_context(|| format!("restoring {}", from.display()));
    if restored.is_err() {
        empty_dir(data_dir);
    }
    restored
}

fn refuse_used_dir(data_dir: &Path) -> anyhow::Result<()> {
    let used = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    anyhow::ensure!(
        !used,
        "{} is not empty: restore into a new or empty directory (a restore never mixes \
         with data that is there)",
        data_dir.display()
    );
    Ok(())
}

fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

fn restore_into(
    file: File,
    data_dir: &Path,
    blob_config: &BlobConfig,
    runtime: &Handle,
) -> anyhow::Result<Summary> {
    let store = EmbeddedStore::open(&data_dir.join("meta"))?;
    let blob_config = match blob_config {
        BlobConfig::Fs { .. } => BlobConfig::Fs {
            root: data_dir.join("blobs"),
        },
        s3 => s3.clone(),
    };
    let blobs = BlobStore::new(&blob_config).context("opening the blob store")?;
    let mut archive = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)));
    let mut seen = Summary::default();
    let mut summary = None;
    for (index, entry) in archive.entries()?.enumerate() {
        let mut entry =
            entry.context("reading the backup (is it a whole `rollout backup` file?)")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        anyhow::ensure!(summary.is_none(), "{path} follows the summary");
        if index == 0 {
            let mut manifest = Vec::new();
            entry.read_to_end(&mut manifest)?;
            check_manifest(&path, &manifest)?;
        } else if path == SUMMARY {
            summary = Some(read_json::<Summary>(&mut entry)?);
        } else if let Some(name) = path.strip_prefix("keys/") {
            restore_key(data_dir, name, &mut entry)?;
        } else if let Some(blob) = path.strip_prefix("blobs/") {
            let size = restore_blob(&blobs, blob, entry, runtime)?;
            seen.blobs += 1;
            seen.blob_bytes += size;
        } else if let Some(table) = table_of(&path) {
            let mut chunk = Vec::new();
            entry.read_to_end(&mut chunk)?;
            let records = parse_chunk(&chunk).map_err(|why| anyhow::anyhow!("{path}: {why}"))?;
            store.restore(table, &records)?;
            *seen.tables.entry(table.to_owned()).or_default() += records.len() as u64;
        } else {
            anyhow::bail!("unexpected entry {path} in the backup");
        }
    }
    let summary = summary.context("the backup is cut short: it has no summary.json")?;
    check_counts(&summary, &seen)?;
    Ok(summary)
}

fn read_json<T: serde::de::DeserializeOwned>(entry: &mut impl Read) -> anyhow::Result<T> {
    let mut data = Vec::new();
    entry.read_to_end(&mut data)?;
    Ok(serde_json::from_slice(&data)?)
}

fn restore_key(data_dir: &Path, name: &str, entry: &mut impl Read) -> anyhow::Result<()> {
    anyhow::ensure!(KEY_FILES.contains(&name), "unknown key file keys/{name}");
    let mut file = private_file(&data_dir.join(name))?;
    std::io::copy(entry, &mut file)?;
    file.sync_all()?;
    Ok(())
}

/// Write one artifact file to the blob store; returns its size.
fn restore_blob(
    blobs: &BlobStore,
    path: &str,
    mut entry: impl Read,
    runtime: &Handle,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        !path.split('/').any(|part| part == ".." || part.is_empty()),
        "unsafe blob path {path} in the backup"
    );
    let mut writer = runtime.block_on(blobs.writer(path))?;
    let mut piece = vec![0; BLOB_PIECE];
    loop {
        let n = entry.read(&mut piece)?;
        if n == 0 {
            break;
        }
        let written = runtime.block_on(writer.write(Bytes::copy_from_slice(&piece[..n])));
        if let Err(e) = written {
            runtime.block_on(writer.abort());
            return Err(e.into());
        }
    }
    Ok(runtime.block_on(writer.close())?)
}

/// The table of a `tables/<table>/<n>.kv` entry.
fn table_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("tables/")?;
    let (table, file) = rest.split_once('/')?;
    file.ends_with(".kv").then_some(table)
}

fn check_counts(summary: &Summary, seen: &Summary) -> anyhow::Result<()> {
    let expected = Summary {
        artifacts_left_out: 0,
        tables: summary
            .tables
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t.clone(), *n))
            .collect(),
        ..summary.clone()
    };
    anyhow::ensure!(
        &expected == seen,
        "the backup's summary ({expected}) does not match what it holds ({seen})"
    );
    Ok(())
}
