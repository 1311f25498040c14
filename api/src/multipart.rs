//! Streaming `multipart/form-data` parsing (artifact uploads) with bounded memory and work.
//!
//! [`multer`] does the parsing. On its own it reads everything its source has ready into its
//! buffer before parsing, buffers a preamble or a part's headers until their end arrives,
//! and searches the whole buffer again on every read: a body that never ends its preamble
//! costs memory without bound and time quadratic in its size. [`Form`] therefore hands
//! multer one chunk at a time, and only when multer could not make anything (a part, or a
//! piece of a part's data) of what it already holds; it refuses the body as soon as multer
//! holds more than [`MAX_UNTERMINATED`] bytes that it could not make anything of. So multer
//! never buffers more than that bound and one chunk.
//!
//! A `Form` is a plain function of a boundary and a byte stream, so a fuzz target can drive
//! it:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use api::multipart::Form;
//! let body = "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX--\r\n";
//! let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
//! let mut form = Form::new("XX", chunks);
//! while let Ok(Some(part)) = form.next_part().await {
//!     assert_eq!(part.name, "a");
//!     while let Ok(Some(data)) = form.chunk().await {
//!         assert_eq!(&data[..], b"hello");
//!     }
//! }
//! # });
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};

use crate::server::body::is_body_timeout;
use crate::server::BoxError;

/// Most bytes multer may hold without making a part or data of them: longer preambles and
/// part headers are refused. Real clients send no preamble and part headers of a few
/// hundred bytes.
pub const MAX_UNTERMINATED: usize = 64 * 1024;

/// Why a multipart body was refused.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// The `Content-Type` is not `multipart/form-data` with a boundary.
    #[error("the request must be multipart/form-data with a boundary: {0}")]
    NotMultipart(String),
    /// The preamble or a part's headers went on past [`MAX_UNTERMINATED`] bytes.
    #[error("malformed multipart body: the preamble or a part's headers run past {MAX_UNTERMINATED} bytes")]
    Unterminated,
    /// The client stopped sending the body.
    #[error("{0}")]
    TimedOut(BoxError),
    /// Reading the body failed (the client went away, or its chunked encoding is broken).
    #[error("reading the request body failed: {0}")]
    Body(BoxError),
    /// The body is not valid multipart.
    #[error("malformed multipart body: {0}")]
    Malformed(multer::Error),
}

impl MultipartError {
    fn from_multer(e: multer::Error) -> Self {
        match e {
            multer::Error::StreamReadFailed(source) => match source.downcast::<Refusal>() {
                Ok(refusal) => match *refusal {
                    Refusal::Unterminated => MultipartError::Unterminated,
                    Refusal::Body(e) if is_body_timeout(&*e) => MultipartError::TimedOut(e),
                    Refusal::Body(e) => MultipartError::Body(e),
                },
                Err(other) => MultipartError::Body(other),
            },
            other => MultipartError::Malformed(other),
        }
    }

    /// As an I/O error, for consumers of [`Form::part_stream`]; a timeout keeps its kind.
    fn into_io(self) -> std::io::Error {
        let kind = match self {
            MultipartError::TimedOut(_) => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self)
    }
}

/// The headers of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead {
    /// The form field's name (empty if the part has none).
    pub name: String,
    /// The file name, for file parts.
    pub filename: Option<String>,
}

/// A multipart body being read part by part.
pub struct Form {
    inner: multer::Multipart<'static>,
    /// The part being read, if any.
    current: Option<multer::Field<'static>>,
    meter: Arc<Meter>,
}

/// What [`Form`] and its [`Feed`] share.
#[derive(Debug, Default)]
struct Meter {
    /// Bytes fed to multer since it last made a part or data: all of them are in its
    /// buffer, unparsed.
    unparsed: AtomicUsize,
    /// Set when the form asks multer for something: multer must first try with what it
    /// holds, and is fed only if that makes nothing.
    try_buffer_first: AtomicBool,
}

