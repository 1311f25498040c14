//! The deployment actor: one per unfinished deployment. It owns the deployment's device
//! records, phase timers, retry counters and statistics, and persists every change through
//! the store's group committer before the caller answers (each reply carries the
//! [`Durable`] future of its writes; the actor itself never waits for the disk, so many
//! messages share one fsync).

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use storage::{
    ArtifactRecord, DeploymentRecord, DeploymentStatus, DeviceDeploymentRecord, DeviceStatus,
    Durable, LogMessage, MetaStore, TenantId, Write,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::clock::Clock;
use super::device::{self, Change, ReportError};
use super::fleet::{Fleet, Membership};
use super::plan;
use super::stats::Statistics;
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
        /// Device id.
        device: String,
        /// New status.
        status: DeviceStatus,
        /// Optional substate.
        substate: Option<String>,
        /// Answer.
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A device uploads its deployment log.
    UploadLog {
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
        reply: RpcReplyPort<Vec<DeviceDeploymentRecord>>,
    },
    /// A phase's start time has come.
    PhaseDue,
    /// Fault injection: make the actor panic, to exercise supervision (tests and chaos
    /// drills only).
    #[doc(hidden)]
    Crash,
}

/// Acknowledgement of a change: resolves once the change is durable.
pub struct Ack(pub Option<Durable>);

impl Ack {
    /// Wait until the change is on disk.
    pub async fn durable(self) -> Result<()> {
        if let Some(d) = self.0 {
            d.await?;
        }
        Ok(())
    }
}

/// What a check-in gets.
pub enum CheckInOutcome {
    /// Install this artifact.
    Deliver(Box<ArtifactRecord>),
    /// Nothing now (waiting for a phase, or finished here as a side effect).
    Nothing,
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
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The header, with live phase counts and status.
    pub header: DeploymentRecord,
    /// Devices per status.
    pub stats: Statistics,
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
}

/// The actor (stateless; its state is [`DeploymentState`]).
pub struct DeploymentActor;

