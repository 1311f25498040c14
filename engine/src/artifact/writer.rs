//! Writing a version 3 module-image artifact for Mender's `single-file` update module.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::error::{quote, ArtifactError};

/// The payload type, which is also the name of the update module on the device.
const PAYLOAD_TYPE: &str = "single-file";
/// The `version` member of every artifact this module writes.
const VERSION: &[u8] = br#"{"format":"mender","version":3}"#;
/// Mode of the payload files inside `data/0000.tar.gz`, as mender-artifact writes them.
const PAYLOAD_MODE: u32 = 0o644;
/// Mode of the members of the outer tar and of the header tar, as mender-artifact writes them.
const MEMBER_MODE: u32 = 0o600;
/// Names of the instruction files the update module reads; the payload file may not
/// take one of them.
const INSTRUCTION_FILES: [&str; 3] = ["dest_dir", "filename", "permissions"];

/// What goes into a `single-file` artifact: the equivalent of the options of Mender's
/// `single-file-artifact-gen` (`-n`, `-t`, `-d`, `--software-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleFileSpec {
    /// `artifact_name`; also the default software version.
    pub artifact_name: String,
    /// Device types the artifact installs on (at least one).
    pub device_types: Vec<String>,
    /// Absolute directory on the device where the file is installed.
    pub dest_dir: String,
    /// Name of the file on the device (no `/`), and of the payload file.
    pub filename: String,
    /// Octal mode the module gives the installed file; `644` when `None`.
    pub permissions: Option<String>,
    /// The `NAME` in the provides key `<filesystem>.NAME.version`; `single-file` when `None`.
    pub software_name: Option<String>,
    /// The value of that provides key; the artifact name when `None`.
    pub software_version: Option<String>,
    /// The `<filesystem>` in that key; `rootfs-image` when `None`.
    pub software_filesystem: Option<String>,
}

impl SingleFileSpec {
    /// The permissions, defaulted.
    fn permissions(&self) -> &str {
        self.permissions.as_deref().unwrap_or("644")
    }

    /// `<filesystem>.<name>`, the prefix of the software-version provide and the clear
    /// pattern, defaulted as mender-artifact does.
    fn software_key(&self) -> String {
        let filesystem = self
            .software_filesystem
            .as_deref()
            .unwrap_or("rootfs-image");
        let name = self.software_name.as_deref().unwrap_or(PAYLOAD_TYPE);
        format!("{filesystem}.{name}")
    }

    /// Rejects specs that would make an artifact the device cannot install.
    fn check(&self) -> Result<(), ArtifactError> {
        let invalid = |message: String| Err(ArtifactError::InvalidSpec(message.into()));
        let bad_text = |s: &str| s.is_empty() || s.chars().any(char::is_control);
        if bad_text(&self.artifact_name) {
            return invalid(format!(
                "the artifact name {:?} must be non-empty text",
                self.artifact_name
            ));
        }
        if self.device_types.is_empty() {
            return invalid("at least one device type is required".to_owned());
        }
        if let Some(device_type) = self.device_types.iter().find(|t| bad_text(t)) {
            return invalid(format!(
                "the device type {device_type:?} must be non-empty text"
            ));
        }
        if !self.dest_dir.starts_with('/') || bad_text(&self.dest_dir) {
            return invalid(format!(
                "the destination directory {:?} must be an absolute path",
                self.dest_dir
            ));
        }
        let name = self.filename.as_str();
        // The reader refuses what mender-artifact refuses; refuse it before writing.
        if let Some(problem) = super::rules::file_name_problem(name) {
            return invalid(format!("the file name {:?} {problem}", quote(name)));
        }
        if INSTRUCTION_FILES.contains(&name) {
            return invalid(format!(
                "the file name {name:?} is taken by the update module's own files"
            ));
        }
        let permissions = self.permissions();
        if !(3..=4).contains(&permissions.len())
            || !permissions.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return invalid(format!(
                "the permissions {permissions:?} must be an octal mode such as 644 or 0755"
            ));
        }
        // Name and filesystem become parts of a provides key (`<filesystem>.<name>.version`).
        for (what, value) in [
            ("software name", &self.software_name),
            ("software filesystem", &self.software_filesystem),
        ] {
            if let Some(value) = value.as_deref() {
                if bad_text(value) || value.contains(char::is_whitespace) {
                    return invalid(format!(
                        "the {what} {value:?} must be non-empty, without spaces"
                    ));
                }
            }
        }
        if let Some(version) = self.software_version.as_deref().filter(|v| bad_text(v)) {
            return invalid(format!(
                "the software version {version:?} must be non-empty text"
            ));
        }
        Ok(())
    }
}

