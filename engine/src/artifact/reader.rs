//! Reading an artifact: one pass over the outer tar, checking member order, the manifest's
//! checksums and the end of the archive, and handing the header to [`super::header`].

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::rc::Rc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use storage::{ArtifactMeta, UpdateFile};
use time::OffsetDateTime;

use super::error::{quote, ArtifactError};
use super::header::{self, Header, HeaderPart};
use super::limits::{MAX_HEADER_SIZE, MAX_MEMBER_SIZE};
use super::manifest::Manifest;
use super::rules;
use super::stream::{classify, classify_tar, entry_name, read_small, ReadStats, Tracked, BLOCK};
use super::Compression;

/// What error messages call the outer tar stream.
const OUTER: &str = "the artifact";

/// Reads a Mender artifact (format version 2 or 3), checks it, and returns its metadata.
///
/// The input is read once, front to back, and never held whole: payload files are hashed
/// while they stream by, and only metadata is buffered, each piece within the bounds of
/// [`super::limits`]. No input makes it panic or allocate beyond those bounds, whatever
/// sizes its headers declare. The artifact is rejected when:
///
/// - `version` is not `{"format":"mender","version":2|3}`;
/// - members are missing, out of order, unknown, or follow the last payload;
/// - `version`, `header.tar*`, or any payload file does not hash to its manifest line, a
///   payload file has no manifest line, or a manifest line matches nothing;
/// - the input ends early: a member, a compressed stream, or the tar end-of-archive
///   marker is cut short;
/// - the header is not the JSON the format describes;
/// - a member, a tar extension record, a header field or the metadata as a whole is over
///   its limit, or a compressed stream needs more memory than allowed;
/// - a payload file name is not a plain name mender-artifact accepts, or a rootfs-image
///   payload does not hold exactly one file.
///
/// `manifest.sig` only sets [`ArtifactMeta::signed`]; the signature is not verified.
/// State scripts in the header are accepted and ignored.
///
/// On success the input has been read to its end; on error, reading stops where the
/// problem was found.
pub fn read_artifact<R: Read>(reader: R) -> Result<ArtifactMeta, ArtifactError> {
    let stats = ReadStats::fenced();
    let mut archive = tar::Archive::new(Tracked::new(reader, Rc::clone(&stats), None));
    let mut state = ReadState::default();
    let mut last_member_end = 0;
    let fail = |what: &str, e| classify_tar(OUTER, what, e, &stats, &stats);
    let entries = archive
        .entries()
        .map_err(|e| fail("read the artifact's tar stream", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail("read the next member's tar header", e))?;
        last_member_end = stats.fence_after(&entry);
        state.member(&mut entry, &stats)?;
    }
    // What follows the archive is checked byte by byte, never buffered.
    stats.unfence();
    check_end_of_archive(archive.into_inner(), last_member_end, &stats)?;
    state.finish()
}

/// Lowercase hex sha256 of `bytes`, as the manifest writes it.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `version` member.
#[derive(Deserialize)]
struct VersionJson {
    format: String,
    version: u64,
}

/// Checks the `version` member and returns the format version.
fn parse_version(bytes: &[u8]) -> Result<u32, ArtifactError> {
    let parsed: VersionJson =
        serde_json::from_slice(bytes).map_err(|e| ArtifactError::json("version", &e))?;
    if parsed.format != "mender" {
        return Err(ArtifactError::UnsupportedFormat(
            quote(&parsed.format).into(),
        ));
    }
    match parsed.version {
        2 => Ok(2),
        3 => Ok(3),
        other => Err(ArtifactError::UnsupportedVersion(other)),
    }
}

/// Where a single pass over the outer tar has got to.
#[derive(Default)]
struct ReadState {
    /// Format version and the sha256 of `version`, checked once the manifest is read.
    version: Option<(u32, String)>,
    manifest: Option<Manifest>,
    signed: bool,
    augmented: bool,
    header: Option<Header>,
    augment: Option<HeaderPart>,
    /// Per payload: the data member's name and its files.
    data: Vec<(String, Vec<UpdateFile>)>,
}

