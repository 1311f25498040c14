//! How rows are spread over partitions. The hash is FNV-1a 32 because it must never change
//! between releases (std's hasher may) and must be easy to reproduce from other tools.

/// Buckets of a tenant's artifacts.
pub(crate) const ARTIFACTS: u16 = 4;
/// Buckets of a tenant's deployment headers.
pub(crate) const DEPLOYMENTS: u16 = 8;
/// Shards of the unfinished-deployments index (start-up reads every one).
pub(crate) const UNFINISHED: u16 = 8;
/// Buckets of a deployment's device records: a 1M-device deployment keeps ~62,500 rows
/// (~15 MB) per partition, well under the sizes where compaction and repair suffer.
pub(crate) const DEVICE_RECORDS: u16 = 16;
/// Buckets of a tenant's device authentication records.
pub(crate) const DEVICE_AUTH: u16 = 16;
/// Buckets of a tenant's device inventories.
pub(crate) const INVENTORIES: u16 = 16;
/// Shards of the token revocations (every node reads them all).
pub(crate) const REVOCATIONS: u16 = 8;
/// Buckets of a tenant's saved filters.
pub(crate) const FILTERS: u16 = 4;

/// The bucket of `key` among `buckets`.
pub(crate) fn of(key: &[u8], buckets: u16) -> i16 {
    // `buckets` is at most a few dozen, so the remainder always fits in an i16.
    (fnv1a(key) % u32::from(buckets)) as i16
}

/// Every bucket number below `buckets`.
pub(crate) fn all(buckets: u16) -> impl Iterator<Item = i16> {
    (0..buckets).map(|b| b as i16)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_published_fnv1a() {
        // Reference values of FNV-1a 32: changing the hash would orphan stored rows.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn buckets_stay_in_range() {
        for i in 0..1000 {
            let b = of(format!("device-{i}").as_bytes(), DEVICE_RECORDS);
            assert!((0..DEVICE_RECORDS as i16).contains(&b));
        }
    }
}
