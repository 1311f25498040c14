//! `read_artifact` against hostile artifacts: records and streams that declare or inflate
//! to gigabytes, header fields over their limits, and payload files that mender-artifact
//! refuses. Each starts from an artifact the real `mender-artifact` writes.

mod artifact_support;

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::OnceLock;

use artifact_support::tamper::*;
use artifact_support::{rootfs_bytes, run, Workdir, SINGLE_FILE_ARGS};
use engine::artifact::limits::{
    MAX_DEVICE_TYPES, MAX_DEVICE_TYPE_LEN, MAX_ENTRIES, MAX_ERROR_TEXT_LEN, MAX_KEY_LEN,
    MAX_MEMBER_SIZE, MAX_NAME_LEN, MAX_PAYLOADS, MAX_TAR_HEADERS_SIZE, MAX_VALUE_LEN,
};
use engine::artifact::{read_artifact, ArtifactError};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// The members of a v3 rootfs-image artifact `mender-artifact` writes with `compression`.
fn rootfs(work: &Workdir, compression: &str) -> Vec<Member> {
    let args = [
        "write",
        "rootfs-image",
        "-n",
        "rootfs-v3",
        "-t",
        "dev-a",
        "-f",
        "rootfs.ext4",
        "--compression",
        compression,
        "--no-progress",
    ];
    members(&work.mender_artifact(&args, &format!("hostile-{compression}.mender")))
}

/// Reads `members` packed, expecting an error, and checks that its message is short.
fn refused(members: &[Member]) -> ArtifactError {
    let err = read_artifact(&pack(members)[..]).expect_err("the artifact must be refused");
    let message = err.to_string();
    assert!(
        message.len() <= MAX_ERROR_TEXT_LEN + 100,
        "an error message of {} bytes",
        message.len()
    );
    err
}

/// Replaces the last member (payload 0) by `data` under the name `name`.
fn with_payload(mut parts: Vec<Member>, name: &str, data: Vec<u8>) -> Vec<Member> {
    let last = parts.last_mut().unwrap();
    assert!(last.name.starts_with("data/0000.tar"));
    *last = Member::new(name, data);
    parts
}

/// A reader that counts what is read from it.
struct Counting<'a> {
    inner: &'a [u8],
    read: Rc<Cell<usize>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

// ---- Item 1: extension records and decompressed streams are bounded ----------------------

#[test]
fn pax_record_declaring_gigabytes_is_refused_without_being_read() {
    let mut artifact = raw_header(b"././@PaxHeader", tar::EntryType::XHeader, 4 << 30).to_vec();
    artifact.extend(vec![b'a'; 1 << 20]);
    let read = Rc::new(Cell::new(0));
    let input = Counting {
        inner: &artifact,
        read: Rc::clone(&read),
    };
    let err = read_artifact(input).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::TarHeadersTooLarge { member, .. } if member == "the artifact"),
        "{err}"
    );
    assert!(
        read.get() as u64 <= MAX_TAR_HEADERS_SIZE + 1,
        "read {} bytes of a record that is refused",
        read.get()
    );
}

#[test]
fn long_name_bomb_in_a_payload_is_refused_without_inflating_it() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    for suffix in [".gz", ".xz", ".zst", ""] {
        // 256 MiB of long name, on the wire: 256 KiB (gzip) or less.
        let mib = if suffix.is_empty() { 1 } else { 256 };
        let name = format!("data/0000.tar{suffix}");
        let bomb = long_name_bomb(suffix, mib);
        let err = refused(&with_payload(parts.clone(), &name, bomb));
        assert!(
            matches!(&err, ArtifactError::TarHeadersTooLarge { member, .. } if member.as_str() == name),
            "{suffix}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{name} has more than 65536 bytes of tar headers (PAX records, GNU long \
                 names) in front of one entry, or of padding after its last entry"
            )
        );
    }
}

