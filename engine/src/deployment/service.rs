//! The deployment service: what the API calls. It routes device messages through the fleet
//! index to the right actor, asks running actors for live views, and reads finished
//! deployments straight from the store.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use storage::{
    ArtifactRecord, DeploymentRecord, DeploymentStatus, DeviceAuthStatus, DeviceDeploymentRecord,
    DeviceStatus, LogMessage, MetaStore, TenantId, UpdateControlMap, Write,
};
use uuid::Uuid;

use super::actor::{
    self as deployment_actor, Ack, CheckInOutcome, DeploymentArgs, DeploymentMsg, Indexing,
    Snapshot,
};
use super::clock::Clock;
use super::dynamic::DynamicIndex;
use super::events::Followed;
use super::fleet::{device_key, Fleet};
use super::handouts::Handouts;
use super::plan::{self, NewDeployment};
use super::safety;
use super::stats::Statistics;
use super::supervisor::{Registry, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::cluster::gateway::Gateway;
use crate::cluster::{ClusterConfig, Fence};
use crate::error::{EngineError, Result};
use ownership::ClusterNode;
use route::{unexpected, Answer, Request};

mod ask;
mod drill;
mod history;
mod ownership;
mod route;
mod targets;

pub use ask::{ASK_TIMEOUT, RESTART_WAIT};
pub use drill::Crash;

/// Device ids per stored chunk of a deployment's device list.
const DEVICE_LIST_CHUNK: usize = 10_000;

/// `GET /deployments` filters.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<DeploymentStatus>,
    /// Case-insensitive substring of the name or artifact name.
    pub search: Option<String>,
    /// Created at or after (Unix seconds).
    pub created_after: Option<i64>,
    /// Created at or before (Unix seconds).
    pub created_before: Option<i64>,
    /// Oldest first (`sort=asc`) instead of newest first.
    pub ascending: bool,
    /// Page (from 1).
    pub page: u64,
    /// Page size.
    pub per_page: u64,
}

/// What a device gets at check-in.
pub enum Delivery {
    /// Install this artifact for that deployment.
    Update {
        /// Deployment id.
        deployment: Uuid,
        /// The artifact.
        artifact: Arc<ArtifactRecord>,
        /// Where the device's client stops and waits, if it supports control maps.
        control_map: Option<UpdateControlMap>,
    },
    /// Nothing to do now.
    Nothing,
    /// Nothing to do: the device already runs the release (now `already-installed`).
    AlreadyInstalled,
    /// Nothing to do: no artifact of the release fits the device (now `noartifact`).
    NoArtifact,
}

/// Deployments of all tenants.
#[derive(Clone)]
pub struct DeploymentService {
    store: Arc<dyn MetaStore>,
    fleet: Fleet,
    registry: Registry,
    supervisor: ActorRef<SupervisorMsg>,
    clock: Clock,
    /// Filters of the unfinished dynamic deployments, to find those a changed device joins.
    dynamic: DynamicIndex,
    /// This node's part in a cluster; `None` for a node on its own store.
    cluster: Option<Arc<ClusterNode>>,
    /// The lease loop, in a cluster.
    lease_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl DeploymentService {
    /// Start the supervisor and rehydrate every unfinished deployment from the store: a
    /// node on its own store runs them all.
    pub async fn start(store: Arc<dyn MetaStore>, clock: Clock) -> Result<Self> {
        let svc = Self::start_supervisor(store, clock, None).await?;
        for d in svc.store.unfinished_deployments().await? {
            svc.dynamic.register(&d);
            svc.spawn(&d.tenant, d.id, Indexing::Rehydrate, Fence::unbounded())
                .await?;
        }
        Ok(svc)
    }

    /// Start as one node of a cluster sharing the store: link to the other nodes, claim
    /// the unfinished deployments nobody holds and index the others, then keep doing so
    /// (see [`ownership`]).
    pub async fn start_clustered(
        store: Arc<dyn MetaStore>,
        clock: Clock,
        config: ClusterConfig,
    ) -> Result<Self> {
        let cluster = ClusterNode::start(config, store.clone()).await?;
        let svc = Self::start_supervisor(store, clock, Some(Arc::new(cluster))).await?;
        Gateway::spawn(None, Gateway, svc.clone())
            .await
            .map_err(|e| EngineError::Internal(format!("starting the cluster gateway: {e}")))?;
        svc.start_lease_loop().await?;
        Ok(svc)
    }

    async fn start_supervisor(
        store: Arc<dyn MetaStore>,
        clock: Clock,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Self> {
        let fleet = Fleet::new();
        let registry = Registry::default();
        let (supervisor, _) = Supervisor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                store: store.clone(),
                fleet: fleet.clone(),
                registry: registry.clone(),
                clock,
            },
        )
        .await
        .map_err(|e| EngineError::Internal(format!("starting the supervisor: {e}")))?;
        Ok(DeploymentService {
            store,
            fleet,
            registry,
            supervisor,
            clock,
            dynamic: DynamicIndex::default(),
            cluster,
            lease_task: Arc::default(),
        })
    }

