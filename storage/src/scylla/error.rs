//! Errors of the CQL store. They stay inside this module: callers see them boxed in
//! [`StoreError::Cluster`](crate::StoreError::Cluster), so the port names no driver type.

use scylla::errors::{
    ExecutionError, IntoRowsResultError, MaybeFirstRowError, NewSessionError, NextRowError,
    PagerExecutionError, PrepareError, RowsError, TypeCheckError,
};

/// What can go wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CqlError {
    /// No node of `--scylla-nodes` could be reached, or authentication failed.
    #[error("connecting to {nodes}: {source}")]
    Connect {
        nodes: String,
        source: NewSessionError,
    },
    /// A schema statement failed (the keyspace or a table could not be created).
    #[error("applying the schema ({statement}): {source}")]
    Schema {
        statement: String,
        source: ExecutionError,
    },
    /// A statement could not be prepared (usually: the schema is older than this binary).
    #[error("preparing {statement}: {source}")]
    Prepare {
        statement: String,
        source: PrepareError,
    },
    /// A statement failed, e.g. too few replicas answered at the configured consistency.
    #[error("executing a statement: {0}")]
    Execute(#[from] ExecutionError),
    /// A paged read could not start.
    #[error("reading pages: {0}")]
    Pager(#[from] PagerExecutionError),
    /// A paged read's columns do not have the expected types (schema older than the code).
    #[error("column types: {0}")]
    TypeCheck(#[from] TypeCheckError),
    /// A later page of a paged read failed.
    #[error("reading a row: {0}")]
    NextRow(#[from] NextRowError),
    /// A read answered with something else than rows.
    #[error("reading a result: {0}")]
    IntoRows(#[from] IntoRowsResultError),
    /// Rows did not have the expected columns.
    #[error("decoding rows: {0}")]
    Rows(#[from] RowsError),
    /// A single-row read did not have the expected columns.
    #[error("decoding a row: {0}")]
    FirstRow(#[from] MaybeFirstRowError),
    /// A lightweight transaction answered without its `[applied]` column.
    #[error("a conditional write answered without [applied]")]
    NoApplied,
    /// A write task panicked or was cancelled.
    #[error("write task: {0}")]
    Task(String),
}

impl From<CqlError> for crate::StoreError {
    fn from(e: CqlError) -> Self {
        crate::StoreError::Cluster(Box::new(e))
    }
}