#[test]
fn long_payload_file_name_is_quoted_short() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    let long = vec![b'n'; 60_000];
    let mut tar = raw_header(b"././@LongLink", tar::EntryType::GNULongName, 60_000).to_vec();
    tar.extend(&long);
    tar.extend(padding(60_000));
    tar.extend(raw_entry(b"ignored", &rootfs_bytes()));
    tar.extend(end_of_archive());
    let mut parts = with_payload(parts, "data/0000.tar.gz", compress(".gz", &tar));
    let key = format!("data/0000/{}", String::from_utf8(long).unwrap());
    set_manifest_line(
        &mut parts,
        "data/0000/rootfs.ext4",
        &key,
        Some(&rootfs_bytes()),
    );
    let err = refused(&parts);
    let message = err.to_string();
    assert!(
        message.starts_with("malformed artifact: the payload file name \"nnnn"),
        "{message}"
    );
    assert!(
        message.contains("…\" in data/0000.tar.gz is longer than 255 bytes"),
        "{message}"
    );
    assert!(message.len() < 400, "{message}");
}

#[test]
fn bomb_after_the_end_of_a_payload_tar_is_refused() {
    let work = Workdir::new();
    let plain = rootfs(&work, "none");
    let data = plain.last().unwrap().data.clone();
    // The payload tar, then a gigabyte of zeros in 1 MiB of gzip.
    let bomb = bomb(".gz", &data, 0, 1024, b"");
    let err = refused(&with_payload(plain, "data/0000.tar.gz", bomb));
    assert!(
        matches!(&err, ArtifactError::TarHeadersTooLarge { member, .. } if member == "data/0000.tar.gz"),
        "{err}"
    );
}

#[test]
fn pax_records_over_the_limit_in_the_header_are_refused() {
    let work = Workdir::new();
    let mut parts = rootfs(&work, "gzip");
    // A valid PAX record (`comment`) of 100 KiB, in front of header-info.
    let value = "c".repeat(100 * 1024);
    // The length field counts itself: 6 digits, a space, `comment=`, the value, a newline.
    let record = format!("{} comment={value}\n", 100 * 1024 + 16);
    assert_eq!(record.len(), 100 * 1024 + 16);
    let mut tar = raw_header(
        b"././@PaxHeader",
        tar::EntryType::XHeader,
        record.len() as u64,
    )
    .to_vec();
    tar.extend(record.as_bytes());
    tar.extend(padding(record.len() as u64));
    tar.extend(header_tar(&mut parts));
    set_header_tar(&mut parts, &tar);
    let err = refused(&parts);
    assert!(
        matches!(&err, ArtifactError::TarHeadersTooLarge { member, .. } if member == "header.tar.gz"),
        "{err}"
    );
}

#[test]
fn xz_stream_asking_for_a_gigabyte_dictionary_is_refused() {
    let work = Workdir::new();
    let mut parts = rootfs(&work, "lzma");
    let data = member(&mut parts, "data/0000.tar.xz");
    data.data = xz_with_huge_dictionary(data.data.clone());
    let err = refused(&parts);
    assert_eq!(
        err.to_string(),
        "malformed artifact: cannot read data/0000.tar.xz: the xz stream needs more than 80 \
         MiB of memory to decompress"
    );
}

#[test]
fn zstd_frame_asking_for_a_128_mib_window_is_refused() {
    let work = Workdir::new();
    let plain = rootfs(&work, "none");
    let frame = zstd::encode_all(&plain.last().unwrap().data[..], 3).unwrap();
    // zstd itself allows 2^27 by default; rollout allows 2^26.
    let parts = with_payload(plain, "data/0000.tar.zst", zstd_with_window_log(frame, 27));
    let err = refused(&parts);
    assert!(err.to_string().contains("data/0000.tar.zst"), "{err}");
}

#[test]
fn metadata_members_over_one_mebibyte_are_refused() {
    let work = Workdir::new();
    let mut parts = rootfs(&work, "gzip");
    // Blank lines are valid manifest content; only the size is wrong.
    let manifest = member(&mut parts, "manifest");
    manifest.data.resize(1024 * 1024 + 1, b'\n');
    let err = refused(&parts);
    assert_eq!(
        err.to_string(),
        "manifest is too large: 1048577 bytes, the limit is 1048576 bytes"
    );
}

// ---- Item 2: header fields have limits ------------------------------------------------------

/// `parts` with header file `file` changed by `edit`.
fn edited(parts: &[Member], file: &str, edit: impl FnOnce(&mut Value)) -> Vec<Member> {
    let mut parts = parts.to_vec();
    edit_header_json(&mut parts, file, edit);
    parts
}