    /// Stop every deployment actor and the supervisor, after the messages already queued.
    /// Everything acknowledged is already durable; this only releases the store.
    /// In a cluster, the leases are then handed over, so other nodes take the deployments at
    /// once rather than after the leases lapse.
    pub async fn shutdown(&self) {
        if let Some(task) = self
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let timeout = Some(std::time::Duration::from_secs(10));
        self.supervisor
            .stop_children_and_wait(Some("shutdown".into()), timeout)
            .await;
        let _ = self
            .supervisor
            .stop_and_wait(Some("shutdown".into()), timeout)
            .await;
        self.release_leases().await;
    }

    /// Number of running deployment actors.
    pub fn running(&self) -> usize {
        self.registry.len()
    }

    /// Live snapshots of up to `limit` running deployments (oldest first), for metrics.
    pub async fn live(&self, limit: usize) -> Vec<Snapshot> {
        let mut out = Vec::new();
        for id in self.registry.ids() {
            // A deployment being restarted is left out rather than waited for.
            if let Ok(Some(s)) = self
                .ask(
                    id,
                    |reply| DeploymentMsg::Snapshot { reply },
                    Duration::ZERO,
                )
                .await
            {
                out.push(s);
            }
        }
        out.sort_by_key(|s| (s.header.created, s.header.id));
        out.truncate(limit);
        out
    }

    async fn spawn(
        &self,
        tenant: &TenantId,
        id: Uuid,
        indexing: Indexing,
        fence: Fence,
    ) -> Result<()> {
        let tenant = tenant.clone();
        let start = |reply| SupervisorMsg::Start {
            tenant,
            id,
            indexing,
            fence,
            reply,
        };
        match self.supervisor.call(start, None).await {
            Ok(CallResult::Success(r)) => r,
            _ => Err(EngineError::Internal(
                "the supervisor is not running".into(),
            )),
        }
    }

