//! The fleet index: for every device, the unfinished deployments in which it has not yet
//! reached a terminal status, oldest first. A check-in finds its deployment here in O(1)
//! without scanning deployments.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use storage::TenantId;
use uuid::Uuid;

/// A deployment a device still takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Creation time of the deployment (Unix nanoseconds), for ordering.
    pub created: i128,
    /// The deployment.
    pub deployment: Uuid,
}

/// Device → active deployments (shared, cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    inner: Arc<RwLock<HashMap<Box<str>, Vec<Membership>>>>,
}

fn key(tenant: &TenantId, device: &str) -> String {
    let mut k = String::with_capacity(tenant.0.len() + 1 + device.len());
    k.push_str(&tenant.0);
    k.push('\0');
    k.push_str(device);
    k
}

impl Fleet {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add many devices of one deployment.
    pub fn add_all<'a>(
        &self,
        tenant: &TenantId,
        devices: impl IntoIterator<Item = &'a str>,
        m: Membership,
    ) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for d in devices {
            let list = map.entry(key(tenant, d).into_boxed_str()).or_default();
            if !list.contains(&m) {
                let pos =
                    list.partition_point(|x| (x.created, x.deployment) < (m.created, m.deployment));
                list.insert(pos, m);
            }
        }
    }

    /// The device finished (or left) a deployment.
    pub fn remove(&self, tenant: &TenantId, device: &str, deployment: Uuid) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let k = key(tenant, device);
        if let Some(list) = map.get_mut(k.as_str()) {
            list.retain(|m| m.deployment != deployment);
            if list.is_empty() {
                map.remove(k.as_str());
            }
        }
    }

    /// The device's active deployments, oldest first.
    pub fn memberships(&self, tenant: &TenantId, device: &str) -> Vec<Membership> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(key(tenant, device).as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// Number of devices indexed.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_kept_oldest_first_and_removed_per_device() {
        let f = Fleet::new();
        let t = TenantId::default_tenant();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        f.add_all(
            &t,
            ["d1", "d2"],
            Membership {
                created: 20,
                deployment: b,
            },
        );
        f.add_all(
            &t,
            ["d1"],
            Membership {
                created: 10,
                deployment: a,
            },
        );
        let m = f.memberships(&t, "d1");
        assert_eq!(
            m.iter().map(|m| m.deployment).collect::<Vec<_>>(),
            vec![a, b]
        );
        f.remove(&t, "d1", a);
        assert_eq!(f.memberships(&t, "d1").len(), 1);
        assert!(f.memberships(&TenantId("other".into()), "d1").is_empty());
        f.remove(&t, "d1", b);
        assert_eq!(f.len(), 1);
    }
}