fn many(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn header_fields_over_their_limits_are_refused() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    let info = "header-info";
    let type_info = "headers/0000/type-info";
    let cases: Vec<(Vec<Member>, String)> = vec![
        (
            edited(&parts, info, |v| {
                v["artifact_provides"]["artifact_name"] = json!("n".repeat(MAX_NAME_LEN + 1))
            }),
            "the artifact name has 257 bytes, more than the limit of 256".into(),
        ),
        (
            edited(&parts, info, |v| {
                v["artifact_provides"]["artifact_name"] = json!("")
            }),
            "malformed artifact: the artifact name is empty".into(),
        ),
        (
            edited(&parts, info, |v| {
                v["artifact_depends"]["device_type"] = json!(["d".repeat(MAX_DEVICE_TYPE_LEN + 1)])
            }),
            "a device type has 257 bytes, more than the limit of 256".into(),
        ),
        (
            edited(&parts, info, |v| {
                v["artifact_depends"]["device_type"] = json!(many("d", MAX_DEVICE_TYPES + 1))
            }),
            "the device type list has 129 entries, more than the limit of 128".into(),
        ),
        (
            edited(&parts, info, |v| {
                v["payloads"] = json!(vec![json!({"type": "rootfs-image"}); MAX_PAYLOADS + 1])
            }),
            "the payload list of header-info has 65 entries, more than the limit of 64".into(),
        ),
        (
            edited(&parts, info, |v| {
                v["payloads"][0]["type"] = json!("t".repeat(257))
            }),
            "the type of payload 0 has 257 bytes, more than the limit of 256".into(),
        ),
        (
            edited(&parts, info, |v| {
                for key in many("p", MAX_ENTRIES) {
                    v["artifact_provides"][key] = json!("1");
                }
            }),
            "artifact_provides has 131 entries, more than the limit of 128".into(),
        ),
        (
            edited(&parts, type_info, |v| {
                v["artifact_provides"]["big"] = json!("v".repeat(MAX_VALUE_LEN + 1))
            }),
            "artifact_provides.big has 1025 bytes, more than the limit of 1024".into(),
        ),
        (
            edited(&parts, type_info, |v| {
                v["artifact_provides"]["k".repeat(MAX_KEY_LEN + 1)] = json!("1")
            }),
            "a key of artifact_provides has 257 bytes, more than the limit of 256".into(),
        ),
        (
            edited(&parts, type_info, |v| {
                v["artifact_depends"] = json!({"x": 1})
            }),
            "malformed artifact: artifact_depends.x must be a string or a list of strings".into(),
        ),
        (
            edited(&parts, type_info, |v| {
                v["artifact_depends"] = json!({"x": many("v", 129)})
            }),
            "artifact_depends.x has 129 entries, more than the limit of 128".into(),
        ),
        (
            edited(&parts, type_info, |v| {
                v["clears_artifact_provides"] = json!(many("c", MAX_ENTRIES + 1))
            }),
            "clears_artifact_provides has 129 entries, more than the limit of 128".into(),
        ),
    ];
    for (parts, expected) in cases {
        let err = refused(&parts);
        assert!(
            err.to_string().ends_with(&expected),
            "{err}\nexpected: {expected}"
        );
    }
}

#[test]
fn stored_metadata_over_one_mebibyte_is_refused() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    // Each piece is within its own limit; together they are over a mebibyte.
    let parts = edited(&parts, "header-info", |v| {
        for key in many("p", 100) {
            v["artifact_provides"][key] = json!("v".repeat(MAX_VALUE_LEN));
        }
    });
    let meta = json!({"blob": "b".repeat(MAX_MEMBER_SIZE as usize - 1024)});
    let mut parts = parts;
    edit_header(&mut parts, |files| {
        let file = files
            .iter_mut()
            .find(|f| f.name == "headers/0000/meta-data")
            .unwrap();
        file.data = serde_json::to_vec(&meta).unwrap();
    });
    let err = refused(&parts);
    assert!(
        matches!(err, ArtifactError::OverLimit { ref what, limit: 1_048_576, .. }
            if what == "the artifact's metadata as stored (JSON)"),
        "{err}"
    );
}

