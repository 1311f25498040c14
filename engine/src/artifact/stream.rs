//! Reading untrusted tar streams with bounded memory: a reader that counts what goes by,
//! tells a cut input from a corrupt one, and fences the tar parser in.
//!
//! The `tar` crate reads every extension record (PAX `x`/`g`, GNU long names, sparse maps)
//! whole into memory, whatever size its header declares, before it hands out the entry
//! the record describes. Rather than parsing those records by hand, each tar stream is read
//! through a [`Tracked`] reader with a *fence*: once an entry is handed out, the parser may
//! read that entry's content and padding, and then at most
//! [`MAX_TAR_HEADERS_SIZE`] bytes of headers for the next entry. A record declaring
//! gigabytes fails at the fence instead of being buffered, while long names and PAX
//! records of real archives (and the PAX `size` of payloads over 8 GiB, which Go writes)
//! keep working. The same fence bounds what a compressed stream may hold after the end of
//! its tar archive.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::error::{quote, ArtifactError};
use super::limits::MAX_TAR_HEADERS_SIZE;

/// The tar block size: members are padded to it, and the archive ends with two zero blocks.
pub(super) const BLOCK: u64 = 512;

/// How much of a small member's declared size is allocated up front; the rest grows as
/// bytes actually arrive, so a declared size alone cannot make the reader allocate.
const INITIAL_CAPACITY: u64 = 64 * 1024;

/// What a [`Tracked`] reader has seen, shared with whoever needs to know after the reader
/// has been handed to a decoder or a tar parser.
#[derive(Debug, Default)]
pub(super) struct ReadStats {
    /// Bytes read so far.
    pub bytes: Cell<u64>,
    /// The inner reader reported end of input.
    pub eof: Cell<bool>,
    /// The inner reader failed (as opposed to the data being bad).
    pub failed: Cell<bool>,
    /// More than the reader's limit was read.
    pub over_limit: Cell<bool>,
    /// While set, reading past this position fails (see the module doc).
    fence: Cell<Option<u64>>,
    /// A read hit the fence.
    pub fenced: Cell<bool>,
}

impl ReadStats {
    /// Stats whose fence lets a tar parser read the headers of the first entry.
    pub fn fenced() -> Rc<Self> {
        let stats = ReadStats::default();
        stats.fence.set(Some(MAX_TAR_HEADERS_SIZE));
        Rc::new(stats)
    }

    /// Moves the fence past `entry`: its content and padding may be read, then at most
    /// [`MAX_TAR_HEADERS_SIZE`] more bytes. Returns where the entry's padding ends.
    pub fn fence_after<R: Read>(&self, entry: &tar::Entry<'_, R>) -> u64 {
        let end = entry_end(entry);
        self.fence
            .set(Some(end.saturating_add(MAX_TAR_HEADERS_SIZE)));
        end
    }

    /// Lifts the fence, for reads that stream without buffering.
    pub fn unfence(&self) {
        self.fence.set(None);
    }
}

/// Where `entry`'s content, padded to a whole block, ends in its tar stream.
fn entry_end<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    entry
        .raw_file_position()
        .saturating_add(entry.size())
        .checked_next_multiple_of(BLOCK)
        .unwrap_or(u64::MAX)
}

/// A reader that counts, notices end of input and failures, and refuses to yield more
/// than an optional limit or past the fence of its [`ReadStats`]. The tar and
/// decompression crates swallow those distinctions (a cut tar member just reads short), so
/// this is how errors get their right name.
pub(super) struct Tracked<R> {
    inner: R,
    stats: Rc<ReadStats>,
    limit: Option<u64>,
}

impl<R: Read> Tracked<R> {
    /// Wraps `inner`, recording into `stats`; reading past `limit` bytes fails.
    pub fn new(inner: R, stats: Rc<ReadStats>, limit: Option<u64>) -> Self {
        Tracked {
            inner,
            stats,
            limit,
        }
    }

