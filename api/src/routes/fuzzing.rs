//! Entry points for the `json_bodies` fuzz target (`fuzz/fuzz_targets/json_bodies.rs`):
//! each JSON body the API reads, parsed and checked as its route does, from arbitrary
//! bytes. Not an API: it exists so that the fuzzer reaches the routes' private body types
//! and the checks behind them (a device's public key, a deployment plan, log lines).

use storage::TenantId;
use time::OffsetDateTime;

use super::artifacts::ArtifactUpdate;
use super::deployments::StatusUpdate;
use super::devices::{LogUpload, NextQuery, NextV2, StatusReport};
use super::identity::PreauthBody;
use crate::identity::device_key::{canonical_json, device_id, DevicePublicKey};
use crate::identity::AuthRequest;
use engine::inventory::{filter, Attribute};
use storage::FilterTerm;

/// Parse `bytes` as the body that `kind` selects and run the checks its route runs. Any
/// input must end in `Ok` or an error, never a panic.
#[doc(hidden)]
pub fn json_body(kind: u8, bytes: &[u8]) {
    match kind % 8 {
        0 => {
            if let Ok(new) = serde_json::from_slice::<engine::NewDeployment>(bytes) {
                let _ = engine::deployment::plan::validate(&new, OffsetDateTime::UNIX_EPOCH);
                if let Some(f) = &new.filter {
                    filter_terms(&f.terms);
                }
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
            let _ = serde_json::from_slice::<NextV2>(bytes);
        }
        _ => {
            let _ = serde_json::from_slice::<ArtifactUpdate>(bytes);
            let _ = serde_json::from_slice::<StatusUpdate>(bytes);
            if let Ok(terms) = serde_json::from_slice::<Vec<FilterTerm>>(bytes) {
                filter_terms(&terms);
            }
        }
    }
}

/// What a filter's terms go through (a saved filter, a search, a dynamic deployment): the
/// checks, then matching against an inventory and the dynamic index's keys.
fn filter_terms(terms: &[FilterTerm]) {
    if filter::validate(terms).is_err() {
        return;
    }
    let inventory: Vec<Attribute> = serde_json::from_str(
        r#"[{"name":"os","value":"debian"},{"name":"n","value":7},
            {"name":"tags","value":["a","b"]},{"name":"group","value":"lab","scope":"system"}]"#,
    )
    .unwrap_or_default();
    let _ = filter::matches(terms, &inventory);
    let _ = filter::filter_keys(terms);
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
