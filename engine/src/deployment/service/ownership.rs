//! The lease loop of a node in a cluster: every third of the lease's TTL it renews the
//! leases it holds, claims unfinished deployments nobody holds (new ones, and those of a
//! node that died or was paused past its lease), starts their actors, stops the actors of
//! leases it lost, and indexes the devices of deployments other nodes run, so that it can
//! route their check-ins. On shutdown it hands its leases back at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use ractor::ActorRef;
use storage::lease::{self, Claim, Lease};
use storage::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

use super::DeploymentService;
use crate::cluster::gateway::GatewayMsg;
use crate::cluster::transport::Transport;
use crate::cluster::{ClusterConfig, Fence};
use crate::deployment::actor::Indexing;
use crate::error::Result;

/// Leases claimed or renewed at once in a round, so that a node with many deployments
/// renews them all well within a tick.
const CLAIMS_IN_FLIGHT: usize = 32;

/// How long a caller waits for a new link to a node to be ready.
const LINK_WAIT: Duration = Duration::from_secs(2);

/// This node's part in the cluster.
pub(crate) struct ClusterNode {
    config: ClusterConfig,
    transport: Transport,
    leases: Mutex<Leases>,
    store: Arc<dyn storage::MetaStore>,
}

/// What the node knows of the leases of unfinished deployments.
#[derive(Default)]
struct Leases {
    /// The latest lease seen of each unfinished deployment.
    known: HashMap<Uuid, Lease>,
    /// Fences of the deployments this node holds.
    held: HashMap<Uuid, Fence>,
    /// Deployments run elsewhere whose devices are in this node's fleet index.
    indexed: HashSet<Uuid>,
    /// Of dynamic deployments run elsewhere: the device count and the device-list chunks
    /// indexed here, so that devices that joined since are indexed too.
    grown: HashMap<Uuid, (u64, u32)>,
}

