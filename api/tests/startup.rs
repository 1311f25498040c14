//! What an operator meets when a start goes wrong: a clear error naming the path or the
//! address and the way out, and nothing left behind; offline commands that never create a
//! data dir; JSON logs on request; `--version` with the commit.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{send, Server, Workdir};

/// Run `rollout ARGS` to its end (a start that fails exits at once; a bound keeps a start
/// that unexpectedly succeeds from hanging the test).
fn rollout(args: &[&str], data_dir: &Path) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("running rollout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_start_that_cannot_listen_leaves_nothing_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let work = Workdir::new();
    let data = work.path().join("data");
    let out = rollout(&["serve", "--listen", &addr], &data);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("binding {addr}")), "{err}");
    assert!(!data.exists(), "no data dir, key or store was made");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_told_one_is_running() {
    let server = Server::start().await;
    let out = rollout(&["serve", "--listen", "127.0.0.1:0"], &server.data_dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    let meta = server.data_dir.join("meta");
    assert!(
        err.contains(&meta.display().to_string()) && err.contains("already running"),
        "{err}"
    );
    assert!(server.running(), "the first server is untouched");
}

#[test]
fn a_directory_of_other_files_is_not_taken_over() {
    let work = Workdir::new();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    let out = rollout(&["serve", "--listen", "127.0.0.1:0"], &home);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("holds other files"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&home).unwrap().collect();
    assert_eq!(left.len(), 1, "only notes.txt is there");
}

#[test]
fn token_commands_name_the_missing_key_and_create_nothing() {
    let work = Workdir::new();
    let wrong = work.path().join("rollout-data");
    for kind in [
        &["token", "user", "--subject", "ops"][..],
        &["token", "device", "--device", "d1"][..],
    ] {
        let out = rollout(kind, &wrong);
        assert!(!out.status.success(), "{kind:?}");
        assert!(out.stdout.is_empty(), "no token printed");
        let err = stderr(&out);
        assert!(
            err.contains("rollout-data/token-signing.key") && err.contains("--data-dir"),
            "{err}"
        );
    }
    assert!(!wrong.exists(), "no data dir was made");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_text_logs_have_no_colours_off_a_terminal() {
    let json = Server::start_with(&["--log-format", "json", "--access-log"]).await;
    let resp = send(
        json.http()
            .get(json.url("/health"))
            .header("X-MEN-RequestID", "startup-test-1"),
    )
    .await;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let log = json.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.contains("rollout started")), "{log}");
    let mut access = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["target"] == "access" {
            access.push(v);
        }
    }
    let health = access
        .iter()
        .find(|v| v["request_id"] == "startup-test-1")
        .unwrap_or_else(|| panic!("an access line for the request: {log}"));
    assert_eq!(
        (&health["path"], &health["status"], &health["method"]),
        (
            &serde_json::json!("/health"),
            &serde_json::json!(200),
            &serde_json::json!("GET")
        )
    );
    assert!(health["ms"].as_f64().is_some(), "{health}");
    let text = Server::start().await;
    let log = text.log_text();
    assert!(log.contains("rollout started"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI colours in a file: {log}");
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .arg("--version")
        .output()
        .expect("running rollout");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = format!("rollout {} (", env!("CARGO_PKG_VERSION"));
    assert!(said.starts_with(&expected), "{said}");
    // Built from a git checkout (as in CI): the abbreviated commit id; from a source
    // tarball, it says so.
    let commit = said[expected.len()..].trim_end_matches(')');
    let in_git = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.git")
        .exists();
    if in_git {
        let id = commit.strip_prefix("commit ").unwrap_or_default();
        assert!(
            id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{said}"
        );
    } else {
        assert_eq!(commit, "unknown commit", "{said}");
    }
}
