//! Inventory filters as stored: the terms of a saved filter (`/api/management/v2/inventory/
//! filters`) and of a dynamic deployment. Serde names match Mender's inventory API
//! (`{"scope", "attribute", "type": "$eq", "value"}`); evaluating a filter is the engine's.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TenantId;

/// The operator of a filter term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterOp {
    /// Equal (for an array attribute: one element is equal).
    #[serde(rename = "$eq")]
    Eq,
    /// Not equal (for an array attribute: no element is equal).
    #[serde(rename = "$ne")]
    Ne,
    /// Greater than.
    #[serde(rename = "$gt")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = "$gte")]
    Gte,
    /// Less than.
    #[serde(rename = "$lt")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "$lte")]
    Lte,
    /// One of the values of an array.
    #[serde(rename = "$in")]
    In,
    /// None of the values of an array.
    #[serde(rename = "$nin")]
    Nin,
    /// The attribute is present (`value: true`) or absent (`value: false`).
    #[serde(rename = "$exists")]
    Exists,
}

/// One predicate on one attribute; a filter's terms all hold for a device that matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterTerm {
    /// The attribute's scope (`inventory`, `identity`, `system`, …).
    pub scope: String,
    /// The attribute's name.
    pub attribute: String,
    /// The operator.
    #[serde(rename = "type")]
    pub op: FilterOp,
    /// The operand (a string, a number, an array of them, or a boolean for `$exists`).
    pub value: serde_json::Value,
}

/// A named filter an operator saved, to search by and to create dynamic deployments from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedFilter {
    /// Filter id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Unique name within the tenant.
    pub name: String,
    /// The terms, all of which must hold.
    pub terms: Vec<FilterTerm>,
}

/// The filter a dynamic deployment was created with (a copy: deleting the saved filter
/// leaves the deployment as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFilter {
    /// The saved filter's id, or a fresh one for a filter given inline.
    pub id: Uuid,
    /// The saved filter's name, or the deployment's for a filter given inline.
    pub name: String,
    /// The terms.
    pub terms: Vec<FilterTerm>,
}
