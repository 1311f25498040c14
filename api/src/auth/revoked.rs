//! Revoked device tokens: a device token issued at or before its device was decommissioned,
//! or had its accepted key rejected or replaced, is refused, on every request, cached or
//! not. The set is small (one entry per such device), kept in memory, persisted in the store, and reloaded from it
//! every few seconds on a cluster store so that a decommission on one node takes effect on
//! every node.

use std::collections::HashMap;
use std::sync::RwLock;

use storage::{Revocation, TenantId};

use super::{Identity, PrincipalKind};

/// Devices whose tokens were revoked, and until when.
#[derive(Default)]
pub struct Revocations(RwLock<HashMap<(TenantId, String), i64>>);

impl Revocations {
    /// Refuse the device's tokens issued until `revoked_at` (Unix seconds).
    pub fn revoke(&self, r: &Revocation) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let at = map
            .entry((r.tenant.clone(), r.device.clone()))
            .or_insert(r.revoked_at);
        *at = (*at).max(r.revoked_at);
    }

    /// Until when (Unix seconds) the device's tokens are refused, if they ever were.
    pub fn revoked_at(&self, tenant: &TenantId, device: &str) -> Option<i64> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.clone(), device.to_owned())).copied()
    }

    /// Take in revocations read from the store (adding, never forgetting).
    pub fn load(&self, all: &[Revocation]) {
        for r in all {
            self.revoke(r);
        }
    }

    /// Whether `id` is a device token issued (`issued_at`, Unix seconds) before its device
    /// was decommissioned or lost its accepted key. A token without `iat` cannot be placed
    /// in time: it is refused once its device's tokens were revoked.
    pub fn covers(&self, id: &Identity, issued_at: Option<i64>) -> bool {
        if id.kind != PrincipalKind::Device {
            return false;
        }
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return false;
        }
        map.get(&(id.tenant.clone(), id.subject.clone()))
            .is_some_and(|at| issued_at.is_none_or(|iat| iat <= *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_until_the_decommission_are_refused_later_ones_pass() {
        let r = Revocations::default();
        let t = TenantId("acme".into());
        let dev = Identity {
            tenant: t.clone(),
            subject: "d1".into(),
            kind: PrincipalKind::Device,
        };
        assert!(!r.covers(&dev, Some(100)));
        r.revoke(&Revocation {
            tenant: t.clone(),
            device: "d1".into(),
            revoked_at: 100,
        });
        assert!(r.covers(&dev, Some(100)));
        assert!(r.covers(&dev, None));
        assert!(
            !r.covers(&dev, Some(101)),
            "a token issued after: re-admitted"
        );
        let other_tenant = Identity {
            tenant: TenantId("other".into()),
            ..dev.clone()
        };
        assert!(!r.covers(&other_tenant, Some(1)));
        let user = Identity {
            kind: PrincipalKind::User,
            ..dev
        };
        assert!(!r.covers(&user, Some(1)));
    }
}
