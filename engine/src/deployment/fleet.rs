//! The fleet index: for every device, the unfinished deployments in which it has not yet
//! reached a terminal status, oldest first. A check-in finds its deployment here in O(1)
//! without scanning deployments.
//!
//! Memory matters here (one entry per device of every running deployment), so a device is
//! keyed by a 128-bit hash of (tenant, device id) rather than by its id, and its
//! memberships are small indices into a table of deployments, stored inline. About 55
//! bytes per device instead of ~130 with string keys. A hash collision (odds ~1e-26 for a
//! million devices) would only make a check-in ask a deployment that then answers that the
//! device is not a member.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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

/// A device's key in the index and in deployment actors: a 128-bit hash of tenant and id
/// (two `u64`s rather than a `u128`, to keep map entries 8-byte aligned and small).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey(u64, u64);

/// The key of a device.
pub fn device_key(tenant: &TenantId, device: &str) -> DeviceKey {
    let half = |seed: u8| {
        // DefaultHasher::new() uses fixed keys, so keys are stable across restarts.
        #[allow(deprecated)]
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        tenant.as_str().hash(&mut h);
        device.hash(&mut h);
        h.finish()
    };
    DeviceKey(half(1), half(2))
}

/// Up to two deployment slots inline; a device in more deployments at once spills over.
#[derive(Debug, Clone, Copy)]
struct Slots([u32; 2]);

const EMPTY: u32 = u32::MAX;

impl Slots {
    fn contains(&self, slot: u32) -> bool {
        self.0.contains(&slot)
    }
    fn is_empty(&self) -> bool {
        self.0 == [EMPTY, EMPTY]
    }
}

#[derive(Debug, Default)]
struct Index {
    by_device: HashMap<DeviceKey, Slots>,
    /// Slots beyond the inline two, for devices in three or more deployments at once.
    overflow: HashMap<DeviceKey, Vec<u32>>,
    /// Deployments by slot; `None` for a free slot.
    slots: Vec<Option<Membership>>,
    slot_of: HashMap<Uuid, u32>,
    free: Vec<u32>,
}

impl Index {
    fn slot(&mut self, m: Membership) -> u32 {
        if let Some(s) = self.slot_of.get(&m.deployment) {
            return *s;
        }
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(m);
                s
            }
            None => {
                self.slots.push(Some(m));
                (self.slots.len() - 1) as u32
            }
        };
        self.slot_of.insert(m.deployment, s);
        s
    }

    fn add(&mut self, key: DeviceKey, slot: u32) {
        let inline = self.by_device.entry(key).or_insert(Slots([EMPTY, EMPTY]));
        if inline.contains(slot) {
            return;
        }
        if let Some(hole) = inline.0.iter_mut().find(|s| **s == EMPTY) {
            *hole = slot;
            return;
        }
        let spill = self.overflow.entry(key).or_default();
        if !spill.contains(&slot) {
            spill.push(slot);
        }
    }

    fn remove(&mut self, key: DeviceKey, slot: u32) {
        let Some(inline) = self.by_device.get_mut(&key) else {
            return;
        };
        if let Some(pos) = inline.0.iter().position(|s| *s == slot) {
            inline.0[pos] = match self.overflow.get_mut(&key).and_then(Vec::pop) {
                Some(moved) => moved,
                None => EMPTY,
            };
        } else if let Some(spill) = self.overflow.get_mut(&key) {
            spill.retain(|s| *s != slot);
        }
        if self.overflow.get(&key).is_some_and(Vec::is_empty) {
            self.overflow.remove(&key);
        }
        if inline.is_empty() {
            self.by_device.remove(&key);
        }
    }

    fn memberships(&self, key: DeviceKey) -> Vec<Membership> {
        let Some(inline) = self.by_device.get(&key) else {
            return Vec::new();
        };
        let spill = self.overflow.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let mut out: Vec<Membership> = inline
            .0
            .iter()
            .chain(spill)
            .filter(|s| **s != EMPTY)
            .filter_map(|s| self.slots.get(*s as usize).copied().flatten())
            .collect();
        out.sort_by_key(|m| (m.created, m.deployment));
        out
    }

    fn oldest(&self, key: DeviceKey) -> Option<Membership> {
        let inline = self.by_device.get(&key)?;
        let spill = self.overflow.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        inline
            .0
            .iter()
            .chain(spill)
            .filter(|s| **s != EMPTY)
            .filter_map(|s| self.slots.get(*s as usize).copied().flatten())
            .min_by_key(|m| (m.created, m.deployment))
    }

    fn slot_in_use(&self, slot: u32) -> bool {
        self.by_device.values().any(|s| s.contains(slot))
            || self.overflow.values().any(|l| l.contains(&slot))
    }
}

