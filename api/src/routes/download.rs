//! `GET /download/{artifact}?tenant&expires&signature`: the signed artifact links rollout
//! serves itself, with `Content-Length`, `Range`/206, `If-Modified-Since`/304 and
//! `If-Unmodified-Since`/412. Devices fetch them without an Authorization header.
//!
//! This route is served outside warp because it streams a blob of unknown origin
//! (filesystem or any OpenDAL backend) as the response body.

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use storage::{BlobStore, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;
use warp::Reply;

use crate::error::ApiError;
use crate::server::{from_warp, BoxError, HttpResponse};
use crate::signing::LinkError;
use crate::state::AppState;

const PREFIX: &str = "/download/";

/// Whether the request is for a download link.
pub fn matches(req: &Request<Incoming>) -> bool {
    req.uri().path().starts_with(PREFIX)
}

/// Serve a download link.
pub async fn serve(state: &AppState, req: Request<Incoming>) -> HttpResponse {
    match serve_checked(state, &req).await {
        Ok(r) => r,
        Err(e) => from_warp(e.into_response()),
    }
}

struct LinkParams {
    artifact: Uuid,
    tenant: TenantId,
    expires: i64,
    signature: String,
}

fn parse_link(req: &Request<Incoming>) -> Result<LinkParams, ApiError> {
    let raw_id = req.uri().path().trim_start_matches(PREFIX);
    let artifact =
        Uuid::parse_str(raw_id).map_err(|_| ApiError::NotFound("artifact not found".into()))?;
    let mut tenant = None;
    let mut expires = None;
    let mut signature = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "tenant" => tenant = Some(TenantId(v.into_owned())),
            "expires" => expires = v.parse::<i64>().ok(),
            "signature" => signature = Some(v.into_owned()),
            _ => {}
        }
    }
    match (tenant, expires, signature) {
        (Some(tenant), Some(expires), Some(signature)) => Ok(LinkParams {
            artifact,
            tenant,
            expires,
            signature,
        }),
        _ => Err(ApiError::Forbidden(
            "the download link is missing its tenant, expiry or signature".into(),
        )),
    }
}

async fn serve_checked(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    let link = parse_link(req)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    state
        .signer
        .verify(
            link.artifact,
            &link.tenant,
            link.expires,
            &link.signature,
            now,
        )
        .map_err(|e: LinkError| ApiError::Forbidden(e.to_string()))?;
    let record = state
        .store
        .artifact(&link.tenant, link.artifact)
        .await?
        .ok_or_else(|| ApiError::NotFound("artifact not found".into()))?;
    let path = BlobStore::path(&link.tenant, link.artifact);
    let blobs = state.artifacts.blobs();
    let meta = blobs
        .stat(&path)
        .await?
        .ok_or_else(|| ApiError::NotFound("artifact file not found".into()))?;
    let modified = whole_seconds(meta.modified.unwrap_or(record.modified));
    let size = meta.size;
    if let Some(since) = http_date(req.headers(), header::IF_UNMODIFIED_SINCE) {
        if modified > since {
            return Err(ApiError::PreconditionFailed);
        }
    }
    let mut builder = http::Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, attachment(&record.meta.name));
    if let Some(since) = http_date(req.headers(), header::IF_MODIFIED_SINCE) {
        if modified <= since {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
    }
    let range = match requested_range(req.headers(), size) {
        Ok(r) => r,
        Err(e) => {
            let mut resp = from_warp(e.into_response());
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let (status, start, end) = match range {
        Some((start, end)) => {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        None => (StatusCode::OK, 0, size),
    };
    builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, end - start);
    let body = if req.method() == Method::HEAD || start == end {
        empty()
    } else {
        let stream = blobs.read_range(&path, start, end).await?;
        StreamBody::new(stream.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError)))
            .boxed_unsync()
    };
    builder
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn empty() -> crate::server::ResponseBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn whole_seconds(t: OffsetDateTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.unix_timestamp().max(0) as u64)
}

/// `attachment; filename="NAME.mender"`, so that a browser or `curl -OJ` saves the file
/// under the release's name; characters outside `A-Za-z0-9._-` become `_` (release names
/// are free text, a header value is not).
fn attachment(release: &str) -> String {
    let safe: String = release
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("attachment; filename=\"{safe}.mender\"")
}

fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// The single byte range asked for, as `start..end`; `None` for the whole file. Several
/// ranges are answered with the whole file, which RFC 9110 allows.
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable =
        || ApiError::RangeNotSatisfiable(format!("range {value:?} is outside 0-{size}"));
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let n: u64 = last.parse().map_err(|_| unsatisfiable())?;
        if n == 0 {
            return Err(unsatisfiable());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = first.parse().map_err(|_| unsatisfiable())?;
        let end = if last.is_empty() {
            size
        } else {
            last.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .saturating_add(1)
                .min(size)
        };
        (start, end)
    };
    if range.0 >= range.1 || range.0 >= size {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn downloads_are_saved_under_the_release_name() {
        assert_eq!(
            attachment("app-1.0"),
            "attachment; filename=\"app-1.0.mender\""
        );
        assert_eq!(
            attachment("a \"b\"/ç\r\n"),
            "attachment; filename=\"a__b_____.mender\""
        );
    }

    #[test]
    fn ranges_are_parsed_like_rfc_9110() {
        assert_eq!(requested_range(&HeaderMap::new(), 100).unwrap(), None);
        assert_eq!(
            requested_range(&with_range("bytes=0-9"), 100).unwrap(),
            Some((0, 10))
        );
        assert_eq!(
            requested_range(&with_range("bytes=90-"), 100).unwrap(),
            Some((90, 100))
        );
        assert_eq!(
            requested_range(&with_range("bytes=-10"), 100).unwrap(),
            Some((90, 100))
        );
        assert_eq!(
            requested_range(&with_range("bytes=50-500"), 100).unwrap(),
            Some((50, 100))
        );
        assert!(requested_range(&with_range("bytes=100-"), 100).is_err());
        assert!(requested_range(&with_range("bytes=x-1"), 100).is_err());
        assert_eq!(
            requested_range(&with_range("bytes=0-1,5-6"), 100).unwrap(),
            None
        );
    }
}
