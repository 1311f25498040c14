//! The manifest: the sha256 of every member and payload file, as `sha256sum` prints them.

use std::collections::BTreeMap;

use super::error::{quote, ArtifactError};

/// The manifest (and `manifest-augment`): expected checksums, and which ones were met.
#[derive(Debug, Default)]
pub(super) struct Manifest {
    /// Manifest name (`data/0000/rootfs.ext4`) → (hex sha256, seen in the artifact).
    entries: BTreeMap<String, (String, bool)>,
}

impl Manifest {
    /// Adds the lines of `text`, the member `member`: `<64 hex digits><whitespace><name>`.
    pub fn add(&mut self, text: &[u8], member: &str) -> Result<(), ArtifactError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| ArtifactError::malformed(format!("{member} is not valid UTF-8")))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad_line =
                || ArtifactError::malformed(format!("bad line in {member}: {:?}", quote(line)));
            let (checksum, name) = line.split_once(char::is_whitespace).ok_or_else(bad_line)?;
            let name = name.trim_start();
            if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad_line());
            }
            let entry = (checksum.to_ascii_lowercase(), false);
            if self.entries.insert(name.to_owned(), entry).is_some() {
                return Err(ArtifactError::malformed(format!(
                    "the manifest lists {} twice",
                    quote(name)
                )));
            }
        }
        Ok(())
    }

    /// Whether `name` has a manifest line.
    pub fn lists(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Checks that `name` hashes to `actual` and marks it as seen.
    pub fn check(&mut self, name: &str, actual: &str) -> Result<(), ArtifactError> {
        let (expected, seen) = self
            .entries
            .get_mut(name)
            .ok_or_else(|| ArtifactError::NotInManifest(quote(name).into()))?;
        if *seen {
            return Err(ArtifactError::malformed(format!(
                "{} occurs twice in the artifact",
                quote(name)
            )));
        }
        *seen = true;
        if expected != actual {
            return Err(ArtifactError::ChecksumMismatch {
                name: quote(name).into(),
                expected: expected.as_str().into(),
                actual: actual.into(),
            });
        }
        Ok(())
    }

    /// Fails on the first manifest line that matched nothing.
    pub fn all_seen(&self) -> Result<(), ArtifactError> {
        match self.entries.iter().find(|(_, (_, seen))| !seen) {
            Some((name, _)) => Err(ArtifactError::MissingFromArtifact(quote(name).into())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "96bcd965947569404798bcbdb614f103db5a004eb6e364cfc162c146890ea35b";

    #[test]
    fn manifest_lines_parse_and_check() {
        let mut manifest = Manifest::default();
        let text = format!("{SUM}  version\n{}  data/0000/a b\n\n", "AB".repeat(32));
        manifest.add(text.as_bytes(), "manifest").unwrap();
        manifest.check("version", SUM).unwrap();
        assert!(manifest.lists("data/0000/a b"));
        assert!(matches!(
            manifest.all_seen(),
            Err(ArtifactError::MissingFromArtifact(name)) if name == "data/0000/a b"
        ));
        let err = manifest.check("data/0000/a b", SUM).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "checksum mismatch for data/0000/a b: manifest says {}, content is {SUM}",
                "ab".repeat(32)
            )
        );
        assert!(matches!(
            manifest.check("other", SUM),
            Err(ArtifactError::NotInManifest(_))
        ));
    }

    #[test]
    fn manifest_rejects_bad_lines_and_duplicates() {
        let mut manifest = Manifest::default();
        assert!(manifest.add(b"xyz  version\n", "manifest").is_err());
        assert!(manifest.add(SUM.as_bytes(), "manifest").is_err());
        let twice = format!("{SUM}  version\n{SUM}  version\n");
        assert!(Manifest::default()
            .add(twice.as_bytes(), "manifest")
            .is_err());
    }
}
