//! The updates a deployment has handed out, readable without its actor.
//!
//! A device that was handed an update and asks again (it polls before it starts, or lost
//! the answer) gets the same update, and nothing changes: the actor's answer is a pure
//! read of that device's record. Asking the actor costs a message, a reply and a wake-up on
//! another thread for every such check-in, so the actor writes down here what it handed
//! out, and the check-in path answers a repeated ask from here.
//!
//! It stays right because the actor forgets a device here before it touches that device's
//! record ([`super::actor`]'s `record_mut`): whatever changes the device (a status report,
//! a retry, an abort, a conflict) removes its entry before the change is acknowledged, so a
//! check-in that comes after the acknowledgement asks the actor again. A restarted actor
//! starts with an empty set, and a node whose lease lapsed answers nothing from here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use storage::{ArtifactRecord, UpdateControlMap};

use super::fleet::DeviceKey;
use crate::cluster::Fence;

/// What one device was handed, with what it said when it got it.
#[derive(Debug)]
struct Handout {
    artifact: Arc<ArtifactRecord>,
    device_type: Box<str>,
    artifact_name: Box<str>,
}

/// One running deployment's handed-out updates (shared by its actor and the check-in path).
#[derive(Debug)]
pub struct Handouts {
    devices: RwLock<HashMap<DeviceKey, Handout>>,
    /// The deployment's control map as it is now (operators may replace it).
    control_map: RwLock<Option<UpdateControlMap>>,
    fence: Fence,
}

impl Handouts {
    /// Empty; the actor sets the control map once it has loaded the deployment.
    pub(crate) fn new(fence: Fence) -> Self {
        Handouts {
            devices: RwLock::default(),
            control_map: RwLock::default(),
            fence,
        }
    }

    /// The update `device` was handed, if it asks with the device type and artifact name it
    /// had then; `None` sends the check-in to the actor.
    pub(crate) fn repeat(
        &self,
        device: DeviceKey,
        device_type: &str,
        artifact_name: &str,
    ) -> Option<(Arc<ArtifactRecord>, Option<UpdateControlMap>)> {
        if !self.fence.holds() {
            return None;
        }
        let artifact = {
            let devices = read(&self.devices);
            let h = devices.get(&device)?;
            if *h.device_type != *device_type || *h.artifact_name != *artifact_name {
                return None;
            }
            h.artifact.clone()
        };
        Some((artifact, read(&self.control_map).clone()))
    }

    /// The actor handed `artifact` to `device` and its record says nothing else will
    /// happen at the device's next ask with the same data.
    pub(crate) fn remember(
        &self,
        device: DeviceKey,
        artifact: Arc<ArtifactRecord>,
        device_type: &str,
        artifact_name: &str,
    ) {
        let handout = Handout {
            artifact,
            device_type: device_type.into(),
            artifact_name: artifact_name.into(),
        };
        write(&self.devices).insert(device, handout);
    }

    /// The actor is about to look at or change `device`'s record.
    pub(crate) fn forget(&self, device: DeviceKey) {
        // Most records the actor touches have no entry (a device's first check-in): a read
        // lock finds that without making check-ins wait.
        if read(&self.devices).contains_key(&device) {
            write(&self.devices).remove(&device);
        }
    }

    pub(crate) fn set_control_map(&self, map: Option<UpdateControlMap>) {
        *write(&self.control_map) = map;
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::fleet::device_key;
    use storage::TenantId;

    fn artifact() -> Arc<ArtifactRecord> {
        Arc::new(ArtifactRecord {
            id: uuid::Uuid::nil(),
            tenant: tenant(),
            description: String::new(),
            meta: storage::ArtifactMeta {
                name: "app-2".into(),
                device_types_compatible: vec!["pi".into()],
                info: storage::ArtifactInfo {
                    format: "mender".into(),
                    version: 3,
                },
                signed: false,
                updates: Vec::new(),
                artifact_provides: Default::default(),
                artifact_depends: Default::default(),
                clears_artifact_provides: Vec::new(),
            },
            size: 1,
            modified: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    fn tenant() -> TenantId {
        TenantId::parse("t").unwrap()
    }

    #[test]
    fn a_repeat_needs_the_same_data_and_ends_when_the_actor_forgets_it() {
        let h = Handouts::new(Fence::unbounded());
        let key = device_key(&tenant(), "dev-1");
        assert!(h.repeat(key, "pi", "app-1").is_none());
        h.remember(key, artifact(), "pi", "app-1");
        let (a, map) = h.repeat(key, "pi", "app-1").expect("remembered");
        assert_eq!(a.meta.name, "app-2");
        assert!(map.is_none());
        assert!(
            h.repeat(key, "pi", "app-2").is_none(),
            "another artifact name"
        );
        assert!(
            h.repeat(key, "x86", "app-1").is_none(),
            "another device type"
        );
        h.forget(key);
        assert!(h.repeat(key, "pi", "app-1").is_none());
    }

    #[test]
    fn nothing_is_answered_once_the_lease_lapsed() {
        let h = Handouts::new(Fence::lapsed());
        let key = device_key(&tenant(), "dev-1");
        h.remember(key, artifact(), "pi", "app-1");
        assert!(h.repeat(key, "pi", "app-1").is_none());
    }
}