#[test]
fn header_fields_at_their_limits_are_accepted() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    let name = "n".repeat(MAX_NAME_LEN);
    let devices: Vec<String> = (0..MAX_DEVICE_TYPES)
        .map(|i| format!("{i:0width$}", width = MAX_DEVICE_TYPE_LEN))
        .collect();
    let parts = edited(&parts, "header-info", |v| {
        v["artifact_provides"]["artifact_name"] = json!(name);
        v["artifact_depends"]["device_type"] = json!(devices);
    });
    let meta = read_artifact(&pack(&parts)[..]).unwrap();
    assert_eq!(meta.name, name);
    assert_eq!(meta.device_types_compatible, devices);
}

// ---- Item 10: payload files are plain names; a rootfs-image holds one file --------------

/// Whether the real `mender-artifact read` accepts `parts`.
fn mender_artifact_accepts(work: &Workdir, parts: &[Member]) -> bool {
    work.file("check.mender", &pack(parts));
    run(
        "mender-artifact",
        &["read", "--no-progress", "check.mender"],
        work.dir.path(),
    )
    .status
    .success()
}

#[test]
fn payload_files_outside_their_directory_are_refused_like_mender_artifact_does() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    let content = rootfs_bytes();
    let cases: [(&[u8], &str); 5] = [
        (
            b"../../etc/passwd",
            "may hold only ASCII letters, digits and the characters . , _ -",
        ),
        (
            b"/etc/shadow",
            "may hold only ASCII letters, digits and the characters . , _ -",
        ),
        (
            b"sub/rootfs.ext4",
            "may hold only ASCII letters, digits and the characters . , _ -",
        ),
        (b"..", "is a directory reference"),
        (b"", "is empty"),
    ];
    for (name, problem) in cases {
        let mut hostile = parts.clone();
        replace_payload(&mut hostile, &[(name, &content)]);
        let err = refused(&hostile);
        let name = String::from_utf8_lossy(name);
        assert_eq!(
            err.to_string(),
            format!(
                "malformed artifact: the payload file name {name:?} in data/0000.tar.gz {problem}"
            )
        );
        assert!(
            !mender_artifact_accepts(&work, &hostile),
            "mender-artifact accepts {name:?}"
        );
    }
    // The same artifact with a plain name is fine.
    let mut plain = parts.clone();
    replace_payload(&mut plain, &[(b"rootfs,v2.ext4", &content)]);
    assert!(mender_artifact_accepts(&work, &plain));
    assert_eq!(
        read_artifact(&pack(&plain)[..]).unwrap().updates[0].files[0].name,
        "rootfs,v2.ext4"
    );
}

#[test]
fn rootfs_image_must_hold_exactly_one_file() {
    let work = Workdir::new();
    let parts = rootfs(&work, "gzip");
    for files in [vec![], vec![(&b"a.ext4"[..], &b"a"[..]), (b"b.ext4", b"b")]] {
        let mut hostile = parts.clone();
        replace_payload(&mut hostile, &files);
        let err = refused(&hostile);
        assert_eq!(
            err.to_string(),
            format!(
                "malformed artifact: payload 0 is a rootfs-image with {} files; a rootfs-image \
                 holds exactly one",
                files.len()
            )
        );
        // mender-artifact 3.9 refuses two files ("Rootfs: Must provide exactly one update
        // file") but lets a file-less payload through, although a device then has no image
        // to write; rollout refuses both.
        if !files.is_empty() {
            assert!(!mender_artifact_accepts(&work, &hostile));
        }
    }
}

// ---- Any input: an error, never a panic ------------------------------------------------------

/// A small uncompressed single-file artifact, so that random damage lands in tar headers
/// and JSON as often as in payload bytes.
fn small_artifact() -> &'static [u8] {
    static ARTIFACT: OnceLock<Vec<u8>> = OnceLock::new();
    ARTIFACT.get_or_init(|| {
        let work = Workdir::new();
        let args = [SINGLE_FILE_ARGS, &["--compression", "none"]].concat();
        work.mender_artifact(&args, "small.mender")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_artifacts_are_refused_without_panicking(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..8),
        cut in any::<Index>(),
    ) {
        let mut bytes = small_artifact().to_vec();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        // Ok or Err; a panic fails the test.
        let _ = read_artifact(&bytes[..]);
        let _ = read_artifact(&bytes[..cut.index(bytes.len())]);
    }
}
