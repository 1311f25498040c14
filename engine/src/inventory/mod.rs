//! Device inventory: the attributes devices report and operators set ([`attributes`]),
//! groups (a `system` attribute), search by inventory filters ([`filter`]) and saved
//! filters. Every change to a device's attributes is handed to the deployment service, so
//! that the device joins the dynamic deployments whose filter it now matches.

pub mod attributes;
pub mod filter;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use storage::{
    DeviceAuthRecord, DeviceAuthStatus, FilterTerm, MetaStore, SavedFilter, TenantId, Write,
};
use uuid::Uuid;

use crate::deployment::{Clock, DeploymentService};
use crate::error::{EngineError, Result};
pub use attributes::{Attribute, Inventory};

/// Compare-and-set attempts before a change is given up as contended (503).
const MAX_SWAPS: usize = 16;
/// Longest group name.
pub const MAX_GROUP_NAME: usize = 1024;
/// Most attributes a device may report.
pub const MAX_ATTRIBUTES: usize = 1024;
/// Most saved filters per tenant.
pub const MAX_FILTERS: usize = 1024;

/// A device as the inventory shows it.
#[derive(Debug, Clone)]
pub struct DeviceInventory {
    /// Device id.
    pub id: String,
    /// Every attribute ([`attributes::all_attributes`]).
    pub attributes: Vec<Attribute>,
    /// When its stored attributes last changed (RFC 3339), if ever.
    pub updated_ts: Option<String>,
}

/// One device with its attributes and whether it is admitted (accepted; or unknown to
/// device authentication here, as behind an external identity service whose tokens the
/// server trusts); `None` if the server knows nothing of it.
pub(crate) async fn one(
    store: &dyn MetaStore,
    tenant: &TenantId,
    device: &str,
) -> Result<Option<(DeviceInventory, bool)>> {
    let auth = store.device_auth(tenant, device).await?;
    let inventory = Inventory::decode(store.inventory(tenant, device).await?.as_ref());
    if auth.is_none() && inventory.is_empty() {
        return Ok(None);
    }
    Ok(Some(view(device.to_owned(), auth.as_ref(), &inventory)))
}

/// Every device of a tenant with its attributes (devices known to device authentication,
/// and devices that reported an inventory), by id; with whether each is admitted.
pub(crate) async fn everyone(
    store: &dyn MetaStore,
    tenant: &TenantId,
) -> Result<Vec<(DeviceInventory, bool)>> {
    let mut auths: HashMap<String, DeviceAuthRecord> = store
        .device_auths(tenant)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut out = Vec::new();
    for (id, doc) in store.inventories(tenant).await? {
        let inventory = Inventory::decode(Some(&doc));
        let auth = auths.remove(&id);
        if auth.is_none() && inventory.is_empty() {
            continue; // removed from the inventory
        }
        out.push(view(id, auth.as_ref(), &inventory));
    }
    for (id, auth) in auths {
        out.push(view(id, Some(&auth), &Inventory::default()));
    }
    out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    Ok(out)
}

fn view(
    id: String,
    auth: Option<&DeviceAuthRecord>,
    inventory: &Inventory,
) -> (DeviceInventory, bool) {
    let admitted = auth.is_none_or(|a| a.status() == DeviceAuthStatus::Accepted);
    let device = DeviceInventory {
        id,
        attributes: attributes::all_attributes(auth, inventory),
        updated_ts: inventory.updated().map(str::to_owned),
    };
    (device, admitted)
}

/// The inventory service the API calls.
#[derive(Clone)]
pub struct InventoryService {
    store: Arc<dyn MetaStore>,
    deployments: DeploymentService,
    clock: Clock,
}

impl InventoryService {
    /// Over the store, telling `deployments` of every change.
    pub fn new(store: Arc<dyn MetaStore>, deployments: DeploymentService, clock: Clock) -> Self {
        InventoryService {
            store,
            deployments,
            clock,
        }
    }

    /// A device reports its attributes: `merge` (`PATCH`) updates the named ones, otherwise
    /// (`PUT`) they replace what it reported before.
    pub async fn report(
        &self,
        tenant: &TenantId,
        device: &str,
        merge: bool,
        update: &[Attribute],
    ) -> Result<()> {
        if update.len() > MAX_ATTRIBUTES {
            return Err(EngineError::Invalid(format!(
                "at most {MAX_ATTRIBUTES} attributes"
            )));
        }
        if update.iter().any(|a| a.name.is_empty()) {
            return Err(EngineError::Invalid(
                "attribute names must not be empty".into(),
            ));
        }
        let now = self.clock.now();
        self.change(tenant, device, |inv| {
            inv.report(merge, update, now);
            Ok(())
        })
        .await
    }

    /// Put a device in a group (moving it from the one it was in).
    pub async fn set_group(&self, tenant: &TenantId, device: &str, group: &str) -> Result<()> {
        check_group_name(group)?;
        self.known(tenant, device).await?;
        let now = self.clock.now();
        self.change(tenant, device, |inv| {
            inv.set_group(Some(group), now);
            Ok(())
        })
        .await
    }

