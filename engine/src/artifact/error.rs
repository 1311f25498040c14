//! What can go wrong while reading or writing a Mender artifact.

use std::fmt;
use std::io;

use super::limits::{MAX_ERROR_TEXT_LEN, MAX_QUOTED_LEN};

/// Why an artifact was rejected, or could not be written.
///
/// Every message names the member or file at fault, so that the API can hand it to the
/// operator who uploaded the artifact as it is. Every text in it is an [`ErrorText`], so
/// no message can echo a hostile input at length.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The input ended before the artifact did: a member is cut short, a compressed stream
    /// stops early, or the tar end-of-archive marker is missing.
    #[error("truncated artifact: {0}")]
    Truncated(ErrorText),

    /// The `version` member names a format version other than 2 or 3.
    #[error("artifact version {0} is not supported (rollout reads versions 2 and 3)")]
    UnsupportedVersion(u64),

    /// The `version` member names a format other than `mender`.
    #[error("artifact format \"{0}\" is not supported (expected \"mender\")")]
    UnsupportedFormat(ErrorText),

    /// A member or payload file does not hash to what the manifest lists.
    #[error("checksum mismatch for {name}: manifest says {expected}, content is {actual}")]
    ChecksumMismatch {
        /// The manifest name (`version`, `header.tar.gz`, `data/0000/rootfs.ext4`, …).
        name: ErrorText,
        /// The hex sha256 the manifest lists.
        expected: ErrorText,
        /// The hex sha256 of what the artifact holds.
        actual: ErrorText,
    },

    /// A member or payload file that must be checksummed has no manifest line.
    #[error("{0} is not listed in the manifest")]
    NotInManifest(ErrorText),

    /// The manifest lists a file that the artifact does not contain.
    #[error("the manifest lists {0}, but the artifact does not contain it")]
    MissingFromArtifact(ErrorText),

    /// A metadata member is larger than rollout is willing to hold in memory.
    #[error("{name} is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// The member (`manifest`, `header.tar.gz`, `headers/0000/meta-data`, …).
        name: ErrorText,
        /// Its size, or the number of bytes seen before giving up.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A tar stream has more header and extension-record bytes in front of one entry, or
    /// more padding after its last entry, than
    /// [`MAX_TAR_HEADERS_SIZE`](super::limits::MAX_TAR_HEADERS_SIZE).
    #[error(
        "{member} has more than {limit} bytes of tar headers (PAX records, GNU long names) \
         in front of one entry, or of padding after its last entry"
    )]
    TarHeadersTooLarge {
        /// The tar stream (`the artifact`, `header.tar.gz`, `data/0000.tar.gz`).
        member: ErrorText,
        /// The limit.
        limit: u64,
    },

    /// A header field, or the stored metadata as a whole, is over one of the limits in
    /// [`limits`](super::limits).
    #[error("{what} has {actual} {unit}, more than the limit of {limit}")]
    OverLimit {
        /// The field (`the artifact name`, `artifact_provides`, …).
        what: ErrorText,
        /// Its length or count.
        actual: u64,
        /// What is counted: `bytes`, `entries`, `files`, …
        unit: &'static str,
        /// The limit.
        limit: u64,
    },

    /// A JSON member does not parse or does not have the expected shape.
    #[error("invalid JSON in {name}: {reason}")]
    Json {
        /// The member at fault.
        name: ErrorText,
        /// What serde_json found (it may quote the input, hence cut like any input).
        reason: ErrorText,
    },

    /// The artifact breaks the format in some other way: members out of order, an unknown
    /// member, a missing header field, an empty artifact name, …
    #[error("malformed artifact: {0}")]
    Malformed(ErrorText),

    /// Reading the input or writing the output failed.
    ///
    /// Only the text of the underlying error is kept: parsers quote their input in it.
    #[error("cannot {context}: {reason}")]
    Io {
        /// What was being done (`read data/0000.tar.gz`, `write the artifact`, …).
        context: ErrorText,
        /// The underlying error.
        reason: ErrorText,
    },

    /// The [`SingleFileSpec`](super::SingleFileSpec) cannot produce a valid artifact.
    #[error("invalid single-file artifact spec: {0}")]
    InvalidSpec(ErrorText),

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
    pub(crate) fn io(context: impl Into<ErrorText>, source: io::Error) -> Self {
        ArtifactError::Io {
            context: context.into(),
            reason: quote(&source.to_string()).into(),
        }
    }

    /// A malformed-artifact error.
    pub(crate) fn malformed(message: impl Into<ErrorText>) -> Self {
        ArtifactError::Malformed(message.into())
    }

    /// A JSON member `name` that serde_json refused.
    pub(crate) fn json(name: &str, source: &serde_json::Error) -> Self {
        ArtifactError::Json {
            name: quote(name).into(),
            reason: quote(&source.to_string()).into(),
        }
    }

    /// `what` has `actual` `unit`s, more than `limit`.
    pub(crate) fn over_limit(
        what: impl Into<ErrorText>,
        actual: usize,
        unit: &'static str,
        limit: usize,
    ) -> Self {
        ArtifactError::OverLimit {
            what: what.into(),
            actual: actual as u64,
            unit,
            limit: limit as u64,
        }
    }
}

/// Text in an [`ArtifactError`]: at most
/// [`MAX_ERROR_TEXT_LEN`] characters, whatever it was built from. The only way to build
/// one is through [`clip`], so an error cannot carry an input of megabytes into a response
/// body or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorText(String);

impl ErrorText {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ErrorText {
    fn from(text: String) -> Self {
        if text.len() <= MAX_ERROR_TEXT_LEN {
            ErrorText(text)
        } else {
            ErrorText(clip(&text, MAX_ERROR_TEXT_LEN))
        }
    }
}

impl From<&str> for ErrorText {
    fn from(text: &str) -> Self {
        ErrorText(clip(text, MAX_ERROR_TEXT_LEN))
    }
}

impl fmt::Display for ErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ErrorText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ErrorText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `text` with at most `max_chars` characters: a longer one is cut and ends in `…`.
pub(crate) fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep = max_chars.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            let mut clipped = String::with_capacity(end + '…'.len_utf8());
            clipped.push_str(text.get(..end).unwrap_or_default());
            clipped.push('…');
            clipped
        }
    }
}

/// A piece of input (a name, a path) as an error message quotes it: at most
/// [`MAX_QUOTED_LEN`] characters.
pub(crate) fn quote(text: &str) -> String {
    clip(text, MAX_QUOTED_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("ééééé", 3), "éé…");
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("a", 0), "…");
        assert_eq!(quote(&"x".repeat(10_000)).chars().count(), MAX_QUOTED_LEN);
    }

    #[test]
    fn every_error_text_is_bounded_even_when_built_from_a_huge_input() {
        let huge = "n".repeat(1 << 20);
        let err = ArtifactError::NotInManifest(huge.as_str().into());
        assert!(
            err.to_string().len() < MAX_ERROR_TEXT_LEN + 64,
            "{}",
            err.to_string().len()
        );
        let err = ArtifactError::malformed(format!("member {huge} is out of place"));
        assert!(err.to_string().chars().count() <= MAX_ERROR_TEXT_LEN + 32);
        assert!(err.to_string().ends_with('…'));
    }
}
