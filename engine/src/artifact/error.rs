//! What can go wrong while reading or writing a Mender artifact.

use std::io;

/// Why an artifact was rejected, or could not be written.
///
/// Every message names the member or file at fault, so that the API can hand it to the
/// operator who uploaded the artifact as it is.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The input ended before the artifact did: a member is cut short, a compressed stream
    /// stops early, or the tar end-of-archive marker is missing.
    #[error("truncated artifact: {0}")]
    Truncated(String),

    /// The `version` member names a format version other than 2 or 3.
    #[error("artifact version {0} is not supported (rollout reads versions 2 and 3)")]
    UnsupportedVersion(u64),

    /// The `version` member names a format other than `mender`.
    #[error("artifact format \"{0}\" is not supported (expected \"mender\")")]
    UnsupportedFormat(String),

    /// A member or payload file does not hash to what the manifest lists.
    #[error("checksum mismatch for {name}: manifest says {expected}, content is {actual}")]
    ChecksumMismatch {
        /// The manifest name (`version`, `header.tar.gz`, `data/0000/rootfs.ext4`, …).
        name: String,
        /// The hex sha256 the manifest lists.
        expected: String,
        /// The hex sha256 of what the artifact holds.
        actual: String,
    },

    /// A member or payload file that must be checksummed has no manifest line.
    #[error("{0} is not listed in the manifest")]
    NotInManifest(String),

    /// The manifest lists a file that the artifact does not contain.
    #[error("the manifest lists {0}, but the artifact does not contain it")]
    MissingFromArtifact(String),

    /// A metadata member is larger than rollout is willing to hold in memory.
    #[error("{name} is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// The member (`manifest`, `header.tar.gz`, `headers/0000/meta-data`, …).
        name: String,
        /// Its size, or the number of bytes seen before giving up.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A JSON member does not parse or does not have the expected shape.
    #[error("invalid JSON in {name}: {source}")]
    Json {
        /// The member at fault.
        name: String,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },

    /// The artifact breaks the format in some other way: members out of order, an unknown
    /// member, a missing header field, an empty artifact name, …
    #[error("malformed artifact: {0}")]
    Malformed(String),

    /// Reading the input or writing the output failed, or a tar or compressed stream is
    /// corrupt.
    #[error("cannot {context}: {source}")]
    Io {
        /// What was being done (`read data/0000.tar.gz`, `write the artifact`, …).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The [`SingleFileSpec`](super::SingleFileSpec) cannot produce a valid artifact.
    #[error("invalid single-file artifact spec: {0}")]
    InvalidSpec(String),

    /// The file given to the writer does not have the size the caller announced.
    #[error("the payload file has {actual} bytes, but its size was given as {expected}")]
    FileSizeMismatch {
        /// The `file_size` the caller passed.
        expected: u64,
        /// What the reader yielded (at least this many bytes).
        actual: u64,
    },
}

impl ArtifactError {
    /// An I/O error with what was being done when it happened.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ArtifactError::Io {
            context: context.into(),
            source,
        }
    }

    /// A malformed-artifact error.
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        ArtifactError::Malformed(message.into())
    }
}
