//! `read_artifact` against artifacts the real `mender-artifact` 3.9 writes at test time,
//! and against damaged ones. The tool must be installed: without it these tests fail.

mod artifact_support;

use std::collections::BTreeMap;
use std::io::Read;

use artifact_support::*;
use engine::artifact::{read_artifact, ArtifactError};
use serde_json::json;
use storage::{ArtifactInfo, ArtifactMeta, TypeInfo, Update, UpdateFile};

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn values(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn file(name: &str, content: &[u8]) -> UpdateFile {
    UpdateFile {
        name: name.to_owned(),
        checksum: sha256_hex(content),
        size: content.len() as u64,
        date: mtime(),
    }
}

fn rootfs_update() -> Update {
    Update {
        type_info: TypeInfo {
            kind: Some("rootfs-image".to_owned()),
        },
        files: vec![file("rootfs.ext4", &rootfs_bytes())],
        meta_data: vec![],
    }
}

fn v2_rootfs(signed: bool) -> ArtifactMeta {
    ArtifactMeta {
        name: "rootfs-v2".to_owned(),
        device_types_compatible: vec!["dev-a".to_owned(), "dev-b".to_owned()],
        info: ArtifactInfo {
            format: "mender".to_owned(),
            version: 2,
        },
        signed,
        updates: vec![rootfs_update()],
        artifact_provides: strings(&[("artifact_name", "rootfs-v2")]),
        artifact_depends: values(&[("device_type", json!(["dev-a", "dev-b"]))]),
        clears_artifact_provides: vec![],
    }
}

const V2_ARGS: &[&str] = &[
    "write",
    "rootfs-image",
    "-v",
    "2",
    "-n",
    "rootfs-v2",
    "-t",
    "dev-a",
    "-t",
    "dev-b",
    "-f",
    "rootfs.ext4",
    "--no-progress",
];

/// A v3 rootfs-image with provides, depends and groups, in the given compression.
fn v3_rootfs(work: &Workdir, compression: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "write",
        "rootfs-image",
        "-n",
        "rootfs-v3",
        "-t",
        "dev-a",
        "-t",
        "dev-b",
        "-f",
        "rootfs.ext4",
        "-p",
        "custom.p:1",
        "-d",
        "custom.d:2",
        "-N",
        "base-1",
        "-g",
        "grp",
        "-G",
        "old1",
        "--compression",
        compression,
        "--no-progress",
    ];
    args.extend(extra);
    work.mender_artifact(&args, &format!("rootfs-{compression}.mender"))
}

fn v3_rootfs_meta() -> ArtifactMeta {
    let checksum = sha256_hex(&rootfs_bytes());
    ArtifactMeta {
        name: "rootfs-v3".to_owned(),
        device_types_compatible: vec!["dev-a".to_owned(), "dev-b".to_owned()],
        info: ArtifactInfo {
            format: "mender".to_owned(),
            version: 3,
        },
        signed: false,
        updates: vec![rootfs_update()],
        artifact_provides: strings(&[
            ("artifact_name", "rootfs-v3"),
            ("artifact_group", "grp"),
            ("custom.p", "1"),
            ("rootfs-image.checksum", &checksum),
            ("rootfs-image.version", "rootfs-v3"),
        ]),
        artifact_depends: values(&[
            ("artifact_name", json!(["base-1"])),
            ("artifact_group", json!(["old1"])),
            ("device_type", json!(["dev-a", "dev-b"])),
            ("custom.d", json!("2")),
        ]),
        clears_artifact_provides: vec![
            "artifact_group".to_owned(),
            "rootfs_image_checksum".to_owned(),
            "rootfs-image.*".to_owned(),
        ],
    }
}

fn single_file_files() -> Vec<UpdateFile> {
    vec![
        file("dest_dir", b"/opt/app\n"),
        file("filename", b"hello.txt\n"),
        file("permissions", b"644\n"),
        file("hello.txt", b"hello mender\n"),
    ]
}

#[test]
fn v2_rootfs_unsigned() {
    let work = Workdir::new();
    let artifact = work.mender_artifact(V2_ARGS, "v2.mender");
    assert_eq!(work.read(&artifact), v2_rootfs(false));
}

#[test]
fn v2_rootfs_rsa_signed_is_marked_signed() {
    let work = Workdir::new();
    let key = work.key("rsa");
    let args = [V2_ARGS, &["-k", &key]].concat();
    let artifact = work.mender_artifact(&args, "v2-rsa.mender");
    assert!(members(&artifact).iter().any(|m| m.name == "manifest.sig"));
    assert_eq!(work.read(&artifact), v2_rootfs(true));
}

