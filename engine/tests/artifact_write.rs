//! `write_single_file_artifact`, checked by the real `mender-artifact` 3.9 (which must be
//! installed) and by `read_artifact`.

mod artifact_support;

use std::collections::BTreeMap;
use std::io::{self, Read};

use artifact_support::*;
use engine::artifact::{read_artifact, write_single_file_artifact, ArtifactError, SingleFileSpec};
use serde_json::json;
use storage::{ArtifactInfo, ArtifactMeta, TypeInfo, Update};
use time::OffsetDateTime;

const HELLO: &[u8] = b"hello mender\n";

fn spec() -> SingleFileSpec {
    SingleFileSpec {
        artifact_name: "app-1.0".to_owned(),
        device_types: vec!["dev-a".to_owned(), "dev-b".to_owned()],
        dest_dir: "/opt/app".to_owned(),
        filename: "hello.txt".to_owned(),
        permissions: None,
        software_name: None,
        software_version: None,
        software_filesystem: None,
    }
}

fn write(spec: &SingleFileSpec, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_single_file_artifact(&mut out, spec, content, content.len() as u64).unwrap();
    out
}

/// `mender-artifact read` of our artifact and of mender-artifact's own, from the same
/// inputs, print the same (but for the payload mtimes).
fn assert_reads_like_mender_artifact(spec: &SingleFileSpec, extra_args: &[&str]) {
    let work = Workdir::new();
    work.file("ours.mender", &write(spec, HELLO));
    let args = [SINGLE_FILE_ARGS, extra_args].concat();
    work.mender_artifact(&args, "theirs.mender");
    let ours = work.mender_read("ours.mender");
    assert_eq!(ours, work.mender_read("theirs.mender"));
    assert!(ours.contains("Name: app-1.0"), "{ours}");
    assert!(
        ours.contains("Compatible devices: '[dev-a dev-b]'"),
        "{ours}"
    );
    assert!(ours.contains("Type:   single-file"), "{ours}");
    for name in ["dest_dir", "filename", "permissions", "hello.txt"] {
        assert!(ours.contains(&format!("name:     {name}")), "{ours}");
    }

    // The reader agrees too, dates aside.
    let mut theirs =
        read_artifact(&std::fs::read(work.path("theirs.mender")).unwrap()[..]).unwrap();
    let mut ours = read_artifact(&std::fs::read(work.path("ours.mender")).unwrap()[..]).unwrap();
    for meta in [&mut theirs, &mut ours] {
        for file in &mut meta.updates[0].files {
            file.date = mtime();
        }
    }
    assert_eq!(ours, theirs);
}

