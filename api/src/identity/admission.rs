//! Which key of a device gets a token: the decision on one auth request, over the device's
//! auth sets, without I/O.
//!
//! The rule that keeps a device from being taken over: a key only inherits a device that
//! nobody holds yet. Once a device has an accepted, preauthorized or rejected auth set
//! (an operator or an earlier key has a say), a new key for the same identity data is
//! recorded as a pending auth set and refused until an operator accepts it, as Mender's
//! device authentication does. Knowing a device's identity data is thus not enough to get
//! its token.

use storage::{AuthSet, DeviceAuthRecord, DeviceAuthStatus};
use time::OffsetDateTime;

use super::device_key::DevicePublicKey;
use super::Admission;

/// Most pending auth sets kept per device. Anyone who knows a device's identity data can
/// present new keys; past this many, the oldest pending one is forgotten, so the record
/// stays small and an operator's list stays readable.
pub const MAX_PENDING_AUTH_SETS: usize = 8;

/// The outcome of an auth request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is accepted: hand out a token.
    Admitted,
    /// No token, and why.
    Refused(&'static str),
}

/// Decide on an auth request signed by `key` for `device` under `policy`, updating the
/// device's auth sets. Returns the verdict and whether `device` changed (and must be
/// stored).
pub fn decide(
    device: &mut DeviceAuthRecord,
    key: &DevicePublicKey,
    policy: Admission,
    now: OffsetDateTime,
) -> (Verdict, bool) {
    let unclaimed = is_unclaimed(device);
    let known = device.auth_sets.iter().position(|s| same_key(s, key));
    let verdict = match known.map(|i| (i, device.auth_sets[i].status)) {
        Some((_, DeviceAuthStatus::Accepted)) => return (Verdict::Admitted, false),
        Some((_, DeviceAuthStatus::Rejected)) => {
            return (Verdict::Refused("an operator rejected this key"), false)
        }
        Some((i, DeviceAuthStatus::Preauthorized)) => {
            accept(device, i);
            Verdict::Admitted
        }
        Some((i, DeviceAuthStatus::Pending)) if policy == Admission::Auto && unclaimed => {
            accept(device, i);
            Verdict::Admitted
        }
        Some((_, DeviceAuthStatus::Pending)) => {
            return (Verdict::Refused(why_pending(device)), false)
        }
        None if policy == Admission::Auto && unclaimed => {
            add(device, key, DeviceAuthStatus::Accepted, now);
            Verdict::Admitted
        }
        None => {
            let why = why_pending(device);
            add(device, key, DeviceAuthStatus::Pending, now);
            Verdict::Refused(why)
        }
    };
    device.updated = now;
    (verdict, true)
}

/// Register `key` for `device` as preauthorized, replacing an auth set of the same key.
pub fn preauthorize(device: &mut DeviceAuthRecord, key: &DevicePublicKey, now: OffsetDateTime) {
    device.auth_sets.retain(|s| !same_key(s, key));
    add(device, key, DeviceAuthStatus::Preauthorized, now);
    device.updated = now;
}

/// Set the status of the auth set `id` as an operator asks. Accepting one rejects the
/// device's other accepted set, since at most one key is accepted at a time. Returns false
/// when the device has no such auth set.
pub fn set_status(
    device: &mut DeviceAuthRecord,
    id: &str,
    status: DeviceAuthStatus,
    now: OffsetDateTime,
) -> bool {
    let Some(i) = device.auth_sets.iter().position(|s| s.id == id) else {
        return false;
    };
    if status == DeviceAuthStatus::Accepted {
        accept(device, i);
    } else {
        device.auth_sets[i].status = status;
    }
    device.updated = now;
    true
}

/// Whether no key holds the device and no operator has decided about it: only then may
/// [`Admission::Auto`] accept a key by itself.
fn is_unclaimed(device: &DeviceAuthRecord) -> bool {
    device
        .auth_sets
        .iter()
        .all(|s| s.status == DeviceAuthStatus::Pending)
}

fn why_pending(device: &DeviceAuthRecord) -> &'static str {
    let has = |status| device.auth_sets.iter().any(|s| s.status == status);
    if has(DeviceAuthStatus::Accepted) {
        "another key is accepted for this device; this key waits as pending until an operator accepts it"
    } else if has(DeviceAuthStatus::Preauthorized) {
        "this key differs from the preauthorized one; it waits as pending until an operator accepts it"
    } else if has(DeviceAuthStatus::Rejected) {
        "an operator rejected this device's key; this key waits as pending until an operator accepts it"
    } else {
        "it is not preauthorized; its key waits as pending until an operator accepts it"
    }
}

/// Make set `i` the accepted one: the previously accepted set, if any, becomes rejected.
fn accept(device: &mut DeviceAuthRecord, i: usize) {
    for (j, s) in device.auth_sets.iter_mut().enumerate() {
        if j == i {
            s.status = DeviceAuthStatus::Accepted;
        } else if s.status == DeviceAuthStatus::Accepted {
            s.status = DeviceAuthStatus::Rejected;
        }
    }
}

fn add(
    device: &mut DeviceAuthRecord,
    key: &DevicePublicKey,
    status: DeviceAuthStatus,
    now: OffsetDateTime,
) {
    device.auth_sets.push(AuthSet {
        id: uuid::Uuid::new_v4().to_string(),
        pubkey: key.to_pem(),
        status,
        ts: now,
    });
    let pending = |s: &&AuthSet| s.status == DeviceAuthStatus::Pending;
    while device.auth_sets.iter().filter(pending).count() > MAX_PENDING_AUTH_SETS {
        if let Some(oldest) = device
            .auth_sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == DeviceAuthStatus::Pending)
            .min_by_key(|(_, s)| s.ts)
            .map(|(i, _)| i)
        {
            device.auth_sets.remove(oldest);
        }
    }
}