    /// Take a device out of `group`; 404 if it is not in it.
    pub async fn leave_group(&self, tenant: &TenantId, device: &str, group: &str) -> Result<()> {
        let now = self.clock.now();
        self.change(tenant, device, |inv| {
            if inv.group() != Some(group) {
                return Err(EngineError::NotFound("device in group"));
            }
            inv.set_group(None, now);
            Ok(())
        })
        .await
    }

    /// Forget a device's stored attributes (its identity stays with device authentication).
    pub async fn remove(&self, tenant: &TenantId, device: &str) -> Result<()> {
        self.change(tenant, device, |inv| {
            *inv = Inventory::default();
            Ok(())
        })
        .await
    }

    /// Read, change and compare-and-set a device's document, then tell the deployments.
    async fn change(
        &self,
        tenant: &TenantId,
        device: &str,
        edit: impl Fn(&mut Inventory) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..MAX_SWAPS {
            let stored = self.store.inventory(tenant, device).await?;
            let mut inventory = Inventory::decode(stored.as_ref());
            edit(&mut inventory)?;
            let swapped = self
                .store
                .replace_inventory(tenant, device, stored.as_ref(), inventory.encode())
                .await?;
            if swapped {
                // A failure here fails the request: its retry stores the same attributes
                // (no change) and joins again.
                return self.deployments.device_changed(tenant, device).await;
            }
        }
        Err(EngineError::Unavailable {
            reason: "the inventory is being changed by other requests".into(),
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// 404 unless the device is known (to device authentication or by its inventory).
    async fn known(&self, tenant: &TenantId, device: &str) -> Result<()> {
        self.device(tenant, device).await.map(drop)
    }

    /// One device.
    pub async fn device(&self, tenant: &TenantId, device: &str) -> Result<DeviceInventory> {
        one(self.store.as_ref(), tenant, device)
            .await?
            .map(|(d, _)| d)
            .ok_or(EngineError::NotFound("device"))
    }

    /// Every device matching `terms` (all devices without terms), by id.
    pub async fn search(
        &self,
        tenant: &TenantId,
        terms: &[FilterTerm],
    ) -> Result<Vec<DeviceInventory>> {
        filter::validate(terms)?;
        Ok(everyone(self.store.as_ref(), tenant)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| filter::matches(terms, &d.attributes))
            .collect())
    }

    /// The groups that have devices, by name.
    pub async fn groups(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let groups: BTreeSet<String> = self
            .store
            .inventories(tenant)
            .await?
            .into_iter()
            .filter_map(|(_, doc)| Inventory::decode(Some(&doc)).group().map(str::to_owned))
            .collect();
        Ok(groups.into_iter().collect())
    }

    /// Save a filter; 409 if the tenant has one of that name.
    pub async fn create_filter(
        &self,
        tenant: &TenantId,
        name: String,
        terms: Vec<FilterTerm>,
    ) -> Result<SavedFilter> {
        if name.trim().is_empty() || name.chars().count() > crate::deployment::plan::MAX_NAME {
            return Err(EngineError::Invalid("a filter needs a name".into()));
        }
        if terms.is_empty() {
            return Err(EngineError::Invalid(
                "a filter needs at least one term".into(),
            ));
        }
        filter::validate(&terms)?;
        let existing = self.store.filters(tenant).await?;
        if existing.iter().any(|f| f.name == name) {
            return Err(EngineError::Conflict(format!(
                "a filter named {name:?} exists"
            )));
        }
        if existing.len() >= MAX_FILTERS {
            return Err(EngineError::Unprocessable(format!(
                "a tenant keeps at most {MAX_FILTERS} filters"
            )));
        }
        let saved = SavedFilter {
            id: Uuid::new_v4(),
            tenant: tenant.clone(),
            name,
            terms,
        };
        self.store
            .commit(vec![Write::PutFilter(saved.clone())])
            .await?;
        Ok(saved)
    }

    /// One saved filter.
    pub async fn filter(&self, tenant: &TenantId, id: Uuid) -> Result<SavedFilter> {
        self.store
            .filter(tenant, id)
            .await?
            .ok_or(EngineError::NotFound("filter"))
    }

    /// Every saved filter, by name.
    pub async fn filters(&self, tenant: &TenantId) -> Result<Vec<SavedFilter>> {
        let mut all = self.store.filters(tenant).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Delete a saved filter (deployments made from it keep their copy of its terms).
    pub async fn delete_filter(&self, tenant: &TenantId, id: Uuid) -> Result<()> {
        self.filter(tenant, id).await?;
        let delete = Write::DeleteFilter {
            tenant: tenant.clone(),
            id,
        };
        Ok(self.store.commit(vec![delete]).await?)
    }
}

/// Group names as Mender's inventory takes them: letters, digits, `-` and `_`.
pub fn check_group_name(group: &str) -> Result<()> {
    let ok = !group.is_empty()
        && group.len() <= MAX_GROUP_NAME
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "invalid group name {group:?}: use 1 to {MAX_GROUP_NAME} letters, digits, '-' or '_'"
        )))
    }
}