/// `header-info` of a one-payload v3 artifact. Field order is the order mender-artifact
/// writes.
#[derive(Serialize)]
struct HeaderInfoOut<'a> {
    payloads: [PayloadOut; 1],
    artifact_provides: NameProvides<'a>,
    artifact_depends: DeviceDepends<'a>,
}

#[derive(Serialize)]
struct PayloadOut {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct NameProvides<'a> {
    artifact_name: &'a str,
}

#[derive(Serialize)]
struct DeviceDepends<'a> {
    device_type: &'a [String],
}

/// `headers/0000/type-info`.
#[derive(Serialize)]
struct TypeInfoOut {
    #[serde(rename = "type")]
    kind: &'static str,
    artifact_provides: BTreeMap<String, String>,
    clears_artifact_provides: Vec<String>,
}

/// Writes a version 3 module-image artifact for the `single-file` update module to `out`:
/// the artifact `mender-artifact write module-image -T single-file -n NAME -t TYPE… -f
/// dest_dir -f filename -f permissions -f FILE` writes, as Mender's
/// `single-file-artifact-gen` prepares it.
///
/// - `version`, `manifest`, `header.tar.gz`, `data/0000.tar.gz`, unsigned;
/// - header-info: one payload of type `single-file`, provides `artifact_name`, depends on
///   `device_type`;
/// - type-info: provides `<filesystem>.<name>.version` (default
///   `rootfs-image.single-file.version` = the artifact name) and clears
///   `<filesystem>.<name>.*`, as mender-artifact does by default;
/// - payload: `dest_dir`, `filename` and `permissions` (each one line, as
///   `single-file-artifact-gen` writes them), then the file itself as `spec.filename`.
///
/// `file` must yield exactly `file_size` bytes. The manifest, which precedes the payload,
/// needs the file's sha256, so the compressed payload goes to an anonymous temporary file
/// first: memory use does not grow with the file.
pub fn write_single_file_artifact<W: Write, R: Read>(
    out: W,
    spec: &SingleFileSpec,
    file: R,
    file_size: u64,
) -> Result<(), ArtifactError> {
    spec.check()?;
    let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;

    let scratch = |e| ArtifactError::io("write the payload to a temporary file", e);
    let mut data = tempfile::tempfile().map_err(scratch)?;
    let checksums = write_payload(&mut data, spec, file, file_size, now)?;
    let data_len = data.stream_position().map_err(scratch)?;
    data.seek(SeekFrom::Start(0)).map_err(scratch)?;

    let header = header_tar_gz(spec).map_err(|e| ArtifactError::io("build the header", e))?;
    let mut manifest = String::new();
    for (name, checksum) in &checksums {
        manifest.push_str(&format!("{checksum}  data/0000/{name}\n"));
    }
    manifest.push_str(&format!("{}  header.tar.gz\n", sha256_hex(&header)));
    manifest.push_str(&format!("{}  version\n", sha256_hex(VERSION)));

    let output = |e| ArtifactError::io("write the artifact", e);
    let mut outer = tar::Builder::new(out);
    append(&mut outer, "version", VERSION, 0, None, MEMBER_MODE).map_err(output)?;
    append(
        &mut outer,
        "manifest",
        manifest.as_bytes(),
        0,
        None,
        MEMBER_MODE,
    )
    .map_err(output)?;
    append(
        &mut outer,
        "header.tar.gz",
        &header[..],
        now,
        Some("root"),
        MEMBER_MODE,
    )
    .map_err(output)?;
    let mut member = member_header(data_len, now, Some("root"), MEMBER_MODE).map_err(output)?;
    // The data comes from our own temporary file, so a failure here is about `out` or the
    // temporary file; both are the server's side.
    outer
        .append_data(&mut member, "data/0000.tar.gz", &mut data)
        .map_err(output)?;
    outer
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(output)
}

