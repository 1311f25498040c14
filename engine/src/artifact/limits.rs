//! How large an uploaded artifact's parts may be, all in one place.
//!
//! An artifact is untrusted input that the server parses in memory and then stores and
//! lists. Without bounds, a small upload can ask for gigabytes: a tar extension record
//! declaring a huge size, a compressed stream that inflates without end, or an artifact
//! name of megabytes that every `GET /artifacts` repeats. Each limit is far above what
//! `mender-artifact` writes for real updates; beyond it the upload is refused with 400.
//!
//! Payload *content* has no size limit here: it is hashed while it streams by and never
//! held, so only the upload size limit bounds it.

/// The largest `version`, `manifest` or `manifest-augment` member, and the largest file
/// in a header tar (`header-info`, `headers/NNNN/type-info`, `headers/NNNN/meta-data`,
/// `headers/NNNN/files`) — each is parsed in memory. Real ones are a few hundred bytes.
pub const MAX_MEMBER_SIZE: u64 = 1024 * 1024;

/// The largest `header.tar*` or `header-augment.tar*` member, compressed, and the most its
/// tar may inflate to. Both are held in memory while the header is parsed.
pub const MAX_HEADER_SIZE: u64 = 16 * 1024 * 1024;

/// The most bytes of tar headers and extension records (PAX `x`/`g` records, GNU long
/// names and link names, sparse maps) in front of one tar entry, and the most padding after
/// the last entry of a tar stream. The `tar` crate reads extension records whole, so this
/// is what bounds that allocation; real ones are a few hundred bytes.
pub const MAX_TAR_HEADERS_SIZE: u64 = 64 * 1024;

/// The most memory an xz stream may ask for to be decompressed (liblzma's `memlimit`).
/// `mender-artifact --compression lzma` writes xz level 9, which needs 65 MiB.
pub const MAX_XZ_MEMORY: u64 = 80 * 1024 * 1024;

/// The largest zstd window, as a power of two: 2^26 = 64 MiB. The window is what a zstd
/// decoder allocates; `mender-artifact` writes windows of at most 8 MiB.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 26;

/// The longest artifact name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// The longest device type, in bytes.
pub const MAX_DEVICE_TYPE_LEN: usize = 256;

/// The most device types an artifact may name.
pub const MAX_DEVICE_TYPES: usize = 128;

/// The most payloads (`data/NNNN.tar*` members) an artifact may have.
pub const MAX_PAYLOADS: usize = 64;

/// The longest payload type (`rootfs-image`, `single-file`, …), in bytes.
pub const MAX_PAYLOAD_TYPE_LEN: usize = 256;

/// The most files one payload may hold.
pub const MAX_PAYLOAD_FILES: usize = 1024;

/// The longest payload file name, in bytes: a device stores the file under this name, and
/// Linux file names end at 255 bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// The most entries in the merged `artifact_provides`, in the merged `artifact_depends`,
/// and in `clears_artifact_provides`, each.
pub const MAX_ENTRIES: usize = 128;

/// The longest key of `artifact_provides` or `artifact_depends`, and the longest pattern
/// in `clears_artifact_provides`, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The longest value of `artifact_provides`, and the longest string in a value of
/// `artifact_depends`, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;

/// The most strings in one list-valued `artifact_depends` entry (`device_type`,
/// `artifact_name`, …).
pub const MAX_DEPENDS_LIST_LEN: usize = 128;

/// The largest metadata rollout stores for one artifact (name, device types, provides,
/// depends, clears, meta-data and file lists), measured as the JSON it is stored and
/// listed as. The per-field limits alone would still allow tens of megabytes, which every
/// `GET /artifacts` would repeat.
pub const MAX_METADATA_SIZE: u64 = 1024 * 1024;

/// The most characters of one piece of input (a name, a path, a parser's complaint) that
/// an error message quotes; longer ones are cut and end in `…`.
pub const MAX_QUOTED_LEN: usize = 256;

/// The most characters of any text in an [`ArtifactError`](super::ArtifactError): the
/// backstop for a message that quotes input without going through [`MAX_QUOTED_LEN`].
pub const MAX_ERROR_TEXT_LEN: usize = 1024;
