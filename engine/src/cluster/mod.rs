//! Many rollout nodes over one shared store, acting as one service.
//!
//! Every unfinished deployment has a lease in the store ([`storage::lease`]); the node that
//! holds it runs the deployment's actor, and only while its [`Fence`] holds. Any node
//! accepts any API call: a message for a deployment owned elsewhere is forwarded to the
//! owner's [gateway](gateway) over ractor's cluster layer ([`transport`]), which runs it on
//! the owner's actor and sends the answer back. The lease loop that takes, renews and hands
//! over leases lives with the deployments it starts and stops
//! (`deployment::service::ownership`).

mod fence;
pub(crate) mod gateway;
pub(crate) mod transport;

use std::net::SocketAddr;
use std::time::Duration;

pub use fence::Fence;

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id, unique among the nodes of the store (the lease owner's name).
    pub node_id: String,
    /// Where to accept messages forwarded by other nodes (port 0: any free port).
    pub listen: SocketAddr,
    /// The address other nodes dial to reach this one, when it differs from the bound one
    /// (a wildcard listen address, NAT); the bound address otherwise.
    pub advertise: Option<String>,
    /// The secret every node of the cluster shares, proved at each connection.
    pub cookie: String,
    /// How long a lease lasts unless renewed: a dead owner's deployments move within about
    /// this long. Renewed every third of it.
    pub lease_ttl: Duration,
}

impl ClusterConfig {
    /// The default lease: a dead node's deployments carry on elsewhere within ~4 s.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

    /// How often leases are renewed and unowned deployments claimed.
    pub(crate) fn tick(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How long before the lease's expiry the owner stops writing: covers the wall-clock
    /// skew between nodes (NTP keeps it to milliseconds) with a wide berth.
    pub(crate) fn margin(&self) -> Duration {
        self.lease_ttl / 6
    }
}
