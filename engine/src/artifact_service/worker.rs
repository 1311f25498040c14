//! Threads of the upload path, apart from tokio's blocking pool.
//!
//! An upload's parser blocks on its client: it waits for the next chunk as long as the
//! client takes to send it. On tokio's blocking pool a few hundred silent clients would take
//! every thread, and downloads, whose file reads run on that pool, would wait behind them.
//! So the parser and the other long jobs of an upload each get a thread of their own, and
//! the number of uploads, hence of these threads, is bounded by the service's upload slots.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::error::{EngineError, Result};

/// An upload's slot, shared by the threads working for it: the slot is free again only
/// when the last of them has ended, so the threads never outnumber the slots.
pub(super) type Slot = Arc<OwnedSemaphorePermit>;

/// Run `job` on a thread of its own that holds `slot` until it ends; the receiver yields
/// its result (an error if it panicked).
pub(super) fn spawn<T, F>(name: &str, slot: &Slot, job: F) -> Result<Job<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let slot = slot.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _slot = slot;
            let _ = tx.send(job());
        })
        .map_err(|e| EngineError::Internal(format!("starting the {name} thread: {e}")))?;
    Ok(Job {
        name: name.to_owned(),
        rx,
    })
}

/// A job running on its own thread.
pub(super) struct Job<T> {
    name: String,
    rx: oneshot::Receiver<T>,
}

impl<T> Job<T> {
    /// Wait for the job's result.
    pub(super) async fn join(self) -> Result<T> {
        self.rx
            .await
            .map_err(|_| EngineError::Internal(format!("the {} thread crashed", self.name)))
    }
}

/// A blocking [`Read`] over chunks arriving on a channel; EOF when the sender is dropped.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub(super) fn new(rx: mpsc::Receiver<Bytes>) -> Self {
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

/// Copy `body` into an anonymous temporary file, refusing it as soon as it passes `limit`
/// bytes (`too_large` says why), so nothing past the limit is ever written.
pub(super) async fn spool<S>(
    mut body: S,
    limit: u64,
    too_large: impl Fn() -> String,
    slot: &Slot,
) -> Result<std::fs::File>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let writer = spawn(
        "upload-spool",
        slot,
        move || -> std::io::Result<std::fs::File> {
            let mut file = tempfile::tempfile()?;
            std::io::copy(&mut ChannelReader::new(rx), &mut file)?;
            file.flush()?;
            use std::io::Seek;
            file.rewind()?;
            Ok(file)
        },
    )?;
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(super::body_error)?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(EngineError::TooLarge(too_large()));
        }
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer
        .join()
        .await?
        .map_err(|e| EngineError::Internal(format!("temporary file: {e}")))
}

/// Stream a file in 256 KiB chunks, read on a thread of its own.
pub(super) fn file_stream(
    mut file: std::fs::File,
    slot: &Slot,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    spawn("upload-reader", slot, move || loop {
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
    })?;
    Ok(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    )))
}
