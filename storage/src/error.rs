//! Errors of the storage layer.

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded engine failed.
    #[error("metadata store: {0}")]
    Engine(#[from] fjall::Error),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] opendal::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record under {key}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The group committer stopped (the store is shutting down or crashed).
    #[error("the store's committer is gone")]
    CommitterGone,
    /// Invalid configuration.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The cluster store failed (unreachable, too few replicas, schema mismatch…); the
    /// source says which.
    #[error("cluster store: {0}")]
    Cluster(Box<dyn std::error::Error + Send + Sync>),
    /// This node no longer holds the lease of the deployment it wrote for (its lease lapsed
    /// or another node took it over), so the write was not made, or not acknowledged.
    #[error("this node no longer owns deployment {0}")]
    LeaseLost(uuid::Uuid),
    /// The embedded store could not be opened; the reason says what to do.
    #[error("cannot open the metadata store in {path}: {reason}")]
    Open {
        /// Its directory.
        path: std::path::PathBuf,
        /// What went wrong, and the way out.
        reason: String,
    },
    /// A backup names a table this store does not have (or does not back up).
    #[error("no table named {0:?} in this store (a backup made by a newer rollout?)")]
    UnknownTable(String),
    /// A blocking task panicked.
    #[error("storage task failed: {0}")]
    Task(String),
}
