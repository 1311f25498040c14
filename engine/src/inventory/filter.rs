//! Evaluating inventory filters: whether a device's attributes satisfy every term, with the
//! operators of Mender's inventory (`$eq $ne $gt $gte $lt $lte $in $nin $exists`), and the
//! keys by which the dynamic-deployment index finds the filters a device may match.
//!
//! Comparisons follow the document-database semantics Mender's filters come from: an array
//! attribute matches `$eq`, `$in` and the ordering operators when one of its elements
//! does; `$ne` and `$nin` match when none does (and when the attribute is absent); numbers
//! compare as numbers and strings as strings, never one with the other.

use std::cmp::Ordering;

use serde_json::Value;
use storage::{FilterOp, FilterTerm};

use super::attributes::Attribute;
use crate::error::{EngineError, Result};

/// Most terms in one filter.
pub const MAX_TERMS: usize = 64;
/// Most values in one `$in` / `$nin` array.
pub const MAX_VALUES: usize = 1024;

/// Refuse terms that cannot be evaluated, naming the first bad one.
pub fn validate(terms: &[FilterTerm]) -> Result<()> {
    if terms.len() > MAX_TERMS {
        return Err(invalid(format!("a filter has at most {MAX_TERMS} terms")));
    }
    for (i, t) in terms.iter().enumerate() {
        let n = i + 1;
        if t.scope.is_empty() || t.attribute.is_empty() {
            return Err(invalid(format!(
                "term {n}: scope and attribute are required"
            )));
        }
        match t.op {
            FilterOp::In | FilterOp::Nin => match &t.value {
                Value::Array(items) if items.len() <= MAX_VALUES && items.iter().all(is_scalar) => {
                }
                _ => {
                    return Err(invalid(format!(
                        "term {n}: {} takes an array of at most {MAX_VALUES} strings or numbers",
                        op_name(t.op)
                    )))
                }
            },
            FilterOp::Exists => {
                if exists_operand(&t.value).is_none() {
                    return Err(invalid(format!("term {n}: $exists takes true or false")));
                }
            }
            _ => {
                if !is_scalar(&t.value) {
                    return Err(invalid(format!(
                        "term {n}: {} takes a string or a number",
                        op_name(t.op)
                    )));
                }
            }
        }
    }
    Ok(())
}

fn invalid(msg: String) -> EngineError {
    EngineError::Invalid(msg)
}

