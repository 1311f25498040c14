//! Signed download links: `GET /artifacts/{id}/download` and the `/download/{id}` URIs it
//! hands out, which devices and operators fetch without credentials.

mod common;

use std::time::Duration;

use common::{assert_error, no_body, send, sha256_hex, Server, Workdir};
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, IF_MODIFIED_SINCE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use reqwest::{Response, StatusCode};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const TENANT: &str = "acme";

/// A server holding one uploaded artifact.
struct Fixture {
    server: Server,
    id: String,
    bytes: Vec<u8>,
    _work: Workdir,
}

async fn fixture(args: &[&str]) -> Fixture {
    let server = Server::start_with(args).await;
    let work = Workdir::new();
    let built = work.rootfs("downloadable", &["dev-a"], &[]);
    let id = server.as_user(TENANT).upload_ok(&built.path, "").await;
    Fixture {
        server,
        id,
        bytes: built.bytes(),
        _work: work,
    }
}

impl Fixture {
    async fn uri(&self) -> String {
        self.server.as_user(TENANT).link_uri(&self.id).await
    }

    async fn get(&self, uri: &str, headers: &[(reqwest::header::HeaderName, &str)]) -> Response {
        let mut req = self.server.http().get(uri);
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        send(req).await
    }
}

fn header(resp: &Response, name: reqwest::header::HeaderName) -> String {
    resp.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Replace the value of query parameter `key` in `uri`.
fn with_param(uri: &str, key: &str, value: &str) -> String {
    let (path, query) = uri.split_once('?').expect("the link has a query");
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn param(uri: &str, key: &str) -> String {
    let query = uri.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{uri} has no {key}"))
        .to_owned()
}

#[tokio::test]
async fn link_points_at_this_server_and_expires_after_the_operator_ttl() {
    let f = fixture(&["--operator-link-ttl", "600"]).await;
    let before = OffsetDateTime::now_utc();
    let link = f.server.as_user(TENANT).link(&f.id).await;
    let uri = link["uri"].as_str().unwrap();
    let prefix = format!("{}/download/{}?", f.server.base, f.id);
    assert!(
        uri.starts_with(&prefix),
        "{uri} does not start with {prefix}"
    );
    assert_eq!(param(uri, "tenant"), TENANT);
    let expire = OffsetDateTime::parse(link["expire"].as_str().unwrap(), &Rfc3339).unwrap();
    let ttl = (expire - before).whole_seconds();
    assert!(
        (598..=601).contains(&ttl),
        "link valid for {ttl} s, not 600"
    );
    assert_eq!(param(uri, "expires"), expire.unix_timestamp().to_string());
}

#[tokio::test]
async fn link_serves_the_whole_artifact_without_credentials() {
    let f = fixture(&[]).await;
    let resp = f.get(&f.uri().await, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, CONTENT_LENGTH), f.bytes.len().to_string());
    assert!(!common::request_id(&resp).is_empty());
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&f.bytes));
}

#[tokio::test]
async fn range_requests_get_206_with_the_requested_bytes() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let size = f.bytes.len();
    let cases = [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-1999", 1000, 2000),
        (&*format!("bytes={}-", size - 10), size - 10, size),
        ("bytes=-25", size - 25, size),
        (&*format!("bytes=100-{}", size + 500), 100, size),
    ];
    for (range, start, end) in cases {
        let resp = f.get(&uri, &[(RANGE, range)]).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        let expected_range = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(header(&resp, CONTENT_RANGE), expected_range, "{range}");
        assert_eq!(header(&resp, CONTENT_LENGTH), (end - start).to_string());
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &f.bytes[start..end], "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let past_end = format!("bytes={}-", f.bytes.len());
    for range in [past_end.as_str(), "bytes=999999999-1000000000"] {
        let resp = f.get(&uri, &[(RANGE, range)]).await;
        assert_error(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
    }
}

#[tokio::test]
async fn if_modified_since_last_modified_is_304() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let first = f.get(&uri, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let last_modified = header(&first, LAST_MODIFIED);

    let same = f.get(&uri, &[(IF_MODIFIED_SINCE, &last_modified)]).await;
    no_body(same, StatusCode::NOT_MODIFIED).await;
    let later = f
        .get(
            &uri,
            &[(IF_MODIFIED_SINCE, "Fri, 01 Jan 2100 00:00:00 GMT")],
        )
        .await;
    no_body(later, StatusCode::NOT_MODIFIED).await;

    let earlier = f
        .get(
            &uri,
            &[(IF_MODIFIED_SINCE, "Sat, 01 Jan 2000 00:00:00 GMT")],
        )
        .await;
    assert_eq!(earlier.status(), StatusCode::OK);
    assert_eq!(earlier.bytes().await.unwrap().len(), f.bytes.len());
}

#[tokio::test]
async fn if_unmodified_since_in_the_past_is_412() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let past = f
        .get(
            &uri,
            &[(IF_UNMODIFIED_SINCE, "Sat, 01 Jan 2000 00:00:00 GMT")],
        )
        .await;
    assert_error(past, StatusCode::PRECONDITION_FAILED).await;

    let future = f
        .get(
            &uri,
            &[(IF_UNMODIFIED_SINCE, "Fri, 01 Jan 2100 00:00:00 GMT")],
        )
        .await;
    assert_eq!(future.status(), StatusCode::OK);
    assert_eq!(
        sha256_hex(&future.bytes().await.unwrap()),
        sha256_hex(&f.bytes)
    );
}

#[tokio::test]
async fn tampered_links_are_403() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let signature = param(&uri, "signature");
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let expires: i64 = param(&uri, "expires").parse().unwrap();
    let tampered = [
        with_param(&uri, "signature", std::str::from_utf8(&flipped).unwrap()),
        with_param(&uri, "signature", "not-hex"),
        with_param(&uri, "expires", &(expires + 3600).to_string()),
        with_param(&uri, "tenant", "other"),
        uri.split_once('?').unwrap().0.to_owned(),
    ];
    for bad in tampered {
        assert_error(f.get(&bad, &[]).await, StatusCode::FORBIDDEN).await;
    }
    // A valid link for one artifact does not open another.
    let other = uri.replace(&f.id, &uuid::Uuid::new_v4().to_string());
    assert_error(f.get(&other, &[]).await, StatusCode::FORBIDDEN).await;
    assert_eq!(f.get(&uri, &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_link_is_403() {
    let f = fixture(&["--operator-link-ttl", "0"]).await;
    let uri = f.uri().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_error(f.get(&uri, &[]).await, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn link_of_a_deleted_artifact_is_404() {
    let f = fixture(&[]).await;
    let uri = f.uri().await;
    let api = f.server.as_user(TENANT);
    no_body(
        api.delete(&format!("/artifacts/{}", f.id)).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_error(f.get(&uri, &[]).await, StatusCode::NOT_FOUND).await;
    let link = api.get(&format!("/artifacts/{}/download", f.id)).await;
    assert_error(link, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn link_request_needs_a_user_token() {
    let f = fixture(&[]).await;
    let path = format!("/artifacts/{}/download", f.id);
    assert_error(
        f.server.anonymous().get(&path).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let device = f.server.api(f.server.device_token(TENANT));
    assert_error(device.get(&path).await, StatusCode::FORBIDDEN).await;
    assert!(f.server.as_user(TENANT).link(&f.id).await["uri"].is_string());
}
