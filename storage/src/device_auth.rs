//! Device authentication records: which devices exist in a tenant, the identity they present,
//! the public key they sign their auth requests with, and whether they are admitted.
//!
//! One record per (tenant, device id). The device id is derived from the identity data by
//! the API layer, so a device that presents the same identity always lands on the same row.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::TenantId;

/// Admission status of a device. Serde names match Mender's device authentication API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAuthStatus {
    /// The device asked to be admitted but is not (preauthorized admission, unknown key).
    Pending,
    /// An operator registered the device's identity and key; it has not authenticated yet.
    Preauthorized,
    /// The device is admitted: its auth requests get tokens.
    Accepted,
}

/// A device known to the device authentication service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAuthRecord {
    /// Device id (derived from tenant and identity data).
    pub id: String,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The identity attributes the device presents (a JSON object).
    pub identity_data: serde_json::Value,
    /// The device's public key, PKIX PEM, as registered or last presented.
    pub pubkey: String,
    /// Admission status.
    pub status: DeviceAuthStatus,
    /// First seen or registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Last change of key or status.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}
