//! The engine's error type. The API maps each variant to one HTTP status, in one place.

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an unexpected failure inside the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
