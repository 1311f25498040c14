//! Bounds of the upload path: a multipart body that never ends its preamble or part headers,
//! a generated artifact's file past the size limit, concurrent uploads against a tenant's
//! storage limit, and the partial file of an upload cut by a crash.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::raw::{file_part_head, multipart, status_within, text_parts, BOUNDARY};
use common::{assert_error, send, Server, Workdir};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const TENANT: &str = "acme";
/// How soon a refusal must come while the client still holds the rest of its body.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_unterminated_preamble_is_refused_before_the_body_ends() {
    let server = Server::start().await;
    let token = server.user_token(TENANT);
    // 128 MiB announced, 1 MiB of it sent: a preamble that never reaches a boundary.
    let junk = vec![b'x'; 1024 * 1024];
    let mut upload = server
        .start_upload(&token, "/artifacts", 128 << 20, &junk)
        .await;
    assert_eq!(status_within(&mut upload, PROMPT).await, Some(400));
    assert!(server.as_user(TENANT).artifacts().await.is_empty());
}

#[tokio::test]
async fn unterminated_part_headers_are_refused_with_the_bound_in_the_message() {
    let server = Server::start().await;
    let mut body = text_parts(&[("description", "d")]);
    body.extend(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"artifact\"\r\nX-Filler: ")
            .bytes(),
    );
    body.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    let req = server
        .as_user(TENANT)
        .request(Method::POST, "/artifacts")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body);
    let message = assert_error(send(req).await, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("65536"), "{message}");
    assert!(server.as_user(TENANT).artifacts().await.is_empty());
}

#[tokio::test]
async fn generate_stops_writing_a_file_at_the_size_limit() {
    const LIMIT: u64 = 100_000;
    let server = Server::start_with(&["--max-artifact-size", &LIMIT.to_string()]).await;
    let token = server.user_token(TENANT);
    let mut body = text_parts(&[
        ("name", "app-1.0"),
        ("device_types_compatible", "dev-a"),
        ("type", "single_file"),
        ("args", r#"{"dest_dir": "/etc/app"}"#),
    ]);
    body.extend(file_part_head("file", "app.conf").bytes());
    let sent_first = body.len() + 3 * LIMIT as usize;
    body.extend(vec![b'c'; 5_000_000]);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    let mut upload = server
        .start_upload(
            &token,
            "/artifacts/generate",
            body.len(),
            &body[..sent_first],
        )
        .await;
    // Three times the limit has been sent: the server's temporary files never hold more
    // than the limit.
    let mut largest = 0;
    for _ in 0..20 {
        largest = largest.max(largest_temp_file(server.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(largest <= LIMIT, "a temporary file of {largest} bytes");
    upload.write_all(&body[sent_first..]).await.unwrap();
    assert_eq!(status_within(&mut upload, PROMPT).await, Some(413));
    assert!(server.as_user(TENANT).artifacts().await.is_empty());
}

/// The size of the largest deleted file under the temporary directory that `pid` holds
/// open (what `tempfile::tempfile()` creates).
fn largest_temp_file(pid: u32) -> u64 {
    let tmp = std::env::temp_dir();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target.starts_with(&tmp) && target.to_string_lossy().ends_with("(deleted)")
            })
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn concurrent_uploads_cannot_together_pass_the_storage_limit() {
    let work = Workdir::new();
    let first = work.rootfs("first", &["dev-a"], &[]).bytes();
    let second = work.rootfs("second", &["dev-a"], &[]).bytes();
    // Room for either artifact, not for both.
    let limit = first.len().max(second.len()) + first.len().min(second.len()) / 2;
    let server = Server::start_with(&["--storage-limit", &limit.to_string()]).await;
    let token = server.user_token(TENANT);
    let bodies = [&first, &second].map(|bytes| {
        multipart(
            &[("description", "")],
            Some(("artifact", "a.mender", bytes)),
        )
    });
    // Both uploads are half-way through before either ends: each passed any check made
    // when it began.
    let mut streams = Vec::new();
    for body in &bodies {
        let half = body.len() / 2;
        streams.push(
            server
                .start_upload(&token, "/artifacts", body.len(), &body[..half])
                .await,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (stream, body) in streams.iter_mut().zip(&bodies) {
        stream.write_all(&body[body.len() / 2..]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut statuses = Vec::new();
    for stream in &mut streams {
        statuses.push(status_within(stream, Duration::from_secs(30)).await);
    }
    statuses.sort();
    assert_eq!(statuses, [Some(201), Some(413)]);

    let api = server.as_user(TENANT);
    let stored = api.artifacts().await;
    assert_eq!(stored.len(), 1);
    let usage = api.storage().await;
    assert_eq!(usage["limit"], json!(limit));
    assert_eq!(usage["usage"], stored[0]["size"]);
    assert_eq!(stored_blobs(&server).len(), 1);
}

#[tokio::test]
async fn the_partial_file_of_an_upload_cut_by_a_kill_9_is_removed_at_start_up() {
    let mut server = Server::start().await;
    let token = server.user_token(TENANT);
    let work = Workdir::new();
    let payload = work.random_file("big.ext4", 4 * 1024 * 1024);
    let artifact = work.rootfs_with("big", &["dev-a"], &payload, &[]).bytes();
    let body = multipart(
        &[("description", "")],
        Some(("artifact", "big.mender", &artifact)),
    );
    let _upload = server
        .start_upload(&token, "/artifacts", body.len(), &body[..body.len() / 2])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while partial_files(&server).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never reached the blob store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.crash_and_restart();

    assert_eq!(partial_files(&server), Vec::<PathBuf>::new());
    assert!(
        server.log_text().contains("removed the partial files"),
        "{}",
        server.log_text()
    );
    // Uploads work on after the sweep.
    let api = server.as_user(TENANT);
    api.upload_ok(&work.rootfs("after", &["dev-a"], &[]).path, "")
        .await;
    assert_eq!(stored_blobs(&server).len(), 1);
}

fn is_partial(path: &std::path::Path) -> bool {
    path.components().any(|c| c.as_os_str() == ".partial")
}

/// Non-empty files in the blob store's staging directory.
fn partial_files(server: &Server) -> Vec<PathBuf> {
    server
        .blob_files()
        .into_iter()
        .filter(|p| is_partial(p))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect()
}

/// Complete blobs.
fn stored_blobs(server: &Server) -> Vec<PathBuf> {
    server
        .blob_files()
        .into_iter()
        .filter(|p| !is_partial(p))
        .collect()
}

#[tokio::test]
async fn an_upload_whose_client_goes_away_leaves_no_partial_file() {
    let server = Server::start().await;
    let token = server.user_token(TENANT);
    let work = Workdir::new();
    let payload = work.random_file("big.ext4", 4 * 1024 * 1024);
    let artifact = work.rootfs_with("big", &["dev-a"], &payload, &[]).bytes();
    let body = multipart(
        &[("description", "")],
        Some(("artifact", "big.mender", &artifact)),
    );
    let upload = server
        .start_upload(&token, "/artifacts", body.len(), &body[..body.len() / 2])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while partial_files(&server).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never reached the blob store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(upload);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.blob_files().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "files left behind: {:?}",
            server.blob_files()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
