//! The uniqueness rules that must hold across rollout processes, as lightweight
//! transactions (Paxos on a partition): artifact names per device type, and
//! compare-and-set of device authentication records, inventories and deployment leases.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::CqlError;
use super::{buckets, Inner};
use crate::model::TenantId;
use crate::{DeviceAuthRecord, Lease, Result, StoreError};

/// A claim whose artifact was never stored (its process died between claim and store) is
/// taken over after this long; an upload in progress stores its artifact within
/// milliseconds of its claim.
const STALE_CLAIM: Duration = Duration::from_secs(300);

/// Whether a conditional statement was applied (its result's first column, `[applied]`).
fn applied(result: QueryResult) -> Result<bool> {
    let rows = result.into_rows_result().map_err(CqlError::from)?;
    let row = rows.maybe_first_row::<Row>().map_err(CqlError::from)?;
    match row.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(CqlValue::Boolean(applied)) => Ok(applied),
        _ => Err(CqlError::NoApplied.into()),
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Inner {
    pub(crate) async fn claim_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<Uuid> {
        let key = (tenant.as_str(), name, device_type);
        for _ in 0..3 {
            let values = (key.0, key.1, key.2, artifact);
            let claim = self
                .session
                .execute_unpaged(&self.st.claim_name, values)
                .await;
            if applied(claim.map_err(CqlError::from)?)? {
                return Ok(artifact);
            }
            let Some((holder, written)) =
                self.one_row::<(Uuid, i64)>(&self.st.get_name, key).await?
            else {
                continue; // released meanwhile: claim again
            };
            if holder == artifact || !self.is_stale(tenant, holder, written).await? {
                return Ok(holder);
            }
            let values = (artifact, key.0, key.1, key.2, holder);
            let take = self
                .session
                .execute_unpaged(&self.st.take_name, values)
                .await;
            if applied(take.map_err(CqlError::from)?)? {
                return Ok(artifact);
            }
        }
        Err(StoreError::Task(format!(
            "artifact name {name:?} for {device_type:?} keeps changing hands"
        )))
    }

    /// A claim is stale when its artifact does not exist and it is older than
    /// [`STALE_CLAIM`].
    async fn is_stale(&self, tenant: &TenantId, holder: Uuid, written: i64) -> Result<bool> {
        let age = Duration::from_micros(u64::try_from(now_micros() - written).unwrap_or(0));
        if age < STALE_CLAIM {
            return Ok(false);
        }
        let bucket = buckets::of(holder.as_bytes(), buckets::ARTIFACTS);
        let stored = self
            .one_row::<(String,)>(&self.st.get_artifact, (tenant.as_str(), bucket, holder))
            .await?;
        Ok(stored.is_none())
    }

    pub(crate) async fn release_artifact_name(
        &self,
        tenant: &TenantId,
        name: &str,
        device_type: &str,
        artifact: Uuid,
    ) -> Result<()> {
        let values = (tenant.as_str(), name, device_type, artifact);
        let release = self
            .session
            .execute_unpaged(&self.st.release_name, values)
            .await;
        applied(release.map_err(CqlError::from)?)?;
        Ok(())
    }

    pub(crate) async fn replace_device_auth(
        &self,
        expected: Option<&DeviceAuthRecord>,
        record: DeviceAuthRecord,
    ) -> Result<bool> {
        let bucket = buckets::of(record.id.as_bytes(), buckets::DEVICE_AUTH);
        let key = vec![
            CqlValue::Text(record.tenant.as_str().to_owned()),
            CqlValue::SmallInt(bucket),
            CqlValue::Text(record.id.clone()),
        ];
        let statements = Swap {
            what: "device_auth",
            get: &self.st.get_device_auth_serial,
            insert_if_absent: &self.st.insert_device_auth_if_absent,
            update_if: &self.st.update_device_auth_if,
        };
        let body = serde_json::to_string(&record).unwrap_or_default();
        self.swap(statements, key, expected, body).await
    }

    /// Delete a device's auth record if its stored text still decodes to `expected`.
    pub(crate) async fn remove_device_auth(&self, expected: &DeviceAuthRecord) -> Result<bool> {
        let bucket = buckets::of(expected.id.as_bytes(), buckets::DEVICE_AUTH);
        let key = (expected.tenant.as_str(), bucket, expected.id.as_str());
        let Some(raw) = self
            .one::<String>(&self.st.get_device_auth_serial, key)
            .await?
        else {
            return Ok(false);
        };
        let stored: DeviceAuthRecord = super::decode("device_auth", &raw)?;
        if stored != *expected {
            return Ok(false);
        }
        let values = (key.0, key.1, key.2, raw);
        let result = self
            .session
            .execute_unpaged(&self.st.delete_device_auth_if, values)
            .await;
        applied(result.map_err(CqlError::from)?)
    }

    pub(crate) async fn replace_inventory(
        &self,
        tenant: &TenantId,
        device: &str,
        expected: Option<&serde_json::Value>,
        attributes: serde_json::Value,
    ) -> Result<bool> {
        let bucket = buckets::of(device.as_bytes(), buckets::INVENTORIES);
        let key = vec![
            CqlValue::Text(tenant.as_str().to_owned()),
            CqlValue::SmallInt(bucket),
            CqlValue::Text(device.to_owned()),
        ];
        let statements = Swap {
            what: "inventory",
            get: &self.st.get_inventory_serial,
            insert_if_absent: &self.st.insert_inventory_if_absent,
            update_if: &self.st.update_inventory_if,
        };
        // An inventory read from the first releases' table (`expected`, with no row in the
        // bucketed one yet) moves over with this write: inserted if still absent there.
        let moving = match expected {
            Some(_) => self
                .one::<String>(statements.get, key.clone())
                .await?
                .is_none(),
            None => false,
        };
        let expected = if moving { None } else { expected };
        self.swap(statements, key, expected, attributes.to_string())
            .await
    }

    pub(crate) async fn lease(&self, tenant: &TenantId, deployment: Uuid) -> Result<Option<Lease>> {
        let values = (tenant.as_str(), deployment);
        let body = self
            .one::<String>(&self.st.get_lease_serial, values)
            .await?;
        super::decode_opt(|| format!("deployment_leases/{tenant}/{deployment}"), body)
    }

    pub(crate) async fn replace_lease(
        &self,
        expected: Option<&Lease>,
        lease: Lease,
    ) -> Result<bool> {
        let key = vec![
            CqlValue::Text(lease.tenant.as_str().to_owned()),
            CqlValue::Uuid(lease.deployment),
        ];
        let statements = Swap {
            what: "deployment_leases",
            get: &self.st.get_lease_serial,
            insert_if_absent: &self.st.insert_lease_if_absent,
            update_if: &self.st.update_lease_if,
        };
        let body = serde_json::to_string(&lease).unwrap_or_default();
        self.swap(statements, key, expected, body).await
    }

    /// Compare-and-set of one JSON text column: insert `body` if no row exists and
    /// `expected` is `None`, or replace the stored text if it decodes to `expected`.
    async fn swap<T: DeserializeOwned + PartialEq>(
        &self,
        statements: Swap<'_>,
        key: Vec<CqlValue>,
        expected: Option<&T>,
        body: String,
    ) -> Result<bool> {
        let result = match expected {
            None => {
                let mut values = key;
                values.push(CqlValue::Text(body));
                self.session
                    .execute_unpaged(statements.insert_if_absent, values)
                    .await
            }
            Some(expected) => {
                // Compare with the stored text as it is, so a record written by another
                // version (another field order) is still recognised.
                let stored = self.one::<String>(statements.get, key.clone()).await?;
                let Some(raw) = stored else {
                    return Ok(false);
                };
                let decoded: T = super::decode(statements.what, &raw)?;
                if decoded != *expected {
                    return Ok(false);
                }
                let mut values = vec![CqlValue::Text(body)];
                values.extend(key);
                values.push(CqlValue::Text(raw));
                self.session
                    .execute_unpaged(statements.update_if, values)
                    .await
            }
        };
        applied(result.map_err(CqlError::from)?)
    }
}

/// The statements of one compare-and-set column: a serial read of the stored text, and the
/// conditional insert and update (new text first, then the key, then the compared text).
struct Swap<'a> {
    what: &'static str,
    get: &'a PreparedStatement,
    insert_if_absent: &'a PreparedStatement,
    update_if: &'a PreparedStatement,
}
