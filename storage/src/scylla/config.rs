//! How to reach the cluster and how to write to it: plain data the binary fills from flags.

use std::fmt;
use std::str::FromStr;

use crate::StoreError;

/// Consistency of every read and write (and the serial consistency of conditional writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// A majority of all replicas (SERIAL for conditional writes): a write acknowledged to a
    /// client survives the loss of a minority of replicas anywhere.
    #[default]
    Quorum,
    /// A majority of the replicas in the local datacenter (LOCAL_SERIAL for conditional
    /// writes): lower latency in multi-datacenter clusters, durable in one datacenter.
    LocalQuorum,
}

/// Replication of the keyspace when rollout creates it (an existing keyspace is kept as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `NetworkTopologyStrategy` with this many replicas in every datacenter.
    Factor(u32),
    /// `NetworkTopologyStrategy` with a replica count per named datacenter.
    PerDatacenter(Vec<(String, u32)>),
}

impl Default for Replication {
    /// One replica: a development default; production clusters want 3.
    fn default() -> Self {
        Replication::Factor(1)
    }
}

impl Replication {
    /// The CQL map literal of `WITH replication = …`.
    pub(crate) fn cql(&self) -> String {
        match self {
            Replication::Factor(n) => {
                format!("{{'class': 'NetworkTopologyStrategy', 'replication_factor': {n}}}")
            }
            Replication::PerDatacenter(dcs) => {
                let per_dc: Vec<String> =
                    dcs.iter().map(|(dc, n)| format!("'{dc}': {n}")).collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    per_dc.join(", ")
                )
            }
        }
    }
}

impl FromStr for Replication {
    type Err = StoreError;

    /// `3` (three replicas in every datacenter) or `dc1:3,dc2:2`.
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = || {
            StoreError::Config(format!(
                "replication {s:?}: expected a replica count like 3, or DC:COUNT pairs like dc1:3,dc2:3"
            ))
        };
        let count = |n: &str| n.trim().parse::<u32>().ok().filter(|n| *n > 0);
        if let Some(n) = count(s) {
            return Ok(Replication::Factor(n));
        }
        let mut dcs = Vec::new();
        for pair in s.split(',') {
            let (dc, n) = pair.split_once(':').ok_or_else(bad)?;
            let dc = dc.trim();
            let valid_dc = !dc.is_empty()
                && dc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !valid_dc {
                return Err(bad());
            }
            dcs.push((dc.to_owned(), count(n).ok_or_else(bad)?));
        }
        Ok(Replication::PerDatacenter(dcs))
    }
}

/// A keyspace name that can be written into CQL unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace(String);

impl FromStr for Keyspace {
    type Err = StoreError;

    /// Lower-case letters, digits and `_`, starting with a letter, at most 48 characters
    /// (the limit of both ScyllaDB and Cassandra).
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let valid = (1..=48).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Keyspace(s.to_owned()))
        } else {
            Err(StoreError::Config(format!(
                "keyspace {s:?}: use 1 to 48 lower-case letters, digits and _, starting with a letter"
            )))
        }
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Credentials for `PasswordAuthenticator`.
#[derive(Clone)]
pub struct Credentials {
    /// The role name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything [`ScyllaStore::connect`](super::ScyllaStore::connect) needs.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the rest of the cluster.
    pub nodes: Vec<String>,
    /// The keyspace holding rollout's tables.
    pub keyspace: Keyspace,
    /// Replication used if the keyspace does not exist yet.
    pub replication: Replication,
    /// Consistency of reads and writes.
    pub consistency: Consistency,
    /// Credentials, when the cluster requires authentication.
    pub credentials: Option<Credentials>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_parses_a_factor_or_datacenters() {
        assert_eq!("3".parse::<Replication>().unwrap(), Replication::Factor(3));
        assert_eq!(
            "dc1:3, dc2:2".parse::<Replication>().unwrap(),
            Replication::PerDatacenter(vec![("dc1".into(), 3), ("dc2".into(), 2)])
        );
        for bad in ["0", "", "dc1", "dc1:x", "d'c:3", ":3"] {
            assert!(bad.parse::<Replication>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keyspace_names_are_plain_identifiers() {
        assert!("rollout_1".parse::<Keyspace>().is_ok());
        for bad in ["", "1abc", "Rollout", "a-b", "a;drop", &"a".repeat(49)] {
            assert!(bad.parse::<Keyspace>().is_err(), "{bad:?} accepted");
        }
    }
}
