//! A bounded cache of verified tokens, so that a device checking in every few seconds costs
//! one hash and one map lookup instead of a signature verification.
//!
//! Entries are keyed by the SHA-256 of the token (a fixed 32 bytes whatever the token's
//! size, and no token text kept in memory) and carry the token's `exp`: a hit after `exp`
//! is a miss, so the cache never extends a token's life.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Identity;

/// Number of independently locked shards; a power of two so a byte of the hash picks one.
const SHARDS: usize = 16;

/// One shard: a std `Mutex` because the critical section is a map lookup or insert with no
/// `.await` inside, which is cheaper than an async lock.
type Shard = Mutex<HashMap<[u8; 32], Entry>>;

#[derive(Clone)]
struct Entry {
    identity: Identity,
    /// The token's `iat`, Unix seconds (checked against revocations on every hit).
    issued: Option<i64>,
    /// The token's `exp`, Unix seconds.
    expires: i64,
}

/// Verified tokens, at most `capacity` of them.
pub struct TokenCache {
    shards: Vec<Shard>,
    /// Entries per shard before the shard is pruned.
    per_shard: usize,
}

impl TokenCache {
    /// A cache holding up to `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    /// The cache key of a token.
    pub fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn shard(&self, key: &[u8; 32]) -> &Shard {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// The identity (and `iat`) of a token verified earlier, if it has not expired by `now`.
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<(Identity, Option<i64>)> {
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        shard
            .get(key)
            .filter(|e| now < e.expires)
            .map(|e| (e.identity.clone(), e.issued))
    }

    /// Remember a verified token until `expires`.
    pub fn insert(
        &self,
        key: [u8; 32],
        identity: Identity,
        issued: Option<i64>,
        expires: i64,
        now: i64,
    ) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            // Drop the expired entries, and if that is not enough, an arbitrary eighth of the
            // shard: each prune frees at least that much, so pruning stays amortized O(1).
            shard.retain(|_, e| now < e.expires);
            let target = self.per_shard - self.per_shard.div_ceil(8);
            if shard.len() > target {
                let excess = shard.len() - target;
                let victims: Vec<[u8; 32]> = shard.keys().take(excess).copied().collect();
                for k in victims {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                identity,
                issued,
                expires,
            },
        );
    }

    /// Tokens cached now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalKind;
    use storage::TenantId;

    fn id(n: usize) -> Identity {
        Identity {
            tenant: TenantId(String::new()),
            subject: format!("dev-{n}"),
            kind: PrincipalKind::Device,
        }
    }

    #[test]
    fn an_entry_is_never_served_past_its_expiry() {
        let cache = TokenCache::new(64);
        let key = TokenCache::key("t");
        cache.insert(key, id(1), Some(1), 100, 50);
        assert_eq!(cache.get(&key, 99), Some((id(1), Some(1))));
        assert_eq!(cache.get(&key, 100), None);
        assert_eq!(cache.get(&TokenCache::key("other"), 50), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = TokenCache::new(1024);
        for n in 0..10_000 {
            cache.insert(TokenCache::key(&n.to_string()), id(n), None, 1000, 0);
        }
        assert!(cache.len() <= 1024, "{} entries", cache.len());
        assert!(cache.len() >= 512, "{} entries", cache.len());
        let last = TokenCache::key("9999");
        assert_eq!(cache.get(&last, 1), Some((id(9999), None)));
    }

    #[test]
    fn a_zero_capacity_cache_caches_nothing() {
        let cache = TokenCache::new(0);
        cache.insert(TokenCache::key("t"), id(1), None, 100, 0);
        assert!(cache.is_empty());
    }
}
