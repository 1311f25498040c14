//! Running API suites with artifact blobs on a real S3-compatible server instead of the
//! filesystem: with `ROLLOUT_TEST_BLOBS=s3` and `ROLLOUT_TEST_S3=http://host:port` (moto's
//! server, started by `scripts/s3-server`), every [`Server`] runs `--blob-store s3` on a
//! bucket of its own, created here and kept across restarts.
//!
//! [`Server`]: super::Server

use std::path::PathBuf;
use std::time::Duration;

/// Credentials the server passes to S3. moto accepts any; they are set the way an operator
/// sets them for AWS, in the standard environment variables that OpenDAL reads.
pub const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "rollout-tests"),
    ("AWS_SECRET_ACCESS_KEY", "rollout-tests-secret"),
];

/// A bucket created for one test server.
pub struct TestBucket {
    /// `http://host:port` of the S3 server.
    pub endpoint: String,
    /// Bucket name.
    pub name: String,
}

impl TestBucket {
    /// `Some` when the environment asks for S3 blobs.
    pub fn from_env() -> Option<TestBucket> {
        match std::env::var("ROLLOUT_TEST_BLOBS").as_deref() {
            Ok("s3") => {}
            Ok("fs") | Ok("") | Err(_) => return None,
            Ok(other) => panic!("ROLLOUT_TEST_BLOBS={other:?}: expected s3 or fs"),
        }
        let endpoint = std::env::var("ROLLOUT_TEST_S3").expect(
            "ROLLOUT_TEST_BLOBS=s3 needs ROLLOUT_TEST_S3=http://host:port \
             (scripts/s3-server start DIR prints it)",
        );
        Some(TestBucket::create(endpoint))
    }

    /// Create a fresh bucket on the server at `endpoint`.
    pub fn create(endpoint: String) -> TestBucket {
        let name = format!("rollout-{}", uuid::Uuid::new_v4().simple());
        let bucket = TestBucket { endpoint, name };
        let (status, body) = bucket.call(reqwest::Method::PUT, "");
        assert!(
            status.is_success(),
            "creating bucket {}: {status} {body}",
            bucket.name
        );
        bucket
    }

    /// The `rollout serve` flags that use this bucket.
    pub fn serve_args(&self) -> Vec<String> {
        [
            "--blob-store",
            "s3",
            "--s3-bucket",
            &self.name,
            "--s3-endpoint",
            &self.endpoint,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Every object key in the bucket, and every multipart upload still open (an
    /// interrupted upload that was never aborted keeps its parts, and its cost, in S3).
    pub fn files(&self) -> Vec<PathBuf> {
        let (status, objects) = self.call(reqwest::Method::GET, "?list-type=2");
        assert!(
            status.is_success(),
            "listing {}: {status} {objects}",
            self.name
        );
        let (status, uploads) = self.call(reqwest::Method::GET, "?uploads");
        assert!(status.is_success(), "listing uploads: {status} {uploads}");
        let mut out: Vec<PathBuf> = xml_values(&objects, "Key")
            .into_iter()
            .map(PathBuf::from)
            .collect();
        out.extend(
            xml_values(&uploads, "Key")
                .into_iter()
                .map(|key| PathBuf::from(format!("multipart upload of {key}"))),
        );
        out
    }

    /// One S3 request on the bucket (moto does not check signatures), from a thread and
    /// runtime of its own so that sync helpers can call it from async tests.
    fn call(&self, method: reqwest::Method, query: &str) -> (reqwest::StatusCode, String) {
        let url = format!("{}/{}{query}", self.endpoint, self.name);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for an S3 call");
            rt.block_on(async {
                let resp = reqwest::Client::new()
                    .request(method, &url)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                let status = resp.status();
                (status, resp.text().await.unwrap_or_default())
            })
        })
        .join()
        .expect("the S3 call's thread")
    }
}

/// The text of every `<tag>…</tag>` in an S3 XML answer (keys are plain ASCII here).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_owned()))
        .collect()
}
