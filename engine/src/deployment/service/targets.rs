//! Which devices a deployment is for: a list of ids, every accepted device, the members of
//! a group, or those matching an inventory filter (a dynamic deployment, which devices that
//! match later join, see [`DeploymentService::device_changed`]). And the rule that an
//! active deployment is not created twice.

use std::collections::HashSet;
use std::time::Duration;

use storage::{DeploymentFilter, DeploymentRecord, DeploymentStatus, TenantId};
use uuid::Uuid;

use super::route::{unexpected, Answer, Request};
use super::{DeploymentService, RESTART_WAIT};
use crate::deployment::fleet::device_key;
use crate::deployment::plan::NewDeployment;
use crate::error::{EngineError, Result};
use crate::inventory::{self, attributes, filter};

impl DeploymentService {
    /// Resolve what `new` targets into `new.devices`; the filter of a dynamic deployment.
    pub(super) async fn resolve_targets(
        &self,
        tenant: &TenantId,
        new: &mut NewDeployment,
    ) -> Result<Option<DeploymentFilter>> {
        let ways = [
            !new.devices.is_empty(),
            new.all_devices,
            new.group.is_some(),
            new.filter_id.is_some(),
            new.filter.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(EngineError::Invalid(
                "give one of: a list of devices, all_devices, a group, a filter_id or a filter"
                    .into(),
            ));
        }
        if new.all_devices {
            new.devices = self.accepted_devices(tenant).await?;
            if new.devices.is_empty() {
                return Err(EngineError::Invalid(
                    "all_devices: the tenant has no accepted device".into(),
                ));
            }
        }
        if let Some(group) = new.group.clone() {
            inventory::check_group_name(&group)?;
            let member = |attrs: &[attributes::Attribute]| {
                attrs.iter().any(|a| {
                    a.scope == attributes::SYSTEM
                        && a.name == attributes::GROUP
                        && a.value.as_str() == Some(group.as_str())
                })
            };
            new.devices = self.admitted(tenant, member).await?;
            if new.devices.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "group {group:?} has no accepted device"
                )));
            }
        }
        let Some(f) = self.deployment_filter(tenant, new).await? else {
            return Ok(None);
        };
        filter::validate(&f.terms)?;
        let mut devices = self
            .admitted(tenant, |attrs| filter::matches(&f.terms, attrs))
            .await?;
        if let Some(max) = new.max_devices {
            devices.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        }
        new.devices = devices;
        Ok(Some(f))
    }

    /// The filter `new` names (saved) or carries (inline).
    async fn deployment_filter(
        &self,
        tenant: &TenantId,
        new: &NewDeployment,
    ) -> Result<Option<DeploymentFilter>> {
        if let Some(id) = new.filter_id {
            let saved = self.store.filter(tenant, id).await?.ok_or_else(|| {
                EngineError::Invalid(format!("filter_id {id}: no such saved filter"))
            })?;
            return Ok(Some(DeploymentFilter {
                id,
                name: saved.name,
                terms: saved.terms,
            }));
        }
        Ok(new.filter.as_ref().map(|f| DeploymentFilter {
            id: Uuid::new_v4(),
            name: f.name.clone().unwrap_or_else(|| new.name.clone()),
            terms: f.terms.clone(),
        }))
    }

    /// Ids of the admitted devices whose attributes satisfy `pred`, in id order.
    async fn admitted(
        &self,
        tenant: &TenantId,
        pred: impl Fn(&[attributes::Attribute]) -> bool,
    ) -> Result<Vec<String>> {
        Ok(inventory::everyone(self.store.as_ref(), tenant)
            .await?
            .into_iter()
            .filter(|(d, admitted)| *admitted && pred(&d.attributes))
            .map(|(d, _)| d.id)
            .collect())
    }

    /// 409 when an unfinished deployment has the same name, release, devices (or filter)
    /// and `force_installation`: the same request to a group, a filter or every device
    /// sent twice (not asked for a list of devices, whose contract has no 409).
    pub(super) async fn refuse_duplicate(
        &self,
        tenant: &TenantId,
        new: &NewDeployment,
        filter: Option<&DeploymentFilter>,
    ) -> Result<()> {
        let mut wanted: Option<HashSet<&str>> = None;
        for d in self.store.deployments(tenant).await? {
            let similar = d.status != DeploymentStatus::Finished
                && d.name == new.name
                && d.artifact_name == new.artifact_name
                && d.force_installation == new.force_installation
                && d.dynamic == filter.is_some();
            if !similar {
                continue;
            }
            let same = match (filter, &d.filter) {
                (Some(f), Some(g)) => f.terms == g.terms && d.max_devices == new.max_devices,
                _ => {
                    let wanted = wanted
                        .get_or_insert_with(|| new.devices.iter().map(String::as_str).collect());
                    let stored = self.store.device_list(tenant, d.id).await?;
                    stored.len() == wanted.len()
                        && stored.iter().all(|s| wanted.contains(s.as_str()))
                }
            };
            if same {
                return Err(EngineError::Conflict(format!(
                    "deployment {} with the same name, release and devices is still active",
                    d.id
                )));
            }
        }
        Ok(())
    }

    /// A device's attributes or admission changed: it joins the dynamic deployments whose
    /// filter it now matches (found through the index, not by evaluating every filter),
    /// unless it takes part already or finished a newer deployment.
    pub async fn device_changed(&self, tenant: &TenantId, device: &str) -> Result<()> {
        if !self.dynamic.has_tenant(tenant) {
            return Ok(());
        }
        let Some((d, admitted)) = inventory::one(self.store.as_ref(), tenant, device).await? else {
            return Ok(());
        };
        let matching = self.dynamic.matching(tenant, &d.attributes);
        if !admitted || matching.is_empty() {
            return Ok(());
        }
        let key = device_key(tenant, device);
        let active: HashSet<Uuid> = self
            .fleet
            .memberships(key)
            .into_iter()
            .map(|m| m.deployment)
            .collect();
        let newest = self
            .store
            .last_finished(tenant, &[device.to_owned()])
            .await?
            .pop()
            .flatten();
        for (id, created) in matching {
            if active.contains(&id) || newest.is_some_and(|t| t > created) {
                continue;
            }
            self.join(tenant, id, device).await?;
        }
        Ok(())
    }

    /// Ask a dynamic deployment's actor to take `device`; `false` once it has finished.
    async fn join(&self, tenant: &TenantId, id: Uuid, device: &str) -> Result<bool> {
        let join = Request::Join {
            device: device.to_owned(),
        };
        match self.perform(tenant, id, join, RESTART_WAIT).await? {
            Some(Answer::Joined(joined)) => {
                if joined {
                    tracing::info!(deployment = %id, device, "a device joined a dynamic deployment");
                }
                Ok(true)
            }
            Some(other) => Err(unexpected(other)),
            None => {
                self.dynamic.remove(tenant, id);
                Ok(false)
            }
        }
    }

    /// Match the fleet against a new dynamic deployment's filter once more, once every node
    /// knows the filter (on a cluster, after two lease TTLs; every node registers it at its
    /// next lease round): a device whose change was stored after the creation's scan but
    /// before its node knew the filter joins here.
    pub(super) fn catch_up_later(&self, header: DeploymentRecord) {
        let delay = self
            .cluster
            .as_ref()
            .map_or(Duration::ZERO, |c| c.lease_ttl() * 2);
        let svc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = svc.catch_up(&header).await {
                tracing::warn!(deployment = %header.id, error = %e, "matching the fleet again against a new dynamic deployment failed");
            }
        });
    }

    async fn catch_up(&self, header: &DeploymentRecord) -> Result<()> {
        let (tenant, created) = (&header.tenant, header.created.unix_timestamp_nanos());
        let Some(f) = &header.filter else {
            return Ok(());
        };
        let members: HashSet<String> = self
            .store
            .device_list(tenant, header.id)
            .await?
            .into_iter()
            .collect();
        let matching = self
            .admitted(tenant, |attrs| filter::matches(&f.terms, attrs))
            .await?;
        let newcomers: Vec<String> = matching
            .into_iter()
            .filter(|d| !members.contains(d))
            .collect();
        let newest = self.store.last_finished(tenant, &newcomers).await?;
        for (device, finished) in newcomers.iter().zip(newest) {
            if finished.is_some_and(|t| t > created) {
                continue;
            }
            if !self.join(tenant, header.id, device).await? {
                break;
            }
        }
        Ok(())
    }
}
