//! A request body that fails when the client stops sending it.
//!
//! A client that sends the headers of an upload and then a few bytes holds a connection
//! and, while its handler waits, whatever that handler holds (an upload slot, a parser
//! thread). The body read timeout bounds how long any handler waits for the next piece.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;

/// The error a [`TimedBody`] ends with when no data arrived for its timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of the request body for {} s", .0.as_secs_f32())]
pub struct BodyTimeout(pub Duration);

/// Whether `err` or one of its sources is a [`BodyTimeout`] (a body error reaches handlers
/// wrapped in warp's and multer's errors).
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body whose every frame must arrive within `timeout` of being asked for. The
/// clock runs only while the handler waits for the client, not while it processes what it
/// has.
pub struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed when a read finds nothing, disarmed when data comes. Kept across reads so
    /// that waiting costs no allocation per frame.
    deadline: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl TimedBody {
    /// Wrap `inner`.
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            deadline: None,
            waiting: false,
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = Instant::now() + self.timeout;
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if !self.waiting {
            sleep.as_mut().reset(at);
            self.waiting = true;
        }
        sleep.as_mut().poll(cx)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|r| r.map_err(BoxError::from)))
            }
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
