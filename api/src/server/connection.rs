//! What a connection is doing, for the idle timeout.
//!
//! hyper closes a connection whose request headers are late (hyper 1.12 starts that clock
//! also when a kept-alive connection waits for its next request), but nothing in hyper
//! closes one that stopped mid-response: a client that stops reading a download would hold its connection and the
//! open blob forever. [`Activity`] notes every byte that moves and every request a handler
//! is working on; [`Activity::idle`] resolves once neither happened for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared by a connection's socket, its requests and its watchdog.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Set by every read or write that moved bytes; cleared by the watchdog.
    moved: AtomicBool,
    /// Requests whose handler is running. A handler may compute for long without I/O
    /// (building a generated artifact); its connection is not idle meanwhile. A handler
    /// waiting for a silent client is bounded by the body read timeout instead.
    handling: AtomicUsize,
}

impl Activity {
    fn moved(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Mark a request as being handled until the guard is dropped.
    pub(crate) fn handling(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Handling(self.clone())
    }

    /// Resolves once no byte moved and no handler ran for `timeout` (checked four times per
    /// timeout, so it fires between `timeout` and 1.25 × `timeout`).
    pub(crate) async fn idle(&self, timeout: Duration) {
        let tick = (timeout / 4).max(Duration::from_millis(10));
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let moved = self.moved.swap(false, Ordering::Relaxed);
            if moved || self.handling.load(Ordering::Relaxed) > 0 {
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet >= timeout {
                return;
            }
        }
    }
}

/// A request being handled; see [`Activity::handling`].
pub(crate) struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        // The end of a handler counts as activity: the idle time starts now.
        self.0.moved();
    }
}

/// A socket that reports to an [`Activity`].
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Tracked<S> {
    fn note(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.moved();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_quiet_and_for_handlers_to_end() {
        let activity = Arc::new(Activity::default());
        let timeout = Duration::from_secs(60);
        let started = tokio::time::Instant::now();
        let handler = activity.handling();
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.idle(timeout).await })
        };
        // A handler computing for five minutes without I/O keeps the connection.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!watch.is_finished());
        drop(handler);
        watch.await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(360), "{waited:?}");
        assert!(waited <= Duration::from_secs(376), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_moving_keep_a_connection() {
        let activity = Arc::new(Activity::default());
        let timeout = Duration::from_secs(60);
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.idle(timeout).await })
        };
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            activity.moved();
        }
        assert!(!watch.is_finished());
        tokio::time::sleep(Duration::from_secs(80)).await;
        assert!(watch.is_finished());
    }
}
