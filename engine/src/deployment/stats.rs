//! Deployment statistics: a count per device status, kept equal to counting the records.

use std::collections::BTreeMap;

use storage::DeviceStatus;

/// Devices per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Statistics {
    counts: [u64; DeviceStatus::ALL.len()],
}

impl Statistics {
    /// Statistics of `n` devices that are all pending.
    pub fn all_pending(n: u64) -> Self {
        let mut s = Statistics::default();
        s.counts[DeviceStatus::Pending.index()] = n;
        s
    }

    /// Count the statuses of a set of devices.
    pub fn count<'a>(statuses: impl IntoIterator<Item = &'a DeviceStatus>) -> Self {
        let mut s = Statistics::default();
        for st in statuses {
            s.counts[st.index()] += 1;
        }
        s
    }

    /// Move one device from `from` to `to`.
    pub fn moved(&mut self, from: DeviceStatus, to: DeviceStatus) {
        if from != to {
            self.counts[from.index()] = self.counts[from.index()].saturating_sub(1);
            self.counts[to.index()] += 1;
        }
    }

    /// Count `n` more devices with `status`.
    pub fn add(&mut self, status: DeviceStatus, n: u64) {
        self.counts[status.index()] += n;
    }

    /// Devices with `status`.
    pub fn get(&self, status: DeviceStatus) -> u64 {
        self.counts[status.index()]
    }

    /// Devices that have not reached a terminal status.
    pub fn unfinished(&self) -> u64 {
        DeviceStatus::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| self.get(*s))
            .sum()
    }

    /// Devices that have moved past `pending`.
    pub fn started(&self) -> u64 {
        self.counts.iter().sum::<u64>() - self.get(DeviceStatus::Pending)
    }

    /// The counts as stored with a finished deployment.
    pub fn by_status(&self) -> BTreeMap<DeviceStatus, u64> {
        DeviceStatus::ALL
            .iter()
            .map(|s| (*s, self.get(*s)))
            .collect()
    }

    /// The counts stored with a finished deployment.
    pub fn from_stored(counts: &BTreeMap<DeviceStatus, u64>) -> Self {
        let mut s = Statistics::default();
        for (status, n) in counts {
            s.add(*status, *n);
        }
        s
    }

    /// The API's `DeploymentStatistics` object: every status key, always present.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        DeviceStatus::ALL
            .iter()
            .map(|s| (s.as_str(), self.get(*s)))
            .collect()
    }
}
