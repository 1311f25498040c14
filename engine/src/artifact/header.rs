//! The header (`header.tar*`, `header-augment.tar*`): parsing its JSON files and turning
//! them, with the payload files, into [`ArtifactMeta`].

use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use storage::{ArtifactInfo, ArtifactMeta, TypeInfo, Update, UpdateFile};

use super::error::{quote, ArtifactError};
use super::limits::{MAX_HEADER_SIZE, MAX_MEMBER_SIZE};
use super::rules;
use super::stream::{entry_name, read_small, ReadStats, Tracked};
use super::Compression;

/// `header-info`. v2 uses `artifact_name`, `updates` and `device_types_compatible`; v3 uses
/// `payloads`, `artifact_provides` and `artifact_depends`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HeaderInfoJson {
    payloads: Option<Vec<PayloadJson>>,
    updates: Option<Vec<PayloadJson>>,
    artifact_name: Option<String>,
    device_types_compatible: Option<Vec<String>>,
    artifact_provides: Option<BTreeMap<String, String>>,
    artifact_depends: Option<BTreeMap<String, Value>>,
}

/// One entry of `payloads` (v3) or `updates` (v2). `type` is `null` for an empty payload.
#[derive(Debug, Deserialize)]
struct PayloadJson {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `headers/NNNN/type-info`. For a v3 rootfs-image `type` is `""`, so the type comes
/// from header-info.
#[derive(Debug, Default, Deserialize)]
struct TypeInfoJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    artifact_provides: Option<BTreeMap<String, String>>,
    artifact_depends: Option<BTreeMap<String, Value>>,
    clears_artifact_provides: Option<Vec<String>>,
}

/// `headers/NNNN/files` (v2 only): the names of the payload's files.
#[derive(Debug, Deserialize)]
struct FilesJson {
    files: Vec<String>,
}

/// What `headers/NNNN/` holds for one payload.
#[derive(Debug, Default)]
struct PayloadHeader {
    type_info: Option<TypeInfoJson>,
    /// `None` when there is no meta-data file, `Some(None)` when it is empty.
    meta_data: Option<Option<serde_json::Map<String, Value>>>,
    files: Option<Vec<String>>,
}

/// A parsed header tar, not yet checked for the fields its role requires.
#[derive(Debug)]
pub(super) struct HeaderPart {
    info: HeaderInfoJson,
    payloads: Vec<PayloadHeader>,
}

impl HeaderPart {
    /// The payload types header-info lists (`payloads` in v3, `updates` in v2).
    fn listed_types(&self) -> &[PayloadJson] {
        self.info
            .payloads
            .as_deref()
            .or(self.info.updates.as_deref())
            .unwrap_or_default()
    }
}

/// The main header, checked: it names the artifact and its device types.
#[derive(Debug)]
pub(super) struct Header {
    name: String,
    device_types: Vec<String>,
    part: HeaderPart,
}

impl Header {
    /// How many payloads header-info lists, hence how many `data/NNNN.tar*` must follow.
    pub fn payload_count(&self) -> usize {
        self.part.payloads.len()
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| ArtifactError::json(name, &e))
}