fn op_name(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Eq => "$eq",
        FilterOp::Ne => "$ne",
        FilterOp::Gt => "$gt",
        FilterOp::Gte => "$gte",
        FilterOp::Lt => "$lt",
        FilterOp::Lte => "$lte",
        FilterOp::In => "$in",
        FilterOp::Nin => "$nin",
        FilterOp::Exists => "$exists",
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// `$exists` operands: booleans, and the strings the UI sends for them.
fn exists_operand(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// Whether `attributes` satisfy every term (a filter without terms matches every device).
pub fn matches(terms: &[FilterTerm], attributes: &[Attribute]) -> bool {
    terms.iter().all(|t| term_holds(t, attributes))
}

fn term_holds(term: &FilterTerm, attributes: &[Attribute]) -> bool {
    let found = attributes
        .iter()
        .find(|a| a.scope == term.scope && a.name == term.attribute);
    let any = |pred: &dyn Fn(&Value) -> bool| found.is_some_and(|a| elements(&a.value).any(pred));
    match term.op {
        FilterOp::Exists => found.is_some() == exists_operand(&term.value).unwrap_or(true),
        FilterOp::Eq => any(&|v| equal(v, &term.value)),
        FilterOp::Ne => !any(&|v| equal(v, &term.value)),
        FilterOp::In => any(&|v| operands(&term.value).any(|o| equal(v, o))),
        FilterOp::Nin => !any(&|v| operands(&term.value).any(|o| equal(v, o))),
        FilterOp::Gt => any(&|v| compare(v, &term.value) == Some(Ordering::Greater)),
        FilterOp::Gte => any(&|v| compare(v, &term.value).is_some_and(Ordering::is_ge)),
        FilterOp::Lt => any(&|v| compare(v, &term.value) == Some(Ordering::Less)),
        FilterOp::Lte => any(&|v| compare(v, &term.value).is_some_and(Ordering::is_le)),
    }
}

/// An attribute's values: the elements of an array, or the value itself.
fn elements(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(items) => Box::new(items.iter()),
        other => Box::new(std::iter::once(other)),
    }
}

fn operands(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Index keys: a device can match `terms` only if one of its attributes has one of these
/// keys ([`attribute_keys`]). `None` when no term pins a value (no `$eq` or `$in`): such a
/// filter must be evaluated for every changed device.
pub fn filter_keys(terms: &[FilterTerm]) -> Option<Vec<String>> {
    let pinned = terms
        .iter()
        .find(|t| matches!(t.op, FilterOp::Eq | FilterOp::In))?;
    let values: Vec<&Value> = match pinned.op {
        FilterOp::In => operands(&pinned.value).collect(),
        _ => vec![&pinned.value],
    };
    Some(
        values
            .into_iter()
            .filter_map(|v| value_key(&pinned.scope, &pinned.attribute, v))
            .collect(),
    )
}

/// The index keys of a device's attributes: one per scalar value (per element of arrays).
pub fn attribute_keys(attributes: &[Attribute]) -> impl Iterator<Item = String> + '_ {
    attributes
        .iter()
        .flat_map(|a| elements(&a.value).filter_map(|v| value_key(&a.scope, &a.name, v)))
}

/// `scope \0 name \0 value`, numbers in one canonical form (`1` and `1.0` are equal).
fn value_key(scope: &str, name: &str, v: &Value) -> Option<String> {
    let value = match v {
        Value::String(s) => format!("s{s}"),
        Value::Number(n) => format!("n{}", n.as_f64()?),
        Value::Bool(b) => format!("b{b}"),
        _ => return None,
    };
    Some(format!("{scope}\0{name}\0{value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs() -> Vec<Attribute> {
        vec![
            Attribute::new("inventory", "device_type", json!("rpi4")),
            Attribute::new("inventory", "mem_kb", json!(2048)),
            Attribute::new("inventory", "ports", json!(["22", "80"])),
            Attribute::new("system", "group", json!("canary")),
        ]
    }

    fn term(scope: &str, attribute: &str, op: FilterOp, value: Value) -> FilterTerm {
        FilterTerm {
            scope: scope.into(),
            attribute: attribute.into(),
            op,
            value,
        }
    }

    fn holds(op: FilterOp, attribute: &str, value: Value) -> bool {
        matches(&[term("inventory", attribute, op, value)], &attrs())
    }

    #[test]
    fn every_operator_follows_document_database_semantics() {
        use FilterOp::*;
        assert!(holds(Eq, "device_type", json!("rpi4")));
        assert!(!holds(Eq, "device_type", json!("qemu")));
        assert!(holds(Eq, "ports", json!("80")), "an element of an array");
        assert!(
            holds(Eq, "mem_kb", json!(2048.0)),
            "numbers compare as numbers"
        );
        assert!(
            !holds(Eq, "mem_kb", json!("2048")),
            "never a number with a string"
        );
        assert!(holds(Ne, "device_type", json!("qemu")));
        assert!(
            holds(Ne, "absent", json!("x")),
            "an absent attribute is not equal"
        );
        assert!(!holds(Ne, "ports", json!("22")));
        assert!(holds(Gt, "mem_kb", json!(1024)));
        assert!(!holds(Gt, "mem_kb", json!(2048)));
        assert!(holds(Gte, "mem_kb", json!(2048)));
        assert!(holds(Lt, "mem_kb", json!(4096)));
        assert!(holds(Lte, "mem_kb", json!(2048)));
        assert!(!holds(Lt, "device_type", json!(5)), "no order across types");
        assert!(
            holds(Gt, "device_type", json!("qemu")),
            "strings order as strings"
        );
        assert!(holds(In, "device_type", json!(["qemu", "rpi4"])));
        assert!(!holds(In, "device_type", json!(["qemu"])));
        assert!(holds(Nin, "device_type", json!(["qemu"])));
        assert!(!holds(Nin, "ports", json!(["80", "443"])));
        assert!(holds(Exists, "ports", json!(true)));
        assert!(holds(Exists, "absent", json!(false)));
        assert!(!holds(Exists, "absent", json!(true)));
        assert!(holds(Exists, "ports", json!("true")));
    }

    #[test]
    fn every_term_must_hold_and_scopes_are_namespaces() {
        let canary = term("system", "group", FilterOp::Eq, json!("canary"));
        let rpi = term("inventory", "device_type", FilterOp::Eq, json!("rpi4"));
        assert!(matches(&[canary.clone(), rpi.clone()], &attrs()));
        let wrong_scope = term("identity", "device_type", FilterOp::Eq, json!("rpi4"));
        assert!(!matches(&[canary, wrong_scope], &attrs()));
        assert!(matches(&[], &attrs()));
    }

    #[test]
    fn operands_of_the_wrong_shape_are_refused() {
        let bad = [
            term("inventory", "a", FilterOp::In, json!("x")),
            term("inventory", "a", FilterOp::Nin, json!([{"x": 1}])),
            term("inventory", "a", FilterOp::Exists, json!(3)),
            term("inventory", "a", FilterOp::Eq, json!(["x"])),
            term("inventory", "a", FilterOp::Gt, json!(null)),
            term("", "a", FilterOp::Eq, json!("x")),
        ];
        for t in bad {
            assert!(validate(std::slice::from_ref(&t)).is_err(), "{t:?}");
        }
        assert!(validate(&[term("inventory", "a", FilterOp::In, json!(["x", 1]))]).is_ok());
    }

    #[test]
    fn a_device_shares_an_index_key_with_every_filter_it_can_match() {
        let f = [
            term("inventory", "mem_kb", FilterOp::Gt, json!(1)),
            term("inventory", "ports", FilterOp::In, json!(["443", "80"])),
        ];
        let keys = filter_keys(&f).unwrap();
        assert_eq!(keys.len(), 2);
        let device: Vec<String> = attribute_keys(&attrs()).collect();
        assert!(keys.iter().any(|k| device.contains(k)));
        let only_ranges = [term("inventory", "mem_kb", FilterOp::Gt, json!(1))];
        assert_eq!(filter_keys(&only_ranges), None);
        let n = [term("inventory", "mem_kb", FilterOp::Eq, json!(2048.0))];
        assert!(device.contains(&filter_keys(&n).unwrap()[0]));
    }
}