    /// Create a deployment: validate, persist header and device list durably, start its
    /// actor.
    pub async fn create(
        &self,
        tenant: &TenantId,
        mut new: NewDeployment,
    ) -> Result<DeploymentRecord> {
        // The contract's `POST /deployments` with a list of devices answers only 201, 400
        // and 422: sending the same list twice creates two deployments. A deployment to a
        // group, a filter or every device sent twice is refused (409), as upstream does.
        let listed = !new.devices.is_empty();
        let filter = self.resolve_targets(tenant, &mut new).await?;
        let now = self.clock.now();
        let phases = plan::validate(&new, now)?;
        let safety = safety::rules(&new, now)?;
        let artifacts: Vec<Uuid> = self
            .store
            .artifacts(tenant)
            .await?
            .into_iter()
            .filter(|a| a.meta.name == new.artifact_name)
            .map(|a| a.id)
            .collect();
        if artifacts.is_empty() {
            return Err(EngineError::Unprocessable(format!(
                "no artifact named {:?}",
                new.artifact_name
            )));
        }
        if !listed {
            self.refuse_duplicate(tenant, &new, filter.as_ref()).await?;
        }
        let status = if phases[0].start_ts > now {
            DeploymentStatus::Scheduled
        } else {
            DeploymentStatus::Pending
        };
        let header = DeploymentRecord {
            id: Uuid::new_v4(),
            tenant: tenant.clone(),
            name: new.name,
            artifact_name: new.artifact_name,
            created: now,
            finished: None,
            status,
            device_count: new.devices.len() as u64,
            retries: new.retries.unwrap_or(0),
            phases,
            aborted: false,
            artifacts,
            final_statistics: None,
            dynamic: filter.is_some(),
            initial_device_count: filter.as_ref().map(|_| new.devices.len() as u64),
            filter,
            max_devices: new.max_devices,
            force_installation: new.force_installation,
            safety,
        };
        let mut writes = vec![Write::PutDeployment(Box::new(header.clone()))];
        for (i, chunk) in new.devices.chunks(DEVICE_LIST_CHUNK).enumerate() {
            writes.push(Write::PutDeviceList {
                tenant: tenant.clone(),
                deployment: header.id,
                chunk: i as u32,
                devices: chunk.to_vec(),
            });
        }
        self.store.commit(writes).await?;
        tracing::info!(
            deployment = %header.id,
            tenant = %header.tenant,
            name = %header.name,
            release = %header.artifact_name,
            devices = header.device_count,
            dynamic = header.dynamic,
            "deployment created"
        );
        self.dynamic.register(&header);
        self.start_created(tenant, header.id).await?;
        if header.dynamic {
            self.catch_up_later(header.clone());
        }
        Ok(header)
    }

    /// Every device accepted in the tenant, by id.
    async fn accepted_devices(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .store
            .device_auths(tenant)
            .await?
            .into_iter()
            .filter(|d| d.status() == DeviceAuthStatus::Accepted)
            .map(|d| d.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Start the actor of a deployment just created: here on its own store; in a cluster,
    /// here once this node holds its lease (the lease loop of some node starts it
    /// otherwise, within a tick).
    async fn start_created(&self, tenant: &TenantId, id: Uuid) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return self
                .spawn(tenant, id, Indexing::New, Fence::unbounded())
                .await;
        };
        match self.claim(cluster, tenant, id).await {
            Ok(ownership::Claimed::Run(fence)) => {
                self.spawn(tenant, id, Indexing::New, fence).await
            }
            Ok(ownership::Claimed::Elsewhere { .. }) => Ok(()),
            Err(e) => {
                tracing::warn!(deployment = %id, error = %e, "claiming a new deployment failed; the lease loop tries again");
                Ok(())
            }
        }
    }

    /// Add the devices of a deployment run by another node to this node's fleet index.
    async fn index_only(&self, tenant: &TenantId, id: Uuid) -> Result<()> {
        deployment_actor::index_only(DeploymentArgs {
            tenant: tenant.clone(),
            id,
            store: self.store.clone(),
            fleet: self.fleet.clone(),
            clock: self.clock,
            indexing: Indexing::Rehydrate,
            fence: Fence::lapsed(),
            handouts: Arc::new(Handouts::new(Fence::lapsed())),
        })
        .await
    }

    /// One deployment with live status, phase counts and statistics.
    pub async fn get(&self, tenant: &TenantId, id: Uuid) -> Result<Snapshot> {
        // Read first: the actor does not check the tenant of a snapshot request.
        self.header(tenant, id).await?;
        if let Some(answer) = self
            .perform(tenant, id, Request::Snapshot, RESTART_WAIT)
            .await?
        {
            return match answer {
                Answer::Snapshot(s) => Ok(*s),
                other => Err(unexpected(other)),
            };
        }
        // Again: the deployment may have finished while the request waited.
        let header = self.header(tenant, id).await?;
        self.stored_snapshot(tenant, header).await
    }

