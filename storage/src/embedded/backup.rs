//! Copying the embedded store out and back in, for `rollout backup` and `rollout restore`.
//!
//! A backup reads every table at one instant (a fjall snapshot; the committer applies each
//! group as one batch, so a snapshot holds a commit whole or not at all), which keeps it
//! consistent while the server goes on writing. Records travel as raw keys and values: a
//! restore puts back exactly what was stored, whatever the key layout.

use fjall::{Keyspace, PersistMode, Readable, Snapshot};

use super::{decode, EmbeddedStore, Tables};
use crate::{ArtifactRecord, Result, StoreError};

/// The tables a backup holds, in the order it writes them. `nodes` and `leases` are left
/// out: they describe the processes that ran on the store, not its data, and a restored
/// store starts with none.
pub const BACKED_UP_TABLES: [&str; 10] = [
    "artifacts",
    "deployments",
    "device_lists",
    "devices",
    "logs",
    "last_finished",
    "inventory",
    "device_auth",
    "filters",
    "revocations",
];

/// A raw record: key and value as stored.
pub type RawRecord = (Vec<u8>, Vec<u8>);

/// Every backed-up table as it was at one instant. Hold it briefly: while it lives the
/// store keeps the versions it sees.
pub struct TableSnapshot {
    snapshot: Snapshot,
    tables: Tables,
}

impl TableSnapshot {
    /// The records of `table` (one of [`BACKED_UP_TABLES`]), in key order.
    pub fn records(&self, table: &str) -> Result<impl Iterator<Item = Result<RawRecord>>> {
        let keyspace = self.tables.backed_up(table)?;
        Ok(self.snapshot.iter(keyspace).map(|guard| {
            let (key, value) = guard.into_inner()?;
            Ok((key.to_vec(), value.to_vec()))
        }))
    }

    /// Every artifact of every tenant, with its key (a backup copies their blobs, and
    /// leaves out the record of one whose blob is gone).
    pub fn artifacts(&self) -> Result<Vec<(Vec<u8>, ArtifactRecord)>> {
        self.records("artifacts")?
            .map(|record| {
                let (key, value) = record?;
                let artifact = decode(&key, &value)?;
                Ok((key, artifact))
            })
            .collect()
    }
}

impl EmbeddedStore {
    /// Every backed-up table at this instant.
    pub fn snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            snapshot: self.db.snapshot(),
            tables: self.tables.clone(),
        }
    }

    /// Store `records` (as [`TableSnapshot::records`] gave them) in `table`, durably. For a
    /// restore into a new store that nothing else writes to: it bypasses the committer.
    pub fn restore(&self, table: &str, records: &[RawRecord]) -> Result<()> {
        let keyspace = self.tables.backed_up(table)?;
        let mut batch = self.db.batch();
        for (key, value) in records {
            batch.insert(keyspace, key.as_slice(), value.as_slice());
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

impl Tables {
    fn backed_up(&self, name: &str) -> Result<&Keyspace> {
        Ok(match name {
            "artifacts" => &self.artifacts,
            "deployments" => &self.deployments,
            "device_lists" => &self.device_lists,
            "devices" => &self.devices,
            "logs" => &self.logs,
            "last_finished" => &self.last_finished,
            "inventory" => &self.inventory,
            "device_auth" => &self.device_auth,
            "filters" => &self.filters,
            "revocations" => &self.revocations,
            _ => return Err(StoreError::UnknownTable(name.to_owned())),
        })
    }
}
