//! Every statement the store runs, prepared once at start-up so that each request sends
//! only an id and its values, and the driver routes it to a replica of its partition
//! (token-aware routing needs the partition key's position, which preparing reveals).

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use scylla::statement::Consistency as CqlConsistency;

use super::config::{Consistency, Keyspace};
use super::error::CqlError;

/// Prepares statements written with `{ks}.table`, in the store's keyspace.
struct Qualify<'a> {
    session: &'a Session,
    keyspace: &'a Keyspace,
}

async fn prepare(q: &Qualify<'_>, cql: &str) -> Result<PreparedStatement, CqlError> {
    let cql = cql.replace("{ks}", &q.keyspace.to_string());
    super::session::prepare(q.session, &cql).await
}

/// A lightweight transaction: not idempotent (a retry after an unknown outcome could
/// answer "not applied" to the write that did apply), so the driver must not retry it.
async fn conditional(q: &Qualify<'_>, cql: &str) -> Result<PreparedStatement, CqlError> {
    let mut statement = prepare(q, cql).await?;
    statement.set_is_idempotent(false);
    Ok(statement)
}

/// A read that sees every conditional write committed before it (SERIAL or LOCAL_SERIAL).
async fn serial_read(
    q: &Qualify<'_>,
    cql: &str,
    serial: CqlConsistency,
) -> Result<PreparedStatement, CqlError> {
    let mut statement = prepare(q, cql).await?;
    statement.set_consistency(serial);
    Ok(statement)
}