    /// A finished deployment's statistics: those stored when it finished, or counted from
    /// its records (deployments stored without them).
    async fn stored_snapshot(
        &self,
        tenant: &TenantId,
        header: DeploymentRecord,
    ) -> Result<Snapshot> {
        if let Some(f) = &header.final_statistics {
            let (stats, total_size) = (Statistics::from_stored(&f.status), f.total_size);
            return Ok(Snapshot {
                header,
                stats,
                total_size,
            });
        }
        let records = self.store.device_records(tenant, header.id).await?;
        let mut stats = Statistics::count(records.iter().map(|r| &r.status));
        let untouched = header.device_count.saturating_sub(records.len() as u64);
        stats.add(DeviceStatus::Pending, untouched);
        let mut sizes = std::collections::HashMap::new();
        for a in &header.artifacts {
            if let Some(rec) = self.store.artifact(tenant, *a).await? {
                sizes.insert(*a, rec.size);
            }
        }
        let total_size = deployment_actor::total_size(records.iter(), |id| sizes.get(&id).copied());
        Ok(Snapshot {
            header,
            stats,
            total_size,
        })
    }

    async fn header(&self, tenant: &TenantId, id: Uuid) -> Result<DeploymentRecord> {
        self.store
            .deployment(tenant, id)
            .await?
            .ok_or(EngineError::NotFound("deployment"))
    }

    /// Deployments of a tenant, newest first (or oldest first), filtered and paged, each with
    /// its statistics; with the total count.
    pub async fn list(&self, tenant: &TenantId, q: &ListQuery) -> Result<(Vec<Snapshot>, u64)> {
        let search = q.search.as_ref().map(|s| s.to_lowercase());
        let mut all: Vec<DeploymentRecord> = self
            .store
            .deployments(tenant)
            .await?
            .into_iter()
            .filter(|d| q.status.is_none_or(|s| d.status == s))
            .filter(|d| {
                search.as_ref().is_none_or(|s| {
                    d.name.to_lowercase().contains(s) || d.artifact_name.to_lowercase().contains(s)
                })
            })
            // Bounds are instants (whole Unix seconds), compared as upstream does: a
            // deployment created at t + 0.7 s is after `created_before=t`.
            .filter(|d| {
                let created = d.created.unix_timestamp_nanos();
                let instant = |t: i64| i128::from(t) * 1_000_000_000;
                q.created_after.is_none_or(|t| created >= instant(t))
                    && q.created_before.is_none_or(|t| created <= instant(t))
            })
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        if q.ascending {
            all.reverse();
        }
        let total = all.len() as u64;
        let skip = usize::try_from(q.page.saturating_sub(1).saturating_mul(q.per_page))
            .unwrap_or(usize::MAX);
        let page: Vec<DeploymentRecord> = all
            .into_iter()
            .skip(skip)
            .take(q.per_page as usize)
            .collect();
        // Running deployments: the actor's header has the live phase counts and statistics.
        // One being restarted keeps its stored header and counts from the store rather than
        // hold up the whole list.
        let mut out = Vec::with_capacity(page.len());
        for d in page {
            if d.status != DeploymentStatus::Finished {
                let snapshot = self
                    .perform(tenant, d.id, Request::Snapshot, Duration::ZERO)
                    .await;
                if let Ok(Some(Answer::Snapshot(s))) = snapshot {
                    out.push(*s);
                    continue;
                }
            }
            out.push(self.stored_snapshot(tenant, d).await?);
        }
        Ok((out, total))
    }