#[test]
fn v3_rootfs_takes_its_type_from_header_info_and_merges_provides_and_depends() {
    let work = Workdir::new();
    let artifact = v3_rootfs(&work, "gzip", &[]);
    assert_eq!(work.read(&artifact), v3_rootfs_meta());
}

#[test]
fn v3_single_file_module_image_ecdsa_signed_with_meta_data() {
    let work = Workdir::new();
    let key = work.key("ec");
    let args = [
        SINGLE_FILE_ARGS,
        &[
            "-p",
            "custom.key:val1",
            "-d",
            "custom.dep:x",
            "-m",
            "meta.json",
            "--software-name",
            "myapp",
            "--software-version",
            "1.0.0",
            "-k",
            &key,
        ],
    ]
    .concat();
    let artifact = work.mender_artifact(&args, "sf-ec.mender");
    let expected = ArtifactMeta {
        name: "app-1.0".to_owned(),
        device_types_compatible: vec!["dev-a".to_owned(), "dev-b".to_owned()],
        info: ArtifactInfo {
            format: "mender".to_owned(),
            version: 3,
        },
        signed: true,
        updates: vec![Update {
            type_info: TypeInfo {
                kind: Some("single-file".to_owned()),
            },
            files: single_file_files(),
            meta_data: vec![json!({"answer": 42, "dest_dir_hint": "/tmp/x"})],
        }],
        artifact_provides: strings(&[
            ("artifact_name", "app-1.0"),
            ("custom.key", "val1"),
            ("rootfs-image.myapp.version", "1.0.0"),
        ]),
        artifact_depends: values(&[
            ("device_type", json!(["dev-a", "dev-b"])),
            ("custom.dep", json!("x")),
        ]),
        clears_artifact_provides: vec!["rootfs-image.myapp.*".to_owned()],
    };
    assert_eq!(work.read(&artifact), expected);
}

#[test]
fn bootstrap_artifact_has_one_untyped_empty_payload() {
    let work = Workdir::new();
    let args = [
        "write",
        "bootstrap-artifact",
        "-n",
        "boot-1",
        "-t",
        "dev-a",
        "-p",
        "x.y:1",
        "--no-progress",
    ];
    let artifact = work.mender_artifact(&args, "boot.mender");
    let meta = work.read(&artifact);
    assert_eq!(
        meta.updates,
        vec![Update {
            type_info: TypeInfo { kind: None },
            files: vec![],
            meta_data: vec![],
        }]
    );
    assert_eq!(meta.name, "boot-1");
    assert_eq!(
        meta.artifact_provides,
        strings(&[("artifact_name", "boot-1"), ("x.y", "1")])
    );
    assert_eq!(
        meta.artifact_depends,
        values(&[("device_type", json!(["dev-a"]))])
    );
    assert!(meta.clears_artifact_provides.is_empty());
}

#[test]
fn every_compression_mender_artifact_offers_reads_the_same() {
    let work = Workdir::new();
    for (compression, suffix) in [("none", ""), ("gzip", ".gz"), ("lzma", ".xz")] {
        let artifact = v3_rootfs(&work, compression, &[]);
        let names: Vec<String> = members(&artifact).into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "version",
                "manifest",
                &format!("header.tar{suffix}"),
                &format!("data/0000.tar{suffix}")
            ]
        );
        assert_eq!(work.read(&artifact), v3_rootfs_meta(), "{compression}");

        let args = [SINGLE_FILE_ARGS, &["--compression", compression]].concat();
        let artifact = work.mender_artifact(&args, &format!("sf-{compression}.mender"));
        assert_eq!(work.read(&artifact).updates[0].files, single_file_files());
    }
}

#[test]
fn zstd_members_are_read() {
    let work = Workdir::new();
    let plain = members(&v3_rootfs(&work, "none", &[]));
    let mut repacked = Vec::new();
    for member in &plain {
        if member.name.ends_with(".tar") {
            let data = zstd::encode_all(&member.data[..], 3).unwrap();
            repacked.push(Member {
                name: format!("{}.zst", member.name),
                data,
            });
        } else {
            repacked.push(member.clone());
        }
    }
    let header = repacked
        .iter()
        .find(|m| m.name == "header.tar.zst")
        .unwrap();
    let old = format!("{}  header.tar\n", sha256_hex(&plain[2].data));
    let new = format!("{}  header.tar.zst\n", sha256_hex(&header.data));
    edit_text(&mut repacked, "manifest", &old, &new);
    assert_eq!(work.read(&pack(&repacked)), v3_rootfs_meta());
}

