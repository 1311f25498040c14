//! The deployment actor: one per unfinished deployment. It owns the deployment's device
//! records, phase timers, retry counters and statistics, and persists every change through
//! the store's group committer before the caller answers (each reply carries the
//! [`Durable`] future of its writes; the actor itself never waits for the disk, so many
//! messages share one fsync).

mod check_in;
mod safeguards;

use std::collections::HashSet;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use storage::{
    ArtifactRecord, DeploymentRecord, DeploymentStatus, DeviceDeploymentRecord, DeviceStatus,
    Durable, FinalStatistics, LogMessage, MetaStore, StoreError, TenantId, UpdateControlMap, Write,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use self::check_in::installs_on;
use super::clock::Clock;
use super::device::{self, Change, ReportError, Reported};
use super::events::{DeploymentEvent, Publisher, STATISTICS_EVERY};
use super::fleet::{device_key, DeviceKey, Fleet, Membership};
use super::handouts::Handouts;
use super::plan;
use super::roster::Roster;
use super::safety::{self, Pacer, Tally, Timeouts};
use super::stats::Statistics;
use super::windows::Windows;
use crate::cluster::Fence;
use crate::error::{EngineError, Result};

/// Messages of a deployment actor; one per operation of the API.
pub enum DeploymentMsg {
    /// A device asks whether there is an update for it.
    CheckIn {
        /// Device id.
        device: String,
        /// Its device type.
        device_type: String,
        /// The artifact it runs.
        artifact_name: String,
        /// Answer.
        reply: RpcReplyPort<Result<CheckInReply>>,
    },
    /// A device reports progress.
    ReportStatus {
        /// The device's tenant (a device of another tenant is not part of it).
        tenant: TenantId,
        /// Device id.
        device: String,
        /// New status.
        status: DeviceStatus,
        /// Optional substate.
        substate: Option<String>,
        /// The device has an older unfinished deployment: a report may not admit it here.
        older_first: bool,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A device uploads its deployment log.
    UploadLog {
        /// The device's tenant.
        tenant: TenantId,
        /// Device id.
        device: String,
        /// The log.
        messages: Vec<LogMessage>,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// The operator aborts the deployment.
    Abort {
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A device now matches the filter of this dynamic deployment: it becomes a member
    /// (unless it is one, or the deployment has taken `max_devices`).
    Join {
        /// Device id.
        device: String,
        /// Answer: whether it joined, and the durability of the change.
        reply: RpcReplyPort<(bool, Ack)>,
    },
    /// The device is decommissioned.
    Decommission {
        /// Device id.
        device: String,
        /// Answer.
        reply: RpcReplyPort<Ack>,
    },
    /// The deployment header and statistics.
    Snapshot {
        /// Answer.
        reply: RpcReplyPort<Snapshot>,
    },
    /// Every device's record.
    Devices {
        /// Answer.
        reply: RpcReplyPort<Result<Vec<DeviceDeploymentRecord>>>,
    },
    /// The operator pauses the deployment (`true`) or resumes it (`false`, which also lifts
    /// an auto-abort's stop on admitting).
    SetPaused {
        /// Pause or resume.
        paused: bool,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// The operator replaces the deployment's update control map.
    SetControlMap {
        /// The new map.
        map: UpdateControlMap,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A device in the middle of the update refreshes its control map: the map, or
    /// NotFound when the device is not in the deployment or has finished it.
    ControlMap {
        /// The device's tenant.
        tenant: TenantId,
        /// Device id.
        device: String,
        /// Answer.
        reply: RpcReplyPort<Result<UpdateControlMap>>,
    },
    /// The operator approves a phase that needs it (0-based index).
    Approve {
        /// The phase.
        phase: usize,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A phase's start time has come.
    PhaseDue,
    /// Time to fail the devices in progress for longer than the deployment's timeout.
    Sweep,
    /// The deployment's end time has come.
    EndDue,
    /// Somebody follows the deployment's progress.
    Subscribe {
        /// Answer: the deployment now, and what happens from now on.
        reply: RpcReplyPort<(Snapshot, broadcast::Receiver<DeploymentEvent>)>,
    },
    /// Time to publish the statistics that changed since they were last published.
    PublishStatistics,
    /// Fault injection: make the actor panic, to exercise supervision (tests and chaos
    /// drills only).
    #[doc(hidden)]
    Crash,
}

impl ractor::Message for DeploymentMsg {}

/// Acknowledgement of a change: resolves once the change is durable.
pub struct Ack(pub Option<Durable>);

impl Ack {
    /// Wait until the change is on disk.
    pub async fn durable(self) -> Result<()> {
        if let Some(d) = self.0 {
            match d.await {
                Ok(()) => {}
                Err(StoreError::LeaseLost(id)) => {
                    return Err(EngineError::Unavailable {
                        reason: format!("deployment {id} is moving to another node"),
                        retry_after: std::time::Duration::from_secs(1),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// What a check-in gets.
#[derive(Debug, Serialize, Deserialize)]
pub enum CheckInOutcome {
    /// Install this artifact.
    Deliver {
        /// The artifact.
        artifact: Arc<ArtifactRecord>,
        /// Where the device's client stops and waits (if it supports control maps).
        control_map: Option<UpdateControlMap>,
    },
    /// Nothing now (waiting for a phase, or for the next check-in).
    Nothing,
    /// Nothing: the device finished this deployment already.
    Over,
    /// Nothing, and the check-in finished the device with this status (`already-installed`
    /// or `noartifact`).
    Finished(DeviceStatus),
    /// The device's data changed mid-deployment; it is marked failed.
    Conflict(String),
}

/// The answer to a check-in and the durability of what it changed.
pub struct CheckInReply {
    /// What the device gets.
    pub outcome: CheckInOutcome,
    /// The changes it made.
    pub ack: Ack,
}

/// A consistent view of the deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The header, with live phase counts and status.
    pub header: DeploymentRecord,
    /// Devices per status.
    pub stats: Statistics,
    /// Bytes of the artifacts handed to the devices: each device's artifact counted once,
    /// the same artifact once per device (what upstream shows as `total_size`).
    pub total_size: u64,
}

/// What the actor needs to load its deployment.
pub struct DeploymentArgs {
    /// Owner.
    pub tenant: TenantId,
    /// Deployment id.
    pub id: Uuid,
    /// The store.
    pub store: Arc<dyn MetaStore>,
    /// The fleet index to keep up to date.
    pub fleet: Fleet,
    /// Time.
    pub clock: Clock,
    /// Whether loading adds the deployment's devices to the fleet index.
    pub indexing: Indexing,
    /// Until when this node may write for the deployment (in a cluster, its lease).
    pub fence: Fence,
    /// Where the actor writes down the updates it handed out, for repeated check-ins.
    pub handouts: Arc<Handouts>,
}

/// Whether a loading deployment adds its devices to the fleet index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Creation: every device becomes a member (none can have finished a newer one).
    New,
    /// Server start-up: every unfinished device becomes a member, unless it has since
    /// finished a newer deployment ([`MetaStore::last_finished`], asked of these devices
    /// only), which must never be followed by an older one.
    Rehydrate,
    /// A restart after a crash: the index still holds exactly the memberships the crashed
    /// actor left, and they are right (removals it made, and prunes since made by newer
    /// deployments a device finished). Re-adding every unfinished device from the records
    /// would undo those prunes and hand devices a deployment older than one they finished.
    Keep,
}

/// The actor (stateless; its state is [`DeploymentState`]).
pub struct DeploymentActor;

/// A deployment in memory.
pub struct DeploymentState {
    header: DeploymentRecord,
    /// Every device's key, and records of the devices that did something. Ids of untouched
    /// devices stay in the store's device list.
    devices: Roster,
    stats: Statistics,
    /// The deployment's artifacts (those of the release when it was created, and any of
    /// the release uploaded since for a device type none of them installs on; the
    /// artifact service refuses to delete them while it runs), loaded at start.
    artifacts: Vec<Arc<ArtifactRecord>>,
    /// When the store was last searched for new artifacts of the release.
    artifacts_searched: Option<time::OffsetDateTime>,
    store: Arc<dyn MetaStore>,
    fleet: Fleet,
    clock: Clock,
    fence: Fence,
    /// The last chunk of the stored device list, where a dynamic deployment's new members
    /// are appended.
    tail: ListTail,
    /// Install outcomes overall and per phase (the auto-abort's counts).
    tally: Tally,
    /// Recent starts (pacing).
    pacer: Pacer,
    /// Devices in progress and since when (the in-progress timeout).
    timeouts: Timeouts,
    /// Why the auto-abort tripped during the last message, to act on once it is answered.
    tripped: Option<String>,
    /// When devices may start the update (the maintenance windows).
    windows: Windows,
    /// Live progress for followers.
    publisher: Publisher,
    /// What repeated check-ins get without asking the actor.
    handouts: Arc<Handouts>,
}

/// Devices a dynamic deployment appends to one device-list chunk before it starts the
/// next: each join rewrites its chunk, so this bounds the bytes a join writes.
const JOIN_CHUNK: usize = 1_000;

/// The last chunk of a deployment's device list.
#[derive(Debug, Default)]
struct ListTail {
    /// Its number.
    chunk: u32,
    /// Its ids, if it has room for more (kept only for dynamic deployments).
    ids: Vec<String>,
}

impl ListTail {
    /// Append a device; the chunk write that stores it.
    fn push(&mut self, tenant: &TenantId, deployment: Uuid, device: &str) -> Write {
        if self.ids.len() >= JOIN_CHUNK {
            self.chunk += 1;
            self.ids.clear();
        }
        self.ids.push(device.to_owned());
        Write::PutDeviceList {
            tenant: tenant.clone(),
            deployment,
            chunk: self.chunk,
            devices: self.ids.clone(),
        }
    }
}

impl Actor for DeploymentActor {
    type Msg = DeploymentMsg;
    type State = DeploymentState;
    type Arguments = DeploymentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DeploymentArgs,
    ) -> std::result::Result<DeploymentState, ActorProcessingErr> {
        Ok(DeploymentState::load(args).await?)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut DeploymentState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.schedule_phase_timer(&myself);
        state.schedule_sweep(&myself);
        state.schedule_end(&myself);
        if state.is_done() {
            let writes = state.finish_writes();
            state.submit(writes).await?;
            myself.stop(Some("finished".into()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: DeploymentMsg,
        state: &mut DeploymentState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            DeploymentMsg::CheckIn {
                device,
                device_type,
                artifact_name,
                reply,
            } => {
                let r = match state.find_artifact_for(&device, &device_type).await {
                    Ok(()) => state.check_in(&device, &device_type, &artifact_name),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            DeploymentMsg::ReportStatus {
                tenant,
                device,
                status,
                substate,
                older_first,
                reply,
            } => {
                let r = state
                    .same_tenant(&tenant)
                    .and_then(|()| state.report(&device, status, substate, older_first));
                let _ = reply.send(r);
            }
            DeploymentMsg::UploadLog {
                tenant,
                device,
                messages,
                reply,
            } => {
                let r = state
                    .same_tenant(&tenant)
                    .and_then(|()| state.upload_log(&device, messages));
                let _ = reply.send(r);
            }
            DeploymentMsg::Abort { reply } => {
                tracing::info!(deployment = %state.header.id, "deployment aborted by an operator");
                let _ = reply.send(state.abort().await);
            }
            DeploymentMsg::Join { device, reply } => {
                let _ = reply.send(state.join(&device));
            }
            DeploymentMsg::Decommission { device, reply } => {
                let _ = reply.send(state.decommission(&device));
            }
            DeploymentMsg::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
            DeploymentMsg::Devices { reply } => {
                let _ = reply.send(state.device_records().await);
            }
            DeploymentMsg::Crash => panic!("deployment actor crash requested"),
            DeploymentMsg::SetPaused { paused, reply } => {
                let _ = reply.send(Ok(state.set_paused(paused)));
            }
            DeploymentMsg::SetControlMap { map, reply } => {
                let _ = reply.send(Ok(state.set_control_map(map)));
            }
            DeploymentMsg::ControlMap {
                tenant,
                device,
                reply,
            } => {
                let r = state
                    .same_tenant(&tenant)
                    .and_then(|()| state.control_map(&device));
                let _ = reply.send(r);
            }
            DeploymentMsg::Approve { phase, reply } => {
                let _ = reply.send(state.approve(phase));
            }
            DeploymentMsg::PhaseDue => {
                let writes = state.refresh_status();
                if !writes.is_empty() {
                    // Nobody waits on this change; the committer makes it durable.
                    drop(state.submit(writes));
                }
                state.schedule_phase_timer(&myself);
            }
            DeploymentMsg::Sweep => {
                // Nobody waits on these changes either.
                drop(state.time_out_stuck_devices());
                state.schedule_sweep(&myself);
            }
            DeploymentMsg::Subscribe { reply } => {
                let _ = reply.send((state.snapshot(), state.publisher.subscribe()));
            }
            DeploymentMsg::PublishStatistics => {
                if state.publisher.flush() {
                    let (status, statistics) = (state.header.status, state.stats.clone());
                    state
                        .publisher
                        .publish(|| DeploymentEvent::Statistics { status, statistics });
                }
            }
            DeploymentMsg::EndDue => {
                if !state.end_reached().await? {
                    state.schedule_end(&myself);
                }
            }
        }
        if let Some(reason) = state.tripped.take() {
            state.trip(reason).await?;
        }
        if state.publisher.flush_needed() {
            myself.send_after(STATISTICS_EVERY, || DeploymentMsg::PublishStatistics);
        }
        if state.header.status == DeploymentStatus::Finished {
            let snapshot = state.snapshot();
            tracing::info!(
                deployment = %state.header.id,
                aborted = state.header.aborted,
                success = snapshot.stats.get(DeviceStatus::Success),
                failure = snapshot.stats.get(DeviceStatus::Failure),
                devices = state.header.device_count,
                "deployment finished"
            );
            state
                .publisher
                .publish(|| DeploymentEvent::finished(&snapshot));
            myself.stop(Some("finished".into()));
        } else if !state.fence.holds() {
            // The lease lapsed (this node was paused, or cut off): whatever the messages
            // changed in memory was not written; the node that holds the lease now loads
            // the deployment from the store.
            tracing::warn!(deployment = %state.header.id, "the deployment's lease lapsed; its actor stops here");
            myself.stop(Some("lease lapsed".into()));
        }
        Ok(())
    }
}

impl DeploymentState {
    async fn load(args: DeploymentArgs) -> Result<Self> {
        let DeploymentArgs {
            tenant,
            id,
            store,
            fleet,
            clock,
            indexing,
            fence,
            handouts,
        } = args;
        let mut header = store
            .deployment(&tenant, id)
            .await?
            .ok_or(EngineError::NotFound("deployment"))?;
        let records = store.device_records(&tenant, id).await?;
        let created = header.created.unix_timestamp_nanos();
        // Only a device that finished a newer deployment can be superseded; with none
        // newer (the common case), no device needs looking up.
        let check_devices = indexing == Indexing::Rehydrate
            && newer_deployment_exists(store.as_ref(), &tenant, &header).await?;
        let done: HashSet<DeviceKey> = records
            .iter()
            .filter(|r| r.status.is_terminal())
            .map(|r| device_key(&tenant, &r.device_id))
            .collect();
        // Chunk by chunk: the ids themselves are not kept, only their keys.
        let mut keys = Vec::with_capacity(header.device_count as usize);
        let mut superseded = HashSet::new();
        let mut chunk = 0;
        let mut tail = ListTail::default();
        while let Some(ids) = store.device_list_chunk(&tenant, id, chunk).await? {
            tail = ListTail {
                chunk,
                ids: if header.dynamic && ids.len() < JOIN_CHUNK {
                    ids.clone()
                } else {
                    Vec::new()
                },
            };
            if tail.ids.is_empty() && !ids.is_empty() {
                // Full (or not dynamic): new members start the next chunk.
                tail.chunk = chunk + 1;
            }
            let chunk_keys: Vec<DeviceKey> = ids.iter().map(|d| device_key(&tenant, d)).collect();
            if check_devices {
                let waiting = ids
                    .into_iter()
                    .zip(&chunk_keys)
                    .filter(|(_, k)| !done.contains(k))
                    .map(|(d, _)| d);
                let newer = finished_newer(store.as_ref(), &tenant, waiting.collect(), created);
                superseded.extend(newer.await?);
            }
            keys.extend(chunk_keys);
            chunk += 1;
        }
        let mut devices = Roster::new(keys);
        for p in &mut header.phases {
            p.device_count = 0;
        }
        for rec in records {
            if let Some(phase) = rec.phase.and_then(|i| header.phases.get_mut(i as usize)) {
                phase.device_count += 1;
            }
            devices.load(device_key(&tenant, &rec.device_id), rec);
        }
        let artifacts = load_artifacts(store.as_ref(), &header).await?;
        let stats = devices.statistics();
        let finals = devices.records().filter(|r| r.status.is_terminal());
        let tally = Tally::count(finals.map(|r| (r.phase, r.status)));
        let timeouts = Timeouts::load(
            devices
                .records()
                .filter(|r| header.safety.device_timeout_secs.is_some() && safety::timed(r.status))
                .map(|r| device_key(&tenant, &r.device_id)),
            clock.now(),
        );
        handouts.set_control_map(header.safety.update_control_map.clone());
        let windows = Windows::compile(&header.safety.maintenance_windows, clock.now())
            .unwrap_or_else(|e| {
                tracing::error!(deployment = %id, error = %e, "stored maintenance windows do not compile; no device starts until the deployment is aborted");
                Windows::never()
            });
        if indexing != Indexing::Keep {
            let membership = Membership {
                created,
                deployment: id,
            };
            let members = devices.active_keys().filter(|k| !superseded.contains(k));
            fleet.add_all(members, membership);
        }
        Ok(DeploymentState {
            header,
            devices,
            stats,
            artifacts,
            artifacts_searched: None,
            store,
            fleet,
            clock,
            fence,
            tail,
            tally,
            pacer: Pacer::default(),
            timeouts,
            tripped: None,
            windows,
            publisher: Publisher::default(),
            handouts,
        })
    }

    /// Whether the deployment is over: every device finished; for a dynamic deployment,
    /// which devices may still join, only once `max_devices` have finished.
    fn is_done(&self) -> bool {
        if self.header.dynamic {
            let finished = self.devices.len() as u64 - self.stats.unfinished();
            return self.header.max_devices.is_some_and(|m| finished >= m);
        }
        self.stats.unfinished() == 0
    }

    /// A device now matching a dynamic deployment's filter joins it: its id goes to the
    /// stored device list, the last phase makes room for it, and the fleet index routes its
    /// check-ins here. Whether it joined, and the ack of the writes.
    fn join(&mut self, device: &str) -> (bool, Ack) {
        let full = self
            .header
            .max_devices
            .is_some_and(|m| self.devices.len() as u64 >= m);
        if !self.header.dynamic || self.header.status == DeploymentStatus::Finished || full {
            return (false, Ack(None));
        }
        let key = device_key(&self.header.tenant, device);
        if !self.devices.insert(key) {
            return (false, Ack(None));
        }
        self.header.device_count += 1;
        // Phases planned for `max_devices` have room for every device; otherwise the last
        // phase grows with the devices that join.
        let planned: u64 = self.header.phases.iter().map(|p| p.capacity).sum();
        if let Some(last) = self.header.phases.last_mut() {
            last.capacity += self.header.device_count.saturating_sub(planned);
        }
        self.stats.add(DeviceStatus::Pending, 1);
        self.publisher.statistics_changed();
        let membership = Membership {
            created: self.header.created.unix_timestamp_nanos(),
            deployment: self.header.id,
        };
        self.fleet.add_all(std::iter::once(key), membership);
        let (tenant, id) = (self.header.tenant.clone(), self.header.id);
        let writes = vec![
            self.tail.push(&tenant, id, device),
            Write::PutDeployment(Box::new(self.header.clone())),
        ];
        (true, self.commit(writes))
    }

    /// Hand writes to the store's committer if this node still holds the deployment, and
    /// acknowledge them only if it still does once they are durable ([`Fence`]).
    fn submit(&self, writes: Vec<Write>) -> Durable {
        let id = self.header.id;
        if !self.fence.holds() {
            return Box::pin(async move { Err(StoreError::LeaseLost(id)) });
        }
        let durable = self.store.submit(writes);
        let fence = self.fence.clone();
        Box::pin(async move {
            durable.await?;
            if fence.holds() {
                Ok(())
            } else {
                Err(StoreError::LeaseLost(id))
            }
        })
    }

    /// Another tenant's device cannot see this deployment (same answer as an unknown id).
    fn same_tenant(&self, tenant: &TenantId) -> Result<()> {
        if *tenant == self.header.tenant {
            Ok(())
        } else {
            Err(EngineError::NotFound("deployment"))
        }
    }

    fn schedule_phase_timer(&self, myself: &ActorRef<DeploymentMsg>) {
        if let Some(at) = plan::next_opening(&self.header.phases, self.clock.now()) {
            myself.send_after(self.clock.until(at), || DeploymentMsg::PhaseDue);
        }
    }

    /// The record of `device`, materialized if it was an untouched pending one.
    /// Every change to a device goes through here, so the device's handed-out update is
    /// forgotten first.
    fn record_mut(&mut self, device: &str) -> Option<&mut DeviceDeploymentRecord> {
        let key = device_key(&self.header.tenant, device);
        self.handouts.forget(key);
        self.devices.get_mut(key, device, self.header.created)
    }

    fn put(&self, rec: &DeviceDeploymentRecord) -> Write {
        Write::PutDevice {
            tenant: self.header.tenant.clone(),
            deployment: self.header.id,
            record: rec.clone(),
        }
    }

    /// Account a status change: statistics, fleet, the device's history, deployment status,
    /// the safety rules' counts.
    fn account(&mut self, device: &str, change: Change, writes: &mut Vec<Write>) {
        self.stats.moved(change.from, change.to);
        self.publisher.statistics_changed();
        self.watch(device, change);
        if change.to.is_terminal() {
            let key = device_key(&self.header.tenant, device);
            self.fleet.remove(key, self.header.id);
            self.fleet
                .prune_older(key, self.header.created.unix_timestamp_nanos());
            writes.push(Write::PutLastFinished {
                tenant: self.header.tenant.clone(),
                device: device.to_owned(),
                created_nanos: self.header.created.unix_timestamp_nanos(),
            });
        }
        crate::metrics::status_changed(&self.header, change);
    }

    fn commit(&mut self, mut writes: Vec<Write>) -> Ack {
        writes.extend(self.refresh_status());
        if writes.is_empty() {
            return Ack(None);
        }
        Ack(Some(self.submit(writes)))
    }

    /// Recompute the deployment status; the header write if it changed.
    fn refresh_status(&mut self) -> Vec<Write> {
        let now = self.clock.now();
        let status = if self.is_done() {
            DeploymentStatus::Finished
        } else if self.stats.started() > 0 || self.header.status == DeploymentStatus::Inprogress {
            // `pending` until a device goes past pending; being handed the update is not
            // enough. Once in progress it stays so, also when a failed device goes back to
            // pending for a retry.
            DeploymentStatus::Inprogress
        } else if self.header.phases.first().is_some_and(|p| p.start_ts > now) {
            DeploymentStatus::Scheduled
        } else {
            DeploymentStatus::Pending
        };
        if status == self.header.status {
            return Vec::new();
        }
        if status == DeploymentStatus::Finished {
            return self.finish_writes();
        }
        self.header.status = status;
        vec![Write::PutDeployment(Box::new(self.header.clone()))]
    }

    fn finish_writes(&mut self) -> Vec<Write> {
        self.fleet.release(self.header.id);
        self.header.status = DeploymentStatus::Finished;
        self.header.finished.get_or_insert(self.clock.now());
        let snapshot = self.snapshot();
        self.header.final_statistics = Some(FinalStatistics {
            status: snapshot.stats.by_status(),
            total_size: snapshot.total_size,
        });
        crate::metrics::deployment_finished(&self.header);
        vec![Write::PutDeployment(Box::new(self.header.clone()))]
    }

    fn put_by_id(&self, device: &str) -> Write {
        match self.devices.get(device_key(&self.header.tenant, device)) {
            Some(rec) => self.put(rec),
            None => self.put(&DeviceDeploymentRecord::pending(
                device.to_owned(),
                self.header.created,
            )),
        }
    }

    fn report(
        &mut self,
        device: &str,
        status: DeviceStatus,
        substate: Option<String>,
        older_first: bool,
    ) -> Result<Ack> {
        let now = self.clock.now();
        let terms = device::Terms::of(&self.header);
        let mut rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        let unadmitted = rec.status == DeviceStatus::Pending && rec.phase.is_none();
        if unadmitted && device::reportable(status) && !terms.aborted {
            let phase = self.admit_reporter(now, older_first)?;
            rec = self
                .record_mut(device)
                .ok_or(EngineError::NotFound("device in deployment"))?;
            rec.phase = Some(phase);
        }
        let reported = device::report(rec, status, substate, terms, now).map_err(report_error)?;
        let mut writes = match reported {
            Reported::Unchanged => return Ok(Ack(None)),
            Reported::Substate | Reported::Moved(_) => vec![self.put_by_id(device)],
        };
        if let Reported::Moved(change) = reported {
            self.account(device, change, &mut writes);
        }
        Ok(self.commit(writes))
    }

    /// Before a check-in that would find no artifact for its device type (and finish the
    /// device `noartifact`), take up any artifact of the release uploaded since for that
    /// type: the contract chooses among the release's artifacts at check-in, as upstream
    /// does. The search reads the tenant's artifacts, so it runs at most once a second.
    async fn find_artifact_for(&mut self, device: &str, device_type: &str) -> Result<()> {
        // Cheapest first: on the usual check-in an artifact fits and nothing else is read.
        if self.artifacts.iter().any(|a| installs_on(a, device_type)) {
            return Ok(());
        }
        let now = self.clock.now();
        let recent = self
            .artifacts_searched
            .is_some_and(|t| now - t < time::Duration::SECOND);
        let key = device_key(&self.header.tenant, device);
        let undelivered = self
            .devices
            .untouched_or(key, |r| !r.status.is_terminal() && r.artifact_id.is_none());
        if recent || !undelivered {
            return Ok(());
        }
        self.artifacts_searched = Some(now);
        let known: HashSet<Uuid> = self.artifacts.iter().map(|a| a.id).collect();
        let new: Vec<ArtifactRecord> = self
            .store
            .artifacts(&self.header.tenant)
            .await?
            .into_iter()
            .filter(|a| a.meta.name == self.header.artifact_name && !known.contains(&a.id))
            .filter(|a| installs_on(a, device_type))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        for a in new {
            tracing::info!(deployment = %self.header.id, artifact = %a.id, device_type, "taking up an artifact of the release uploaded since the deployment was created");
            self.header.artifacts.push(a.id);
            self.artifacts.push(Arc::new(a));
        }
        // Recorded before any device is handed it: a restart must find it, and the
        // artifact service must see it in use.
        self.commit(vec![Write::PutDeployment(Box::new(self.header.clone()))])
            .durable()
            .await
    }

    /// A device that was never admitted and reports progress (it lost its check-in's
    /// answer, or never asked) is admitted now, as that check-in would have admitted it;
    /// while its phase is closed or full, or the safety rules let no device start, its
    /// report is refused, so that a report cannot jump the phases; and so it is while the
    /// device has an older unfinished deployment, which its check-in would be served first.
    fn admit_reporter(&mut self, now: time::OffsetDateTime, older_first: bool) -> Result<u32> {
        if older_first {
            return Err(EngineError::Conflict(
                "the device has an older deployment it has not finished, which its check-in \
                 is served first: it takes part in this one after that"
                    .into(),
            ));
        }
        let admitted = if self.may_start(now) {
            self.admit_new(now)
        } else {
            None
        };
        let Some(phase) = admitted else {
            return Err(EngineError::Conflict(
                "the device has not been admitted to this deployment yet (its phase has not \
                 opened, is full, or the deployment lets no device start now): check in first"
                    .into(),
            ));
        };
        self.started(now);
        Ok(phase)
    }

    fn upload_log(&mut self, device: &str, messages: Vec<LogMessage>) -> Result<Ack> {
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        rec.log = true;
        let writes = vec![
            self.put_by_id(device),
            Write::PutLog {
                tenant: self.header.tenant.clone(),
                deployment: self.header.id,
                device: device.to_owned(),
                messages,
            },
        ];
        Ok(self.commit(writes))
    }

    /// The ids of every device, from the store's device list (the actor keeps only keys).
    async fn device_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .device_list(&self.header.tenant, self.header.id)
            .await?)
    }

    async fn abort(&mut self) -> Result<Ack> {
        let now = self.clock.now();
        let mut writes = Vec::new();
        for id in self.device_ids().await? {
            let Some(rec) = self.record_mut(&id) else {
                continue;
            };
            if let Some(c) = device::interrupt(rec, DeviceStatus::Aborted, now) {
                writes.push(self.put_by_id(&id));
                self.account(&id, c, &mut writes);
            }
        }
        self.header.aborted = true;
        writes.extend(self.finish_writes());
        Ok(Ack(Some(self.submit(writes))))
    }

    fn decommission(&mut self, device: &str) -> Ack {
        let now = self.clock.now();
        let Some(rec) = self.record_mut(device) else {
            return Ack(None);
        };
        let Some(change) = device::interrupt(rec, DeviceStatus::Decommissioned, now) else {
            return Ack(None);
        };
        let mut writes = vec![self.put_by_id(device)];
        self.account(device, change, &mut writes);
        self.commit(writes)
    }

    fn snapshot(&self) -> Snapshot {
        let artifacts = &self.artifacts;
        Snapshot {
            header: self.header.clone(),
            stats: self.stats.clone(),
            total_size: total_size(self.devices.records(), |id| {
                artifacts.iter().find(|a| a.id == id).map(|a| a.size)
            }),
        }
    }

    async fn device_records(&self) -> Result<Vec<DeviceDeploymentRecord>> {
        let tenant = &self.header.tenant;
        let mut out: Vec<DeviceDeploymentRecord> = self
            .device_ids()
            .await?
            .into_iter()
            .map(|id| match self.devices.get(device_key(tenant, &id)) {
                Some(r) => r.clone(),
                None => DeviceDeploymentRecord::pending(id, self.header.created),
            })
            .collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }
}

/// The bytes of the artifacts `records` were handed, sizes looked up by artifact id.
pub(crate) fn total_size<'a>(
    records: impl Iterator<Item = &'a DeviceDeploymentRecord>,
    size_of: impl Fn(Uuid) -> Option<u64>,
) -> u64 {
    records
        .filter_map(|r| r.artifact_id)
        .filter_map(size_of)
        .sum()
}

/// Index the devices of a deployment another node runs (its memberships, as a starting
/// actor would add them), without running it here.
pub(crate) async fn index_only(args: DeploymentArgs) -> Result<()> {
    DeploymentState::load(args).await.map(drop)
}

/// Add the devices in chunks `from..` of a deployment's list to the fleet index: members
/// that joined a dynamic deployment another node runs. Devices already indexed are added
/// again harmlessly; one that finished meanwhile is pruned at its next check-in (the owner
/// answers `Over`). The number of chunks read up to.
pub(crate) async fn index_chunks(
    store: &dyn MetaStore,
    fleet: &Fleet,
    header: &DeploymentRecord,
    from: u32,
) -> Result<u32> {
    let membership = Membership {
        created: header.created.unix_timestamp_nanos(),
        deployment: header.id,
    };
    let mut chunk = from;
    while let Some(ids) = store
        .device_list_chunk(&header.tenant, header.id, chunk)
        .await?
    {
        let keys = ids.iter().map(|d| device_key(&header.tenant, d));
        fleet.add_all(keys, membership);
        chunk += 1;
    }
    Ok(chunk)
}

/// Abort a deployment whose actor is not running, through the same code as an operator's
/// abort: the supervisor's last resort for a deployment whose actor keeps crashing.
pub(crate) async fn abort_stopped(args: DeploymentArgs) -> Result<()> {
    let mut state = DeploymentState::load(args).await?;
    if state.header.status == DeploymentStatus::Finished {
        return Ok(());
    }
    state.abort().await?.durable().await
}

/// Whether the tenant has a deployment created after `header`'s.
async fn newer_deployment_exists(
    store: &dyn MetaStore,
    tenant: &TenantId,
    header: &DeploymentRecord,
) -> Result<bool> {
    let all = store.deployments(tenant).await?;
    Ok(all.iter().any(|d| d.created > header.created))
}

/// The keys of those `devices` that finished a deployment created after `created`.
async fn finished_newer(
    store: &dyn MetaStore,
    tenant: &TenantId,
    devices: Vec<String>,
    created: i128,
) -> Result<Vec<DeviceKey>> {
    let last = store.last_finished(tenant, &devices).await?;
    Ok(devices
        .iter()
        .zip(last)
        .filter(|(_, finished)| finished.is_some_and(|t| t > created))
        .map(|(d, _)| device_key(tenant, d))
        .collect())
}

/// The deployment's artifacts by the ids it records, so that a later artifact of the same
/// release that it did not take up (which the artifact service may delete at any time) is
/// never handed out.
async fn load_artifacts(
    store: &dyn MetaStore,
    header: &DeploymentRecord,
) -> Result<Vec<Arc<ArtifactRecord>>> {
    if header.artifacts.is_empty() {
        // Deployments stored before their artifact ids were recorded: by release name.
        return Ok(store
            .artifacts(&header.tenant)
            .await?
            .into_iter()
            .filter(|a| a.meta.name == header.artifact_name)
            .map(Arc::new)
            .collect());
    }
    let mut out = Vec::with_capacity(header.artifacts.len());
    for id in &header.artifacts {
        if let Some(a) = store.artifact(&header.tenant, *id).await? {
            out.push(Arc::new(a));
        }
    }
    Ok(out)
}

pub(crate) fn report_error(e: ReportError) -> EngineError {
    match e {
        ReportError::NotReportable(_) => EngineError::Invalid(e.to_string()),
        ReportError::Over(_) => EngineError::Conflict(e.to_string()),
    }
}
