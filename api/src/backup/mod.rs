//! `rollout backup` and `rollout restore`: the backup file, how the running server writes
//! one ([`write`]), how the command saves it ([`save`]) and how a data dir is rebuilt from
//! it ([`restore`]).
//!
//! A backup is a gzip'd tar (`tar tzf` lists it), written in this order:
//! - `rollout-backup.json`: the format version, the rollout version, when it was taken;
//! - `keys/token-signing.key`, `keys/device-token.key`, `keys/download.key`: the data
//!   dir's keys, so that the tokens and download links the old server issued still work;
//! - `blobs/<path>`: every artifact's file, under its path in the blob store;
//! - `tables/<table>/<n>.kv`: a table's records, read at the same instant as every other
//!   table, in chunks of about [`CHUNK_BYTES`]: each record is a big-endian `u32` key
//!   length, the key, a `u32` value length and the value;
//! - `summary.json` last: what the backup holds. A file without it was cut short.
//!
//! The embedded store only: a ScyllaDB cluster is backed up with its own tools.

pub(crate) mod restore;
pub(crate) mod save;
pub(crate) mod socket;
pub(crate) mod write;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the layout above; a restore refuses any other.
const FORMAT: u32 = 1;

/// The first entry.
const MANIFEST: &str = "rollout-backup.json";

/// The last entry.
const SUMMARY: &str = "summary.json";

/// The data dir's key files, stored under `keys/`.
const KEY_FILES: [&str; 3] = [
    crate::auth::keys::SIGNING_KEY_FILE,
    crate::auth::keys::DEVICE_TOKEN_KEY_FILE,
    crate::signing::LINK_KEY_FILE,
];

/// Size a table chunk grows to before it is written out: large enough that a table of
/// millions of records makes few tar entries, small enough to hold in memory.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// What `rollout-backup.json` says.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    rollout: String,
    #[serde(with = "time::serde::rfc3339")]
    created: time::OffsetDateTime,
}

/// What a backup holds (`summary.json`), also what `rollout backup` and `rollout restore`
/// report.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Records per table.
    pub tables: BTreeMap<String, u64>,
    /// Artifact files.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Artifacts deleted while the backup ran, after it read the tables: their file was
    /// gone, so the backup leaves them out as if taken a moment later.
    #[serde(default)]
    pub artifacts_left_out: u64,
}

impl Summary {
    fn records(&self) -> u64 {
        self.tables.values().sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} artifact files ({} bytes), {} records",
            self.blobs,
            self.blob_bytes,
            self.records()
        )?;
        let tables: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(table, n)| format!("{table} {n}"))
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        write!(f, " ({})", tables.join(", "))
    }
}

/// Fail unless the first entry, `path` holding `data`, is a manifest of our format.
fn check_manifest(path: &str, data: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        path == MANIFEST,
        "not a rollout backup: it starts with {path}, not {MANIFEST}"
    );
    let manifest: Manifest =
        serde_json::from_slice(data).map_err(|e| anyhow::anyhow!("reading the manifest: {e}"))?;
    anyhow::ensure!(
        manifest.format == FORMAT,
        "the backup has format {} (rollout {}); this rollout reads format {FORMAT}",
        manifest.format,
        manifest.rollout
    );
    Ok(())
}

/// A new file only its owner can read (backups and the keys they hold).
fn private_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))
}

/// The tar entry path of a table chunk.
fn chunk_path(table: &str, n: u32) -> String {
    format!("tables/{table}/{n:06}.kv")
}

/// A tar header for a regular file of `size` bytes, private to its owner.
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    header
}

/// Append one record to a table chunk.
fn push_record(chunk: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    for part in [key, value] {
        // Keys and values are far below 4 GiB (a device list chunk is the largest value).
        chunk.extend_from_slice(&(part.len() as u32).to_be_bytes());
        chunk.extend_from_slice(part);
    }
}

/// The records of a table chunk, or why it is malformed.
fn parse_chunk(mut chunk: &[u8]) -> Result<Vec<storage::embedded::RawRecord>, &'static str> {
    let mut records = Vec::new();
    let take = |chunk: &mut &[u8]| -> Result<Vec<u8>, &'static str> {
        let (len, rest) = chunk
            .split_first_chunk::<4>()
            .ok_or("a length is cut short")?;
        let len = u32::from_be_bytes(*len) as usize;
        let part = rest.get(..len).ok_or("a record is cut short")?.to_vec();
        *chunk = &rest[len..];
        Ok(part)
    };
    while !chunk.is_empty() {
        let key = take(&mut chunk)?;
        let value = take(&mut chunk)?;
        records.push((key, value));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_what_was_pushed_and_refuse_a_cut() {
        let mut chunk = Vec::new();
        push_record(&mut chunk, b"k1", b"{\"a\":1}");
        push_record(&mut chunk, b"", b"");
        push_record(&mut chunk, b"k3\0x", &[0xff; 300]);
        let records = parse_chunk(&chunk).expect("a whole chunk");
        assert_eq!(
            records,
            vec![
                (b"k1".to_vec(), b"{\"a\":1}".to_vec()),
                (vec![], vec![]),
                (b"k3\0x".to_vec(), vec![0xff; 300]),
            ]
        );
        for cut in [1, 5, chunk.len() - 1] {
            assert!(parse_chunk(&chunk[..cut]).is_err(), "cut at {cut} accepted");
        }
    }
}