#[test]
fn state_scripts_are_accepted_and_ignored() {
    let work = Workdir::new();
    let artifact = v3_rootfs(&work, "gzip", &["-s", "ArtifactInstall_Enter_00"]);
    let header = &members(&artifact)[2];
    let mut scripts = tar::Archive::new(flate2::read::GzDecoder::new(&header.data[..]));
    let names: Vec<String> = scripts
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"scripts/ArtifactInstall_Enter_00".to_owned()));
    assert_eq!(work.read(&artifact), v3_rootfs_meta());
}

#[test]
fn augmented_artifact_takes_the_augment_type_and_files() {
    let work = Workdir::new();
    let args = [
        "write",
        "module-image",
        "-T",
        "single-file",
        "-n",
        "aug",
        "-t",
        "dev-a",
        "-f",
        "hello.txt",
        "--augment-type",
        "foo",
        "--augment-file",
        "filename",
    ];
    let artifact = work.mender_artifact(&args, "aug.mender");
    let meta = work.read(&artifact);
    assert_eq!(meta.updates[0].type_info.kind.as_deref(), Some("foo"));
    assert_eq!(
        meta.updates[0].files,
        vec![
            file("hello.txt", b"hello mender\n"),
            file("filename", b"hello.txt\n")
        ]
    );
    assert_eq!(
        meta.artifact_provides,
        strings(&[
            ("artifact_name", "aug"),
            ("rootfs-image.single-file.version", "aug")
        ])
    );
}

#[test]
fn one_byte_reads_give_the_same_result() {
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let work = Workdir::new();
    let artifact = v3_rootfs(&work, "lzma", &[]);
    assert_eq!(read_artifact(Trickle(&artifact)).unwrap(), v3_rootfs_meta());
}

#[test]
fn flipped_payload_byte_is_a_checksum_mismatch() {
    let work = Workdir::new();
    let mut artifact = v3_rootfs(&work, "none", &[]);
    let rootfs = rootfs_bytes();
    // data/0000.tar holds one 512-byte tar header, then the rootfs.
    let at = member_offset(&artifact, "data/0000.tar") + 512 + 1000;
    assert_eq!(artifact[at], rootfs[1000]);
    artifact[at] ^= 0xff;
    let mut damaged = rootfs.clone();
    damaged[1000] ^= 0xff;
    let err = read_artifact(&artifact[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "checksum mismatch for data/0000/rootfs.ext4: manifest says {}, content is {}",
            sha256_hex(&rootfs),
            sha256_hex(&damaged)
        )
    );
}

#[test]
fn flipped_bytes_in_compressed_members_are_rejected() {
    let work = Workdir::new();
    for compression in ["gzip", "lzma"] {
        let artifact = v3_rootfs(&work, compression, &[]);
        let suffix = if compression == "gzip" { "gz" } else { "xz" };
        let header = member_offset(&artifact, &format!("header.tar.{suffix}"));
        let data = member_offset(&artifact, &format!("data/0000.tar.{suffix}"));
        let mut damaged = artifact.clone();
        damaged[header + 40] ^= 0x01;
        let err = read_artifact(&damaged[..]).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::ChecksumMismatch { name, .. } if name.as_str().starts_with("header.tar")),
            "{err}"
        );
        for offset in [20, 1000, 30_000, 60_000] {
            let mut damaged = artifact.clone();
            damaged[data + offset] ^= 0x01;
            assert!(
                read_artifact(&damaged[..]).is_err(),
                "{compression} +{offset}"
            );
        }
    }
}

#[test]
fn every_truncation_is_rejected_as_truncated() {
    let work = Workdir::new();
    for compression in ["none", "gzip"] {
        let args = [SINGLE_FILE_ARGS, &["--compression", compression]].concat();
        let artifact = work.mender_artifact(&args, &format!("cut-{compression}.mender"));
        read_artifact(&artifact[..]).unwrap();
        for len in 1..artifact.len() {
            match read_artifact(&artifact[..len]) {
                Err(ArtifactError::Truncated(_)) => {}
                other => panic!("{compression} cut at {len}/{}: {other:?}", artifact.len()),
            }
        }
    }
}

#[test]
fn truncated_large_payload_is_rejected() {
    let work = Workdir::new();
    let artifact = v3_rootfs(&work, "lzma", &[]);
    let data = member_offset(&artifact, "data/0000.tar.xz");
    for len in [
        data + 100,
        data + 30_000,
        artifact.len() - 1024,
        artifact.len() - 1,
    ] {
        let err = read_artifact(&artifact[..len]).unwrap_err();
        assert!(err.to_string().starts_with("truncated artifact: "), "{err}");
    }
}

