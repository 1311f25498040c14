//! Entry points for the `json_bodies` fuzz target (`fuzz/fuzz_targets/json_bodies.rs`):
//! each JSON body the API reads, parsed and checked as its route does, from arbitrary
//! bytes. Not an API: it exists so that the fuzzer reaches the routes' private body types
//! and the checks behind them (a device's public key, a deployment plan, log lines).

use storage::TenantId;
use time::OffsetDateTime;

use super::artifacts::ArtifactUpdate;
use super::deployments::StatusUpdate;
use super::devices::{LogUpload, NextQuery, StatusReport};
use super::identity::{Attribute, PreauthBody};
use crate::identity::device_key::{canonical_json, device_id, DevicePublicKey};
use crate::identity::AuthRequest;

/// Parse `bytes` as the body that `kind` selects and run the checks its route runs. Any
/// input must end in `Ok` or an error, never a panic.
#[doc(hidden)]
pub fn json_body(kind: u8, bytes: &[u8]) {
    match kind % 8 {
        0 => {
            if let Ok(new) = serde_json::from_slice::<engine::NewDeployment>(bytes) {
                let _ = engine::deployment::plan::validate(&new, OffsetDateTime::UNIX_EPOCH);
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<AuthRequest>(bytes) {
                auth_request(&req);
            }
        }
        2 => {
            if let Ok(log) = serde_json::from_slice::<LogUpload>(bytes) {
                let _ = log.into_checked();
            }
        }
        3 => {
            let _ = serde_json::from_slice::<StatusReport>(bytes);
        }
        4 => {
            if let Ok(body) = serde_json::from_slice::<PreauthBody>(bytes) {
                let _ = DevicePublicKey::from_pem(&body.pubkey);
                let _ = canonical_json(&body.identity_data);
            }
        }
        5 => {
            let _ = serde_json::from_slice::<Vec<Attribute>>(bytes);
        }
        6 => {
            let _ = serde_json::from_slice::<NextQuery>(bytes);
        }
        _ => {
            let _ = serde_json::from_slice::<ArtifactUpdate>(bytes);
            let _ = serde_json::from_slice::<StatusUpdate>(bytes);
        }
    }
}

/// What `auth_requests` does with a device's body before it looks at the store.
fn auth_request(req: &AuthRequest) {
    if let Ok(identity) = serde_json::from_str::<serde_json::Value>(&req.id_data) {
        let _ = device_id(&TenantId::default_tenant(), &identity);
    }
    if let Ok(key) = DevicePublicKey::from_pem(&req.pubkey) {
        let _ = key.verify(req.id_data.as_bytes(), &req.tenant_token);
    }
}
