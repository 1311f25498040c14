//! Artifact blobs on a real S3-compatible server (`--blob-store s3`): uploads become
//! objects, downloads are presigned S3 URLs with `Range`, deletes remove the object, and a
//! refused upload leaves neither an object nor an open multipart upload.
//!
//! The server is moto's server mode (`scripts/s3-server`, at `ROLLOUT_TEST_S3`). Without
//! it these tests pass with a notice, except under `CI=true`, where they fail.

mod common;

use common::s3::TestBucket;
use common::{sha256_hex, Server, Workdir};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use serde_json::json;

const TENANT: &str = "acme";

/// A fresh bucket on the test S3 server, or `None` (after a notice) outside CI.
fn bucket() -> Option<TestBucket> {
    match std::env::var("ROLLOUT_TEST_S3") {
        Ok(endpoint) if !endpoint.is_empty() => Some(TestBucket::create(endpoint)),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but ROLLOUT_TEST_S3 is not set: start a server with \
                 `scripts/s3-server start DIR` and export ROLLOUT_TEST_S3=http://HOST:PORT"
            );
            eprintln!("ROLLOUT_TEST_S3 is not set: S3 blob tests skipped");
            None
        }
    }
}

async fn server(args: &[&str]) -> Option<Server> {
    let bucket = bucket()?;
    Some(Server::start_on(args, Some(bucket)).await)
}

#[tokio::test]
async fn upload_download_with_range_and_delete_on_s3() {
    let Some(server) = server(&[]).await else {
        return;
    };
    let work = Workdir::new();
    // Larger than S3's 5 MiB minimum part, so the upload takes several multipart parts.
    let payload = work.random_file("big.ext4", 12 * 1024 * 1024);
    let built = work.rootfs_with("on-s3", &["dev-a"], &payload, &[]);
    let bytes = built.bytes();
    let api = server.as_user(TENANT);

    let id = api.upload_ok(&built.path, "kept in a bucket").await;
    let keys = server.blob_files();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].to_string_lossy().ends_with(&id), "{keys:?}");
    assert_eq!(api.artifact(&id).await["size"], json!(bytes.len()));

    // The link is presigned by S3 and served by S3, not by rollout. (moto does not check
    // signatures, so a tampered link is not tested here.)
    let uri = api.link_uri(&id).await;
    let endpoint = std::env::var("ROLLOUT_TEST_S3").unwrap();
    assert!(uri.starts_with(&endpoint), "{uri} is not on {endpoint}");
    assert!(uri.contains("X-Amz-Signature="), "{uri} is not presigned");
    assert_eq!(sha256_hex(&api.download(&id).await), sha256_hex(&bytes));

    let ranged = server
        .http()
        .get(&uri)
        .header(RANGE, "bytes=100-1123")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    let range = ranged.headers()[CONTENT_RANGE].to_str().unwrap().to_owned();
    assert_eq!(range, format!("bytes 100-1123/{}", bytes.len()));
    assert_eq!(&ranged.bytes().await.unwrap()[..], &bytes[100..1124]);

    common::no_body(
        api.delete(&format!("/artifacts/{id}")).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(server.blob_files(), Vec::<std::path::PathBuf>::new());
    assert!(api.artifacts().await.is_empty());
}

#[tokio::test]
async fn blobs_on_s3_survive_a_restart() {
    let Some(mut server) = server(&[]).await else {
        return;
    };
    let work = Workdir::new();
    let built = work.rootfs("durable", &["dev-a"], &[]);
    let id = server.as_user(TENANT).upload_ok(&built.path, "").await;
    server.restart().await;
    let api = server.as_user(TENANT);
    assert_eq!(api.download(&id).await, built.bytes());
    assert_eq!(server.blob_files().len(), 1);
}

#[tokio::test]
async fn refused_uploads_leave_nothing_in_the_bucket() {
    let work = Workdir::new();
    let first = work.rootfs("first", &["dev-a"], &[]);
    let second = work.rootfs("second", &["dev-a"], &[]);
    let first_size = first.bytes().len();
    let limit = first_size + first_size / 2;
    let Some(server) = server(&["--storage-limit", &limit.to_string()]).await else {
        return;
    };
    let api = server.as_user(TENANT);
    api.upload_ok(&first.path, "").await;

    // Over the tenant's storage limit: 413, no object, no open multipart upload.
    api.upload_refused(&second.path, StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert_eq!(server.blob_files().len(), 1, "{:?}", server.blob_files());
    assert_eq!(
        api.storage().await,
        json!({"limit": limit, "usage": first_size})
    );

    // Not an artifact at all (cut in the middle): 400, and again nothing left behind.
    let bytes = second.bytes();
    let cut = work.file("cut.mender", &bytes[..bytes.len() / 2]);
    api.upload_refused(&cut, StatusCode::BAD_REQUEST).await;
    assert_eq!(server.blob_files().len(), 1, "{:?}", server.blob_files());
    assert_eq!(api.artifacts().await.len(), 1);
}
