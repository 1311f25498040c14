//! The dynamic-deployment index: for each tenant, the filters of its unfinished dynamic
//! deployments, indexed by the values they pin. When a device's attributes change, the
//! deployments it may now match are found by looking its attribute values up here
//! ([`filter::attribute_keys`]), and only those filters are evaluated: the cost of a change
//! grows with the device's attributes, not with the fleet or the number of deployments.
//! Filters that pin no value (only ranges, `$ne`, `$exists`) are evaluated for every change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use storage::{DeploymentRecord, DeploymentStatus, FilterTerm, TenantId};
use uuid::Uuid;

use crate::inventory::{filter, Attribute};

/// One registered deployment.
struct Entry {
    created: i128,
    terms: Vec<FilterTerm>,
    keys: Option<Vec<String>>,
}

#[derive(Default)]
struct TenantFilters {
    deployments: HashMap<Uuid, Entry>,
    by_key: HashMap<String, Vec<Uuid>>,
    unpinned: HashSet<Uuid>,
}

/// The index, shared by every clone.
#[derive(Clone, Default)]
pub(crate) struct DynamicIndex(Arc<RwLock<HashMap<TenantId, TenantFilters>>>);

impl DynamicIndex {
    /// Index `header` if it is an unfinished dynamic deployment (again: no change).
    pub(crate) fn register(&self, header: &DeploymentRecord) {
        let Some(f) = header.filter.as_ref().filter(|_| header.dynamic) else {
            return;
        };
        if header.status == DeploymentStatus::Finished {
            return;
        }
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        let tenant = all.entry(header.tenant.clone()).or_default();
        if tenant.deployments.contains_key(&header.id) {
            return;
        }
        let keys = filter::filter_keys(&f.terms);
        match &keys {
            Some(keys) => {
                for k in keys {
                    tenant.by_key.entry(k.clone()).or_default().push(header.id);
                }
            }
            None => {
                tenant.unpinned.insert(header.id);
            }
        }
        let entry = Entry {
            created: header.created.unix_timestamp_nanos(),
            terms: f.terms.clone(),
            keys,
        };
        tenant.deployments.insert(header.id, entry);
    }

    /// Whether the tenant has a dynamic deployment running (most changes end here).
    pub(crate) fn has_tenant(&self, tenant: &TenantId) -> bool {
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        all.contains_key(tenant)
    }

    /// Forget a deployment (it finished).
    pub(crate) fn remove(&self, tenant: &TenantId, id: Uuid) {
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        let Some(t) = all.get_mut(tenant) else {
            return;
        };
        if let Some(entry) = t.deployments.remove(&id) {
            for k in entry.keys.iter().flatten() {
                if let Some(ids) = t.by_key.get_mut(k) {
                    ids.retain(|d| *d != id);
                    if ids.is_empty() {
                        t.by_key.remove(k);
                    }
                }
            }
            t.unpinned.remove(&id);
        }
        if t.deployments.is_empty() {
            all.remove(tenant);
        }
    }

    /// The dynamic deployments whose filter `attributes` match, oldest first, with their
    /// creation times (Unix nanoseconds).
    pub(crate) fn matching(
        &self,
        tenant: &TenantId,
        attributes: &[Attribute],
    ) -> Vec<(Uuid, i128)> {
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        let Some(t) = all.get(tenant) else {
            return Vec::new();
        };
        let mut candidates: HashSet<Uuid> = t.unpinned.clone();
        for k in filter::attribute_keys(attributes) {
            if let Some(ids) = t.by_key.get(&k) {
                candidates.extend(ids);
            }
        }
        let matched: BTreeMap<(i128, Uuid), ()> = candidates
            .into_iter()
            .filter_map(|id| t.deployments.get(&id).map(|e| (id, e)))
            .filter(|(_, e)| filter::matches(&e.terms, attributes))
            .map(|(id, e)| ((e.created, id), ()))
            .collect();
        matched.into_keys().map(|(c, id)| (id, c)).collect()
    }

    /// Number of indexed deployments (all tenants).
    #[cfg(test)]
    fn len(&self) -> usize {
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        all.values().map(|t| t.deployments.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use storage::{DeploymentFilter, FilterOp};
    use time::OffsetDateTime;

    fn dynamic(tenant: &TenantId, terms: Vec<FilterTerm>, age: i64) -> DeploymentRecord {
        DeploymentRecord {
            id: Uuid::new_v4(),
            tenant: tenant.clone(),
            name: "d".into(),
            artifact_name: "a".into(),
            created: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(age),
            finished: None,
            status: DeploymentStatus::Pending,
            device_count: 0,
            retries: 0,
            phases: Vec::new(),
            aborted: false,
            artifacts: Vec::new(),
            final_statistics: None,
            dynamic: true,
            filter: Some(DeploymentFilter {
                id: Uuid::new_v4(),
                name: "f".into(),
                terms,
            }),
            max_devices: None,
            initial_device_count: None,
            force_installation: false,
            safety: Default::default(),
        }
    }

    fn term(attribute: &str, op: FilterOp, value: serde_json::Value) -> FilterTerm {
        FilterTerm {
            scope: "inventory".into(),
            attribute: attribute.into(),
            op,
            value,
        }
    }

    #[test]
    fn a_device_finds_the_deployments_it_matches_oldest_first() {
        let index = DynamicIndex::default();
        let (t, other) = (TenantId("t".into()), TenantId("o".into()));
        let rpi = dynamic(
            &t,
            vec![term("device_type", FilterOp::Eq, json!("rpi4"))],
            2,
        );
        let big = dynamic(&t, vec![term("mem", FilterOp::Gt, json!(100))], 1);
        let qemu = dynamic(
            &t,
            vec![term("device_type", FilterOp::In, json!(["qemu"]))],
            0,
        );
        let elsewhere = dynamic(
            &other,
            vec![term("device_type", FilterOp::Eq, json!("rpi4"))],
            0,
        );
        for d in [&rpi, &big, &qemu, &elsewhere] {
            index.register(d);
            index.register(d);
        }
        assert_eq!(index.len(), 4);
        let device = [
            Attribute::new("inventory", "device_type", json!("rpi4")),
            Attribute::new("inventory", "mem", json!(512)),
        ];
        let found: Vec<Uuid> = index
            .matching(&t, &device)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(found, [big.id, rpi.id]);
        index.remove(&t, big.id);
        let found: Vec<Uuid> = index
            .matching(&t, &device)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(found, [rpi.id]);
        let small = [Attribute::new("inventory", "mem", json!(5))];
        assert!(index.matching(&t, &small).is_empty());
    }

    #[test]
    fn finished_and_static_deployments_are_not_indexed() {
        let index = DynamicIndex::default();
        let t = TenantId("t".into());
        let mut done = dynamic(&t, vec![], 0);
        done.status = DeploymentStatus::Finished;
        let mut fixed = dynamic(&t, vec![], 0);
        fixed.dynamic = false;
        index.register(&done);
        index.register(&fixed);
        assert_eq!(index.len(), 0);
    }
}