fn same_key(set: &AuthSet, key: &DevicePublicKey) -> bool {
    DevicePublicKey::from_pem(&set.pubkey).is_ok_and(|k| k.same_as(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::encode_pem;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use storage::TenantId;
    use DeviceAuthStatus::*;

    fn key() -> DevicePublicKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        let spki = pair.public_key().as_der().unwrap().as_ref().to_vec();
        DevicePublicKey::from_pem(&encode_pem("PUBLIC KEY", spki)).unwrap()
    }

    fn device() -> DeviceAuthRecord {
        DeviceAuthRecord {
            id: "d".into(),
            tenant: TenantId::default_tenant(),
            identity_data: serde_json::json!({"mac": "02"}),
            auth_sets: vec![],
            created: OffsetDateTime::UNIX_EPOCH,
            updated: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn statuses(d: &DeviceAuthRecord) -> Vec<DeviceAuthStatus> {
        d.auth_sets.iter().map(|s| s.status).collect()
    }

    #[test]
    fn auto_admission_accepts_the_first_key_and_parks_later_ones_as_pending() {
        let (mut d, first, second) = (device(), key(), key());
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            decide(&mut d, &first, Admission::Auto, now),
            (Verdict::Admitted, true)
        );
        assert_eq!(
            decide(&mut d, &first, Admission::Auto, now),
            (Verdict::Admitted, false)
        );
        let (verdict, changed) = decide(&mut d, &second, Admission::Auto, now);
        assert!(matches!(verdict, Verdict::Refused(_)) && changed);
        assert_eq!(statuses(&d), [Accepted, Pending]);
        // Presenting the pending key again changes nothing and still gets nothing.
        let (verdict, changed) = decide(&mut d, &second, Admission::Auto, now);
        assert!(matches!(verdict, Verdict::Refused(_)) && !changed);
        assert_eq!(
            decide(&mut d, &first, Admission::Auto, now).0,
            Verdict::Admitted
        );
    }

    #[test]
    fn an_operator_accepting_a_pending_key_rejects_the_accepted_one() {
        let (mut d, old, new) = (device(), key(), key());
        let now = OffsetDateTime::now_utc();
        decide(&mut d, &old, Admission::Auto, now);
        decide(&mut d, &new, Admission::Auto, now);
        let id = d.auth_sets[1].id.clone();
        assert!(set_status(&mut d, &id, Accepted, now));
        assert_eq!(statuses(&d), [Rejected, Accepted]);
        assert_eq!(
            decide(&mut d, &new, Admission::Auto, now).0,
            Verdict::Admitted
        );
        assert!(matches!(
            decide(&mut d, &old, Admission::Auto, now).0,
            Verdict::Refused(_)
        ));
        assert!(!set_status(&mut d, "nope", Accepted, now));
    }

    #[test]
    fn auto_admission_does_not_override_an_operator_decision() {
        let now = OffsetDateTime::now_utc();
        let (mut d, registered, other) = (device(), key(), key());
        preauthorize(&mut d, &registered, now);
        assert!(matches!(
            decide(&mut d, &other, Admission::Auto, now).0,
            Verdict::Refused(_)
        ));
        assert_eq!(
            decide(&mut d, &registered, Admission::Auto, now).0,
            Verdict::Admitted
        );

        let (mut d, rejected, other) = (device(), key(), key());
        decide(&mut d, &rejected, Admission::Auto, now);
        let id = d.auth_sets[0].id.clone();
        set_status(&mut d, &id, Rejected, now);
        assert!(matches!(
            decide(&mut d, &rejected, Admission::Auto, now).0,
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&mut d, &other, Admission::Auto, now).0,
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn preauthorized_admission_records_unknown_keys_as_pending() {
        let (mut d, k) = (device(), key());
        let now = OffsetDateTime::now_utc();
        let (verdict, changed) = decide(&mut d, &k, Admission::Preauthorized, now);
        assert!(matches!(verdict, Verdict::Refused(_)) && changed);
        assert_eq!(statuses(&d), [Pending]);
        preauthorize(&mut d, &k, now);
        assert_eq!(statuses(&d), [Preauthorized]);
        assert_eq!(
            decide(&mut d, &k, Admission::Preauthorized, now).0,
            Verdict::Admitted
        );
    }

    #[test]
    fn pending_auth_sets_are_bounded_and_the_oldest_goes_first() {
        let mut d = device();
        let start = OffsetDateTime::now_utc();
        let owner = key();
        decide(&mut d, &owner, Admission::Auto, start);
        let mut keys = Vec::new();
        for n in 0..(MAX_PENDING_AUTH_SETS + 3) {
            let k = key();
            decide(
                &mut d,
                &k,
                Admission::Auto,
                start + time::Duration::seconds(n as i64),
            );
            keys.push(k);
        }
        assert_eq!(d.auth_sets.len(), MAX_PENDING_AUTH_SETS + 1);
        assert_eq!(d.auth_sets[0].status, Accepted);
        assert!(!d.auth_sets.iter().any(|s| same_key(s, &keys[0])));
        assert!(d
            .auth_sets
            .iter()
            .any(|s| same_key(s, &keys[keys.len() - 1])));
    }
}
