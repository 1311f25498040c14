//! Submitting batches: how the embedded store's guarantees carry over to a cluster.
//!
//! - Durable: a batch's future resolves once every statement was acknowledged at the
//!   configured consistency (QUORUM by default).
//! - Ordered: each batch takes the next client timestamp when it is submitted, and every
//!   statement of the batch is written `USING TIMESTAMP` it. Cells resolve by timestamp, so
//!   a later batch wins over an earlier one whatever order the statements arrive in. Within
//!   a batch only the last write of each key is sent (the embedded store applies them in
//!   order, so the last one is what it keeps).
//! - Idempotent: a statement sent twice (driver retry, replay after a crash) writes the same
//!   values at the same timestamp: nothing changes.
//! - Concurrent: instead of a group commit, up to [`IN_FLIGHT`] statements of a batch are in
//!   flight at once, and batches of different submitters run side by side.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::buckets;
use super::error::CqlError;
use super::Inner;
use crate::model::{DeploymentStatus, TenantId};
use crate::Write;

/// Statements of one batch in flight at once. The driver multiplexes them over its
/// connections; more gains nothing on a small cluster and only queues inside the driver.
const IN_FLIGHT: usize = 256;

/// Statements in flight for a batch holding device-list chunks (~400 KB each): 16 keep a
/// few megabytes on the wire. 256 of them (100 MB at once) pushed a 1 GiB Cassandra node
/// into a second-long GC pause and a write timeout.
const IN_FLIGHT_LARGE: usize = 16;

/// Client timestamps (microseconds since the epoch), strictly increasing within the
/// process even if the wall clock steps back.
#[derive(Default)]
pub(crate) struct WriteClock(AtomicI64);

impl WriteClock {
    /// The next timestamp.
    pub(crate) fn next(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self
                .0
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }
}

/// The key a write replaces: two writes with the same key in one batch keep the last.
fn key(w: &Write) -> (u8, String) {
    match w {
        Write::PutArtifact(a) => (0, format!("{}\0{}", a.tenant, a.id)),
        Write::DeleteArtifact { tenant, id } => (0, format!("{tenant}\0{id}")),
        Write::PutDeployment(d) => (1, format!("{}\0{}", d.tenant, d.id)),
        Write::PutDeviceList {
            tenant,
            deployment,
            chunk,
            ..
        } => (2, format!("{tenant}\0{deployment}\0{chunk}")),
        Write::PutDevice {
            tenant,
            deployment,
            record,
        } => (3, format!("{tenant}\0{deployment}\0{}", record.device_id)),
        Write::PutLog {
            tenant,
            deployment,
            device,
            ..
        } => (4, format!("{tenant}\0{deployment}\0{device}")),
        Write::PutLastFinished { tenant, device, .. } => (5, format!("{tenant}\0{device}")),
        Write::PutNode(n) => (6, n.id.clone()),
        Write::PutFilter(f) => (7, format!("{}\0{}", f.tenant, f.id)),
        Write::DeleteFilter { tenant, id } => (7, format!("{tenant}\0{id}")),
        Write::PutRevocation(r) => (8, format!("{}\0{}", r.tenant, r.device)),
    }
}

/// The writes of a batch that matter: the last one of each key, in batch order.
fn last_per_key(writes: Vec<Write>) -> Vec<Write> {
    if writes.len() < 2 {
        return writes;
    }
    let mut last: HashMap<(u8, String), usize> = HashMap::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        last.insert(key(w), i);
    }
    writes
        .into_iter()
        .enumerate()
        .filter(|(i, w)| last.get(&key(w)) == Some(i))
        .map(|(_, w)| w)
        .collect()
}

/// Tenants whose artifact bytes a batch changes.
fn artifact_tenants(writes: &[Write]) -> BTreeSet<TenantId> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::PutArtifact(a) => Some(a.tenant.clone()),
            Write::DeleteArtifact { tenant, .. } => Some(tenant.clone()),
            _ => None,
        })
        .collect()
}

/// Apply a batch at timestamp `ts`, then refresh the artifact usage of the tenants it
/// touched.
pub(crate) async fn apply_batch(
    inner: Arc<Inner>,
    writes: Vec<Write>,
    ts: i64,
) -> Result<(), CqlError> {
    let tenants = artifact_tenants(&writes);
    let large = writes
        .iter()
        .any(|w| matches!(w, Write::PutDeviceList { .. }));
    let in_flight = if large { IN_FLIGHT_LARGE } else { IN_FLIGHT };
    futures_util::stream::iter(last_per_key(writes))
        .map(|w| apply(&inner, w, ts))
        .buffer_unordered(in_flight)
        .try_collect::<()>()
        .await?;
    for tenant in tenants {
        refresh_usage(&inner, &tenant).await?;
    }
    Ok(())
}

