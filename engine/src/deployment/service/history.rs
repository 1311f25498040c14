//! A device's deployment history: every deployment it takes or took part in, with its
//! record there (the UI's device page).

use std::collections::HashSet;

use futures_util::{StreamExt as _, TryStreamExt as _};
use storage::{DeploymentRecord, DeviceDeploymentRecord, TenantId};
use uuid::Uuid;

use super::DeploymentService;
use crate::deployment::fleet::device_key;
use crate::error::Result;

/// Record lookups in flight at once (one point read per deployment of the tenant).
const LOOKUPS_IN_FLIGHT: usize = 32;

impl DeploymentService {
    /// The deployments `device` is or was part of, newest first, each with the device's
    /// record in it. A device has a stored record in every deployment it did something in
    /// (and in every finished one); in a running deployment it has not touched yet it is
    /// `pending`, known from the fleet index.
    pub async fn device_history(
        &self,
        tenant: &TenantId,
        device: &str,
    ) -> Result<Vec<(DeploymentRecord, DeviceDeploymentRecord)>> {
        let active: HashSet<Uuid> = self
            .fleet
            .memberships(device_key(tenant, device))
            .into_iter()
            .map(|m| m.deployment)
            .collect();
        let mut all = self.store.deployments(tenant).await?;
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        let store = self.store.clone();
        let found: Vec<Option<(DeploymentRecord, DeviceDeploymentRecord)>> =
            futures_util::stream::iter(all)
                .map(|d| {
                    let (store, active) = (store.clone(), &active);
                    async move {
                        let rec = store.device_record(tenant, d.id, device).await?;
                        Ok::<_, crate::EngineError>(match rec {
                            Some(r) => Some((d, r)),
                            None if active.contains(&d.id) => {
                                let pending =
                                    DeviceDeploymentRecord::pending(device.to_owned(), d.created);
                                Some((d, pending))
                            }
                            None => None,
                        })
                    }
                })
                .buffered(LOOKUPS_IN_FLIGHT)
                .try_collect()
                .await?;
        Ok(found.into_iter().flatten().collect())
    }
}
