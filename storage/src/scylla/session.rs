//! Connecting to the cluster, applying `ops/scylla/schema.cql`, and preparing every
//! statement the store runs.

use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency as CqlConsistency, SerialConsistency};

use super::config::{Consistency, ScyllaConfig};
use super::error::CqlError;

/// The schema, applied at start-up; every statement is idempotent.
const SCHEMA: &str = include_str!("../../../ops/scylla/schema.cql");

/// Rows per page of a multi-row read: large enough to amortise round trips, small enough
/// that a page of JSON bodies stays a few megabytes.
const PAGE_SIZE: i32 = 2_000;

/// A single request gives up after this long (the driver's default is 30 s); a write that
/// times out is retried by the caller's replay, which is harmless.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Open a session on the configured nodes and create the keyspace and tables if missing.
pub(crate) async fn connect(config: &ScyllaConfig) -> Result<Session, CqlError> {
    let (consistency, serial) = match config.consistency {
        Consistency::Quorum => (CqlConsistency::Quorum, SerialConsistency::Serial),
        Consistency::LocalQuorum => (CqlConsistency::LocalQuorum, SerialConsistency::LocalSerial),
    };
    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(serial))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .default_execution_profile_handle(profile.into_handle());
    if let Some(c) = &config.credentials {
        builder = builder.user(c.user.clone(), c.password.clone());
    }
    let session = builder.build().await.map_err(|source| CqlError::Connect {
        nodes: config.nodes.join(","),
        source,
    })?;
    let keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {}",
        config.keyspace,
        config.replication.cql()
    );
    run_schema_statement(&session, &keyspace).await?;
    let qualified = format!("CREATE TABLE IF NOT EXISTS {}.", config.keyspace);
    for statement in schema_statements(SCHEMA) {
        let statement = statement.replacen("CREATE TABLE IF NOT EXISTS ", &qualified, 1);
        run_schema_statement(&session, &statement).await?;
    }
    Ok(session)
}

async fn run_schema_statement(session: &Session, statement: &str) -> Result<(), CqlError> {
    session
        .query_unpaged(statement, ())
        .await
        .map(drop)
        .map_err(|source| CqlError::Schema {
            statement: statement.lines().next().unwrap_or_default().to_owned(),
            source,
        })
}

/// The statements of a CQL file: `--` comment lines dropped, split at `;`.
fn schema_statements(file: &str) -> Vec<String> {
    let code: Vec<&str> = file
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Prepare a statement that may be retried or sent twice without harm (every write
/// carries its timestamp, so a second copy changes nothing).
pub(crate) async fn prepare(session: &Session, cql: &str) -> Result<PreparedStatement, CqlError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|source| CqlError::Prepare {
            statement: cql.to_owned(),
            source,
        })?;
    statement.set_is_idempotent(true);
    statement.set_page_size(PAGE_SIZE);
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_splits_into_create_statements() {
        let statements = schema_statements(SCHEMA);
        assert!(statements.len() >= 10, "{statements:?}");
        for s in &statements {
            assert!(s.starts_with("CREATE TABLE IF NOT EXISTS"), "{s}");
        }
    }
}