/// Recompute a tenant's artifact bytes from its artifacts. Recomputing (rather than adding
/// deltas) keeps it right after replays and crashes; it runs only on artifact writes.
async fn refresh_usage(inner: &Inner, tenant: &TenantId) -> Result<(), CqlError> {
    let mut bytes: i64 = 0;
    for bucket in buckets::all(buckets::ARTIFACTS) {
        let sizes: Vec<(i64,)> = inner
            .rows(&inner.st.artifact_sizes, (tenant.as_str(), bucket))
            .await?;
        bytes += sizes.iter().map(|(s,)| s).sum::<i64>();
    }
    let ts = inner.clock.next();
    inner
        .session
        .execute_unpaged(&inner.st.put_usage, (tenant.as_str(), bytes, ts))
        .await?;
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Our records are plain data (no maps with non-string keys): serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn size(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Chunk numbers are stored as CQL `int`; a list of 2^31 chunks of 10,000 ids cannot exist.
fn chunk_number(chunk: u32) -> i32 {
    i32::try_from(chunk).unwrap_or(i32::MAX)
}

async fn apply(inner: &Inner, w: Write, ts: i64) -> Result<(), CqlError> {
    let (s, st) = (&inner.session, &inner.st);
    match w {
        Write::PutArtifact(a) => {
            let bucket = buckets::of(a.id.as_bytes(), buckets::ARTIFACTS);
            let values = (a.tenant.as_str(), bucket, a.id, size(a.size), json(&a), ts);
            s.execute_unpaged(&st.put_artifact, values).await?;
        }
        Write::DeleteArtifact { tenant, id } => {
            let bucket = buckets::of(id.as_bytes(), buckets::ARTIFACTS);
            let values = (ts, tenant.as_str(), bucket, id);
            s.execute_unpaged(&st.delete_artifact, values).await?;
        }
        Write::PutDeployment(d) => {
            let body = json(&d);
            let bucket = buckets::of(d.id.as_bytes(), buckets::DEPLOYMENTS);
            let shard = buckets::of(d.id.as_bytes(), buckets::UNFINISHED);
            let header = (d.tenant.as_str(), bucket, d.id, body.as_str(), ts);
            let index = async {
                if d.status == DeploymentStatus::Finished {
                    let values = (ts, shard, d.tenant.as_str(), d.id);
                    s.execute_unpaged(&st.delete_unfinished, values).await
                } else {
                    let values = (shard, d.tenant.as_str(), d.id, body.as_str(), ts);
                    s.execute_unpaged(&st.put_unfinished, values).await
                }
            };
            let (h, i) = tokio::join!(s.execute_unpaged(&st.put_deployment, header), index);
            h?;
            i?;
        }
        Write::PutDeviceList {
            tenant,
            deployment,
            chunk,
            devices,
        } => {
            let values = (
                tenant.as_str(),
                deployment,
                chunk_number(chunk),
                devices,
                ts,
            );
            s.execute_unpaged(&st.put_device_list, values).await?;
        }
        Write::PutDevice {
            tenant,
            deployment,
            record,
        } => {
            let bucket = buckets::of(record.device_id.as_bytes(), buckets::DEVICE_RECORDS);
            let values = (
                tenant.as_str(),
                deployment,
                bucket,
                record.device_id.as_str(),
                json(&record),
                ts,
            );
            s.execute_unpaged(&st.put_device, values).await?;
        }
        Write::PutLog {
            tenant,
            deployment,
            device,
            messages,
        } => {
            let values = (tenant.as_str(), deployment, device, json(&messages), ts);
            s.execute_unpaged(&st.put_log, values).await?;
        }
        Write::PutLastFinished {
            tenant,
            device,
            created_nanos,
        } => {
            let created = created_nanos.to_be_bytes().to_vec();
            let values = (tenant.as_str(), device, created, ts);
            s.execute_unpaged(&st.put_last_finished, values).await?;
        }
        Write::PutNode(n) => {
            let values = (n.id.as_str(), json(&n), ts);
            s.execute_unpaged(&st.put_node, values).await?;
        }
        Write::PutFilter(f) => {
            let bucket = buckets::of(f.id.as_bytes(), buckets::FILTERS);
            let values = (f.tenant.as_str(), bucket, f.id, json(&f), ts);
            s.execute_unpaged(&st.put_filter, values).await?;
        }
        Write::PutRevocation(r) => {
            let shard = buckets::of(r.device.as_bytes(), buckets::REVOCATIONS);
            let values = (shard, r.tenant.as_str(), r.device.as_str(), json(&r), ts);
            s.execute_unpaged(&st.put_revocation, values).await?;
        }
        Write::DeleteFilter { tenant, id } => {
            let bucket = buckets::of(id.as_bytes(), buckets::FILTERS);
            let values = (ts, tenant.as_str(), bucket, id);
            s.execute_unpaged(&st.delete_filter, values).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_repeats_or_goes_back() {
        let clock = WriteClock::default();
        let mut prev = clock.next();
        for _ in 0..10_000 {
            let next = clock.next();
            assert!(next > prev);
            prev = next;
        }
    }

    #[test]
    fn a_batch_keeps_the_last_write_of_each_key() {
        let tenant = TenantId("t".into());
        let inv = |device: &str, v: i128| Write::PutLastFinished {
            tenant: tenant.clone(),
            device: device.into(),
            created_nanos: v,
        };
        let kept = last_per_key(vec![inv("a", 1), inv("b", 2), inv("a", 3)]);
        let values: Vec<_> = kept
            .iter()
            .map(|w| match w {
                Write::PutLastFinished {
                    device,
                    created_nanos,
                    ..
                } => (device.clone(), *created_nanos),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(values, vec![("b".to_string(), 2), ("a".to_string(), 3)]);
    }
}
