//! Checks on what an artifact yields: the bounds of [`super::limits`], and the rules
//! `mender-artifact`'s own reader enforces on payload files, so that rollout never stores
//! an artifact that no Mender device would install.

use std::io;

use serde_json::Value;
use storage::ArtifactMeta;

use super::error::{quote, ArtifactError};
use super::limits::{
    MAX_DEPENDS_LIST_LEN, MAX_DEVICE_TYPES, MAX_DEVICE_TYPE_LEN, MAX_ENTRIES, MAX_FILE_NAME_LEN,
    MAX_KEY_LEN, MAX_METADATA_SIZE, MAX_NAME_LEN, MAX_PAYLOADS, MAX_PAYLOAD_FILES,
    MAX_PAYLOAD_TYPE_LEN, MAX_VALUE_LEN,
};

/// The payload type whose payload is a whole filesystem image: exactly one file.
const ROOTFS_IMAGE: &str = "rootfs-image";

/// What is wrong with `name` as the name of a payload file, if anything.
///
/// Payload files are stored flat, under plain names that a device writes into its own
/// directories, so a name must not lead elsewhere (`../x`, `/etc/shadow`). mender-artifact
/// allows only ASCII letters, digits and `.,_-` (its reader refuses anything else, and
/// `.`/`..` match no manifest entry), and so does rollout.
pub(crate) fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_FILE_NAME_LEN {
        Some("is longer than 255 bytes")
    } else if name == "." || name == ".." {
        Some("is a directory reference")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._,-".contains(&b))
    {
        Some("may hold only ASCII letters, digits and the characters . , _ -")
    } else {
        None
    }
}

/// Checks the name and device types, which header-info gives before any payload is read.
pub(super) fn check_identity(name: &str, device_types: &[String]) -> Result<(), ArtifactError> {
    if name.is_empty() {
        return Err(ArtifactError::malformed("the artifact name is empty"));
    }
    check_len("the artifact name", name, MAX_NAME_LEN)?;
    if device_types.is_empty() || device_types.iter().any(String::is_empty) {
        return Err(ArtifactError::malformed(
            "the artifact must name at least one device type, and none may be empty",
        ));
    }
    check_count("the device type list", device_types.len(), MAX_DEVICE_TYPES)?;
    for device_type in device_types {
        check_len("a device type", device_type, MAX_DEVICE_TYPE_LEN)?;
    }
    Ok(())
}

/// Checks the number of payloads header-info lists, before anything is allocated for them.
pub(super) fn check_payload_count(count: usize) -> Result<(), ArtifactError> {
    check_count("the payload list of header-info", count, MAX_PAYLOADS)
}

/// Checks the number of files seen so far in payload `member`.
pub(super) fn check_file_count(member: &str, count: usize) -> Result<(), ArtifactError> {
    check_count(
        format!("{} (files)", quote(member)),
        count,
        MAX_PAYLOAD_FILES,
    )
}

/// Checks everything about the assembled metadata: the identity, every field's limits,
/// the rules on payloads, and the size of the whole as stored.
pub(super) fn check_meta(meta: &ArtifactMeta) -> Result<(), ArtifactError> {
    check_identity(&meta.name, &meta.device_types_compatible)?;
    check_count("the payload list", meta.updates.len(), MAX_PAYLOADS)?;
    for (index, update) in meta.updates.iter().enumerate() {
        let kind = update.type_info.kind.as_deref().unwrap_or_default();
        check_len(
            format!("the type of payload {index}"),
            kind,
            MAX_PAYLOAD_TYPE_LEN,
        )?;
        let files = update.files.len();
        check_count(format!("payload {index} (files)"), files, MAX_PAYLOAD_FILES)?;
        if kind == ROOTFS_IMAGE && files != 1 {
            return Err(ArtifactError::malformed(format!(
                "payload {index} is a rootfs-image with {files} files; a rootfs-image holds \
                 exactly one"
            )));
        }
    }
    check_count(
        "artifact_provides",
        meta.artifact_provides.len(),
        MAX_ENTRIES,
    )?;
    for (key, value) in &meta.artifact_provides {
        check_len("a key of artifact_provides", key, MAX_KEY_LEN)?;
        check_len(
            format!("artifact_provides.{}", quote(key)),
            value,
            MAX_VALUE_LEN,
        )?;
    }
    check_count("artifact_depends", meta.artifact_depends.len(), MAX_ENTRIES)?;
    for (key, value) in &meta.artifact_depends {
        check_len("a key of artifact_depends", key, MAX_KEY_LEN)?;
        check_depends_value(key, value)?;
    }
    let clears = &meta.clears_artifact_provides;
    check_count("clears_artifact_provides", clears.len(), MAX_ENTRIES)?;
    for clear in clears {
        check_len("an entry of clears_artifact_provides", clear, MAX_KEY_LEN)?;
    }
    check_stored_size(meta)
}

