//! Per-tenant storage accounting that uploads reserve against while they stream.
//!
//! Checking "usage + this upload <= limit" once at the start of an upload lets two
//! concurrent uploads both pass and together exceed the limit. Instead every chunk is
//! reserved before it is written, atomically against what the tenant has stored plus what
//! its other uploads have reserved so far; a finished upload turns its reservation into
//! stored bytes in the same step that records the artifact.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use storage::TenantId;

/// The storage limit shared by all tenants and the accounts of the tenants that have
/// uploads in flight.
pub(super) struct Ledger {
    /// Bytes each tenant may store; 0 means no limit.
    limit: u64,
    /// A std mutex: it is held for a few additions, never across an await.
    accounts: Mutex<HashMap<TenantId, Account>>,
}

/// A tenant's bytes while it has uploads in flight. Dropped with its last upload, so the
/// map holds only tenants that are uploading right now.
struct Account {
    /// Bytes of the tenant's stored artifacts.
    stored: u64,
    /// Bytes its unfinished uploads have written so far.
    reserved: u64,
    /// Its unfinished uploads.
    uploads: usize,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the artifact would exceed the tenant's storage limit of {limit} bytes \
     ({stored} stored, {reserved} reserved by uploads in progress)"
)]
pub(super) struct OverLimit {
    limit: u64,
    stored: u64,
    reserved: u64,
}

impl Ledger {
    pub(super) fn new(limit: u64) -> Self {
        Ledger {
            limit,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether uploads need the tenant's stored bytes at all.
    pub(super) fn limited(&self) -> bool {
        self.limit > 0
    }

    fn accounts(&self) -> MutexGuard<'_, HashMap<TenantId, Account>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start an upload for `tenant`, whose artifacts take `stored` bytes. The caller must
    /// hold the lock that also covers recording and deleting artifacts, so that `stored` is
    /// current when it is read and stays current until [`Reservation::settle`].
    pub(super) fn open(&self, tenant: &TenantId, stored: u64) -> Reservation<'_> {
        let mut accounts = self.accounts();
        let account = accounts.entry(tenant.clone()).or_insert(Account {
            stored,
            reserved: 0,
            uploads: 0,
        });
        account.stored = stored;
        account.uploads += 1;
        Reservation {
            ledger: self,
            tenant: tenant.clone(),
            bytes: 0,
        }
    }

    /// An artifact of `size` bytes was deleted (under the same lock as [`Ledger::open`]).
    pub(super) fn removed(&self, tenant: &TenantId, size: u64) {
        if let Some(account) = self.accounts().get_mut(tenant) {
            account.stored = account.stored.saturating_sub(size);
        }
    }
}

/// The bytes one upload has reserved. Dropping it (a failed upload) gives them back.
pub(super) struct Reservation<'a> {
    ledger: &'a Ledger,
    tenant: TenantId,
    bytes: u64,
}

impl Reservation<'_> {
    /// Reserve `n` more bytes, or refuse if the tenant's stored and reserved bytes would
    /// pass the limit.
    pub(super) fn grow(&mut self, n: u64) -> Result<(), OverLimit> {
        let limit = self.ledger.limit;
        let mut accounts = self.ledger.accounts();
        let Some(account) = accounts.get_mut(&self.tenant) else {
            return Ok(());
        };
        let wanted = account
            .stored
            .saturating_add(account.reserved)
            .saturating_add(n);
        if limit > 0 && wanted > limit {
            return Err(OverLimit {
                limit,
                stored: account.stored,
                reserved: account.reserved,
            });
        }
        account.reserved += n;
        self.bytes += n;
        Ok(())
    }

    /// The upload was recorded as an artifact of `size` bytes: its reservation becomes
    /// stored bytes. Call it under the lock that covers recording artifacts.
    pub(super) fn settle(mut self, size: u64) {
        if let Some(account) = self.ledger.accounts().get_mut(&self.tenant) {
            account.stored += size;
            account.reserved = account.reserved.saturating_sub(self.bytes);
        }
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut accounts = self.ledger.accounts();
        let Some(account) = accounts.get_mut(&self.tenant) else {
            return;
        };
        account.reserved = account.reserved.saturating_sub(self.bytes);
        account.uploads -= 1;
        if account.uploads == 0 {
            accounts.remove(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId(name.to_owned())
    }

    #[test]
    fn concurrent_uploads_share_what_is_left_of_the_limit() {
        let ledger = Ledger::new(100);
        let acme = tenant("acme");
        let mut a = ledger.open(&acme, 20);
        let mut b = ledger.open(&acme, 20);
        a.grow(50).unwrap();
        let refused = b.grow(40).unwrap_err();
        assert_eq!(
            refused,
            OverLimit {
                limit: 100,
                stored: 20,
                reserved: 50
            }
        );
        b.grow(30).unwrap();
        // A finished upload's bytes stay taken; a failed one gives its bytes back.
        a.settle(50);
        drop(b);
        let mut c = ledger.open(&acme, 70);
        c.grow(30).unwrap();
        assert!(c.grow(1).is_err());
    }

    #[test]
    fn tenants_do_not_share_a_budget_and_accounts_end_with_their_uploads() {
        let ledger = Ledger::new(10);
        let mut a = ledger.open(&tenant("a"), 0);
        let mut b = ledger.open(&tenant("b"), 0);
        a.grow(10).unwrap();
        b.grow(10).unwrap();
        drop(a);
        drop(b);
        assert!(ledger.accounts().is_empty());
    }

    #[test]
    fn a_deletion_frees_room_for_uploads_in_flight() {
        let ledger = Ledger::new(10);
        let acme = tenant("acme");
        let mut a = ledger.open(&acme, 10);
        assert!(a.grow(5).is_err());
        ledger.removed(&acme, 8);
        a.grow(5).unwrap();
    }

    #[test]
    fn no_limit_reserves_anything() {
        let ledger = Ledger::new(0);
        let mut a = ledger.open(&tenant("acme"), u64::MAX);
        a.grow(u64::MAX).unwrap();
    }
}
