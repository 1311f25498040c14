//! Every error the API answers, and how each maps to an HTTP status and the Mender error
//! body `{"error": ..., "request_id": ...}`. This is the only place that decides statuses.

use std::convert::Infallible;

use engine::EngineError;
use http::StatusCode;
use serde::Serialize;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

use crate::request_id::RequestId;

/// Seconds a client told 503 should wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials of the wrong kind.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the client stopped sending its request body.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Unmodified-Since` failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 416.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// 422.
    #[error("{0}")]
    Unprocessable(String),
    /// 500. The message is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503 with `Retry-After`: the server is at a bound on concurrent work or a deployment
    /// is restarting; nothing was refused, the request can be repeated after that many
    /// seconds.
    #[error("{message}")]
    Unavailable {
        /// What is going on.
        message: String,
        /// Seconds to wait (at least 1).
        retry_after: u64,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            EngineError::Invalid(m) => ApiError::BadRequest(m),
            e @ EngineError::Artifact(_) => ApiError::BadRequest(e.to_string()),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Unprocessable(m) => ApiError::Unprocessable(m),
            EngineError::TooLarge(m) => ApiError::TooLarge(m),
            EngineError::Busy(message) => ApiError::Unavailable {
                message,
                retry_after: RETRY_AFTER_SECS,
            },
            EngineError::TimedOut(m) => ApiError::RequestTimeout(m),
            e @ EngineError::Unavailable { retry_after, .. } => ApiError::Unavailable {
                message: e.to_string(),
                retry_after: retry_after.as_secs().max(1),
            },
            e @ (EngineError::Store(_) | EngineError::Internal(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::multipart::MultipartError> for ApiError {
    fn from(e: crate::multipart::MultipartError) -> Self {
        use crate::multipart::MultipartError;
        match e {
            e @ MultipartError::TimedOut(_) => ApiError::RequestTimeout(e.to_string()),
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<storage::StoreError> for ApiError {
    fn from(e: storage::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    request_id: String,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(m) => {
                tracing::error!(request_id = %RequestId::current(), "{m}");
                "internal error".to_owned()
            }
            other => shortened(other.to_string()),
        };
        let body = ErrorBody {
            error: &message,
            request_id: RequestId::current(),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if let ApiError::Unavailable { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after.into());
        }
        response
    }
}

/// Characters of any one quoted input an error message keeps (README, "Limits").
const MAX_QUOTE: usize = 256;
/// Characters of a whole error message: a bound on what an input can make the server send
/// back, for inputs a message echoes unquoted.
const MAX_MESSAGE: usize = 2048;

/// `message` with every quoted input (`"…"`, as our messages and serde's quote them) cut
/// to [`MAX_QUOTE`] characters, and the whole to [`MAX_MESSAGE`]: a 100 MB string sent
/// where a list belongs gets a 400 of a few hundred bytes, not one of 100 MB.
fn shortened(message: String) -> String {
    if message.len() <= MAX_QUOTE {
        return message;
    }
    let mut out = String::with_capacity(MAX_MESSAGE.min(message.len()));
    let mut quoted: Option<usize> = None; // characters kept of the open quote
    let mut escaped = false;
    for c in message.chars() {
        if out.len() >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        match quoted {
            None => {
                out.push(c);
                if c == '"' {
                    quoted = Some(0);
                }
            }
            Some(kept) => {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                if closes {
                    out.push(c);
                    quoted = None;
                } else if kept < MAX_QUOTE {
                    out.push(c);
                    quoted = Some(kept + 1);
                } else if kept == MAX_QUOTE {
                    out.push('…');
                    quoted = Some(kept + 1);
                }
            }
        }
    }
    out
}

/// Result of a handler: a reply or an error answer.
pub type ApiResult<T = Response> = Result<T, ApiError>;

/// Turn a handler result into a response.
pub fn respond<T: Reply>(result: ApiResult<T>) -> Response {
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Map the rejections warp produces itself (no route matched, bad method, …), most
/// specific first.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if rejection.is_not_found() {
        ApiError::NotFound("no such route".into())
    } else if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if let Some(e) = rejection.find::<warp::reject::PayloadTooLarge>() {
        ApiError::TooLarge(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::UnsupportedMediaType>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        // Credentials that are not even text are no credentials: 401, like any bad token.
        if e.name().eq_ignore_ascii_case("authorization") {
            ApiError::Unauthorized("the Authorization header is not a bearer token".into())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::LengthRequired>() {
        ApiError::BadRequest(e.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Last: another route with the same path but another method says 405, while the
        // route that matched the method has the more useful answer.
        ApiError::MethodNotAllowed
    } else {
        ApiError::Internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(err.into_response())
}

impl warp::reject::Reject for ApiError {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_quotes_are_cut_and_the_rest_of_the_message_kept() {
        let long = "a".repeat(1000);
        let cut = shortened(format!(
            r#"invalid type: string "{long}", expected a sequence"#
        ));
        assert_eq!(
            cut,
            format!(
                r#"invalid type: string "{}…", expected a sequence"#,
                &long[..256]
            )
        );
        let escaped = format!(r#"value "\"{long}" here"#);
        assert!(shortened(escaped).ends_with(r#"…" here"#));
        let short = r#"invalid value "501" for per_page"#.to_owned();
        assert_eq!(shortened(short.clone()), short);
        let unquoted = "b".repeat(100_000);
        assert!(shortened(unquoted).chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn an_unavailable_deployment_is_503_with_retry_after() {
        let e = EngineError::Unavailable {
            reason: "deployment x is being restarted".into(),
            retry_after: Duration::from_secs(2),
        };
        let response = ApiError::from(e).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");

        let soon = EngineError::Unavailable {
            reason: "busy".into(),
            retry_after: Duration::from_millis(10),
        };
        let response = ApiError::from(soon).into_response();
        assert_eq!(
            response.headers()[http::header::RETRY_AFTER],
            "1",
            "whole seconds, never 0"
        );
    }
}
