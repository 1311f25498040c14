//! `X-MEN-RequestID`: echoed when the client sends one, generated otherwise, and present in
//! every error body.

use http::HeaderMap;

/// The request id header.
pub const REQUEST_ID_HEADER: &str = "x-men-requestid";

/// Longest client-supplied id we echo; longer ones are replaced.
const MAX_LEN: usize = 200;

tokio::task_local! {
    /// The id of the request being handled (set by the server loop).
    pub static REQUEST_ID: RequestId;
}

/// A request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The client's id if it sent a usable one, else a fresh UUID.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_LEN)
            .map(|v| RequestId(v.to_owned()))
            .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string()))
    }

    /// The id of the current request ("" outside of one).
    pub fn current() -> String {
        REQUEST_ID.try_with(|id| id.0.clone()).unwrap_or_default()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
