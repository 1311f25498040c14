//! Key layout of the embedded store. Every key starts with the tenant, then the partition
//! (deployment or device), so a prefix scan reads exactly one partition.
//!
//! The tenant is written as its id followed by [`SEP`]; the default tenant's is just `SEP`.
//! Valid tenant ids ([`TenantId::parse`]) never contain `SEP`, so no tenant's prefix is a
//! prefix of another's, and keys written before tenant ids were validated keep working.

use uuid::Uuid;

use crate::TenantId;

/// Separator between key components; tenant ids and device ids never contain it.
pub const SEP: u8 = 0;

/// `tenant SEP` — the prefix of all of a tenant's rows in a keyspace.
pub fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.0.len() + 1);
    k.extend_from_slice(tenant.0.as_bytes());
    k.push(SEP);
    k
}

/// `tenant SEP uuid(16)`.
pub fn tenant_id(tenant: &TenantId, id: Uuid) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `tenant SEP uuid(16) SEP` — the prefix of a deployment's rows.
pub fn deployment_prefix(tenant: &TenantId, deployment: Uuid) -> Vec<u8> {
    let mut k = tenant_id(tenant, deployment);
    k.push(SEP);
    k
}

/// `tenant SEP uuid(16) SEP device`.
pub fn deployment_device(tenant: &TenantId, deployment: Uuid, device: &str) -> Vec<u8> {
    let mut k = deployment_prefix(tenant, deployment);
    k.extend_from_slice(device.as_bytes());
    k
}

/// `tenant SEP uuid(16) SEP chunk(be u32)`.
pub fn device_list_chunk(tenant: &TenantId, deployment: Uuid, chunk: u32) -> Vec<u8> {
    let mut k = deployment_prefix(tenant, deployment);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// `tenant SEP device`.
pub fn tenant_device(tenant: &TenantId, device: &str) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(device.as_bytes());
    k
}

/// The tenant and device of a `tenant SEP device` key.
pub fn split_tenant_device(key: &[u8]) -> Option<(String, String)> {
    let pos = key.iter().position(|b| *b == SEP)?;
    let tenant = std::str::from_utf8(&key[..pos]).ok()?;
    let device = std::str::from_utf8(&key[pos + 1..]).ok()?;
    Some((tenant.to_owned(), device.to_owned()))
}

/// Whether `s` can be a key component.
pub fn is_valid_component(s: &str) -> bool {
    !s.as_bytes().contains(&SEP)
}
