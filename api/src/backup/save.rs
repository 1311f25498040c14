//! `rollout backup --to FILE`: receive the running server's backup and keep it in a file,
//! checking every entry on the way and reporting progress.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use flate2::write::GzEncoder;

use super::{check_manifest, private_file, Summary, SUMMARY};

/// How often progress is reported on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Take a backup of the server running on `data_dir` into `to` (which must not exist):
/// written to `to.partial`, synced, then renamed, so `to` only ever holds a whole backup.
pub(crate) fn save(data_dir: &Path, to: &Path) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        !to.exists(),
        "{} exists already: give a new file name",
        to.display()
    );
    let stream = super::socket::request_backup(data_dir)?;
    let partial = partial_path(to);
    let file = private_file(&partial)?;
    let saved = copy_checked(stream, file).and_then(|(summary, file)| {
        file.sync_all()?;
        std::fs::rename(&partial, to)
            .with_context(|| format!("renaming {} to {}", partial.display(), to.display()))?;
        sync_parent(to);
        Ok(summary)
    });
    if saved.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    saved
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Copy the tar stream into `file`, gzip'd, entry by entry; fails unless it starts with a
/// manifest of our format and ends with its summary.
fn copy_checked(stream: impl Read, file: File) -> anyhow::Result<(Summary, File)> {
    let mut out = tar::Builder::new(GzEncoder::new(file, flate2::Compression::fast()));
    let mut archive = tar::Archive::new(stream);
    let mut progress = Progress::new();
    let mut summary = None;
    for (index, entry) in archive
        .entries()
        .context("reading the backup stream")?
        .enumerate()
    {
        let mut entry = entry.context("reading the backup stream")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let header = entry.header().clone();
        let mut data = Vec::new();
        if index == 0 || path == SUMMARY {
            entry.read_to_end(&mut data)?;
        }
        if index == 0 {
            check_manifest(&path, &data)?;
        }
        if path == SUMMARY {
            summary = Some(serde_json::from_slice(&data).context("reading the backup summary")?);
            out.append(&header, data.as_slice())?;
        } else if index == 0 {
            out.append(&header, data.as_slice())?;
        } else {
            out.append(&header, &mut entry)
                .with_context(|| format!("receiving {path}"))?;
        }
        progress.entry(header.size().unwrap_or(0));
    }
    let summary: Summary = summary.context(
        "the server stopped before the backup was complete (its log says why); nothing was kept",
    )?;
    let file = out.into_inner()?.finish()?;
    Ok((summary, file))
}

/// Bytes received so far, reported on stderr every [`PROGRESS_EVERY`].
struct Progress {
    bytes: u64,
    entries: u64,
    started: Instant,
    reported: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bytes: 0,
            entries: 0,
            started: Instant::now(),
            reported: Instant::now(),
        }
    }

    fn entry(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.entries += 1;
        if self.reported.elapsed() >= PROGRESS_EVERY {
            self.reported = Instant::now();
            eprintln!(
                "backup: {} MB in {} entries so far ({:.0} s)",
                self.bytes / 1_000_000,
                self.entries,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