/// The prepared statements, by table.
pub(crate) struct Statements {
    pub put_artifact: PreparedStatement,
    pub delete_artifact: PreparedStatement,
    pub get_artifact: PreparedStatement,
    pub list_artifacts: PreparedStatement,
    pub artifact_sizes: PreparedStatement,
    pub put_usage: PreparedStatement,
    pub list_usage: PreparedStatement,
    pub put_deployment: PreparedStatement,
    pub get_deployment: PreparedStatement,
    pub list_deployments: PreparedStatement,
    pub put_unfinished: PreparedStatement,
    pub delete_unfinished: PreparedStatement,
    pub list_unfinished: PreparedStatement,
    pub put_device_list: PreparedStatement,
    pub get_device_list: PreparedStatement,
    pub put_device: PreparedStatement,
    pub list_devices: PreparedStatement,
    pub get_device: PreparedStatement,
    pub put_log: PreparedStatement,
    pub get_log: PreparedStatement,
    pub put_last_finished: PreparedStatement,
    pub get_last_finished: PreparedStatement,
    pub get_inventory: PreparedStatement,
    pub get_legacy_inventory: PreparedStatement,
    pub list_inventories: PreparedStatement,
    pub put_filter: PreparedStatement,
    pub put_revocation: PreparedStatement,
    pub list_revocations: PreparedStatement,
    pub delete_device_auth_if: PreparedStatement,
    pub delete_filter: PreparedStatement,
    pub get_filter: PreparedStatement,
    pub list_filters: PreparedStatement,
    pub get_device_auth: PreparedStatement,
    pub list_device_auth: PreparedStatement,
    pub claim_name: PreparedStatement,
    pub get_name: PreparedStatement,
    pub take_name: PreparedStatement,
    pub release_name: PreparedStatement,
    pub insert_device_auth_if_absent: PreparedStatement,
    pub update_device_auth_if: PreparedStatement,
    pub get_device_auth_serial: PreparedStatement,
    pub insert_inventory_if_absent: PreparedStatement,
    pub update_inventory_if: PreparedStatement,
    pub get_inventory_serial: PreparedStatement,
    pub put_node: PreparedStatement,
    pub list_nodes: PreparedStatement,
    pub insert_lease_if_absent: PreparedStatement,
    pub update_lease_if: PreparedStatement,
    pub get_lease_serial: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(
        session: &Session,
        keyspace: &Keyspace,
        consistency: Consistency,
    ) -> Result<Self, CqlError> {
        let serial = match consistency {
            Consistency::Quorum => CqlConsistency::Serial,
            Consistency::LocalQuorum => CqlConsistency::LocalSerial,
        };
        // Table names are qualified: a session-wide `USE` with prepared statements is
        // ambiguous, and Cassandra warns about it on every statement.
        let s = &Qualify { session, keyspace };
        Ok(Statements {
            put_artifact: prepare(
                s,
                "INSERT INTO {ks}.artifacts (tenant, bucket, id, size, body) VALUES (?, ?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            delete_artifact: prepare(
                s,
                "DELETE FROM {ks}.artifacts USING TIMESTAMP ? WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            get_artifact: prepare(
                s,
                "SELECT body FROM {ks}.artifacts WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            list_artifacts: prepare(s, "SELECT body FROM {ks}.artifacts WHERE tenant = ? AND bucket = ?")
                .await?,
            artifact_sizes: prepare(s, "SELECT size FROM {ks}.artifacts WHERE tenant = ? AND bucket = ?")
                .await?,
            put_usage: prepare(
                s,
                "INSERT INTO {ks}.artifact_usage (shard, tenant, bytes) VALUES (0, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            list_usage: prepare(s, "SELECT tenant, bytes FROM {ks}.artifact_usage WHERE shard = 0").await?,
            put_deployment: prepare(
                s,
                "INSERT INTO {ks}.deployments (tenant, bucket, id, body) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            get_deployment: prepare(
                s,
                "SELECT body FROM {ks}.deployments WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            list_deployments: prepare(
                s,
                "SELECT body FROM {ks}.deployments WHERE tenant = ? AND bucket = ?",
            )
            .await?,
            put_unfinished: prepare(
                s,
                "INSERT INTO {ks}.unfinished_deployments (shard, tenant, id, body) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            delete_unfinished: prepare(
                s,
                "DELETE FROM {ks}.unfinished_deployments USING TIMESTAMP ? \
                 WHERE shard = ? AND tenant = ? AND id = ?",
            )
            .await?,
            list_unfinished: prepare(s, "SELECT body FROM {ks}.unfinished_deployments WHERE shard = ?")
                .await?,
            put_device_list: prepare(
                s,
                "INSERT INTO {ks}.device_lists (tenant, deployment, chunk, devices) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            get_device_list: prepare(
                s,
                "SELECT devices FROM {ks}.device_lists WHERE tenant = ? AND deployment = ? AND chunk = ?",
            )
            .await?,
            put_device: prepare(
                s,
                "INSERT INTO {ks}.device_records (tenant, deployment, bucket, device, body) \
                 VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            list_devices: prepare(
                s,
                "SELECT body FROM {ks}.device_records WHERE tenant = ? AND deployment = ? AND bucket = ?",
            )
            .await?,
            get_device: prepare(
                s,
                "SELECT body FROM {ks}.device_records \
                 WHERE tenant = ? AND deployment = ? AND bucket = ? AND device = ?",
            )
            .await?,
            put_log: prepare(
                s,
                "INSERT INTO {ks}.logs (tenant, deployment, device, messages) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            get_log: prepare(
                s,
                "SELECT messages FROM {ks}.logs WHERE tenant = ? AND deployment = ? AND device = ?",
            )
            .await?,
            put_last_finished: prepare(
                s,
                "INSERT INTO {ks}.last_finished (tenant, device, created) VALUES (?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            get_last_finished: prepare(
                s,
                "SELECT created FROM {ks}.last_finished WHERE tenant = ? AND device = ?",
            )
            .await?,
            get_inventory: prepare(
                s,
                "SELECT attributes FROM {ks}.inventories WHERE tenant = ? AND bucket = ? AND device = ?",
            )
            .await?,
            get_legacy_inventory: prepare(
                s,
                "SELECT attributes FROM {ks}.inventory WHERE tenant = ? AND device = ?",
            )
            .await?,
            list_inventories: prepare(
                s,
                "SELECT device, attributes FROM {ks}.inventories WHERE tenant = ? AND bucket = ?",
            )
            .await?,
            put_revocation: prepare(
                s,
                "INSERT INTO {ks}.device_revocations (shard, tenant, device, body) \
                 VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            list_revocations: prepare(
                s,
                "SELECT body FROM {ks}.device_revocations WHERE shard = ?",
            )
            .await?,
            delete_device_auth_if: conditional(
                s,
                "DELETE FROM {ks}.device_auth WHERE tenant = ? AND bucket = ? AND id = ? \
                 IF body = ?",
            )
            .await?,
            put_filter: prepare(
                s,
                "INSERT INTO {ks}.saved_filters (tenant, bucket, id, body) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            delete_filter: prepare(
                s,
                "DELETE FROM {ks}.saved_filters USING TIMESTAMP ? \
                 WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            get_filter: prepare(
                s,
                "SELECT body FROM {ks}.saved_filters WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            list_filters: prepare(
                s,
                "SELECT body FROM {ks}.saved_filters WHERE tenant = ? AND bucket = ?",
            )
            .await?,
            get_device_auth: prepare(
                s,
                "SELECT body FROM {ks}.device_auth WHERE tenant = ? AND bucket = ? AND id = ?",
            )
            .await?,
            list_device_auth: prepare(s, "SELECT body FROM {ks}.device_auth WHERE tenant = ? AND bucket = ?")
                .await?,
            claim_name: conditional(
                s,
                "INSERT INTO {ks}.artifact_names (tenant, name, device_type, artifact) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            get_name: serial_read(
                s,
                "SELECT artifact, writetime(artifact) FROM {ks}.artifact_names \
                 WHERE tenant = ? AND name = ? AND device_type = ?",
                serial,
            )
            .await?,
            take_name: conditional(
                s,
                "UPDATE {ks}.artifact_names SET artifact = ? \
                 WHERE tenant = ? AND name = ? AND device_type = ? IF artifact = ?",
            )
            .await?,
            release_name: conditional(
                s,
                "DELETE FROM {ks}.artifact_names \
                 WHERE tenant = ? AND name = ? AND device_type = ? IF artifact = ?",
            )
            .await?,
            insert_device_auth_if_absent: conditional(
                s,
                "INSERT INTO {ks}.device_auth (tenant, bucket, id, body) VALUES (?, ?, ?, ?) \
                 IF NOT EXISTS",
            )
            .await?,
            update_device_auth_if: conditional(
                s,
                "UPDATE {ks}.device_auth SET body = ? WHERE tenant = ? AND bucket = ? AND id = ? \
                 IF body = ?",
            )
            .await?,
            get_device_auth_serial: serial_read(
                s,
                "SELECT body FROM {ks}.device_auth WHERE tenant = ? AND bucket = ? AND id = ?",
                serial,
            )
            .await?,
            insert_inventory_if_absent: conditional(
                s,
                "INSERT INTO {ks}.inventories (tenant, bucket, device, attributes) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            update_inventory_if: conditional(
                s,
                "UPDATE {ks}.inventories SET attributes = ? \
                 WHERE tenant = ? AND bucket = ? AND device = ? IF attributes = ?",
            )
            .await?,
            get_inventory_serial: serial_read(
                s,
                "SELECT attributes FROM {ks}.inventories WHERE tenant = ? AND bucket = ? AND device = ?",
                serial,
            )
            .await?,
            put_node: prepare(
                s,
                "INSERT INTO {ks}.nodes (cluster, id, body) VALUES ('rollout', ?, ?) \
                 USING TTL 86400 AND TIMESTAMP ?",
            )
            .await?,
            list_nodes: prepare(s, "SELECT body FROM {ks}.nodes WHERE cluster = 'rollout'").await?,
            insert_lease_if_absent: conditional(
                s,
                "INSERT INTO {ks}.deployment_leases (tenant, deployment, body) VALUES (?, ?, ?) \
                 IF NOT EXISTS",
            )
            .await?,
            update_lease_if: conditional(
                s,
                "UPDATE {ks}.deployment_leases SET body = ? WHERE tenant = ? AND deployment = ? \
                 IF body = ?",
            )
            .await?,
            get_lease_serial: serial_read(
                s,
                "SELECT body FROM {ks}.deployment_leases WHERE tenant = ? AND deployment = ?",
                serial,
            )
            .await?,
        })
    }
}