    /// Every device's record in a deployment.
    pub async fn devices(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Vec<DeviceDeploymentRecord>> {
        let header = self.header(tenant, id).await?;
        match self
            .perform(tenant, id, Request::Devices, RESTART_WAIT)
            .await?
        {
            Some(Answer::Devices(v)) => return Ok(v),
            Some(other) => return Err(unexpected(other)),
            None => {}
        }
        let mut records = self.store.device_records(tenant, id).await?;
        let known: std::collections::HashSet<String> =
            records.iter().map(|r| r.device_id.clone()).collect();
        for d in self.store.device_list(tenant, id).await? {
            if !known.contains(&d) {
                records.push(DeviceDeploymentRecord::pending(d, header.created));
            }
        }
        records.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(records)
    }

    /// The device ids a deployment was created with.
    pub async fn device_list(&self, tenant: &TenantId, id: Uuid) -> Result<Vec<String>> {
        self.header(tenant, id).await?;
        Ok(self.store.device_list(tenant, id).await?)
    }

    /// A device's log in a deployment.
    pub async fn log(&self, tenant: &TenantId, id: Uuid, device: &str) -> Result<Vec<LogMessage>> {
        self.header(tenant, id).await?;
        self.store
            .log(tenant, id, device)
            .await?
            .ok_or(EngineError::NotFound("deployment log"))
    }

    /// Abort a deployment; 422 when it has already finished.
    pub async fn abort(&self, tenant: &TenantId, id: Uuid) -> Result<()> {
        let header = self.header(tenant, id).await?;
        self.change_unfinished(&header, Request::Abort).await
    }

    /// Pause a deployment (no device starts the update until it resumes) or resume it
    /// (which also lifts an auto-abort's stop on admitting); 422 when it has finished.
    pub async fn set_paused(&self, tenant: &TenantId, id: Uuid, paused: bool) -> Result<()> {
        let header = self.header(tenant, id).await?;
        self.change_unfinished(&header, Request::SetPaused { paused })
            .await
    }

    /// Replace a deployment's update control map (checked as the Mender client checks it);
    /// devices get it at their next check-in or map refresh. 422 when it has finished.
    pub async fn set_control_map(
        &self,
        tenant: &TenantId,
        id: Uuid,
        map: UpdateControlMap,
    ) -> Result<()> {
        safety::check_control_map(&map)?;
        let header = self.header(tenant, id).await?;
        self.change_unfinished(&header, Request::SetControlMap { map })
            .await
    }

    /// The control map a device refreshes while it is in the middle of deployment `id`;
    /// NotFound when it is not in it, has finished it, or the deployment has finished.
    pub async fn control_map(
        &self,
        tenant: &TenantId,
        device: &str,
        id: Uuid,
    ) -> Result<UpdateControlMap> {
        let request = Request::ControlMap {
            device: device.to_owned(),
        };
        match self.perform(tenant, id, request, RESTART_WAIT).await? {
            Some(Answer::ControlMap(map)) => Ok(map),
            Some(other) => Err(unexpected(other)),
            None => Err(EngineError::NotFound("deployment")),
        }
    }

    /// Follow a deployment: where it stands now, then what happens to it (here, from its
    /// actor; run by another node, from a look every second; finished, nothing).
    pub async fn follow(&self, tenant: &TenantId, id: Uuid) -> Result<Followed> {
        // Read first: the actor does not check the tenant of a subscription.
        self.header(tenant, id).await?;
        let build = |reply| DeploymentMsg::Subscribe { reply };
        if let Some((snapshot, events)) = self.ask(id, build, RESTART_WAIT).await? {
            return Ok(Followed::live(snapshot, events));
        }
        let snapshot = self.get(tenant, id).await?;
        Ok(Followed::elsewhere(snapshot, self))
    }

    /// Approve phase `number` (1-based) of a deployment, which then opens at its start
    /// time (and once its gate, if any, passes); 404 for no such phase, 409 for a phase
    /// that needs no approval, 422 when the deployment has finished.
    pub async fn approve_phase(&self, tenant: &TenantId, id: Uuid, number: usize) -> Result<()> {
        let header = self.header(tenant, id).await?;
        let phase = number
            .checked_sub(1)
            .filter(|i| *i < header.phases.len())
            .ok_or(EngineError::NotFound("phase"))?;
        self.change_unfinished(&header, Request::Approve { phase })
            .await
    }

    /// An operator's change to a deployment, run by its actor; 422 when the deployment has
    /// finished (also when it finishes before the actor gets the request).
    async fn change_unfinished(&self, header: &DeploymentRecord, request: Request) -> Result<()> {
        if header.status != DeploymentStatus::Finished {
            let done = self
                .perform(&header.tenant, header.id, request, RESTART_WAIT)
                .await?;
            if done.is_some() {
                return Ok(());
            }
        }
        Err(EngineError::Unprocessable(
            "the deployment has already finished".into(),
        ))
    }

    /// Decommission a device in every deployment it still takes part in.
    pub async fn decommission(&self, tenant: &TenantId, device: &str) -> Result<()> {
        for m in self.fleet.memberships(device_key(tenant, device)) {
            let request = Request::Decommission {
                device: device.to_owned(),
            };
            self.perform(tenant, m.deployment, request, RESTART_WAIT)
                .await?;
        }
        Ok(())
    }

    /// A device checks for an update.
    pub async fn check_in(
        &self,
        tenant: &TenantId,
        device: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<Delivery> {
        // Memberships older than a deployment the device finished were pruned when it
        // finished, so the oldest one left is the one to serve. On a node that does not
        // run that deployment, a membership may be stale (the device finished there since
        // this node indexed it): the owner says so, and the next one is tried.
        let key = device_key(tenant, device);
        while let Some(m) = self.fleet.oldest(key) {
            // The same attempt asking again: what the actor handed out, without the actor.
            let handouts = self.registry.handouts(m.deployment);
            if let Some((artifact, control_map)) =
                handouts.and_then(|h| h.repeat(key, device_type, artifact_name))
            {
                return Ok(Delivery::Update {
                    deployment: m.deployment,
                    artifact,
                    control_map,
                });
            }
            let request = Request::CheckIn {
                device: device.to_owned(),
                device_type: device_type.to_owned(),
                artifact_name: artifact_name.to_owned(),
            };
            let outcome = match self
                .perform(tenant, m.deployment, request, RESTART_WAIT)
                .await
            {
                Ok(Some(Answer::CheckIn(outcome))) => outcome,
                Ok(Some(other)) => return Err(unexpected(other)),
                Ok(None) => return Ok(Delivery::Nothing),
                // Only a (practically impossible) fleet key collision gets here.
                Err(EngineError::NotFound(_)) => return Ok(Delivery::Nothing),
                Err(e) => return Err(e),
            };
            return Ok(match outcome {
                CheckInOutcome::Over if self.registry.slot(m.deployment).is_none() => {
                    self.forget_finished(key, m);
                    continue;
                }
                CheckInOutcome::Deliver {
                    artifact,
                    control_map,
                } => Delivery::Update {
                    deployment: m.deployment,
                    artifact,
                    control_map,
                },
                CheckInOutcome::Nothing | CheckInOutcome::Over => Delivery::Nothing,
                CheckInOutcome::Finished(status) => {
                    self.forget_finished(key, m);
                    match status {
                        DeviceStatus::AlreadyInstalled => Delivery::AlreadyInstalled,
                        DeviceStatus::Noartifact => Delivery::NoArtifact,
                        _ => Delivery::Nothing,
                    }
                }
                CheckInOutcome::Conflict(msg) => return Err(EngineError::Conflict(msg)),
            });
        }
        Ok(Delivery::Nothing)
    }

    /// A device finished a deployment another node runs: drop the membership here too (the
    /// owner's node did the same in its own index).
    fn forget_finished(&self, key: super::fleet::DeviceKey, m: super::fleet::Membership) {
        if self.registry.slot(m.deployment).is_none() {
            self.fleet.remove(key, m.deployment);
            self.fleet.prune_older(key, m.created);
        }
    }

    /// A device reports a status; answered once the change is durable.
    pub async fn report(
        &self,
        tenant: &TenantId,
        device: &str,
        id: Uuid,
        status: DeviceStatus,
        substate: Option<String>,
    ) -> Result<()> {
        if !super::device::reportable(status) {
            return Err(EngineError::Invalid(format!(
                "devices cannot report the status {status}"
            )));
        }
        // A report may admit a device only where its check-in would: in its oldest
        // unfinished deployment.
        let older_first = self
            .fleet
            .oldest(device_key(tenant, device))
            .is_some_and(|m| m.deployment != id);
        // Running deployment: straight to its actor (which checks the tenant), no store
        // read on this hot path.
        let request = Request::Report {
            device: device.to_owned(),
            status,
            substate: substate.clone(),
            older_first,
        };
        // (A device that finished a deployment another node runs keeps its membership in
        // this node's index until its next check-in here, which the owner answers `Over`.)
        if self
            .perform(tenant, id, request, RESTART_WAIT)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let header = self.header(tenant, id).await?;
        // Finished deployment: the same rules, applied to the stored record (every device
        // has finished, so only a final status may replace another).
        let mut rec = self.stored_record(tenant, &header, device).await?;
        let now = self.clock.now();
        let terms = super::device::Terms::of(&header);
        let reported = super::device::report(&mut rec, status, substate, terms, now)
            .map_err(deployment_actor::report_error)?;
        let change = match reported {
            super::device::Reported::Unchanged => return Ok(()),
            super::device::Reported::Moved(c) => Some(c),
            super::device::Reported::Substate => None,
        };
        let mut writes = vec![Write::PutDevice {
            tenant: tenant.clone(),
            deployment: id,
            record: rec,
        }];
        // The statistics kept with the finished deployment follow the change.
        let mut header = header;
        if let (Some(c), Some(f)) = (change, header.final_statistics.as_mut()) {
            let mut stats = Statistics::from_stored(&f.status);
            stats.moved(c.from, c.to);
            f.status = stats.by_status();
            writes.push(Write::PutDeployment(Box::new(header)));
        }
        Ack(Some(self.store.submit(writes))).durable().await
    }

    async fn stored_record(
        &self,
        tenant: &TenantId,
        header: &DeploymentRecord,
        device: &str,
    ) -> Result<DeviceDeploymentRecord> {
        let records = self.store.device_records(tenant, header.id).await?;
        if let Some(r) = records.into_iter().find(|r| r.device_id == device) {
            return Ok(r);
        }
        if self
            .store
            .device_list(tenant, header.id)
            .await?
            .iter()
            .any(|d| d == device)
        {
            return Ok(DeviceDeploymentRecord::pending(
                device.to_owned(),
                header.created,
            ));
        }
        Err(EngineError::NotFound("device in deployment"))
    }

    /// A device uploads its log (also after the deployment finished: clients send the log
    /// after their final `failure`).
    pub async fn upload_log(
        &self,
        tenant: &TenantId,
        device: &str,
        id: Uuid,
        messages: Vec<LogMessage>,
    ) -> Result<()> {
        let request = Request::UploadLog {
            device: device.to_owned(),
            messages: messages.clone(),
        };
        if self
            .perform(tenant, id, request, RESTART_WAIT)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let header = self.header(tenant, id).await?;
        let mut rec = self.stored_record(tenant, &header, device).await?;
        rec.log = true;
        Ack(Some(self.store.submit(vec![
            Write::PutDevice {
                tenant: tenant.clone(),
                deployment: id,
                record: rec,
            },
            Write::PutLog {
                tenant: tenant.clone(),
                deployment: id,
                device: device.to_owned(),
                messages,
            },
        ])))
        .durable()
        .await
    }
}