/// Parses a header tar (`member` is its name in the artifact, compressed as `compression`).
///
/// `header-info` must come first; `scripts/*` are skipped; every `headers/NNNN/` must
/// belong to a payload that header-info lists. The uncompressed tar may not exceed
/// [`MAX_HEADER_SIZE`], nor any file in it [`MAX_MEMBER_SIZE`].
pub(super) fn parse(
    bytes: &[u8],
    compression: Compression,
    member: &str,
) -> Result<HeaderPart, ArtifactError> {
    let stats = ReadStats::fenced();
    let fail = |e: io::Error| {
        if stats.over_limit.get() {
            ArtifactError::TooLarge {
                name: format!("{member} (uncompressed)").into(),
                size: stats.bytes.get(),
                limit: MAX_HEADER_SIZE,
            }
        } else if stats.fenced.get() {
            ArtifactError::TarHeadersTooLarge {
                member: member.into(),
                limit: super::limits::MAX_TAR_HEADERS_SIZE,
            }
        } else {
            let error = quote(&e.to_string());
            ArtifactError::malformed(format!("cannot read {member}: {error}"))
        }
    };
    let decoder = compression.decoder(bytes).map_err(fail)?;
    let limited = Tracked::new(decoder, Rc::clone(&stats), Some(MAX_HEADER_SIZE));
    let mut archive = tar::Archive::new(limited);
    let mut part: Option<HeaderPart> = None;
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        stats.fence_after(&entry);
        let name = entry_name(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(ArtifactError::malformed(format!(
                "{} in {member} is not a regular file",
                quote(&name)
            )));
        }
        if name.starts_with("scripts/") {
            // State scripts run on the device; the server only passes them along.
            continue;
        }
        let size = entry.size();
        let bytes = read_small(&mut entry, size, &name, MAX_MEMBER_SIZE, fail)?;
        if let Some(part) = part.as_mut() {
            payload_file(part, &name, &bytes, member)?;
            continue;
        }
        if name != "header-info" {
            return Err(ArtifactError::malformed(format!(
                "{member} must start with header-info, not {}",
                quote(&name)
            )));
        }
        let info: HeaderInfoJson = parse_json(&bytes, "header-info")?;
        let count = info
            .payloads
            .as_ref()
            .or(info.updates.as_ref())
            .map_or(0, Vec::len);
        rules::check_payload_count(count)?;
        let payloads = (0..count).map(|_| PayloadHeader::default()).collect();
        part = Some(HeaderPart { info, payloads });
    }
    // Read to the end of the compressed stream, where gzip keeps its CRC.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(fail)?;
    part.ok_or_else(|| ArtifactError::malformed(format!("{member} has no header-info")))
}

/// Stores `headers/NNNN/<file>` into its payload.
fn payload_file(
    part: &mut HeaderPart,
    name: &str,
    bytes: &[u8],
    member: &str,
) -> Result<(), ArtifactError> {
    let unexpected =
        || ArtifactError::malformed(format!("unexpected file {} in {member}", quote(name)));
    let (index, file) = name
        .strip_prefix("headers/")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(unexpected)?;
    if index.len() != 4 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unexpected());
    }
    let index: usize = index.parse().map_err(|_| unexpected())?;
    let count = part.payloads.len();
    let payload = part.payloads.get_mut(index).ok_or_else(|| {
        ArtifactError::malformed(format!(
            "{member} has {}, but header-info lists {count} payload(s)",
            quote(name)
        ))
    })?;
    let twice = || ArtifactError::malformed(format!("{member} has {name} twice"));
    match file {
        "type-info" => {
            if payload.type_info.is_some() {
                return Err(twice());
            }
            payload.type_info = Some(parse_json(bytes, name)?);
        }
        "meta-data" => {
            if payload.meta_data.is_some() {
                return Err(twice());
            }
            let parsed = if bytes.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match parse_json::<Value>(bytes, name)? {
                    Value::Object(map) => Some(map),
                    _ => {
                        return Err(ArtifactError::malformed(format!(
                            "{name} must hold a JSON object"
                        )))
                    }
                }
            };
            payload.meta_data = Some(parsed);
        }
        "files" => {
            if payload.files.is_some() {
                return Err(twice());
            }
            payload.files = Some(parse_json::<FilesJson>(bytes, name)?.files);
        }
        _ => return Err(unexpected()),
    }
    Ok(())
}

/// Checks that the main header has what a `version` artifact needs: a name, device
/// types, at least one payload and a type-info for each.
pub(super) fn validate(
    part: HeaderPart,
    version: u32,
    member: &str,
) -> Result<Header, ArtifactError> {
    let missing = |what: &str| ArtifactError::malformed(format!("header-info has no {what}"));
    let info = &part.info;
    let (name, device_types) = if version == 2 {
        if info.updates.is_none() {
            return Err(missing("\"updates\""));
        }
        let name = info.artifact_name.clone();
        let name = name.ok_or_else(|| missing("\"artifact_name\""))?;
        let devices = info.device_types_compatible.clone();
        (
            name,
            devices.ok_or_else(|| missing("\"device_types_compatible\""))?,
        )
    } else {
        if info.payloads.is_none() {
            return Err(missing("\"payloads\""));
        }
        let provides = info.artifact_provides.as_ref();
        let name = provides.and_then(|p| p.get("artifact_name")).cloned();
        let name = name.ok_or_else(|| missing("artifact_provides.artifact_name"))?;
        let devices = info.artifact_depends.as_ref();
        let devices = match devices.and_then(|d| d.get("device_type")) {
            None => return Err(missing("artifact_depends.device_type")),
            Some(value) => serde_json::from_value::<Vec<String>>(value.clone()).map_err(|_| {
                ArtifactError::malformed(
                    "header-info artifact_depends.device_type must be a list of strings",
                )
            })?,
        };
        (name, devices)
    };
    rules::check_identity(&name, &device_types)?;
    if part.payloads.is_empty() {
        return Err(ArtifactError::malformed("header-info lists no payloads"));
    }
    if let Some(index) = part.payloads.iter().position(|p| p.type_info.is_none()) {
        return Err(ArtifactError::malformed(format!(
            "{member} has no headers/{index:04}/type-info"
        )));
    }
    Ok(Header {
        name,
        device_types,
        part,
    })
}

