//! The control socket, `<data-dir>/control.sock`: how `rollout backup` reaches the server
//! running on a data dir. The embedded store is locked by that server, so only it can take
//! a consistent copy. Only the user the server runs as (or root) may use the socket: it is
//! private to its owner and every connection's peer is checked, so a backup needs the same
//! access as reading the data dir itself, and no tenant token ever grants it.
//!
//! The protocol: the client sends the line `backup`; the server answers `ok` and the tar
//! stream ([`super::write`]), or `error: <why>`, and closes the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::UnixListener;

use super::write::{write, BackupSource};

/// The socket's file name in the data dir.
pub(crate) const SOCKET_FILE: &str = "control.sock";

/// The request line.
const BACKUP: &str = "backup";

/// Listen on the data dir's control socket until the returned task is aborted.
/// `source` is `None` on a cluster store, whose backups the socket then refuses with the
/// way to take one. A stale socket (a crashed server's) is replaced: this server holds the
/// data dir.
pub(crate) fn listen(
    data_dir: &Path,
    source: Option<BackupSource>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the old {}", path.display()))
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    let owner = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .context("reading this process's user id")?;
    Ok(tokio::spawn(accept(listener, owner, source)))
}

async fn accept(listener: UnixListener, owner: u32, source: Option<BackupSource>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let allowed = stream
            .peer_cred()
            .is_ok_and(|peer| peer.uid() == owner || peer.uid() == 0);
        if !allowed {
            tracing::warn!("control socket: refused a connection from another user");
            continue;
        }
        let source = source.clone();
        let runtime = tokio::runtime::Handle::current();
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        tokio::task::spawn_blocking(move || serve(stream, source.as_ref(), &runtime));
    }
}

/// Answer one connection (blocking).
fn serve(stream: UnixStream, source: Option<&BackupSource>, runtime: &tokio::runtime::Handle) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let mut request = String::new();
    let mut reader = BufReader::new((&stream).take(256));
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, &stream);
    let answer = match (request.trim(), source) {
        (BACKUP, Some(source)) => {
            tracing::info!("backup started");
            let started = std::time::Instant::now();
            let written = writeln!(out, "ok")
                .map_err(anyhow::Error::from)
                .and_then(|()| write(source, runtime, &mut out));
            match written.and_then(|summary| Ok(out.flush().map(|()| summary)?)) {
                Ok(summary) => tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    %summary,
                    "backup finished"
                ),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "backup failed"),
            }
            return;
        }
        (BACKUP, None) => {
            "the store is a ScyllaDB cluster: back it up with the cluster's own \
                           tools (nodetool snapshot), and the blob store with its own"
        }
        _ => "unknown request (this server knows `backup`)",
    };
    let _ = writeln!(out, "error: {answer}").and_then(|()| out.flush());
}

/// Ask the server running on `data_dir` for a backup: the tar stream, after the answer
/// line.
pub(crate) fn request_backup(data_dir: &Path) -> anyhow::Result<impl Read> {
    let path: PathBuf = data_dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&path).map_err(|e| not_reachable(data_dir, &path, e))?;
    (&stream)
        .write_all(format!("{BACKUP}\n").as_bytes())
        .context("sending the backup request")?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .context("reading the server's answer")?;
    match answer.trim_end() {
        "ok" => Ok(reader),
        "" => anyhow::bail!("the server closed the connection without an answer (see its log)"),
        other => anyhow::bail!(
            "the server refused: {}",
            other.strip_prefix("error: ").unwrap_or(other)
        ),
    }
}

fn not_reachable(data_dir: &Path, socket: &Path, error: std::io::Error) -> anyhow::Error {
    let why = match error.kind() {
        std::io::ErrorKind::NotFound => format!("there is no {}", socket.display()),
        std::io::ErrorKind::ConnectionRefused => {
            format!(
                "nothing listens on {} (left by a server that crashed?)",
                socket.display()
            )
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "{} belongs to another user: run this as the user the server runs as",
            socket.display()
        ),
        _ => format!("{}: {error}", socket.display()),
    };
    anyhow::anyhow!(
        "no running server to back up on {}: {why}. `rollout backup` asks the server running \
         on the data dir; a stopped server's data dir is backed up by copying the directory",
        data_dir.display()
    )
}