/// The member order, for error messages.
const ORDER: &str = "version, manifest, [manifest.sig], [manifest-augment], header.tar*, \
                     [header-augment.tar*], data/0000.tar*, data/0001.tar*, …";

/// What a member of the outer tar is, by its name.
#[derive(Debug, Clone, Copy)]
enum MemberKind {
    Version,
    Manifest,
    Signature,
    ManifestAugment,
    Header(Compression),
    HeaderAugment(Compression),
    /// The next payload's `data/NNNN.tar*`.
    Data(Compression),
    Unknown,
}

impl MemberKind {
    /// The kind of member `name`, when the next payload member would be number `next_data`.
    fn of(name: &str, next_data: usize) -> Self {
        match name {
            "version" => MemberKind::Version,
            "manifest" => MemberKind::Manifest,
            "manifest.sig" => MemberKind::Signature,
            "manifest-augment" => MemberKind::ManifestAugment,
            _ => {
                if let Some(c) = Compression::of_member(name, "header.tar") {
                    MemberKind::Header(c)
                } else if let Some(c) = Compression::of_member(name, "header-augment.tar") {
                    MemberKind::HeaderAugment(c)
                } else if let Some(c) =
                    Compression::of_member(name, &format!("data/{next_data:04}.tar"))
                {
                    MemberKind::Data(c)
                } else {
                    MemberKind::Unknown
                }
            }
        }
    }
}

