//! A deployment's device set in memory: every device's key in one sorted vector (16 bytes
//! per device), and full records only for devices that have done something. A million
//! pending devices cost 16 MB, not a million records.

use std::collections::HashMap;

use storage::{DeviceDeploymentRecord, DeviceStatus};
use time::OffsetDateTime;

use super::fleet::DeviceKey;
use super::stats::Statistics;

/// The devices of one deployment.
#[derive(Debug, Default)]
pub struct Roster {
    /// Keys of every device, sorted.
    keys: Vec<DeviceKey>,
    /// Records of devices that left the untouched `pending` state (or were loaded).
    records: HashMap<DeviceKey, Box<DeviceDeploymentRecord>>,
}

impl Roster {
    /// A roster of these devices, all untouched.
    pub fn new(mut keys: Vec<DeviceKey>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        Roster {
            keys,
            records: HashMap::new(),
        }
    }

    /// Add a device (a dynamic deployment's new member); `false` if it is one already.
    pub fn insert(&mut self, key: DeviceKey) -> bool {
        match self.keys.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                self.keys.insert(at, key);
                true
            }
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the device is part of the deployment.
    pub fn contains(&self, key: DeviceKey) -> bool {
        self.keys.binary_search(&key).is_ok()
    }

    /// The records of the devices that did something (untouched ones are pending).
    pub fn records(&self) -> impl Iterator<Item = &DeviceDeploymentRecord> + '_ {
        self.records.values().map(|r| r.as_ref())
    }

    /// Put a stored record in place (loading). Records of unknown devices are ignored.
    pub fn load(&mut self, key: DeviceKey, rec: DeviceDeploymentRecord) {
        if self.contains(key) {
            self.records.insert(key, Box::new(rec));
        }
    }

    /// The record of a device, if it has one.
    pub fn get(&self, key: DeviceKey) -> Option<&DeviceDeploymentRecord> {
        self.records.get(&key).map(|r| &**r)
    }

    /// Whether `key` is a member that either did nothing yet (no record: pending, never
    /// handed the update) or whose record satisfies `pred`.
    pub fn untouched_or(
        &self,
        key: DeviceKey,
        pred: impl FnOnce(&DeviceDeploymentRecord) -> bool,
    ) -> bool {
        self.contains(key) && self.get(key).is_none_or(pred)
    }

    /// The record of a member device, created `pending` on first use.
    pub fn get_mut(
        &mut self,
        key: DeviceKey,
        id: &str,
        created: OffsetDateTime,
    ) -> Option<&mut DeviceDeploymentRecord> {
        if !self.contains(key) {
            return None;
        }
        Some(
            self.records.entry(key).or_insert_with(|| {
                Box::new(DeviceDeploymentRecord::pending(id.to_owned(), created))
            }),
        )
    }

    /// Devices per status (untouched devices are pending).
    pub fn statistics(&self) -> Statistics {
        let mut s = Statistics::count(self.records.values().map(|r| &r.status));
        s.add(
            DeviceStatus::Pending,
            (self.keys.len() - self.records.len()) as u64,
        );
        s
    }

    /// Keys of devices that have not finished.
    pub fn active_keys(&self) -> impl Iterator<Item = DeviceKey> + '_ {
        self.keys
            .iter()
            .copied()
            .filter(|k| self.records.get(k).is_none_or(|r| !r.status.is_terminal()))
    }

    /// Phase index of each admitted device's record.
    pub fn phases(&self) -> impl Iterator<Item = u32> + '_ {
        self.records.values().filter_map(|r| r.phase)
    }
}