impl Form {
    /// Read `body` as a form whose parts are separated by `boundary`.
    pub fn new<S, E>(boundary: impl Into<String>, body: S) -> Form
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let meter = Arc::new(Meter::default());
        let feed = Feed {
            inner: Box::pin(body.map_err(Into::into)),
            meter: meter.clone(),
            yields_due: 0,
        };
        Form {
            inner: multer::Multipart::new(feed, boundary),
            current: None,
            meter,
        }
    }

    /// Read `body` as the form its `Content-Type` header announces.
    pub fn from_content_type<S, E>(
        content_type: Option<&str>,
        body: S,
    ) -> Result<Form, MultipartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let content_type = content_type
            .ok_or_else(|| MultipartError::NotMultipart("no Content-Type header".into()))?;
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| MultipartError::NotMultipart(e.to_string()))?;
        Ok(Form::new(boundary, body))
    }

    fn asking(&self) {
        self.meter.try_buffer_first.store(true, Ordering::Relaxed);
    }

    fn made_something(&self) {
        self.meter.unparsed.store(0, Ordering::Relaxed);
    }

    /// The next part's headers; `None` after the last part. What is left of the current
    /// part is read and dropped first.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>, MultipartError> {
        while self.chunk().await?.is_some() {}
        self.asking();
        let Some(field) = self
            .inner
            .next_field()
            .await
            .map_err(MultipartError::from_multer)?
        else {
            return Ok(None);
        };
        self.made_something();
        let head = PartHead {
            name: field.name().unwrap_or_default().to_owned(),
            filename: field.file_name().map(str::to_owned),
        };
        self.current = Some(field);
        Ok(Some(head))
    }

    /// The next piece of the current part's data; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        self.asking();
        let Some(field) = &mut self.current else {
            return Ok(None);
        };
        match field.chunk().await.map_err(MultipartError::from_multer)? {
            Some(data) => {
                self.made_something();
                Ok(Some(data))
            }
            None => {
                self.current = None;
                Ok(None)
            }
        }
    }

    /// The current part's data as a stream; it ends at the part's end or after its first
    /// error.
    pub fn part_stream(
        &mut self,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + '_ {
        Box::pin(futures_util::stream::unfold(
            Some(self),
            |form| async move {
                let form = form?;
                match form.chunk().await {
                    Ok(Some(data)) => Some((Ok(data), Some(form))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e.into_io()), None)),
                }
            },
        ))
    }
}

/// Why [`Feed`] stopped feeding multer; travels through multer as its stream error.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the preamble or a part's headers are too long")]
    Unterminated,
    #[error(transparent)]
    Body(BoxError),
}

/// The body as multer reads it: one chunk at a time, and only when multer is stuck.
struct Feed {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>,
    meter: Arc<Meter>,
    /// Reads to answer "nothing yet" before the next chunk. Two after a chunk: multer
    /// reads from its source at the start of every step, and sometimes twice in one step
    /// without parsing in between (while it looks for the first boundary); only after two
    /// answers without data is it sure to have parsed what it was given.
    yields_due: u8,
}