/// Device → active deployments (shared, cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    inner: Arc<RwLock<Index>>,
}

impl Fleet {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add many devices (by key) of one deployment.
    pub fn add_all(&self, devices: impl IntoIterator<Item = DeviceKey>, m: Membership) {
        let mut index = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let slot = index.slot(m);
        for key in devices {
            index.add(key, slot);
        }
    }

    /// The device finished (or left) a deployment.
    pub fn remove(&self, key: DeviceKey, deployment: Uuid) {
        let mut index = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = index.slot_of.get(&deployment).copied() {
            index.remove(key, slot);
        }
    }

    /// The device finished a deployment created at `created`: it must never receive an
    /// older one, so its memberships of older deployments go.
    pub fn prune_older(&self, key: DeviceKey, created: i128) {
        let mut index = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let older: Vec<u32> = index
            .memberships(key)
            .iter()
            .filter(|m| m.created < created)
            .filter_map(|m| index.slot_of.get(&m.deployment).copied())
            .collect();
        for slot in older {
            index.remove(key, slot);
        }
    }

    /// Forget a finished deployment's slot once no device refers to it.
    pub fn release(&self, deployment: Uuid) {
        let mut index = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = index.slot_of.get(&deployment).copied() {
            if !index.slot_in_use(slot) {
                index.slot_of.remove(&deployment);
                index.slots[slot as usize] = None;
                index.free.push(slot);
            }
        }
    }

    /// The device's active deployments, oldest first.
    pub fn memberships(&self, key: DeviceKey) -> Vec<Membership> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .memberships(key)
    }

    /// The device's oldest active deployment (the check-in path: no allocation).
    pub fn oldest(&self, key: DeviceKey) -> Option<Membership> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .oldest(key)
    }

    /// Number of devices indexed.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_device
            .len()
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
        let (d1, d2) = (device_key(&t, "d1"), device_key(&t, "d2"));
        f.add_all(
            [d1, d2],
            Membership {
                created: 20,
                deployment: b,
            },
        );
        f.add_all(
            [d1],
            Membership {
                created: 10,
                deployment: a,
            },
        );
        let m = f.memberships(d1);
        assert_eq!(
            m.iter().map(|m| m.deployment).collect::<Vec<_>>(),
            vec![a, b]
        );
        f.remove(d1, a);
        assert_eq!(f.memberships(d1).len(), 1);
        assert!(f
            .memberships(device_key(&TenantId("other".into()), "d1"))
            .is_empty());
        f.remove(d1, b);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_device_in_many_deployments_keeps_them_all_in_order() {
        let f = Fleet::new();
        let k = device_key(&TenantId::default_tenant(), "d");
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate().rev() {
            f.add_all(
                [k],
                Membership {
                    created: i as i128,
                    deployment: *id,
                },
            );
        }
        let got: Vec<Uuid> = f.memberships(k).iter().map(|m| m.deployment).collect();
        assert_eq!(got, ids);
        assert_eq!(f.oldest(k).map(|m| m.deployment), Some(ids[0]));
        f.remove(k, ids[0]);
        f.remove(k, ids[3]);
        let got: Vec<Uuid> = f.memberships(k).iter().map(|m| m.deployment).collect();
        assert_eq!(got, vec![ids[1], ids[2], ids[4]]);
        for id in &ids {
            f.remove(k, *id);
        }
        assert!(f.is_empty());
    }

    #[test]
    fn finishing_a_deployment_drops_older_memberships_only() {
        let f = Fleet::new();
        let k = device_key(&TenantId::default_tenant(), "d");
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        f.add_all(
            [k],
            Membership {
                created: 10,
                deployment: old,
            },
        );
        f.add_all(
            [k],
            Membership {
                created: 30,
                deployment: new,
            },
        );
        f.prune_older(k, 20);
        let got: Vec<Uuid> = f.memberships(k).iter().map(|m| m.deployment).collect();
        assert_eq!(got, vec![new]);
    }

    #[test]
    fn keys_separate_tenants_and_devices() {
        let t = TenantId("t".into());
        assert_ne!(device_key(&t, "a"), device_key(&t, "b"));
        assert_ne!(device_key(&t, "a"), device_key(&TenantId("u".into()), "a"));
        assert_eq!(device_key(&t, "a"), device_key(&t, "a"));
    }
}