/// Checks that an augment header describes the same payloads as the main one.
pub(super) fn check_augment(
    main: &Header,
    augment: &HeaderPart,
    member: &str,
) -> Result<(), ArtifactError> {
    if augment.payloads.len() != main.payload_count() {
        return Err(ArtifactError::malformed(format!(
            "{member} lists {} payload(s), but header-info lists {}",
            augment.payloads.len(),
            main.payload_count()
        )));
    }
    Ok(())
}

/// The first non-empty type among `candidates`.
fn first_type<'a>(candidates: impl IntoIterator<Item = Option<&'a str>>) -> Option<String> {
    candidates
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Builds the metadata from the checked header, the optional augment header and the files
/// of each `data/NNNN.tar*` member (given with the member's name).
///
/// The augment header wins where both say something: its payload type and its
/// meta-data keys replace the main header's; provides, depends and clears are merged.
pub(super) fn assemble(
    version: u32,
    header: Header,
    augment: Option<HeaderPart>,
    data: Vec<(String, Vec<UpdateFile>)>,
    signed: bool,
) -> Result<ArtifactMeta, ArtifactError> {
    let Header {
        name,
        device_types,
        part,
    } = header;
    let mut provides = BTreeMap::new();
    let mut depends = BTreeMap::new();
    let mut clears: Vec<String> = Vec::new();
    if version == 2 {
        provides.insert("artifact_name".to_owned(), name.clone());
        depends.insert("device_type".to_owned(), Value::from(device_types.clone()));
    } else {
        provides.extend(part.info.artifact_provides.clone().unwrap_or_default());
        depends.extend(part.info.artifact_depends.clone().unwrap_or_default());
    }

    let listed = part.listed_types();
    let augment_listed = augment.as_ref().map_or(&[][..], HeaderPart::listed_types);
    let mut augment_payloads = augment.as_ref().map(|a| a.payloads.iter());
    let mut updates = Vec::with_capacity(part.payloads.len());
    for ((index, payload), (member, files)) in part.payloads.iter().enumerate().zip(data) {
        let extra = augment_payloads.as_mut().and_then(Iterator::next);
        let type_infos: Vec<&TypeInfoJson> = [payload.type_info.as_ref()]
            .into_iter()
            .chain([extra.and_then(|e| e.type_info.as_ref())])
            .flatten()
            .collect();
        let kind = first_type(
            [augment_listed.get(index), listed.get(index)]
                .into_iter()
                .map(|p| p.and_then(|p| p.kind.as_deref()))
                .chain(type_infos.iter().rev().map(|t| t.kind.as_deref())),
        );
        if version == 3 {
            for info in &type_infos {
                provides.extend(info.artifact_provides.clone().unwrap_or_default());
                depends.extend(info.artifact_depends.clone().unwrap_or_default());
                for clear in info.clears_artifact_provides.iter().flatten() {
                    if !clears.contains(clear) {
                        clears.push(clear.clone());
                    }
                }
            }
        }
        if let Some(listed_files) = &payload.files {
            check_files_list(listed_files, &files, index, &member)?;
        }
        let mut meta = payload.meta_data.clone().flatten();
        if let Some(Some(extra_meta)) = extra.and_then(|e| e.meta_data.clone()) {
            meta.get_or_insert_with(Default::default).extend(extra_meta);
        }
        updates.push(Update {
            type_info: TypeInfo { kind },
            files,
            meta_data: meta.map(Value::Object).into_iter().collect(),
        });
    }
    Ok(ArtifactMeta {
        name,
        device_types_compatible: device_types,
        info: ArtifactInfo {
            format: "mender".to_owned(),
            version,
        },
        signed,
        updates,
        artifact_provides: provides,
        artifact_depends: depends,
        clears_artifact_provides: clears,
    })
}

/// v2: `headers/NNNN/files` must name exactly the files of `data/NNNN.tar*`.
fn check_files_list(
    listed: &[String],
    files: &[UpdateFile],
    index: usize,
    member: &str,
) -> Result<(), ArtifactError> {
    let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    let mut present: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    listed.sort_unstable();
    present.sort_unstable();
    if listed != present {
        let listed = quote(&format!("{listed:?}"));
        let present = quote(&format!("{present:?}"));
        return Err(ArtifactError::malformed(format!(
            "headers/{index:04}/files lists {listed}, but {member} holds {present}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"{"payloads":[{"type":"rootfs-image"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{"device_type":["d"]}}"#;

    /// An uncompressed header tar holding `files`, in order.
    fn header_tar(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(0o600);
            tar.append_data(&mut header, name, content.as_bytes())
                .unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn parse_v3(files: &[(&str, &str)]) -> Result<Header, ArtifactError> {
        let part = parse(&header_tar(files), Compression::None, "header.tar")?;
        validate(part, 3, "header.tar")
    }

    fn message(result: Result<Header, ArtifactError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn header_info_must_come_first() {
        let err = message(parse_v3(&[
            ("headers/0000/type-info", "{}"),
            ("header-info", INFO),
        ]));
        assert_eq!(
            err,
            "malformed artifact: header.tar must start with header-info, not headers/0000/type-info"
        );
    }

    #[test]
    fn every_payload_needs_a_type_info() {
        let err = message(parse_v3(&[("header-info", INFO)]));
        assert_eq!(
            err,
            "malformed artifact: header.tar has no headers/0000/type-info"
        );
    }

    #[test]
    fn headers_beyond_the_listed_payloads_are_rejected() {
        let err = message(parse_v3(&[
            ("header-info", INFO),
            ("headers/0001/type-info", "{}"),
        ]));
        assert!(
            err.contains("headers/0001/type-info, but header-info lists 1 payload(s)"),
            "{err}"
        );
    }

    #[test]
    fn meta_data_must_be_an_object() {
        let err = message(parse_v3(&[
            ("header-info", INFO),
            ("headers/0000/type-info", r#"{"type":""}"#),
            ("headers/0000/meta-data", "[1, 2]"),
        ]));
        assert_eq!(
            err,
            "malformed artifact: headers/0000/meta-data must hold a JSON object"
        );
    }

    #[test]
    fn v3_needs_name_and_device_types() {
        let no_name = r#"{"payloads":[{"type":"x"}],"artifact_depends":{"device_type":["d"]}}"#;
        let err = message(parse_v3(&[("header-info", no_name)]));
        assert_eq!(
            err,
            "malformed artifact: header-info has no artifact_provides.artifact_name"
        );
        let bad_devices = r#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{"device_type":"d"}}"#;
        let err = message(parse_v3(&[("header-info", bad_devices)]));
        assert!(
            err.contains("device_type must be a list of strings"),
            "{err}"
        );
    }

    #[test]
    fn v2_files_list_must_match_the_payload() {
        let info = r#"{"artifact_name":"a","updates":[{"type":"rootfs-image"}],"device_types_compatible":["d"]}"#;
        let files = [
            ("header-info", info),
            ("headers/0000/files", r#"{"files":["rootfs.ext4"]}"#),
            ("headers/0000/type-info", r#"{"type":"rootfs-image"}"#),
        ];
        let part = parse(&header_tar(&files), Compression::None, "header.tar").unwrap();
        let header = validate(part, 2, "header.tar").unwrap();
        let data = vec![("data/0000.tar".to_owned(), vec![])];
        let err = assemble(2, header, None, data, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed artifact: headers/0000/files lists [\"rootfs.ext4\"], but data/0000.tar holds []"
        );
    }

    #[test]
    fn uncompressed_header_size_is_bounded() {
        // Scripts are skipped rather than read, so only the limit on the whole tar stops them.
        let big = " ".repeat(MAX_HEADER_SIZE as usize);
        let compressed = zstd::encode_all(
            &header_tar(&[
                ("header-info", INFO),
                ("scripts/ArtifactInstall_Enter_00", &big),
            ])[..],
            1,
        )
        .unwrap();
        let err = parse(&compressed, Compression::Zstd, "header.tar.zst").unwrap_err();
        assert!(
            matches!(err, ArtifactError::TooLarge { ref name, .. } if name == "header.tar.zst (uncompressed)"),
            "{err}"
        );
    }
}