/// A deployment in memory.
pub struct DeploymentState {
    header: DeploymentRecord,
    /// Every device; `None` for a device still pending and never touched (most of a large
    /// fleet), which keeps memory small.
    devices: HashMap<Box<str>, Option<Box<DeviceDeploymentRecord>>>,
    stats: Statistics,
    /// The release's artifacts, loaded at start (artifacts in use cannot be deleted).
    artifacts: Vec<ArtifactRecord>,
    store: Arc<dyn MetaStore>,
    fleet: Fleet,
    clock: Clock,
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
        if state.stats.unfinished() == 0 {
            let writes = state.finish_writes();
            state.store.submit(writes).await?;
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
                let r = state.check_in(&device, &device_type, &artifact_name);
                let _ = reply.send(r);
            }
            DeploymentMsg::ReportStatus {
                device,
                status,
                substate,
                reply,
            } => {
                let _ = reply.send(state.report(&device, status, substate));
            }
            DeploymentMsg::UploadLog {
                device,
                messages,
                reply,
            } => {
                let _ = reply.send(state.upload_log(&device, messages));
            }
            DeploymentMsg::Abort { reply } => {
                let _ = reply.send(Ok(state.abort()));
            }
            DeploymentMsg::Decommission { device, reply } => {
                let _ = reply.send(state.decommission(&device));
            }
            DeploymentMsg::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
            DeploymentMsg::Devices { reply } => {
                let _ = reply.send(state.device_records());
            }
            DeploymentMsg::Crash => panic!("deployment actor crash requested"),
            DeploymentMsg::PhaseDue => {
                let writes = state.refresh_status();
                if !writes.is_empty() {
                    // Nobody waits on this change; the committer makes it durable.
                    drop(state.store.submit(writes));
                }
                state.schedule_phase_timer(&myself);
            }
        }
        if state.header.status == DeploymentStatus::Finished {
            myself.stop(Some("finished".into()));
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
        } = args;
        let mut header = store
            .deployment(&tenant, id)
            .await?
            .ok_or(EngineError::NotFound("deployment"))?;
        let list = store.device_list(&tenant, id).await?;
        let mut devices: HashMap<Box<str>, Option<Box<DeviceDeploymentRecord>>> = list
            .into_iter()
            .map(|d| (d.into_boxed_str(), None))
            .collect();
        for p in &mut header.phases {
            p.device_count = 0;
        }
        for rec in store.device_records(&tenant, id).await? {
            if let Some(phase) = rec.phase.and_then(|i| header.phases.get_mut(i as usize)) {
                phase.device_count += 1;
            }
            if let Some(slot) = devices.get_mut(rec.device_id.as_str()) {
                *slot = Some(Box::new(rec));
            }
        }
        let artifacts = store
            .artifacts(&tenant)
            .await?
            .into_iter()
            .filter(|a| a.meta.name == header.artifact_name)
            .collect();
        let stats = Statistics::count(devices.values().map(|slot| {
            slot.as_ref()
                .map(|r| &r.status)
                .unwrap_or(&DeviceStatus::Pending)
        }));
        let membership = Membership {
            created: header.created.unix_timestamp_nanos(),
            deployment: id,
        };
        fleet.add_all(
            &tenant,
            devices
                .iter()
                .filter(|(_, r)| r.as_ref().is_none_or(|r| !r.status.is_terminal()))
                .map(|(d, _)| &**d),
            membership,
        );
        Ok(DeploymentState {
            header,
            devices,
            stats,
            artifacts,
            store,
            fleet,
            clock,
        })
    }

    fn schedule_phase_timer(&self, myself: &ActorRef<DeploymentMsg>) {
        if let Some(at) = plan::next_opening(&self.header.phases, self.clock.now()) {
            myself.send_after(self.clock.until(at), || DeploymentMsg::PhaseDue);
        }
    }

    /// The record of `device`, materialized if it was an untouched pending one.
    fn record_mut(&mut self, device: &str) -> Option<&mut DeviceDeploymentRecord> {
        let created = self.header.created;
        let slot = self.devices.get_mut(device)?;
        Some(slot.get_or_insert_with(|| {
            Box::new(DeviceDeploymentRecord::pending(device.to_owned(), created))
        }))
    }

    fn put(&self, rec: &DeviceDeploymentRecord) -> Write {
        Write::PutDevice {
            tenant: self.header.tenant.clone(),
            deployment: self.header.id,
            record: rec.clone(),
        }
    }

    /// Account a status change: statistics, fleet, the device's history, deployment status.
    fn account(&mut self, device: &str, change: Change, writes: &mut Vec<Write>) {
        self.stats.moved(change.from, change.to);
        if change.to.is_terminal() {
            self.fleet
                .remove(&self.header.tenant, device, self.header.id);
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
        Ack(Some(self.store.submit(writes)))
    }

    /// Recompute the deployment status; the header write if it changed.
    fn refresh_status(&mut self) -> Vec<Write> {
        let now = self.clock.now();
        let status = if self.stats.unfinished() == 0 {
            DeploymentStatus::Finished
        } else if self.stats.started() > 0 || self.header.phases.iter().any(|p| p.device_count > 0)
        {
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
        vec![Write::PutDeployment(self.header.clone())]
    }

    fn finish_writes(&mut self) -> Vec<Write> {
        self.header.status = DeploymentStatus::Finished;
        self.header.finished.get_or_insert(self.clock.now());
        crate::metrics::deployment_finished(&self.header);
        vec![Write::PutDeployment(self.header.clone())]
    }

    fn check_in(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<CheckInReply> {
        let now = self.clock.now();
        let candidate = self.choose_artifact(device_type);
        let release = self.header.artifact_name.clone();
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        let mut writes = Vec::new();
        let outcome = match rec.status {
            s if s.is_terminal() => CheckInOutcome::Nothing,
            DeviceStatus::Pending => {
                return self.check_in_pending(
                    device,
                    device_type,
                    artifact_name,
                    candidate,
                    release,
                    now,
                );
            }
            _ if rec.device_type.as_deref() != Some(device_type)
                || rec.reported_artifact.as_deref() != Some(artifact_name) =>
            {
                let from = rec.status;
                device::set_status(rec, DeviceStatus::Failure, now);
                rec.substate = Some("device data changed during the deployment".into());
                writes.push(self.put_by_id(device));
                self.account(
                    device,
                    Change {
                        from,
                        to: DeviceStatus::Failure,
                    },
                    &mut writes,
                );
                CheckInOutcome::Conflict(format!(
                    "device reported {device_type}/{artifact_name}, but started this deployment as a different device type or artifact"
                ))
            }
            _ => match rec.artifact_id.and_then(|id| self.artifact(id)) {
                Some(a) => CheckInOutcome::Deliver(Box::new(a)),
                None => CheckInOutcome::Nothing,
            },
        };
        Ok(CheckInReply {
            outcome,
            ack: self.commit(writes),
        })
    }

    fn check_in_pending(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        artifact: Option<ArtifactRecord>,
        release: String,
        now: OffsetDateTime,
    ) -> Result<CheckInReply> {
        let mut writes = Vec::new();
        let side_effect = if artifact_name == release {
            Some(DeviceStatus::AlreadyInstalled)
        } else if artifact.is_none() {
            Some(DeviceStatus::Noartifact)
        } else {
            None
        };
        if let Some(to) = side_effect {
            let rec = self
                .record_mut(device)
                .ok_or(EngineError::NotFound("device in deployment"))?;
            rec.device_type = Some(device_type.to_owned());
            rec.reported_artifact = Some(artifact_name.to_owned());
            let change = device::interrupt(rec, to, now);
            writes.push(self.put_by_id(device));
            if let Some(c) = change {
                self.account(device, c, &mut writes);
            }
            return Ok(CheckInReply {
                outcome: CheckInOutcome::Nothing,
                ack: self.commit(writes),
            });
        }
        let admitted_phase = match self
            .devices
            .get(device)
            .and_then(|s| s.as_ref())
            .and_then(|r| r.phase)
        {
            Some(p) => Some(p),
            None => plan::admit(&mut self.header.phases, now),
        };
        let (Some(phase), Some(artifact)) = (admitted_phase, artifact) else {
            return Ok(CheckInReply {
                outcome: CheckInOutcome::Nothing,
                ack: Ack(None),
            });
        };
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        rec.phase = Some(phase);
        rec.attempts += 1;
        rec.device_type = Some(device_type.to_owned());
        rec.reported_artifact = Some(artifact_name.to_owned());
        rec.artifact_id = Some(artifact.id);
        writes.push(self.put_by_id(device));
        Ok(CheckInReply {
            outcome: CheckInOutcome::Deliver(Box::new(artifact)),
            ack: self.commit(writes),
        })
    }

    fn put_by_id(&self, device: &str) -> Write {
        match self.devices.get(device).and_then(|s| s.as_deref()) {
            Some(rec) => self.put(rec),
            None => self.put(&DeviceDeploymentRecord::pending(
                device.to_owned(),
                self.header.created,
            )),
        }
    }

    /// The release's artifact for a device type: the smallest compatible one.
    fn choose_artifact(&self, device_type: &str) -> Option<ArtifactRecord> {
        self.artifacts
            .iter()
            .filter(|a| {
                a.meta
                    .device_types_compatible
                    .iter()
                    .any(|t| t == device_type)
            })
            .min_by_key(|a| (a.size, a.id))
            .cloned()
    }

    fn artifact(&self, id: Uuid) -> Option<ArtifactRecord> {
        self.artifacts.iter().find(|a| a.id == id).cloned()
    }

    fn report(
        &mut self,
        device: &str,
        status: DeviceStatus,
        substate: Option<String>,
    ) -> Result<Ack> {
        let now = self.clock.now();
        let retries = self.header.retries;
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        let change = device::report(rec, status, substate, retries, now).map_err(report_error)?;
        let Some(change) = change else {
            return Ok(Ack(None));
        };
        let mut writes = vec![self.put_by_id(device)];
        self.account(device, change, &mut writes);
        Ok(self.commit(writes))
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

    fn interrupt_all(&mut self, to: DeviceStatus) -> Vec<Write> {
        let now = self.clock.now();
        let created = self.header.created;
        let mut changed = Vec::new();
        for (id, slot) in self.devices.iter_mut() {
            let rec = slot.get_or_insert_with(|| {
                Box::new(DeviceDeploymentRecord::pending(id.to_string(), created))
            });
            if let Some(c) = device::interrupt(rec, to, now) {
                changed.push((id.to_string(), c));
            }
        }
        let mut writes = Vec::with_capacity(changed.len() + 1);
        for (id, c) in changed {
            writes.push(self.put_by_id(&id));
            self.account(&id, c, &mut writes);
        }
        writes
    }

    fn abort(&mut self) -> Ack {
        let writes = self.interrupt_all(DeviceStatus::Aborted);
        self.header.aborted = true;
        let mut writes = writes;
        writes.extend(self.finish_writes());
        Ack(Some(self.store.submit(writes)))
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
        Snapshot {
            header: self.header.clone(),
            stats: self.stats.clone(),
        }
    }

    fn device_records(&self) -> Vec<DeviceDeploymentRecord> {
        let mut out: Vec<DeviceDeploymentRecord> = self
            .devices
            .iter()
            .map(|(id, slot)| match slot {
                Some(r) => (**r).clone(),
                None => DeviceDeploymentRecord::pending(id.to_string(), self.header.created),
            })
            .collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }
}

fn report_error(e: ReportError) -> EngineError {
    match e {
        ReportError::NotReportable(_) => EngineError::Invalid(e.to_string()),
        ReportError::Over(_) => EngineError::Conflict(e.to_string()),
    }
}
