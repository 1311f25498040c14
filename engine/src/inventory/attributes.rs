//! A device's attributes, namespaced by scope as in Mender's inventory: what the device
//! reports (`inventory`), its identity and admission status (`identity`, from device
//! authentication), and what the server and operators set (`system`: the group, the time
//! of the last update).
//!
//! The stored document ([`Inventory`]) holds the `inventory` and `system` attributes, one
//! JSON array; documents written before scopes existed hold device attributes without a
//! `scope`, which read as `inventory`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::DeviceAuthRecord;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What the device reports.
pub const INVENTORY: &str = "inventory";
/// Identity data and admission status.
pub const IDENTITY: &str = "identity";
/// Set by the server and operators.
pub const SYSTEM: &str = "system";
/// The `system` attribute holding the device's group.
pub const GROUP: &str = "group";
/// The `system` attribute holding when the document last changed.
pub const UPDATED_TS: &str = "updated_ts";

/// One attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// Its name, unique within its scope.
    pub name: String,
    /// Its namespace.
    #[serde(default = "inventory_scope")]
    pub scope: String,
    /// A string, a number, or an array of them.
    pub value: Value,
    /// What it means, if the device said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn inventory_scope() -> String {
    INVENTORY.to_owned()
}

impl Attribute {
    /// An attribute without a description.
    pub fn new(scope: &str, name: &str, value: Value) -> Self {
        Attribute {
            name: name.to_owned(),
            scope: scope.to_owned(),
            value,
            description: None,
        }
    }
}

/// A device's stored inventory document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory(Vec<Attribute>);

impl Inventory {
    /// The document as stored (`None`, or one that does not decode: empty).
    pub fn decode(stored: Option<&Value>) -> Self {
        let attributes = stored
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Inventory(attributes)
    }

    /// The document to store.
    pub fn encode(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Array(Vec::new()))
    }

    /// Its attributes.
    pub fn attributes(&self) -> &[Attribute] {
        &self.0
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the device reported: `merge` updates the named attributes, otherwise they
    /// replace every `inventory` attribute. Whatever scope the device names, its
    /// attributes are `inventory` ones: a device cannot move itself into a group.
    pub fn report(&mut self, merge: bool, update: &[Attribute], now: OffsetDateTime) {
        if !merge {
            self.0.retain(|a| a.scope != INVENTORY);
        }
        for a in update {
            let a = Attribute {
                scope: INVENTORY.to_owned(),
                ..a.clone()
            };
            self.put(a);
        }
        self.touch(now);
    }

    /// The device's group.
    pub fn group(&self) -> Option<&str> {
        self.get(SYSTEM, GROUP).and_then(Value::as_str)
    }

    /// Put the device in `group`, or in none.
    pub fn set_group(&mut self, group: Option<&str>, now: OffsetDateTime) {
        match group {
            Some(g) => self.put(Attribute::new(SYSTEM, GROUP, Value::String(g.to_owned()))),
            None => self.0.retain(|a| !(a.scope == SYSTEM && a.name == GROUP)),
        }
        self.touch(now);
    }

    /// When the document last changed (RFC 3339).
    pub fn updated(&self) -> Option<&str> {
        self.get(SYSTEM, UPDATED_TS).and_then(Value::as_str)
    }

    fn get(&self, scope: &str, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|a| a.scope == scope && a.name == name)
            .map(|a| &a.value)
    }

    fn put(&mut self, a: Attribute) {
        match self
            .0
            .iter_mut()
            .find(|old| old.scope == a.scope && old.name == a.name)
        {
            Some(old) => *old = a,
            None => self.0.push(a),
        }
    }

    fn touch(&mut self, now: OffsetDateTime) {
        let ts = now.format(&Rfc3339).unwrap_or_default();
        self.put(Attribute::new(SYSTEM, UPDATED_TS, Value::String(ts)));
    }
}

/// Every attribute of a device: its identity (each identity field, and `status`) from its
/// authentication record, then its stored document.
pub fn all_attributes(auth: Option<&DeviceAuthRecord>, inventory: &Inventory) -> Vec<Attribute> {
    let mut out = Vec::new();
    if let Some(auth) = auth {
        if let Value::Object(fields) = &auth.identity_data {
            for (name, value) in fields {
                out.push(Attribute::new(IDENTITY, name, value.clone()));
            }
        }
        let status = serde_json::to_value(auth.status()).unwrap_or(Value::Null);
        out.push(Attribute::new(IDENTITY, "status", status));
    }
    out.extend(inventory.attributes().iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_device_report_keeps_the_group_and_cannot_set_one() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut inv = Inventory::default();
        inv.set_group(Some("canary"), now);
        let sneaky = Attribute::new(SYSTEM, GROUP, json!("prod"));
        let reported = [
            Attribute::new(INVENTORY, "device_type", json!("rpi4")),
            sneaky,
        ];
        inv.report(false, &reported, now);
        assert_eq!(inv.group(), Some("canary"));
        inv.report(
            false,
            &[Attribute::new(INVENTORY, "os", json!("linux"))],
            now,
        );
        let names: Vec<&str> = inv
            .attributes()
            .iter()
            .filter(|a| a.scope == INVENTORY)
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["os"],
            "a replacing report drops unreported device attributes"
        );
        inv.report(
            true,
            &[Attribute::new(INVENTORY, "kernel", json!("6.1"))],
            now,
        );
        assert_eq!(
            inv.attributes()
                .iter()
                .filter(|a| a.scope == INVENTORY)
                .count(),
            2
        );
        inv.set_group(None, now);
        assert_eq!(inv.group(), None);
        assert_eq!(inv.updated(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn documents_from_before_scopes_read_as_device_attributes() {
        let old = json!([{"name": "device_type", "value": "rpi4"}]);
        let inv = Inventory::decode(Some(&old));
        assert_eq!(inv.attributes()[0].scope, INVENTORY);
        assert!(Inventory::decode(Some(&json!({"not": "a list"}))).is_empty());
    }
}