/// Writes the gzip-compressed payload tar to `dest`; returns each payload file's name and
/// hex sha256, in archive order.
fn write_payload<R: Read>(
    dest: &mut std::fs::File,
    spec: &SingleFileSpec,
    mut file: R,
    file_size: u64,
    mtime: u64,
) -> Result<Vec<(String, String)>, ArtifactError> {
    let scratch = |e| ArtifactError::io("write the payload to a temporary file", e);
    let gz = GzEncoder::new(BufWriter::new(dest), flate2::Compression::default());
    let mut payload = tar::Builder::new(gz);
    let mut checksums = Vec::new();
    let instructions = [
        spec.dest_dir.as_str(),
        spec.filename.as_str(),
        spec.permissions(),
    ];
    for (name, value) in INSTRUCTION_FILES.into_iter().zip(instructions) {
        let content = format!("{value}\n");
        append(
            &mut payload,
            name,
            content.as_bytes(),
            mtime,
            Some("root"),
            PAYLOAD_MODE,
        )
        .map_err(scratch)?;
        checksums.push((name.to_owned(), sha256_hex(content.as_bytes())));
    }

    let mut header =
        member_header(file_size, mtime, Some("root"), PAYLOAD_MODE).map_err(scratch)?;
    let mut hashing = HashingReader::new((&mut file).take(file_size));
    let appended = payload.append_data(&mut header, &spec.filename, &mut hashing);
    if hashing.failed {
        if let Err(e) = appended {
            return Err(ArtifactError::io("read the payload file", e));
        }
    }
    appended.map_err(scratch)?;
    let (count, checksum) = (hashing.count, hex::encode(hashing.hasher.finalize()));
    if count < file_size {
        return Err(ArtifactError::FileSizeMismatch {
            expected: file_size,
            actual: count,
        });
    }
    // `take` stopped at `file_size`; one more byte means the caller's size was wrong.
    let mut probe = [0; 1];
    let extra = loop {
        match file.read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.map_err(|e| ArtifactError::io("read the payload file", e))?,
        }
    };
    if extra > 0 {
        return Err(ArtifactError::FileSizeMismatch {
            expected: file_size,
            actual: file_size + 1,
        });
    }
    checksums.push((spec.filename.clone(), checksum));

    let gz = payload.into_inner().map_err(scratch)?;
    let buffered = gz.finish().map_err(scratch)?;
    buffered
        .into_inner()
        .map_err(|e| scratch(e.into_error()))?
        .flush()
        .map_err(scratch)?;
    Ok(checksums)
}

/// Builds `header.tar.gz` in memory (it is a few hundred bytes).
fn header_tar_gz(spec: &SingleFileSpec) -> io::Result<Vec<u8>> {
    let header_info = HeaderInfoOut {
        payloads: [PayloadOut { kind: PAYLOAD_TYPE }],
        artifact_provides: NameProvides {
            artifact_name: &spec.artifact_name,
        },
        artifact_depends: DeviceDepends {
            device_type: &spec.device_types,
        },
    };
    let key = spec.software_key();
    let version = spec
        .software_version
        .clone()
        .unwrap_or_else(|| spec.artifact_name.clone());
    let type_info = TypeInfoOut {
        kind: PAYLOAD_TYPE,
        artifact_provides: BTreeMap::from([(format!("{key}.version"), version)]),
        clears_artifact_provides: vec![format!("{key}.*")],
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    append(
        &mut tar,
        "header-info",
        &serde_json::to_vec(&header_info)?,
        0,
        None,
        MEMBER_MODE,
    )?;
    append(
        &mut tar,
        "headers/0000/type-info",
        &serde_json::to_vec(&type_info)?,
        0,
        None,
        MEMBER_MODE,
    )?;
    tar.into_inner()?.finish()
}

/// A tar header for a regular file, owned by uid/gid 0 (named `owner` when given).
fn member_header(size: u64, mtime: u64, owner: Option<&str>, mode: u32) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    if let Some(owner) = owner {
        header.set_username(owner)?;
        header.set_groupname(owner)?;
    }
    Ok(header)
}

/// Appends a member whose content is in memory.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    content: &[u8],
    mtime: u64,
    owner: Option<&str>,
    mode: u32,
) -> io::Result<()> {
    let mut header = member_header(content.len() as u64, mtime, owner, mode)?;
    tar.append_data(&mut header, name, content)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes and counts what passes through, and remembers whether the source failed.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    failed: bool,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            failed: false,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.failed |= e.kind() != io::ErrorKind::Interrupted;
        })?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
