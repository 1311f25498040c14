//! The real `mender-cli` 1.9 against rollout: upload (chunked multipart), list and delete.

mod common;

use std::path::Path;

use common::{Server, Workdir};
use serde_json::json;

const TENANT: &str = "acme";

/// What one `mender-cli` run printed.
struct CliRun {
    ok: bool,
    /// stdout without the `Configuration file not found. Continuing.` line.
    stdout: String,
    stderr: String,
}

/// Run `mender-cli --server BASE --token-value TOKEN ARGS…` with `HOME` in `home`, so no
/// user configuration or cached token is read.
fn mender_cli(server: &Server, token: &str, home: &Path, args: &[&str]) -> CliRun {
    let mut all = vec!["--server", &server.base, "--token-value", token];
    all.extend_from_slice(args);
    let cache = home.join(".cache");
    let env = [
        ("HOME", home),
        ("XDG_CACHE_HOME", cache.as_path()),
        ("XDG_CONFIG_HOME", home),
    ];
    let out = common::run_tool("mender-cli", all, home, &env);
    let stdout = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("Configuration file"))
        .collect::<Vec<_>>()
        .join("\n");
    CliRun {
        ok: out.status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_ok(run: &CliRun, what: &str) {
    assert!(
        run.ok,
        "mender-cli {what} failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
}

#[tokio::test]
async fn mender_cli_uploads_lists_and_deletes_an_artifact() {
    let (server, work) = (Server::start().await, Workdir::new());
    let token = server.user_token(TENANT);
    let home = Workdir::new();
    let key = work.ec_key();
    let built = work.rootfs(
        "cli-rootfs",
        &["dev-a", "dev-b"],
        &["-k", key.to_str().unwrap()],
    );
    let file = built.path.to_str().unwrap();

    let upload = [
        "artifacts",
        "upload",
        "--no-progress",
        "--description",
        "d",
        file,
    ];
    assert_ok(&mender_cli(&server, &token, home.path(), &upload), "upload");
    let list = server.as_user(TENANT).artifacts().await;
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["description"], json!("d"));
    assert_eq!(list[0]["size"], json!(built.bytes().len()));

    let listed = mender_cli(
        &server,
        &token,
        home.path(),
        &["artifacts", "list", "-d", "3"],
    );
    assert_ok(&listed, "list");
    let out = &listed.stdout;
    for expected in [
        format!("ID: {id}"),
        "Name: cli-rootfs".to_owned(),
        "Signed: true".to_owned(),
        "Description: d".to_owned(),
        format!("Size: {}", built.bytes().len()),
        "Compatible device types:\n  dev-a\n  dev-b".to_owned(),
        "Format version: 3".to_owned(),
        "Type: rootfs-image".to_owned(),
        format!("Checksum: {}", common::sha256_hex(&built.payload_bytes())),
    ] {
        assert!(out.contains(&expected), "{expected:?} missing from:\n{out}");
    }

    let delete = mender_cli(&server, &token, home.path(), &["artifacts", "delete", &id]);
    assert_ok(&delete, "delete");
    let after = mender_cli(
        &server,
        &token,
        home.path(),
        &["artifacts", "list", "-d", "3"],
    );
    assert_ok(&after, "list after delete");
    assert!(!after.stdout.contains(&id), "{}", after.stdout);
    assert!(!after.stdout.contains("cli-rootfs"), "{}", after.stdout);
    assert!(server.as_user(TENANT).artifacts().await.is_empty());
}

#[tokio::test]
async fn mender_cli_lists_module_images_and_reports_a_duplicate_upload() {
    let (server, work) = (Server::start().await, Workdir::new());
    let token = server.user_token(TENANT);
    let home = Workdir::new();
    let built = work.single_file("cli-app", &["dev-a"], &[]);
    let file = built.path.to_str().unwrap();

    let upload = ["artifacts", "upload", "--no-progress", file];
    assert_ok(&mender_cli(&server, &token, home.path(), &upload), "upload");
    let again = mender_cli(&server, &token, home.path(), &upload);
    assert!(!again.ok, "a duplicate upload succeeded: {}", again.stdout);
    let output = format!("{}{}", again.stdout, again.stderr);
    assert!(output.contains("409"), "{output}");

    let listed = mender_cli(
        &server,
        &token,
        home.path(),
        &["artifacts", "list", "-d", "3"],
    );
    assert_ok(&listed, "list");
    for expected in [
        "Name: cli-app",
        "Signed: false",
        "Type: single-file",
        "Name: hello.txt",
    ] {
        assert!(
            listed.stdout.contains(expected),
            "{expected:?} missing from:\n{}",
            listed.stdout
        );
    }
    assert_eq!(server.as_user(TENANT).artifacts().await.len(), 1);
}

#[tokio::test]
async fn mender_cli_delete_of_an_unknown_artifact_fails() {
    let server = Server::start().await;
    let token = server.user_token(TENANT);
    let home = Workdir::new();
    let id = uuid::Uuid::new_v4().to_string();
    let run = mender_cli(&server, &token, home.path(), &["artifacts", "delete", &id]);
    assert!(
        !run.ok,
        "deleting an unknown artifact succeeded: {}",
        run.stdout
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(output.contains("404"), "{output}");
}
