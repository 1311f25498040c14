//! Deployment leases: which rollout node runs a deployment's actor, until when, and the
//! epoch that tells the current owner from a stale one. A node paused past its lease (GC,
//! SIGSTOP, a cut network) finds a higher epoch when it wakes and must stop acting as owner.
//!
//! A lease is one record, changed only by compare-and-set ([`MetaStore::replace_lease`]),
//! so claims from many nodes at once resolve to one owner. Expiry compares wall clocks:
//! keep node clocks NTP-synchronised, and choose a TTL far above their skew.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{MetaStore, Result, TenantId};

/// The lease of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Owner of the deployment.
    pub tenant: TenantId,
    /// The deployment.
    pub deployment: Uuid,
    /// The node that holds it.
    pub owner: String,
    /// Raised each time the lease changes hands (or is taken again after it lapsed); a
    /// holder's writes carry it, so writes of an older epoch can be refused.
    pub epoch: u64,
    /// When the lease lapses unless renewed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claimer holds the lease (new, renewed, or taken over) until `expires`.
    Granted(Lease),
    /// Another node holds it.
    Held(Lease),
}

/// Tries of one claim's compare-and-set: a lost try means another node changed the lease,
/// after which it is held (or renewed) and the next try answers.
const MAX_TRIES: usize = 8;

/// What `node` may store over `stored` at `now`: the lease it holds afterwards, or the
/// holder's lease if it is held by another node and not lapsed.
fn next(
    stored: Option<&Lease>,
    (tenant, deployment): (&TenantId, Uuid),
    node: &str,
    now: OffsetDateTime,
    ttl: Duration,
) -> std::result::Result<Lease, Lease> {
    let expires = now + ttl;
    match stored {
        None => Ok(Lease {
            tenant: tenant.clone(),
            deployment,
            owner: node.to_owned(),
            epoch: 1,
            expires,
        }),
        Some(l) if l.expires > now && l.owner == node => Ok(Lease {
            expires,
            ..l.clone()
        }),
        Some(l) if l.expires > now => Err(l.clone()),
        Some(l) => Ok(Lease {
            owner: node.to_owned(),
            epoch: l.epoch + 1,
            expires,
            ..l.clone()
        }),
    }
}

/// Take, renew or take over the lease of a deployment for `node`, for `ttl` from now.
pub async fn claim(
    store: &dyn MetaStore,
    tenant: &TenantId,
    deployment: Uuid,
    node: &str,
    ttl: Duration,
) -> Result<Claim> {
    for _ in 0..MAX_TRIES {
        let stored = store.lease(tenant, deployment).await?;
        let now = OffsetDateTime::now_utc();
        match next(stored.as_ref(), (tenant, deployment), node, now, ttl) {
            Err(held) => return Ok(Claim::Held(held)),
            Ok(lease) => {
                if store.replace_lease(stored.as_ref(), lease.clone()).await? {
                    return Ok(Claim::Granted(lease));
                }
            }
        }
    }
    Err(crate::StoreError::Task(format!(
        "the lease of deployment {deployment} keeps changing hands"
    )))
}

/// Give a held lease up at once (a node shutting down hands its deployments over): `false`
/// if it is no longer `lease` (renewed elsewhere, or taken over). The epoch stays, so the
/// next holder's is higher.
pub async fn release(store: &dyn MetaStore, lease: &Lease) -> Result<bool> {
    let lapsed = Lease {
        expires: OffsetDateTime::UNIX_EPOCH,
        ..lease.clone()
    };
    store.replace_lease(Some(lease), lapsed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + time::Duration::seconds(secs)
    }

    fn key() -> (TenantId, Uuid) {
        (TenantId("t".into()), Uuid::nil())
    }

    #[test]
    fn a_lease_is_granted_renewed_refused_and_taken_over_once_lapsed() {
        let (t, d) = key();
        let first = next(None, (&t, d), "a", at(0), TTL).unwrap();
        assert_eq!(
            (first.owner.as_str(), first.epoch, first.expires),
            ("a", 1, at(10))
        );

        let renewed = next(Some(&first), (&t, d), "a", at(5), TTL).unwrap();
        assert_eq!(
            (renewed.epoch, renewed.expires),
            (1, at(15)),
            "renewal keeps the epoch"
        );

        let held = next(Some(&renewed), (&t, d), "b", at(14), TTL).unwrap_err();
        assert_eq!(held, renewed);

        let taken = next(Some(&renewed), (&t, d), "b", at(15), TTL).unwrap();
        assert_eq!((taken.owner.as_str(), taken.epoch), ("b", 2));

        // The old owner, back after a pause, cannot renew: it must claim anew.
        let stale = next(Some(&taken), (&t, d), "a", at(16), TTL).unwrap_err();
        assert_eq!(stale.epoch, 2);
        let again = next(Some(&taken), (&t, d), "a", at(25), TTL).unwrap();
        assert_eq!(
            (again.owner.as_str(), again.epoch),
            ("a", 3),
            "a lapsed lease is a new epoch"
        );
    }
}