/// A depends value is a string or a list of strings, as mender-artifact requires.
fn check_depends_value(key: &str, value: &Value) -> Result<(), ArtifactError> {
    let what = || format!("artifact_depends.{}", quote(key));
    match value {
        Value::String(s) => check_len(what(), s, MAX_VALUE_LEN),
        Value::Array(items) => {
            check_count(what(), items.len(), MAX_DEPENDS_LIST_LEN)?;
            for item in items {
                match item {
                    Value::String(s) => {
                        check_len(format!("a string in {}", what()), s, MAX_VALUE_LEN)?
                    }
                    _ => return Err(not_strings(&what())),
                }
            }
            Ok(())
        }
        _ => Err(not_strings(&what())),
    }
}

fn not_strings(what: &str) -> ArtifactError {
    ArtifactError::malformed(format!("{what} must be a string or a list of strings"))
}

/// The metadata, serialized as it is stored, may not exceed [`MAX_METADATA_SIZE`].
fn check_stored_size(meta: &ArtifactMeta) -> Result<(), ArtifactError> {
    let mut counter = Counter(0);
    let size = match serde_json::to_writer(&mut counter, meta) {
        Ok(()) => counter.0,
        // Only the counter fails, and only past the limit.
        Err(_) => counter.0.max(MAX_METADATA_SIZE + 1),
    };
    if size > MAX_METADATA_SIZE {
        return Err(ArtifactError::OverLimit {
            what: "the artifact's metadata as stored (JSON)".into(),
            actual: size,
            unit: "bytes",
            limit: MAX_METADATA_SIZE,
        });
    }
    Ok(())
}

/// A writer that only counts, and fails once past [`MAX_METADATA_SIZE`] so that a huge
/// record is not serialized to its end.
struct Counter(u64);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len() as u64);
        if self.0 > MAX_METADATA_SIZE {
            return Err(io::Error::other("metadata over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `value` (described as `what`) may have at most `limit` bytes.
fn check_len(what: impl Into<String>, value: &str, limit: usize) -> Result<(), ArtifactError> {
    if value.len() > limit {
        let what: String = what.into();
        return Err(ArtifactError::over_limit(what, value.len(), "bytes", limit));
    }
    Ok(())
}

/// `what` may have at most `limit` entries.
fn check_count(what: impl Into<String>, count: usize, limit: usize) -> Result<(), ArtifactError> {
    if count > limit {
        let what: String = what.into();
        return Err(ArtifactError::over_limit(what, count, "entries", limit));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_file_names_follow_mender_artifact() {
        for good in ["rootfs.ext4", "a-b_c,d.1", "..x", "x..", &"n".repeat(255)] {
            assert_eq!(file_name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "/etc/shadow",
            "a/b",
            "a\\b",
            "a\0b",
            "a b",
            "é",
            &"n".repeat(256),
        ] {
            assert!(file_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn depends_values_are_strings_or_lists_of_strings() {
        assert!(check_depends_value("k", &Value::from("v")).is_ok());
        assert!(check_depends_value("k", &serde_json::json!(["a", "b"])).is_ok());
        for bad in [
            serde_json::json!(1),
            serde_json::json!({"a": "b"}),
            serde_json::json!(["a", 1]),
        ] {
            let err = check_depends_value("k", &bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "malformed artifact: artifact_depends.k must be a string or a list of strings"
            );
        }
        let long = serde_json::json!(vec!["x"; MAX_DEPENDS_LIST_LEN + 1]);
        assert!(matches!(
            check_depends_value("k", &long),
            Err(ArtifactError::OverLimit { actual: 129, .. })
        ));
    }
}
