//! The engine's error type. The API maps each variant to one HTTP status, in one place.

use std::time::Duration;

use storage::StoreError;

use crate::artifact::ArtifactError;

/// What can go wrong in the rollout domain.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The thing asked for does not exist (or belongs to another tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is malformed or violates a rule of the API.
    #[error("{0}")]
    Invalid(String),
    /// The uploaded file is not a valid Mender artifact.
    #[error("invalid artifact: {0}")]
    Artifact(#[from] ArtifactError),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but cannot be carried out.
    #[error("{0}")]
    Unprocessable(String),
    /// The upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The server is at a bound on concurrent work; the same request later may succeed.
    #[error("{0}")]
    Busy(String),
    /// The client stopped sending the request body.
    #[error("{0}")]
    TimedOut(String),
    /// The deployment cannot answer now: its actor is being restarted after a crash, or is
    /// too busy to answer in time. Nothing was refused; the same request can be sent again
    /// after `retry_after` (devices do: mender-client retries a failed status report, and
    /// checks in again at its next poll).
    #[error("{reason}; try again in {} s", retry_after.as_secs())]
    Unavailable {
        /// What the deployment is doing.
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an unexpected failure inside the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