impl ClusterNode {
    pub(super) async fn start(
        config: ClusterConfig,
        store: Arc<dyn storage::MetaStore>,
    ) -> Result<Self> {
        let transport = Transport::start(&config).await?;
        Ok(ClusterNode {
            config,
            transport,
            leases: Mutex::default(),
            store,
        })
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub(super) fn lease_ttl(&self) -> Duration {
        self.config.lease_ttl
    }

    pub(super) fn address(&self) -> &str {
        self.transport.address()
    }

    /// The owner of the deployment's lease as last seen, if that lease has not lapsed.
    pub(super) fn live_owner(&self, id: Uuid) -> Option<String> {
        let now = OffsetDateTime::now_utc();
        self.leases()
            .known
            .get(&id)
            .filter(|l| l.expires > now)
            .map(|l| l.owner.clone())
    }

    /// Remember a lease read from the store.
    pub(super) fn saw(&self, lease: Lease) {
        self.leases().known.insert(lease.deployment, lease);
    }

    /// The remembered owner did not answer for the deployment: look it up again next time.
    pub(super) fn forget_owner(&self, id: Uuid) {
        self.leases().known.remove(&id);
    }

    /// The gateway of `node`, linking to it first if need be (its address is in its node
    /// record).
    pub(super) async fn gateway(&self, node: &str) -> Option<ActorRef<GatewayMsg>> {
        if let Some(g) = self.transport.gateway(node) {
            return Some(g);
        }
        let nodes = self.store.nodes().await.ok()?;
        let address = nodes.into_iter().find(|n| n.id == node)?.cluster?;
        if !self.transport.link(node, &address).await {
            return None;
        }
        let deadline = tokio::time::Instant::now() + LINK_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(g) = self.transport.gateway(node) {
                return Some(g);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Link to every live node not linked yet, so the first forwarded request to it does
    /// not wait for the handshake.
    async fn link_all(&self) {
        let Ok(nodes) = self.store.nodes().await else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        for n in nodes {
            let alive = n.alive(now, self.config.lease_ttl * 5);
            if n.id == self.config.node_id || !alive {
                continue;
            }
            if let Some(address) = &n.cluster {
                self.transport.link(&n.id, address).await;
            }
        }
    }
}

/// What a claim changed for this node.
pub(super) enum Claimed {
    /// This node holds the lease (kept, new or taken over) and must run the actor.
    Run(Fence),
    /// Another node holds it; this node lost it if it held it until now.
    Elsewhere { lost: Option<Fence> },
}

impl DeploymentService {
    /// This node's id in the cluster (empty on its own).
    pub(crate) fn node_id(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.node_id())
    }

    /// Where other nodes reach this one, in a cluster.
    pub fn cluster_address(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.address().to_owned())
    }

    /// Claim what is free and renew what is held, once now and then every tick until the
    /// service shuts down.
    pub(super) async fn start_lease_loop(&self) -> Result<()> {
        let Some(cluster) = self.cluster.clone() else {
            return Ok(());
        };
        cluster.link_all().await;
        // The first round waits for the loads it starts: a node says it is ready with its
        // deployments running and its index complete.
        self.lease_round(&cluster, true).await?;
        let svc = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(cluster.config.tick());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut round = 0u64;
            loop {
                ticks.tick().await;
                round += 1;
                if round.is_multiple_of(5) {
                    cluster.link_all().await;
                }
                if let Err(e) = svc.lease_round(&cluster, false).await {
                    tracing::warn!(error = %e, "a lease round failed; trying again");
                }
            }
        });
        *self.lease_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// One pass over every unfinished deployment; `patient` waits for the loads it starts.
    async fn lease_round(&self, cluster: &ClusterNode, patient: bool) -> Result<()> {
        let unfinished = self.store.unfinished_deployments().await?;
        for d in &unfinished {
            self.dynamic.register(d);
        }
        let live: HashSet<Uuid> = unfinished.iter().map(|d| d.id).collect();
        futures_util::stream::iter(&unfinished)
            .for_each_concurrent(CLAIMS_IN_FLIGHT, |d| async move {
                if let Err(e) = self.lease_one(cluster, &d.tenant, d.id, patient).await {
                    tracing::warn!(deployment = %d.id, error = %e, "claiming a deployment's lease failed");
                }
            })
            .await;
        for d in unfinished.iter().filter(|d| d.dynamic) {
            self.index_joined(cluster, d);
        }
        // Deployments that finished on another node leave the index here.
        let gone: Vec<Uuid> = {
            let mut leases = cluster.leases();
            leases.known.retain(|id, _| live.contains(id));
            leases.held.retain(|id, _| live.contains(id));
            leases.grown.retain(|id, _| live.contains(id));
            let gone = leases
                .indexed
                .iter()
                .filter(|id| !live.contains(id))
                .copied()
                .collect();
            leases.indexed.retain(|id| live.contains(id));
            gone
        };
        for id in gone {
            if self.registry.slot(id).is_none() {
                self.fleet.release(id);
            }
        }
        Ok(())
    }

    /// Claim or renew one lease, and start what follows from it. Loading a deployment (to
    /// run it, or only to index its devices) takes seconds for a million devices, so it runs
    /// in a task of its own: the round must renew every held lease well within the fence's
    /// deadline. Both loads are idempotent, so a load still running at the next round is
    /// harmless if started again.
    async fn lease_one(
        &self,
        cluster: &ClusterNode,
        tenant: &TenantId,
        id: Uuid,
        patient: bool,
    ) -> Result<()> {
        let mut load = None;
        match self.claim(cluster, tenant, id).await? {
            Claimed::Run(fence) => {
                if self.registry.slot(id).is_none() {
                    let (svc, tenant) = (self.clone(), tenant.clone());
                    load = Some(tokio::spawn(async move {
                        let started = svc.spawn(&tenant, id, Indexing::Rehydrate, fence).await;
                        if let Err(e) = started {
                            tracing::warn!(deployment = %id, error = %e, "starting a deployment this node took failed; trying again");
                        }
                    }));
                }
                cluster.leases().indexed.remove(&id);
            }
            Claimed::Elsewhere { lost } => {
                if let Some(fence) = lost {
                    fence.revoke();
                    metrics_lost(id);
                    if let Some(actor) = self.registry.get(id) {
                        actor.stop(Some("lease lost".into()));
                    }
                    cluster.leases().indexed.insert(id);
                }
                // Marked first, so the next round does not start the same load again.
                let newly = cluster.leases().indexed.insert(id);
                if newly && self.registry.slot(id).is_none() {
                    let (svc, tenant) = (self.clone(), tenant.clone());
                    let cluster = self.cluster.clone();
                    load = Some(tokio::spawn(async move {
                        if let Err(e) = svc.index_only(&tenant, id).await {
                            tracing::warn!(deployment = %id, error = %e, "indexing a deployment run elsewhere failed; trying again");
                            if let Some(c) = cluster {
                                c.leases().indexed.remove(&id);
                            }
                        }
                    }));
                }
            }
        }
        if let (true, Some(load)) = (patient, load) {
            let _ = load.await;
        }
        Ok(())
    }

