//! The rollout nodes sharing a store: each running server writes its record every few
//! seconds (a heartbeat), so any node or `rollout cluster status` can tell who is alive
//! without a static peer list.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One rollout node, as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`--node-id`), unique among the nodes of a store.
    pub id: String,
    /// Where the node serves the API (`http://HOST:PORT`).
    pub address: String,
    /// Where the node takes messages forwarded by other nodes (`HOST:PORT`), for
    /// deployments it owns; absent for a node that does not forward (one on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When this process started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// Its latest heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub seen: OffsetDateTime,
}

impl NodeRecord {
    /// Whether the node sent a heartbeat within `window` of `now`.
    pub fn alive(&self, now: OffsetDateTime, window: Duration) -> bool {
        self.seen + window >= now
    }
}
