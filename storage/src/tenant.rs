//! Tenant ids: what a valid one looks like, and the name it is stored under.
//!
//! A tenant id comes from a token's `mender.tenant` claim and ends up in store keys and blob
//! paths, so it is checked once, by [`TenantId::parse`], wherever one is read from the
//! outside. The allowed alphabet keeps ids safe in every place they are written: a path
//! segment (no `/`, no `.` so never `..`), a key component (no NUL separator), a
//! Prometheus label. Mender's own tenant ids (24 hex digits) are valid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Storage name of the default tenant. Real ids cannot start with `_`, so no tenant can
/// share it (it is also the folder the default tenant's blobs always lived in).
const DEFAULT_STORAGE_NAME: &str = "_default";

/// A tenant id. The empty string is the default tenant (tokens without `mender.tenant`).
///
/// Build one from input only through [`TenantId::parse`] (or `str::parse`). The field is
/// public because tests and stored records build ids directly; stored records are trusted,
/// they passed `parse` when they were written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct TenantId(pub String);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// Longer than [`MAX_TENANT_ID_LEN`].
    #[error("tenant id is {0} characters long; at most {MAX_TENANT_ID_LEN} are allowed")]
    TooLong(usize),
    /// A character outside `A-Z a-z 0-9 - _`.
    #[error("tenant id {id:?} contains {found:?}; only letters A-Z and a-z, digits, '-' and '_' are allowed")]
    Character {
        /// The refused id (at most [`MAX_TENANT_ID_LEN`] characters, so it is safe to show).
        id: String,
        /// The first character that is not allowed.
        found: char,
    },
    /// Starts with `_`, which is reserved for storage names such as the default tenant's.
    #[error("tenant id {0:?} starts with '_', which is reserved")]
    Reserved(String),
}

impl TenantId {
    /// The tenant of tokens that carry no `mender.tenant` claim.
    pub fn default_tenant() -> Self {
        TenantId(String::new())
    }

    /// Check a tenant id read from input: empty (the default tenant), or 1 to
    /// [`MAX_TENANT_ID_LEN`] of `A-Z a-z 0-9 - _`, not starting with `_`.
    pub fn parse(raw: &str) -> Result<Self, TenantIdError> {
        let len = raw.chars().count();
        if len > MAX_TENANT_ID_LEN {
            return Err(TenantIdError::TooLong(len));
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(TenantIdError::Character {
                id: raw.to_owned(),
                found,
            });
        }
        if raw.starts_with('_') {
            return Err(TenantIdError::Reserved(raw.to_owned()));
        }
        Ok(TenantId(raw.to_owned()))
    }

    /// Whether this is the default tenant.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// The id as a string slice (empty for the default tenant).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name the tenant's files are stored under (a blob folder): the id itself, or
    /// `_default` for the default tenant. Two valid tenants never share a name, because
    /// valid ids are non-empty path-safe words that never start with `_`.
    pub fn storage_name(&self) -> &str {
        if self.is_default() {
            DEFAULT_STORAGE_NAME
        } else {
            &self.0
        }
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mender_ids_names_and_the_default_tenant_are_valid() {
        for ok in ["", "5f1b2c3d4e5f6a7b8c9d0e1f", "acme", "Acme-Corp_2", "x"] {
            assert_eq!(TenantId::parse(ok), Ok(TenantId(ok.into())), "{ok:?}");
        }
        assert!(TenantId::parse("").unwrap().is_default());
        assert_eq!(
            TenantId::parse(&"a".repeat(MAX_TENANT_ID_LEN)).map(|t| t.0.len()),
            Ok(MAX_TENANT_ID_LEN)
        );
    }

    #[test]
    fn ids_that_could_escape_or_collide_are_refused() {
        for bad in ["..", "/x", "x/", "a b", "a\0b", "a.b", "é", "a\nb", "%2e"] {
            assert!(
                matches!(TenantId::parse(bad), Err(TenantIdError::Character { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            TenantId::parse("_default"),
            Err(TenantIdError::Reserved("_default".into()))
        );
        assert_eq!(
            TenantId::parse(&"a".repeat(MAX_TENANT_ID_LEN + 1)),
            Err(TenantIdError::TooLong(MAX_TENANT_ID_LEN + 1))
        );
    }

    #[test]
    fn storage_names_of_valid_tenants_never_collide() {
        let ids = ["", "x", "X", "default", "-default", "default_"];
        let names: std::collections::HashSet<String> = ids
            .iter()
            .map(|i| TenantId::parse(i).unwrap().storage_name().to_owned())
            .collect();
        assert_eq!(names.len(), ids.len());
        assert_eq!(TenantId::default_tenant().storage_name(), "_default");
        assert_eq!(TenantId::parse("acme").unwrap().storage_name(), "acme");
    }
}