impl Feed {
    /// Answer "nothing yet" and have the task polled again at once, so that multer parses
    /// what it holds before it reads again.
    fn yield_to_parser(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Refusal>>> {
        self.yields_due = self.yields_due.saturating_sub(1);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Stream for Feed {
    type Item = Result<Bytes, Refusal>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.meter.try_buffer_first.swap(false, Ordering::Relaxed) {
            self.yields_due = self.yields_due.max(1);
        }
        if self.yields_due > 0 {
            return self.yield_to_parser(cx);
        }
        if self.meter.unparsed.load(Ordering::Relaxed) > MAX_UNTERMINATED {
            return Poll::Ready(Some(Err(Refusal::Unterminated)));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.yields_due = 2;
                self.meter.unparsed.fetch_add(data.len(), Ordering::Relaxed);
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Refusal::Body(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::server::body::BodyTimeout;

    const BOUNDARY: &str = "b0undary";

    /// `data` in `chunk`-byte pieces, counting the bytes multer pulled in `pulled`.
    fn chunked(
        data: Vec<u8>,
        chunk: usize,
        pulled: Arc<AtomicUsize>,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let pieces: Vec<Bytes> = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
        futures_util::stream::iter(pieces).map(move |piece| {
            pulled.fetch_add(piece.len(), Ordering::Relaxed);
            Ok(piece)
        })
    }

    fn part(name: &str, filename: Option<&str>, data: &[u8]) -> Vec<u8> {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        let mut out =
            format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn end() -> Vec<u8> {
        format!("--{BOUNDARY}--\r\n").into_bytes()
    }

    async fn read_all(form: &mut Form) -> Result<Vec<(PartHead, Vec<u8>)>, MultipartError> {
        let mut parts = Vec::new();
        while let Some(head) = form.next_part().await? {
            let mut data = Vec::new();
            while let Some(piece) = form.chunk().await? {
                data.extend_from_slice(&piece);
            }
            parts.push((head, data));
        }
        Ok(parts)
    }

    fn assert_refused_early(pulled: &AtomicUsize) {
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled <= MAX_UNTERMINATED + 2 * 4096,
            "read {pulled} bytes before refusing"
        );
    }

    #[tokio::test]
    async fn an_unterminated_preamble_is_refused_after_a_bounded_read() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = vec![b'x'; 4 * 1024 * 1024];
        let mut form = Form::new(BOUNDARY, chunked(body, 700, pulled.clone()));
        let err = form.next_part().await.unwrap_err();
        assert!(matches!(err, MultipartError::Unterminated), "{err}");
        assert_refused_early(&pulled);
    }

    #[tokio::test]
    async fn unterminated_part_headers_are_refused_after_a_bounded_read() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let mut body = part("description", None, b"fine");
        body.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"artifact\"\r\nX-Filler: "
            )
            .bytes(),
        );
        body.extend(vec![b'a'; 4 * 1024 * 1024]);
        let mut form = Form::new(BOUNDARY, chunked(body, 4096, pulled.clone()));
        let first = form.next_part().await.unwrap().unwrap();
        assert_eq!(first.name, "description");
        let err = form.next_part().await.unwrap_err();
        assert!(matches!(err, MultipartError::Unterminated), "{err}");
        assert_refused_early(&pulled);
    }

    #[tokio::test]
    async fn large_parts_in_large_chunks_are_read_whole() {
        let file: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = part("description", None, b"text");
        body.extend(part("artifact", Some("a.mender"), &file));
        body.extend(part("after", None, b"tail"));
        body.extend(end());
        for chunk in [1, 700, 64 * 1024, 1024 * 1024] {
            let small = chunk == 1;
            let body = if small {
                body[..200_000].to_vec()
            } else {
                body.clone()
            };
            let mut form = Form::new(BOUNDARY, chunked(body, chunk, Arc::default()));
            let parts = read_all(&mut form).await;
            if small {
                // A truncated body: the parts before the cut are read, then the cut is an error.
                assert!(matches!(parts, Err(MultipartError::Malformed(_))));
                continue;
            }
            let parts = parts.unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(parts.len(), 3, "chunk {chunk}");
            assert_eq!(parts[0].1, b"text");
            assert_eq!(parts[1].0.filename.as_deref(), Some("a.mender"));
            assert!(parts[1].1 == file, "chunk {chunk}: the file part differs");
            assert_eq!(parts[2].1, b"tail");
        }
    }

    #[tokio::test]
    async fn a_part_left_unread_is_skipped_by_next_part() {
        let mut body = part("artifact", Some("a"), &vec![7u8; 1_000_000]);
        body.extend(part("next", None, b"x"));
        body.extend(end());
        let mut form = Form::new(BOUNDARY, chunked(body, 8192, Arc::default()));
        assert_eq!(form.next_part().await.unwrap().unwrap().name, "artifact");
        assert_eq!(form.next_part().await.unwrap().unwrap().name, "next");
        assert_eq!(form.chunk().await.unwrap().unwrap(), "x");
        assert!(form.next_part().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_timeout_is_told_apart_from_other_body_errors() {
        let timeout: BoxError = Box::new(BodyTimeout(Duration::from_secs(1)));
        let stream = futures_util::stream::iter([Err::<Bytes, BoxError>(timeout)]);
        let err = Form::new(BOUNDARY, stream).next_part().await.unwrap_err();
        assert!(matches!(err, MultipartError::TimedOut(_)), "{err}");

        let broken: BoxError = "connection reset".into();
        let stream = futures_util::stream::iter([Err::<Bytes, BoxError>(broken)]);
        let err = Form::new(BOUNDARY, stream).next_part().await.unwrap_err();
        assert!(matches!(err, MultipartError::Body(_)), "{err}");
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        let empty = || futures_util::stream::empty::<Result<Bytes, Infallible>>();
        assert!(Form::from_content_type(Some("multipart/form-data; boundary=x"), empty()).is_ok());
        for bad in [None, Some("multipart/form-data"), Some("application/json")] {
            let err = Form::from_content_type(bad, empty()).err().unwrap();
            assert!(matches!(err, MultipartError::NotMultipart(_)), "{bad:?}");
        }
    }
}