impl ReadState {
    /// Handles the next member of the outer tar.
    fn member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        input: &ReadStats,
    ) -> Result<(), ArtifactError> {
        let name = entry_name(entry)?;
        if !entry.header().entry_type().is_file() {
            return Err(ArtifactError::malformed(format!(
                "member {} is not a regular file",
                quote(&name)
            )));
        }
        let kind = MemberKind::of(&name, self.data.len());
        let before_header = self.manifest.is_some() && self.header.is_none();
        let in_order = match kind {
            MemberKind::Version => self.version.is_none(),
            MemberKind::Manifest => self.version.is_some() && self.manifest.is_none(),
            MemberKind::Signature => before_header && !self.signed && !self.augmented,
            MemberKind::ManifestAugment => before_header && !self.augmented && self.is_v3(),
            MemberKind::Header(_) => before_header,
            MemberKind::HeaderAugment(_) => {
                self.augmented && self.header.is_some() && self.augment.is_none()
            }
            // An augmented artifact's payload is checked against both headers.
            MemberKind::Data(_) => {
                self.header.is_some() && (self.augment.is_some() || !self.augmented)
            }
            MemberKind::Unknown => {
                return Err(ArtifactError::malformed(format!(
                    "unexpected member {}; the members must be, in order: {ORDER}",
                    quote(&name)
                )))
            }
        };
        if !in_order {
            return Err(ArtifactError::malformed(format!(
                "member {name} is out of place; the members must be, in order: {ORDER}"
            )));
        }

        let size = entry.size();
        let on_error = |e| classify(&format!("read {name}"), e, input);
        match kind {
            MemberKind::Version => {
                let bytes = read_small(entry, size, &name, MAX_MEMBER_SIZE, on_error)?;
                self.version = Some((parse_version(&bytes)?, sha256_hex(&bytes)));
            }
            MemberKind::Manifest => {
                let bytes = read_small(entry, size, &name, MAX_MEMBER_SIZE, on_error)?;
                let mut manifest = Manifest::default();
                manifest.add(&bytes, &name)?;
                if let Some((_, checksum)) = &self.version {
                    manifest.check("version", checksum)?;
                }
                self.manifest = Some(manifest);
            }
            // Only its presence matters; the tar reader skips the content.
            MemberKind::Signature => self.signed = true,
            MemberKind::ManifestAugment => {
                let bytes = read_small(entry, size, &name, MAX_MEMBER_SIZE, on_error)?;
                if let Some(manifest) = &mut self.manifest {
                    manifest.add(&bytes, &name)?;
                }
                self.augmented = true;
            }
            MemberKind::Header(compression) => {
                let part = self.header_member(entry, &name, compression, input)?;
                let version = self.version.as_ref().map_or(3, |(v, _)| *v);
                self.header = Some(header::validate(part, version, &name)?);
            }
            MemberKind::HeaderAugment(compression) => {
                let part = self.header_member(entry, &name, compression, input)?;
                if let Some(main) = &self.header {
                    header::check_augment(main, &part, &name)?;
                }
                self.augment = Some(part);
            }
            MemberKind::Data(compression) => {
                let index = self.data.len();
                let payloads = self.header.as_ref().map_or(0, Header::payload_count);
                if index >= payloads {
                    return Err(ArtifactError::malformed(format!(
                        "unexpected member {name}: header-info lists {payloads} payload(s)"
                    )));
                }
                let files = self.data_member(entry, &name, index, compression, input)?;
                self.data.push((name, files));
            }
            MemberKind::Unknown => {}
        }
        Ok(())
    }

    fn is_v3(&self) -> bool {
        matches!(self.version, Some((3, _)))
    }

    /// Reads `header.tar*` or `header-augment.tar*`, checks it against the manifest and
    /// parses it.
    fn header_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        compression: Compression,
        input: &ReadStats,
    ) -> Result<HeaderPart, ArtifactError> {
        let size = entry.size();
        let bytes = read_small(entry, size, name, MAX_HEADER_SIZE, |e| {
            classify(&format!("read {name}"), e, input)
        })?;
        if let Some(manifest) = &mut self.manifest {
            manifest.check(name, &sha256_hex(&bytes))?;
        }
        header::parse(&bytes, compression, name)
    }

    /// Streams `data/NNNN.tar*`: hashes each payload file, checks it against the manifest
    /// and returns the files in archive order.
    fn data_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        index: usize,
        compression: Compression,
        input: &ReadStats,
    ) -> Result<Vec<UpdateFile>, ArtifactError> {
        let Some(manifest) = self.manifest.as_mut() else {
            return Err(ArtifactError::malformed(format!(
                "{name} comes before the manifest"
            )));
        };
        let declared = entry.size();
        let raw_stats = Rc::new(ReadStats::default());
        let tar_stats = ReadStats::fenced();
        let what = format!("read {name}");
        let fail = |e| classify_tar(name, &what, e, &tar_stats, input);
        let raw = Tracked::new(&mut *entry, Rc::clone(&raw_stats), None);
        let decoder = compression.decoder(raw).map_err(fail)?;
        let mut payload = tar::Archive::new(Tracked::new(decoder, Rc::clone(&tar_stats), None));
        let mut files = Vec::new();
        let mut names = BTreeSet::new();
        for file in payload.entries().map_err(fail)? {
            let mut file = file.map_err(fail)?;
            tar_stats.fence_after(&file);
            let kind = file.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let file_name = entry_name(&file)?;
            check_payload_file(&file_name, kind, name)?;
            let key = format!("data/{index:04}/{file_name}");
            if !names.insert(file_name.clone()) {
                return Err(ArtifactError::malformed(format!(
                    "{key} occurs twice in {name}"
                )));
            }
            rules::check_file_count(name, names.len())?;
            if !manifest.lists(&key) {
                return Err(ArtifactError::NotInManifest(key.into()));
            }
            let size = file.size();
            let mtime = file.header().mtime().map_err(fail)?;
            let (checksum, seen) = hash_stream(&mut file).map_err(fail)?;
            if seen != size {
                return Err(ArtifactError::Truncated(
                    format!("{key} has {seen} of its {size} bytes").into(),
                ));
            }
            manifest.check(&key, &checksum)?;
            let date = i64::try_from(mtime)
                .ok()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .ok_or_else(|| {
                    ArtifactError::malformed(format!("{key} has an impossible mtime {mtime}"))
                })?;
            files.push(UpdateFile {
                name: file_name,
                checksum,
                size,
                date,
            });
        }
        // Read the compressed stream to its very end: that is where gzip keeps its CRC, and
        // where a cut stream shows. The fence still holds: past the end of the tar archive,
        // a stream may hold padding, not an unbounded bomb.
        let mut decoder = payload.into_inner();
        io::copy(&mut decoder, &mut io::sink()).map_err(fail)?;
        drop(decoder);
        let rest = io::copy(entry, &mut io::sink()).map_err(fail)?;
        let seen = raw_stats.bytes.get().saturating_add(rest);
        if seen < declared {
            return Err(ArtifactError::Truncated(
                format!("{name} has {seen} of its {declared} bytes").into(),
            ));
        }
        Ok(files)
    }

    /// Checks what can only be checked at the end and assembles the metadata.
    fn finish(self) -> Result<ArtifactMeta, ArtifactError> {
        let missing = |what: &str| ArtifactError::malformed(format!("the artifact has no {what}"));
        let (version, _) = self.version.ok_or_else(|| missing("version member"))?;
        let manifest = self.manifest.ok_or_else(|| missing("manifest"))?;
        let header = self.header.ok_or_else(|| missing("header.tar member"))?;
        if self.augmented && self.augment.is_none() {
            return Err(missing(
                "header-augment.tar member, though it has manifest-augment",
            ));
        }
        let payloads = header.payload_count();
        if self.data.len() != payloads {
            let next = self.data.len();
            return Err(ArtifactError::malformed(format!(
                "the artifact has no data/{next:04}.tar* member, but header-info lists \
                 {payloads} payload(s)"
            )));
        }
        manifest.all_seen()?;
        let meta = header::assemble(version, header, self.augment, self.data, self.signed)?;
        rules::check_meta(&meta)?;
        Ok(meta)
    }
}