#[test]
fn single_file_artifact_validates_with_mender_artifact() {
    let work = Workdir::new();
    work.file("ours.mender", &write(&spec(), HELLO));
    let output = run(
        "mender-artifact",
        &["validate", "ours.mender"],
        work.dir.path(),
    );
    assert!(
        output.status.success(),
        "validate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn long_file_name_validates_and_round_trips() {
    let work = Workdir::new();
    let name = format!("{}.conf", "long-name-".repeat(15));
    let spec = SingleFileSpec {
        filename: name.clone(),
        ..spec()
    };
    let artifact = write(&spec, HELLO);
    work.file("long.mender", &artifact);
    let output = run(
        "mender-artifact",
        &["validate", "long.mender"],
        work.dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(work.mender_read("long.mender").contains(&name));
    let meta = read_artifact(&artifact[..]).unwrap();
    assert_eq!(meta.updates[0].files[3].name, name);
}

#[test]
fn single_file_artifact_reads_like_mender_artifacts_own() {
    assert_reads_like_mender_artifact(&spec(), &[]);
    let output = {
        let work = Workdir::new();
        work.file("ours.mender", &write(&spec(), HELLO));
        work.mender_read("ours.mender")
    };
    assert!(
        output.contains("rootfs-image.single-file.version: app-1.0"),
        "{output}"
    );
    assert!(
        output.contains(r#"Clears Provides: ["rootfs-image.single-file.*"]"#),
        "{output}"
    );
}

#[test]
fn software_name_version_and_filesystem_shape_the_provides() {
    let spec = SingleFileSpec {
        software_name: Some("myapp".to_owned()),
        software_version: Some("1.0.0".to_owned()),
        software_filesystem: Some("appfs".to_owned()),
        ..spec()
    };
    assert_reads_like_mender_artifact(
        &spec,
        &[
            "--software-name",
            "myapp",
            "--software-version",
            "1.0.0",
            "--software-filesystem",
            "appfs",
        ],
    );
    let meta = read_artifact(&write(&spec, HELLO)[..]).unwrap();
    assert_eq!(
        meta.artifact_provides
            .get("appfs.myapp.version")
            .map(String::as_str),
        Some("1.0.0")
    );
    assert_eq!(meta.clears_artifact_provides, ["appfs.myapp.*"]);
}

#[test]
fn single_file_artifact_round_trips_through_the_reader() {
    let spec = SingleFileSpec {
        permissions: Some("0755".to_owned()),
        ..spec()
    };
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let mut meta = read_artifact(&write(&spec, HELLO)[..]).unwrap();
    let after = OffsetDateTime::now_utc().unix_timestamp();
    for file in &mut meta.updates[0].files {
        assert!((before..=after).contains(&file.date.unix_timestamp()));
        file.date = mtime();
    }
    let file = |name: &str, content: &[u8]| storage::UpdateFile {
        name: name.to_owned(),
        checksum: sha256_hex(content),
        size: content.len() as u64,
        date: mtime(),
    };
    let expected = ArtifactMeta {
        name: "app-1.0".to_owned(),
        device_types_compatible: vec!["dev-a".to_owned(), "dev-b".to_owned()],
        info: ArtifactInfo {
            format: "mender".to_owned(),
            version: 3,
        },
        signed: false,
        updates: vec![Update {
            type_info: TypeInfo {
                kind: Some("single-file".to_owned()),
            },
            files: vec![
                file("dest_dir", b"/opt/app\n"),
                file("filename", b"hello.txt\n"),
                file("permissions", b"0755\n"),
                file("hello.txt", HELLO),
            ],
            meta_data: vec![],
        }],
        artifact_provides: BTreeMap::from([
            ("artifact_name".to_owned(), "app-1.0".to_owned()),
            (
                "rootfs-image.single-file.version".to_owned(),
                "app-1.0".to_owned(),
            ),
        ]),
        artifact_depends: BTreeMap::from([("device_type".to_owned(), json!(["dev-a", "dev-b"]))]),
        clears_artifact_provides: vec!["rootfs-image.single-file.*".to_owned()],
    };
    assert_eq!(meta, expected);
}

#[test]
fn large_file_streams_through_writer_and_reader() {
    const SIZE: u64 = 48 * 1024 * 1024 + 123;
    let pattern = |offset: u64| (offset % 251) as u8;
    struct Pattern(u64, u64);
    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min((self.1 - self.0) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.0 + i as u64) % 251) as u8;
            }
            self.0 += n as u64;
            Ok(n)
        }
    }
    let mut expected = sha2::Sha256::default();
    let mut offset = 0;
    while offset < SIZE {
        let chunk: Vec<u8> = (offset..(offset + 65536).min(SIZE)).map(pattern).collect();
        sha2::Digest::update(&mut expected, &chunk);
        offset += chunk.len() as u64;
    }
    let spec = spec();
    let mut out = tempfile::tempfile().unwrap();
    write_single_file_artifact(&mut out, &spec, Pattern(0, SIZE), SIZE).unwrap();
    io::Seek::rewind(&mut out).unwrap();
    let meta = read_artifact(io::BufReader::new(out)).unwrap();
    let payload = &meta.updates[0].files[3];
    assert_eq!(payload.size, SIZE);
    assert_eq!(
        payload.checksum,
        hex::encode(sha2::Digest::finalize(expected))
    );
}

#[test]
fn file_of_the_wrong_size_is_refused() {
    let mut out = Vec::new();
    let err = write_single_file_artifact(&mut out, &spec(), HELLO, 100).unwrap_err();
    assert!(matches!(
        err,
        ArtifactError::FileSizeMismatch {
            expected: 100,
            actual: 13
        }
    ));
    assert!(
        out.is_empty(),
        "nothing is written before the payload is complete"
    );
    let err = write_single_file_artifact(&mut out, &spec(), HELLO, 5).unwrap_err();
    assert!(matches!(
        err,
        ArtifactError::FileSizeMismatch { expected: 5, .. }
    ));
}

#[test]
fn invalid_specs_are_refused() {
    let cases = [
        SingleFileSpec {
            artifact_name: String::new(),
            ..spec()
        },
        SingleFileSpec {
            device_types: vec![],
            ..spec()
        },
        SingleFileSpec {
            dest_dir: "opt/app".to_owned(),
            ..spec()
        },
        SingleFileSpec {
            filename: "a/b".to_owned(),
            ..spec()
        },
        SingleFileSpec {
            filename: "permissions".to_owned(),
            ..spec()
        },
        SingleFileSpec {
            permissions: Some("rwx".to_owned()),
            ..spec()
        },
        SingleFileSpec {
            software_name: Some(String::new()),
            ..spec()
        },
    ];
    for case in cases {
        let err = write_single_file_artifact(io::sink(), &case, HELLO, 13).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid single-file artifact spec: "),
            "{case:?}: {err}"
        );
    }
}
