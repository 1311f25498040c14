//! Mender artifacts: reading an uploaded artifact to check it and extract its metadata, and
//! writing `single-file` artifacts on the server.
//!
//! A Mender artifact (format versions 2 and 3) is an uncompressed tar whose members come in
//! a fixed order:
//!
//! 1. `version`: `{"format":"mender","version":N}`;
//! 2. `manifest`: one `sha256  name` line per payload file (`data/0000/rootfs.ext4`) and per
//!    member (`header.tar.gz`, `version`); then optionally `manifest.sig` (signed artifacts),
//!    and `manifest-augment` (augmented artifacts);
//! 3. `header.tar[.gz|.xz|.zst]`: `header-info`, state scripts under `scripts/`, and for each
//!    payload `headers/NNNN/type-info` and `headers/NNNN/meta-data` (v2 adds
//!    `headers/NNNN/files`); then optionally `header-augment.tar*`;
//! 4. one `data/NNNN.tar[.gz|.xz|.zst]` per payload, holding the payload files flat.
//!
//! [`read_artifact`] makes one pass over that stream, hashing payloads as they go by, so an
//! upload of several gigabytes needs no more memory than a small one, and everything it
//! does hold (metadata, tar extension records, decompressor state) is bounded by
//! [`limits`], so that a hostile upload cannot make it allocate either. [`write_single_file_artifact`]
//! writes the version 3 module-image artifact that `mender-artifact write module-image -T
//! single-file` would.
//!
//! Signatures are not verified: [`ArtifactMeta::signed`](storage::ArtifactMeta::signed) only
//! says whether `manifest.sig` is present. Devices verify signatures themselves.

mod error;
mod header;
pub mod limits;
mod manifest;
mod reader;
mod rules;
mod stream;
mod writer;

use std::io::{self, Read};

pub use error::{ArtifactError, ErrorText};
pub use reader::read_artifact;
pub use writer::{write_single_file_artifact, SingleFileSpec};

/// How a `header.tar*` or `data/NNNN.tar*` member is compressed, as its name suffix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    /// `.tar`
    None,
    /// `.tar.gz`
    Gzip,
    /// `.tar.xz` (what `mender-artifact --compression lzma` writes)
    Xz,
    /// `.tar.zst`
    Zstd,
}

impl Compression {
    /// The compression of member `name` if it is `stem` followed by a known suffix
    /// (`header.tar` + `.gz`), `None` if it is not.
    fn of_member(name: &str, stem: &str) -> Option<Self> {
        match name.strip_prefix(stem)? {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// A reader that decompresses `raw`, with bounded memory.
    ///
    /// Multi-stream variants are used because Go's readers, which mender-artifact uses,
    /// accept concatenated gzip and xz streams too. xz and zstd streams say in their header
    /// how much memory decoding needs (the dictionary, the window); a stream asking for
    /// more than [`limits::MAX_XZ_MEMORY`] or 2^[`limits::MAX_ZSTD_WINDOW_LOG`] bytes is
    /// refused instead of allocated.
    fn decoder<'a, R: Read + 'a>(self, raw: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Xz => {
                let stream = xz2::stream::Stream::new_auto_decoder(
                    limits::MAX_XZ_MEMORY,
                    xz2::stream::CONCATENATED,
                )?;
                Box::new(XzMemoryLimit(xz2::read::XzDecoder::new_stream(raw, stream)))
            }
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(raw)?;
                decoder.window_log_max(limits::MAX_ZSTD_WINDOW_LOG)?;
                Box::new(decoder)
            }
        })
    }
}

/// An xz decoder whose "memory limit reached" says which limit, so that the uploader
/// learns why a valid-looking stream is refused.
struct XzMemoryLimit<R: Read>(xz2::read::XzDecoder<R>);

impl<R: Read> Read for XzMemoryLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            let over = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<xz2::stream::Error>())
                .is_some_and(|inner| matches!(inner, xz2::stream::Error::MemLimit));
            if over {
                io::Error::other(format!(
                    "the xz stream needs more than {} MiB of memory to decompress",
                    limits::MAX_XZ_MEMORY / (1024 * 1024)
                ))
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_decided_by_suffix() {
        assert_eq!(
            Compression::of_member("header.tar", "header.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::of_member("header.tar.gz", "header.tar"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_member("data/0001.tar.xz", "data/0001.tar"),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::of_member("header.tar.zst", "header.tar"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::of_member("header.tar.bz2", "header.tar"), None);
        assert_eq!(Compression::of_member("header.tarx", "header.tar"), None);
        assert_eq!(Compression::of_member("manifest", "header.tar"), None);
    }
}