/// Checks that a payload file of member `member` is a regular file under a plain name.
fn check_payload_file(
    file_name: &str,
    kind: tar::EntryType,
    member: &str,
) -> Result<(), ArtifactError> {
    if let Some(problem) = rules::file_name_problem(file_name) {
        return Err(ArtifactError::malformed(format!(
            "the payload file name {:?} in {member} {problem}",
            quote(file_name)
        )));
    }
    if !kind.is_file() {
        return Err(ArtifactError::malformed(format!(
            "data file {file_name} in {member} is not a regular file"
        )));
    }
    Ok(())
}

/// Hashes everything `reader` yields; returns the hex sha256 and the byte count.
fn hash_stream(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Checks that the archive ends with the two zero blocks of a complete tar and that
/// nothing but zero padding follows them.
///
/// The tar reader stops at the first zero block *or* at end of input, so a file cut right
/// after its last member would otherwise pass for complete.
fn check_end_of_archive<R: Read>(
    mut input: Tracked<R>,
    last_member_end: u64,
    stats: &ReadStats,
) -> Result<(), ArtifactError> {
    if stats.bytes.get() == 0 {
        return Err(ArtifactError::malformed("the artifact is empty"));
    }
    // Whatever the tar reader consumed past the last member was a zero block.
    let mut trailing = stats.bytes.get().saturating_sub(last_member_end);
    let mut buf = [0; 8192];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify("read the end of the artifact", e, stats)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(ArtifactError::malformed(
                "unexpected data after the end of the tar archive",
            ));
        }
        trailing += n as u64;
    }
    if trailing < 2 * BLOCK {
        return Err(ArtifactError::Truncated(
            "the input ends before the tar end-of-archive marker".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_member_is_checked() {
        assert_eq!(
            parse_version(br#"{"format":"mender","version":3}"#).unwrap(),
            3
        );
        assert_eq!(
            parse_version(br#"{"format":"mender","version":2}"#).unwrap(),
            2
        );
        let err = parse_version(br#"{"format":"mender","version":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "artifact version 1 is not supported (rollout reads versions 2 and 3)"
        );
        assert!(matches!(
            parse_version(br#"{"format":"other","version":3}"#),
            Err(ArtifactError::UnsupportedFormat(f)) if f == "other"
        ));
        assert!(matches!(
            parse_version(b"not json"),
            Err(ArtifactError::Json { .. })
        ));
    }
}