    /// Index the devices that joined a dynamic deployment run elsewhere since the last round
    /// (its stored device count grew): from the last chunk indexed on, in a task.
    fn index_joined(&self, cluster: &ClusterNode, header: &storage::DeploymentRecord) {
        let from = {
            let mut leases = cluster.leases();
            if !leases.indexed.contains(&header.id) {
                return;
            }
            let seen = leases.grown.entry(header.id).or_insert((0, 0));
            if seen.0 >= header.device_count {
                return;
            }
            // Claimed now, so the next round does not start the same read.
            seen.0 = header.device_count;
            seen.1.saturating_sub(1)
        };
        let (store, fleet, header) = (self.store.clone(), self.fleet.clone(), header.clone());
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let read =
                crate::deployment::actor::index_chunks(store.as_ref(), &fleet, &header, from);
            match (read.await, cluster) {
                (Ok(chunks), Some(c)) => {
                    if let Some(seen) = c.leases().grown.get_mut(&header.id) {
                        seen.1 = seen.1.max(chunks);
                    }
                }
                (Err(e), Some(c)) => {
                    tracing::warn!(deployment = %header.id, error = %e, "indexing the devices that joined a dynamic deployment failed; trying again");
                    c.leases().grown.remove(&header.id);
                }
                (_, None) => {}
            }
        });
    }

    /// Take, renew or take over a deployment's lease.
    pub(super) async fn claim(
        &self,
        cluster: &ClusterNode,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Claimed> {
        let asked = Instant::now();
        let config = &cluster.config;
        let claim = lease::claim(
            self.store.as_ref(),
            tenant,
            id,
            &config.node_id,
            config.lease_ttl,
        )
        .await?;
        let mut leases = cluster.leases();
        Ok(match claim {
            Claim::Granted(l) => {
                let previous = leases.known.insert(id, l.clone());
                let fence = leases.held.entry(id).or_insert_with(Fence::lapsed).clone();
                fence.extend(asked, config.lease_ttl, config.margin());
                if previous.is_none_or(|p| p.epoch != l.epoch) {
                    let how = if l.epoch == 1 { "new" } else { "takeover" };
                    crate::metrics::lease_taken(how);
                    tracing::info!(deployment = %id, epoch = l.epoch, how, "took a deployment's lease");
                }
                Claimed::Run(fence)
            }
            Claim::Held(l) => {
                leases.known.insert(id, l);
                Claimed::Elsewhere {
                    lost: leases.held.remove(&id),
                }
            }
        })
    }

    /// Hand every lease this node holds back, so other nodes take them at their next tick.
    /// Called once the actors have stopped.
    pub(super) async fn release_leases(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let held: Vec<Lease> = {
            let mut leases = cluster.leases();
            let ids: Vec<Uuid> = leases
                .held
                .drain()
                .map(|(id, f)| {
                    f.revoke();
                    id
                })
                .collect();
            ids.iter()
                .filter_map(|id| leases.known.get(id).cloned())
                .collect()
        };
        for l in &held {
            match lease::release(self.store.as_ref(), l).await {
                Ok(_) => {
                    tracing::info!(deployment = %l.deployment, "handed a deployment's lease over")
                }
                Err(e) => {
                    tracing::warn!(deployment = %l.deployment, error = %e, "handing a lease over failed; it lapses on its own")
                }
            }
        }
        cluster.transport.stop();
    }
}

fn metrics_lost(id: Uuid) {
    crate::metrics::lease_lost();
    tracing::warn!(deployment = %id, "lost a deployment's lease to another node; its actor stops here");
}