/// A tiny hand-made artifact: the given `version` member and a stub header.
fn hand_made(version: &str) -> Vec<u8> {
    pack(&[
        Member {
            name: "version".to_owned(),
            data: version.as_bytes().to_vec(),
        },
        Member {
            name: "header.tar.gz".to_owned(),
            data: vec![0; 10],
        },
    ])
}

#[test]
fn version_1_is_not_supported() {
    let err = read_artifact(&hand_made(r#"{"format":"mender","version":1}"#)[..]).unwrap_err();
    assert!(matches!(err, ArtifactError::UnsupportedVersion(1)));
    assert_eq!(
        err.to_string(),
        "artifact version 1 is not supported (rollout reads versions 2 and 3)"
    );
    let err = read_artifact(&hand_made(r#"{"format":"mender","version":4}"#)[..]).unwrap_err();
    assert!(matches!(err, ArtifactError::UnsupportedVersion(4)));
    let err = read_artifact(&hand_made(r#"{"format":"other","version":3}"#)[..]).unwrap_err();
    assert!(matches!(err, ArtifactError::UnsupportedFormat(_)));
}

#[test]
fn member_after_the_last_payload_is_rejected() {
    let work = Workdir::new();
    let mut parts = members(&v3_rootfs(&work, "gzip", &[]));
    parts.push(Member {
        name: "data/0001.tar.gz".to_owned(),
        data: vec![],
    });
    let err = read_artifact(&pack(&parts)[..]).unwrap_err();
    assert!(err.to_string().contains("data/0001.tar.gz"), "{err}");
    parts.last_mut().unwrap().name = "extra".to_owned();
    let err = read_artifact(&pack(&parts)[..]).unwrap_err();
    assert!(err.to_string().contains("unexpected member extra"), "{err}");
}

#[test]
fn out_of_order_members_are_rejected() {
    let work = Workdir::new();
    let mut parts = members(&v3_rootfs(&work, "gzip", &[]));
    parts.swap(0, 1);
    let err = read_artifact(&pack(&parts)[..]).unwrap_err();
    assert!(
        err.to_string().contains("member manifest is out of place"),
        "{err}"
    );
}

#[test]
fn payload_file_without_a_manifest_line_is_rejected() {
    let work = Workdir::new();
    let mut parts = members(&v3_rootfs(&work, "gzip", &[]));
    let line = format!("{}  data/0000/rootfs.ext4\n", sha256_hex(&rootfs_bytes()));
    edit_text(&mut parts, "manifest", &line, "");
    let err = read_artifact(&pack(&parts)[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "data/0000/rootfs.ext4 is not listed in the manifest"
    );
}

#[test]
fn manifest_line_without_a_file_is_rejected() {
    let work = Workdir::new();
    let mut parts = members(&v3_rootfs(&work, "gzip", &[]));
    let ghost = format!("{}  data/0000/ghost\n", "0".repeat(64));
    edit_text(
        &mut parts,
        "manifest",
        "  version\n",
        &format!("  version\n{ghost}"),
    );
    let err = read_artifact(&pack(&parts)[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the manifest lists data/0000/ghost, but the artifact does not contain it"
    );
}

#[test]
fn oversized_header_is_refused_before_reading_it() {
    let work = Workdir::new();
    let parts = members(&v3_rootfs(&work, "gzip", &[]));
    let mut artifact = pack(&parts[..2]);
    artifact.truncate(artifact.len() - 1024);
    let mut header = tar::Header::new_ustar();
    header.set_path("header.tar.gz").unwrap();
    header.set_size(17 * 1024 * 1024);
    header.set_cksum();
    artifact.extend_from_slice(header.as_bytes());
    let err = read_artifact(&artifact[..]).unwrap_err();
    assert!(
        matches!(err, ArtifactError::TooLarge { ref name, .. } if name == "header.tar.gz"),
        "{err}"
    );
}

#[test]
fn empty_and_non_tar_inputs_are_rejected() {
    let err = read_artifact(&b""[..]).unwrap_err();
    assert_eq!(err.to_string(), "malformed artifact: the artifact is empty");
    let err = read_artifact(&[7u8; 4096][..]).unwrap_err();
    assert!(err.to_string().starts_with("malformed artifact: "), "{err}");
    let err = read_artifact(&pack(&[])[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed artifact: the artifact has no version member"
    );
}
