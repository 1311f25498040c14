//! `X-MEN-RequestID`: echoed when the client sends one, generated otherwise, and present in
//! every error body.

use http::{HeaderMap, HeaderValue};

/// The request id header.
pub const REQUEST_ID_HEADER: &str = "x-men-requestid";

/// Longest client-supplied id we echo; longer ones are replaced.
const MAX_LEN: usize = 200;

tokio::task_local! {
    /// The id of the request being handled (set by the server loop).
    pub static REQUEST_ID: RequestId;
}

/// A request id, kept as the header value it is sent back in: cloning it (for the task
/// local, for the response) shares the bytes instead of copying them, on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id if it sent a usable one (visible ASCII, 1 to 200 bytes), else a
    /// fresh UUID.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(REQUEST_ID_HEADER)
            .filter(|v| !v.is_empty() && v.len() <= MAX_LEN && v.to_str().is_ok())
            .cloned()
            .map(RequestId)
            .unwrap_or_else(Self::fresh)
    }

    fn fresh() -> Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        RequestId(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")))
    }

    /// The id of the current request ("" outside of one).
    pub fn current() -> String {
        REQUEST_ID
            .try_with(|id| id.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as the response header's value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_others_are_replaced_by_a_uuid() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-1"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "abc-1");
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_bytes(&[b'x'; 201]).unwrap(),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        ] {
            headers.insert(REQUEST_ID_HEADER, bad);
            let id = RequestId::from_headers(&headers);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id:?}");
        }
        assert!(uuid::Uuid::parse_str(RequestId::from_headers(&HeaderMap::new()).as_str()).is_ok());
    }
}
