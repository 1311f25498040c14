//! Device authentication records: which devices exist in a tenant, the identity they present,
//! the public keys they have signed auth requests with, and which key is admitted.
//!
//! One record per (tenant, device id), holding the device's auth sets: one per public key
//! it has presented, each with its own status, as in Mender's device authentication
//! service. The device id is derived from the identity data by the API layer, so a device
//! that presents the same identity always lands on the same row, whatever its key. A device
//! has few auth sets (the API layer bounds the pending ones), so they live inside the row.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::TenantId;

/// Admission status of an auth set, or of a device. Serde names match Mender's device
/// authentication API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAuthStatus {
    /// The key asked to be admitted and waits for an operator.
    Pending,
    /// An operator registered the identity and key; the device has not authenticated yet.
    Preauthorized,
    /// The key is admitted: auth requests signed with it get tokens.
    Accepted,
    /// An operator refused the key.
    Rejected,
}

/// One (identity, public key) pair a device presented or an operator registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthSet {
    /// Auth set id (unique within the device).
    pub id: String,
    /// The public key, PKIX PEM.
    pub pubkey: String,
    /// Whether this key is admitted.
    pub status: DeviceAuthStatus,
    /// When the key was first presented or registered.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
}

/// A device known to the device authentication service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredRecord")]
pub struct DeviceAuthRecord {
    /// Device id (derived from tenant and identity data).
    pub id: String,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The identity attributes the device presents (a JSON object).
    pub identity_data: serde_json::Value,
    /// Every key the device presented or was registered with; at most one is accepted.
    pub auth_sets: Vec<AuthSet>,
    /// First seen or registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Last change of an auth set.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

impl DeviceAuthRecord {
    /// The device's status, derived from its auth sets as Mender derives it: accepted if a
    /// set is accepted, else preauthorized, else pending, else rejected.
    pub fn status(&self) -> DeviceAuthStatus {
        use DeviceAuthStatus::*;
        [Accepted, Preauthorized, Pending]
            .into_iter()
            .find(|s| self.auth_sets.iter().any(|a| a.status == *s))
            .unwrap_or(Rejected)
    }
}

/// A decommissioned device: its tokens issued at or before `revoked_at` are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Device id.
    pub device: String,
    /// Unix seconds.
    pub revoked_at: i64,
}

/// A record as stored: the current layout, or the one from before auth sets, which held a
/// single `pubkey` and `status` (read as one auth set, so existing devices keep working).
#[derive(Deserialize)]
struct StoredRecord {
    id: String,
    tenant: TenantId,
    identity_data: serde_json::Value,
    #[serde(default)]
    auth_sets: Vec<AuthSet>,
    #[serde(default)]
    pubkey: Option<String>,
    #[serde(default)]
    status: Option<DeviceAuthStatus>,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated: OffsetDateTime,
}

impl From<StoredRecord> for DeviceAuthRecord {
    fn from(r: StoredRecord) -> Self {
        let mut auth_sets = r.auth_sets;
        if let (true, Some(pubkey)) = (auth_sets.is_empty(), r.pubkey) {
            // The single auth set of the old layout was shown with the device's id.
            auth_sets.push(AuthSet {
                id: r.id.clone(),
                pubkey,
                status: r.status.unwrap_or(DeviceAuthStatus::Pending),
                ts: r.updated,
            });
        }
        DeviceAuthRecord {
            id: r.id,
            tenant: r.tenant,
            identity_data: r.identity_data,
            auth_sets,
            created: r.created,
            updated: r.updated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(status: DeviceAuthStatus) -> AuthSet {
        AuthSet {
            id: format!("{status:?}"),
            pubkey: "k".into(),
            status,
            ts: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_record_of_the_single_key_layout_reads_as_one_auth_set() {
        let old = json!({
            "id": "dev-1",
            "tenant": "acme",
            "identity_data": {"mac": "02"},
            "pubkey": "PEM",
            "status": "accepted",
            "created": "2024-01-01T00:00:00Z",
            "updated": "2024-01-02T00:00:00Z",
        });
        let r: DeviceAuthRecord = serde_json::from_value(old).unwrap();
        assert_eq!(r.auth_sets.len(), 1);
        assert_eq!(r.auth_sets[0].id, "dev-1");
        assert_eq!(r.auth_sets[0].pubkey, "PEM");
        assert_eq!(r.status(), DeviceAuthStatus::Accepted);
        let again: DeviceAuthRecord =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn the_device_status_is_its_best_auth_set_status() {
        use DeviceAuthStatus::*;
        let mut r = DeviceAuthRecord {
            id: "d".into(),
            tenant: TenantId::default_tenant(),
            identity_data: json!({"mac": "02"}),
            auth_sets: vec![set(Rejected)],
            created: OffsetDateTime::UNIX_EPOCH,
            updated: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(r.status(), Rejected);
        for (added, device) in [
            (Pending, Pending),
            (Preauthorized, Preauthorized),
            (Accepted, Accepted),
        ] {
            r.auth_sets.push(set(added));
            assert_eq!(r.status(), device);
        }
    }
}