    /// The position past which a read fails: the nearer of the limit and the fence.
    fn bound(&self) -> Option<u64> {
        match (self.limit, self.stats.fence.get()) {
            (Some(limit), Some(fence)) => Some(limit.min(fence)),
            (limit, fence) => limit.or(fence),
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buf = match self.bound() {
            // Ask for at most one byte past the bound: enough to tell "exactly at the
            // bound" from "over it".
            Some(bound) => {
                let room = bound
                    .saturating_add(1)
                    .saturating_sub(self.stats.bytes.get());
                let len = usize::try_from(room).map_or(buf.len(), |room| buf.len().min(room));
                &mut buf[..len]
            }
            None => buf,
        };
        let n = match self.inner.read(buf) {
            // A reader claiming more than it was given is broken; take it at its buffer.
            Ok(n) => n.min(buf.len()),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.stats.failed.set(true);
                }
                return Err(e);
            }
        };
        if n == 0 && !buf.is_empty() {
            self.stats.eof.set(true);
        }
        let total = self.stats.bytes.get().saturating_add(n as u64);
        self.stats.bytes.set(total);
        if self.limit.is_some_and(|limit| total > limit) {
            self.stats.over_limit.set(true);
            return Err(io::Error::other("size limit exceeded"));
        }
        if self.stats.fence.get().is_some_and(|fence| total > fence) {
            self.stats.fenced.set(true);
            return Err(io::Error::other("tar headers too large"));
        }
        Ok(n)
    }
}

/// Names an I/O error met while trying to `what` (`read data/0000.tar.gz`): a failure of
/// the input itself, a truncation if the input ended before the archive did, and
/// otherwise a corrupt stream.
pub(super) fn classify(what: &str, error: io::Error, input: &ReadStats) -> ArtifactError {
    if input.failed.get() {
        ArtifactError::io(what, error)
    } else if input.eof.get() || error.kind() == io::ErrorKind::UnexpectedEof {
        let error = quote(&error.to_string());
        ArtifactError::Truncated(format!("the input ends early (cannot {what}: {error})").into())
    } else {
        let error = quote(&error.to_string());
        ArtifactError::malformed(format!("cannot {what}: {error}"))
    }
}

/// Like [`classify`], but first checks whether the tar stream `member`, read through
/// `tar`, hit its fence.
pub(super) fn classify_tar(
    member: &str,
    what: &str,
    error: io::Error,
    tar: &ReadStats,
    input: &ReadStats,
) -> ArtifactError {
    if tar.fenced.get() {
        ArtifactError::TarHeadersTooLarge {
            member: quote(member).into(),
            limit: MAX_TAR_HEADERS_SIZE,
        }
    } else {
        classify(what, error, input)
    }
}

/// Reads a whole metadata member `name` of `size` bytes, refusing anything over `limit`
/// before reading it.
pub(super) fn read_small(
    reader: impl Read,
    size: u64,
    name: &str,
    limit: u64,
    on_error: impl Fn(io::Error) -> ArtifactError,
) -> Result<Vec<u8>, ArtifactError> {
    if size > limit {
        return Err(ArtifactError::TooLarge {
            name: quote(name).into(),
            size,
            limit,
        });
    }
    // `size.min(INITIAL_CAPACITY)` is at most 64 KiB, so the cast cannot truncate.
    let mut bytes = Vec::with_capacity(size.min(INITIAL_CAPACITY) as usize);
    reader
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(on_error)?;
    if (bytes.len() as u64) < size {
        return Err(ArtifactError::Truncated(
            format!("{} has {} of its {size} bytes", quote(name), bytes.len()).into(),
        ));
    }
    Ok(bytes)
}

/// The name of a tar entry as UTF-8.
pub(super) fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArtifactError> {
    String::from_utf8(entry.path_bytes().into_owned())
        .map_err(|_| ArtifactError::malformed("a tar entry name is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_reader_enforces_its_limit() {
        let stats = Rc::new(ReadStats::default());
        let mut exact = Tracked::new(&[1u8; 10][..], Rc::clone(&stats), Some(10));
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert!(stats.eof.get());

        let stats = Rc::new(ReadStats::default());
        let mut over = Tracked::new(&[1u8; 11][..], Rc::clone(&stats), Some(10));
        assert!(over.read_to_end(&mut Vec::new()).is_err());
        assert!(stats.over_limit.get());
    }

    #[test]
    fn tracked_reader_stops_at_the_fence_until_it_is_lifted() {
        let input = vec![0u8; MAX_TAR_HEADERS_SIZE as usize + 1];
        let stats = ReadStats::fenced();
        let mut reader = Tracked::new(&input[..], Rc::clone(&stats), None);
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
        assert!(stats.fenced.get());
        assert_eq!(stats.bytes.get(), MAX_TAR_HEADERS_SIZE + 1);

        let stats = ReadStats::fenced();
        stats.unfence();
        let mut reader = Tracked::new(&input[..], Rc::clone(&stats), None);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), input.len());
    }
}
