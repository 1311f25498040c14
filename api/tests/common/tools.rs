//! Tools the API tests drive: the real `mender-artifact` and `openssl` in a scratch
//! directory, and small helpers around external commands.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Run an external tool that the tests require, failing clearly when it is not installed.
pub fn run_tool<I, S>(program: &str, args: I, cwd: &Path, env: &[(&str, &Path)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed, and these tests need the real Mender tools: \
             apt-get install mender-artifact mender-cli openssl"
        ),
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// Run a tool and assert it exits 0; returns stdout.
pub fn run_ok<I, S>(program: &str, args: I, cwd: &Path) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run_tool(program, args, cwd, &[]);
    assert!(
        out.status.success(),
        "{program} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory where artifacts are built with the real `mender-artifact`.
pub struct Workdir {
    dir: TempDir,
}

/// An artifact built for a test and the payload file inside it.
pub struct Built {
    /// The `.mender` file.
    pub path: PathBuf,
    /// The payload file (rootfs image or single file).
    pub payload: PathBuf,
}

impl Built {
    /// The artifact's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// The payload's bytes.
    pub fn payload_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.payload).unwrap()
    }
}

impl Workdir {
    /// A fresh scratch directory.
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("creating a temp dir"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `bytes` to `name` in the directory.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `len` pseudo-random bytes derived from `name` (distinct names, distinct checksums).
    pub fn random_file(&self, name: &str, len: usize) -> PathBuf {
        let mut state = u64::from_le_bytes(Sha256::digest(name)[..8].try_into().unwrap()) | 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        self.file(name, &bytes)
    }

    /// A PKCS#1 RSA-2048 key (the form mender-artifact accepts).
    pub fn rsa_key(&self) -> PathBuf {
        let path = self.path().join("rsa.key");
        let out = utf8(&path);
        run_ok(
            "openssl",
            ["genrsa", "-traditional", "-out", out, "2048"],
            self.path(),
        );
        path
    }

    /// A SEC1 P-256 key.
    pub fn ec_key(&self) -> PathBuf {
        let path = self.path().join("ec.key");
        let out = utf8(&path);
        let args = [
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            out,
        ];
        run_ok("openssl", args, self.path());
        path
    }

    /// `mender-artifact write rootfs-image -n NAME -t T… -f <64 KiB of random bytes> EXTRA…`.
    pub fn rootfs(&self, name: &str, device_types: &[&str], extra: &[&str]) -> Built {
        let payload = self.random_file(&format!("{name}.ext4"), 64 * 1024);
        self.rootfs_with(name, device_types, &payload, extra)
    }

    /// Like [`Workdir::rootfs`] with a given payload file.
    pub fn rootfs_with(
        &self,
        name: &str,
        device_types: &[&str],
        payload: &Path,
        extra: &[&str],
    ) -> Built {
        let path = self.path().join(format!("{name}.mender"));
        let mut args = vec!["write", "rootfs-image", "-n", name];
        for t in device_types {
            args.extend(["-t", t]);
        }
        args.extend(["-f", utf8(payload), "-o", utf8(&path), "--no-progress"]);
        args.extend(extra);
        run_ok("mender-artifact", args, self.path());
        assert!(path.exists(), "mender-artifact wrote no {}", path.display());
        Built {
            path,
            payload: payload.to_owned(),
        }
    }

    /// A v3 module-image for the single-file update module (`-T single-file`), whose
    /// payload is `dest_dir`, `filename`, `permissions` and `hello.txt`.
    pub fn single_file(&self, name: &str, device_types: &[&str], extra: &[&str]) -> Built {
        let dir = self.path().join(format!("{name}.files"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dest_dir"), "/tmp/rollout-test").unwrap();
        std::fs::write(dir.join("filename"), "hello.txt").unwrap();
        std::fs::write(dir.join("permissions"), "644").unwrap();
        let payload = dir.join("hello.txt");
        std::fs::write(&payload, format!("hello from {name}\n")).unwrap();
        let path = self.path().join(format!("{name}.mender"));
        let mut args = vec!["write", "module-image", "-T", "single-file", "-n", name];
        for t in device_types {
            args.extend(["-t", t]);
        }
        for f in ["dest_dir", "filename", "permissions", "hello.txt"] {
            args.extend(["-f", f]);
        }
        args.extend(["-o", utf8(&path)]);
        args.extend(extra);
        // module-image has no --no-progress; the file names in the payload are the
        // basenames, so run where the payload files are.
        run_ok("mender-artifact", args, &dir);
        assert!(path.exists(), "mender-artifact wrote no {}", path.display());
        Built { path, payload }
    }
}

/// A path as `&str` (temp dirs are UTF-8).
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
