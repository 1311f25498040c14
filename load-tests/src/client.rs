//! The device side of the Mender deployments API, as the simulated devices speak it: check
//! in, download, report status, upload a log. One keep-alive connection pool serves every
//! device; the same code drives rollout and the baseline server.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// Device API base path.
pub const DEVICE_BASE: &str = "/api/devices/v1/deployments/device/deployments";

/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A check-in's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckIn {
    /// 200: an update (parsed only when asked for).
    Update(Option<Update>),
    /// 204: nothing now.
    Nothing,
    /// Any other status.
    Other(StatusCode),
}

/// The answer to a status report or a log upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
}

/// The parts of a 200 check-in a device acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Deployment id.
    pub deployment: String,
    /// Where to download the artifact.
    pub uri: String,
}

#[derive(Deserialize)]
struct NextBody {
    id: String,
    artifact: NextArtifact,
}

#[derive(Deserialize)]
struct NextArtifact {
    source: NextSource,
}

#[derive(Deserialize)]
struct NextSource {
    uri: String,
}

/// An HTTP client of the device API of one server, or of several nodes serving as one
/// (each device always talks to the same node).
#[derive(Clone)]
pub struct DeviceApi {
    http: reqwest::Client,
    nodes: Vec<Node>,
}

/// One server's URLs.
#[derive(Clone)]
struct Node {
    base: String,
    next_url: String,
}

impl DeviceApi {
    /// A client of `servers` for devices of `device_type` that run `current_artifact`.
    pub fn new(servers: &[Url], device_type: &str, current_artifact: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!servers.is_empty(), "no server to talk to");
        let mut nodes = Vec::with_capacity(servers.len());
        for server in servers {
            let base = server.as_str().trim_end_matches('/').to_owned();
            let mut next = Url::parse(&format!("{base}{DEVICE_BASE}/next"))
                .context("building the check-in URL")?;
            next.query_pairs_mut()
                .append_pair("artifact_name", current_artifact)
                .append_pair("device_type", device_type);
            nodes.push(Node {
                base,
                next_url: next.into(),
            });
        }
        Ok(DeviceApi {
            http: http_client()?,
            nodes,
        })
    }

    /// The node the device with `token` talks to: chosen by the token's last bytes (part of
    /// its signature, so spread evenly), the same on every request.
    fn node(&self, token: &str) -> &Node {
        let n = self.nodes.len();
        if n == 1 {
            return &self.nodes[0];
        }
        let hash = token
            .bytes()
            .rev()
            .take(8)
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        &self.nodes[(hash % n as u64) as usize]
    }

    /// The shared HTTP client (also used for management calls).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET …/next`. With `parse`, a 200 body is decoded into an [`Update`]; otherwise it is
    /// only read (so that the connection can be reused). Returns the answer and the number
    /// of body bytes.
    pub async fn check_in(&self, token: &str, parse: bool) -> anyhow::Result<(CheckIn, u64)> {
        let resp = self
            .http
            .get(&self.node(token).next_url)
            .header(AUTHORIZATION, bearer(token))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let n = body.len() as u64;
        Ok(match status {
            StatusCode::OK if parse => {
                let b: NextBody = serde_json::from_slice(&body)
                    .context("the check-in answer is not a deployment")?;
                let update = Update {
                    deployment: b.id,
                    uri: b.artifact.source.uri,
                };
                (CheckIn::Update(Some(update)), n)
            }
            StatusCode::OK => (CheckIn::Update(None), n),
            StatusCode::NO_CONTENT => (CheckIn::Nothing, n),
            other => (CheckIn::Other(other), n),
        })
    }

    /// Download `uri` (no token: the link is signed) and discard the bytes; the status and
    /// the number of bytes read. Refuses links that leave this machine.
    pub async fn download(&self, uri: &str) -> anyhow::Result<(StatusCode, u64)> {
        let url = Url::parse(uri).with_context(|| format!("download link {uri:?}"))?;
        anyhow::ensure!(
            crate::cli::is_loopback(&url),
            "refusing to download {uri}: it is not on this machine"
        );
        let mut resp = self.http.get(url).send().await?;
        let status = resp.status();
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok((status, n))
    }

    /// `PUT …/{deployment}/status`.
    pub async fn status(
        &self,
        token: &str,
        deployment: &str,
        status: &str,
    ) -> anyhow::Result<Answer> {
        let body = format!(r#"{{"status":"{status}"}}"#);
        self.put(token, &format!("{deployment}/status"), body).await
    }

    /// `PUT …/{deployment}/log` with `messages` as `(level, message)`.
    pub async fn log(
        &self,
        token: &str,
        deployment: &str,
        messages: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting a timestamp")?;
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(level, message)| {
                serde_json::json!({"timestamp": timestamp, "level": level, "message": message})
            })
            .collect();
        let body = serde_json::json!({ "messages": messages }).to_string();
        self.put(token, &format!("{deployment}/log"), body).await
    }

    async fn put(&self, token: &str, path: &str, body: String) -> anyhow::Result<Answer> {
        let resp = self
            .http
            .put(format!("{}{DEVICE_BASE}/{path}", self.node(token).base))
            .header(AUTHORIZATION, bearer(token))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the (small) body so that the connection goes back to the pool.
        resp.bytes().await?;
        Ok(Answer {
            status,
            retry_after,
        })
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A keep-alive client without proxies (loopback only) and with a request timeout.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")
}
