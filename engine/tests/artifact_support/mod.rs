//! Shared by the artifact tests: a scratch directory with payload files and keys, the real
//! `mender-artifact` tool, and helpers that take an artifact's outer tar apart and put it
//! back together.

#![allow(dead_code)]

pub mod tamper;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use storage::ArtifactMeta;
// Not every test binary uses them.
#[allow(unused_imports)]
pub use tamper::{members, pack, Member};
use tempfile::TempDir;
use time::OffsetDateTime;

/// The mtime given to every payload file; mender-artifact copies it into the data tar.
pub const MTIME: i64 = 1_700_000_000;

/// `mtime` as the reader reports it.
pub fn mtime() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(MTIME).unwrap()
}

/// The rootfs payload: 64 KiB of deterministic noise.
pub fn rootfs_bytes() -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs a tool, failing the test with a clear message when it is not installed.
pub fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}). These tests need the real tools: \
                 `apt-get install mender-artifact openssl` (Debian 12 ships mender-artifact 3.9)"
            )
        })
}

/// A scratch directory holding the payload files the tests put in artifacts.
pub struct Workdir {
    pub dir: TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = Workdir { dir };
        work.file("rootfs.ext4", &rootfs_bytes());
        work.file("hello.txt", b"hello mender\n");
        work.file("dest_dir", b"/opt/app\n");
        work.file("filename", b"hello.txt\n");
        work.file("permissions", b"644\n");
        work.file("meta.json", br#"{"dest_dir_hint": "/tmp/x", "answer": 42}"#);
        work.file("ArtifactInstall_Enter_00", b"#!/bin/sh\nexit 0\n");
        work
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with a fixed mtime.
    pub fn file(&self, name: &str, content: &[u8]) {
        let path = self.path(name);
        fs::write(&path, content).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME as u64);
        file.set_modified(time).unwrap();
    }

    /// Runs `mender-artifact ARGS -o OUT` and returns the artifact's bytes.
    pub fn mender_artifact(&self, args: &[&str], out: &str) -> Vec<u8> {
        let mut all = args.to_vec();
        all.extend(["-o", out]);
        let output = run("mender-artifact", &all, self.dir.path());
        assert!(
            output.status.success(),
            "mender-artifact {all:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // `write module-image -v 2` exits 0 without writing anything.
        fs::read(self.path(out))
            .unwrap_or_else(|e| panic!("mender-artifact {all:?} wrote no {out}: {e}"))
    }

    /// `mender-artifact read --no-progress` of `name`, without the `modified:` lines.
    pub fn mender_read(&self, name: &str) -> String {
        let output = run(
            "mender-artifact",
            &["read", "--no-progress", name],
            self.dir.path(),
        );
        assert!(
            output.status.success(),
            "mender-artifact read {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("modified:"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Generates an RSA (PKCS#1) or EC P-256 (SEC1) key, the forms mender-artifact 3.9
    /// accepts, and returns its file name.
    pub fn key(&self, kind: &str) -> String {
        let (name, args): (&str, &[&str]) = match kind {
            "rsa" => (
                "rsa.key",
                &["genrsa", "-traditional", "-out", "rsa.key", "2048"],
            ),
            "ec" => (
                "ec.key",
                &[
                    "ecparam",
                    "-genkey",
                    "-name",
                    "prime256v1",
                    "-noout",
                    "-out",
                    "ec.key",
                ],
            ),
            _ => panic!("unknown key kind {kind}"),
        };
        let output = run("openssl", args, self.dir.path());
        assert!(output.status.success(), "openssl {args:?} failed");
        name.to_owned()
    }

    pub fn read(&self, bytes: &[u8]) -> ArtifactMeta {
        engine::artifact::read_artifact(bytes).unwrap()
    }
}

/// Byte offset of member `name`'s content in the outer tar.
pub fn member_offset(artifact: &[u8], name: &str) -> usize {
    let mut archive = tar::Archive::new(artifact);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == name {
            return entry.raw_file_position() as usize;
        }
    }
    panic!("no member {name}");
}

/// Replaces `old` with `new` in the text of `member`.
pub fn edit_text(members: &mut [Member], member: &str, old: &str, new: &str) {
    let m = members.iter_mut().find(|m| m.name == member).unwrap();
    let text = String::from_utf8(m.data.clone()).unwrap();
    assert!(text.contains(old), "{member} does not contain {old:?}");
    m.data = text.replace(old, new).into_bytes();
}

/// `mender-artifact` arguments of the single-file module-image most tests build (run it in a
/// directory holding `dest_dir`, `filename`, `permissions` and `hello.txt`).
pub const SINGLE_FILE_ARGS: &[&str] = &[
    "write",
    "module-image",
    "-T",
    "single-file",
    "-n",
    "app-1.0",
    "-t",
    "dev-a",
    "-t",
    "dev-b",
    "-f",
    "dest_dir",
    "-f",
    "filename",
    "-f",
    "permissions",
    "-f",
    "hello.txt",
];
