//! Check-ins: what a device gets when it asks for an update, and the side effects the
//! device API defines (`already-installed`, `noartifact`, 409 on changed device data).

use std::sync::Arc;

use storage::{ArtifactRecord, DeviceStatus};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Ack, CheckInOutcome, CheckInReply, DeploymentState};
use crate::deployment::device::{self, Change};
use crate::deployment::events::DeploymentEvent;
use crate::deployment::fleet::device_key;
use crate::deployment::plan;
use crate::error::{EngineError, Result};

impl DeploymentState {
    /// A device checks in. In order: a finished device gets nothing; a device that reports
    /// the release's name is already there (unless the deployment forces installation); a device whose data changed since the update was
    /// handed to it is in conflict; a device in the middle of the update gets it again; a
    /// pending one gets it if an artifact fits and its phase admits it.
    pub(super) fn check_in(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<CheckInReply> {
        let now = self.clock.now();
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        let delivered = rec.artifact_id;
        let changed = rec.device_type.as_deref() != Some(device_type)
            || rec.reported_artifact.as_deref() != Some(artifact_name);
        let status = rec.status;
        if status.is_terminal() {
            return Ok(CheckInReply {
                outcome: CheckInOutcome::Over,
                ack: Ack(None),
            });
        }
        let forced = self.header.force_installation;
        if status == DeviceStatus::Pending && artifact_name == self.header.artifact_name && !forced
        {
            return Ok(self.finish_at_check_in(
                device,
                device_type,
                artifact_name,
                DeviceStatus::AlreadyInstalled,
            ));
        }
        if delivered.is_some() && changed {
            return Ok(self.conflict(device, device_type, artifact_name, now));
        }
        if status != DeviceStatus::Pending {
            let Some(id) = delivered else {
                return self.hand_to_active(device, device_type, artifact_name);
            };
            return Ok(match self.artifact(id) {
                Some(a) => self.again(device, device_type, artifact_name, a),
                None => nothing(),
            });
        }
        let artifact = match delivered {
            Some(id) => self.artifact(id),
            None => self.choose_artifact(device_type),
        };
        let Some(artifact) = artifact else {
            return Ok(self.finish_at_check_in(
                device,
                device_type,
                artifact_name,
                DeviceStatus::Noartifact,
            ));
        };
        self.deliver(device, device_type, artifact_name, artifact, now)
    }

    /// Hand the update to a pending device once its phase admits it and the safety rules
    /// let it start (not paused or halted, within the pacing rate). Repeated check-ins of
    /// the same attempt count once.
    fn deliver(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        artifact: Arc<ArtifactRecord>,
        now: OffsetDateTime,
    ) -> Result<CheckInReply> {
        let known = self.devices.get(device_key(&self.header.tenant, device));
        let admitted = known.and_then(|r| r.phase);
        if known.is_some_and(|r| r.artifact_id == Some(artifact.id)) {
            // The same attempt asking again (the device lost the answer, or polls before
            // it starts): nothing changes, nothing to write.
            return Ok(self.again(device, device_type, artifact_name, artifact));
        }
        if !self.may_start(now) {
            return Ok(nothing());
        }
        let Some(phase) = admitted.or_else(|| self.admit_new(now)) else {
            return Ok(nothing());
        };
        self.started(now);
        self.hand_out(device, device_type, artifact_name, artifact, Some(phase))
    }

    /// Count a device that was never admitted into the earliest open phase with room, if
    /// any (the caller has checked that the safety rules let a device start).
    pub(super) fn admit_new(&mut self, now: OffsetDateTime) -> Option<u32> {
        let tally = &self.tally;
        let gate_passed = |i: usize, g: &storage::PhaseGate| tally.gate_passed(i, g);
        let phase = plan::admit(&mut self.header.phases, now, gate_passed)?;
        let first = self
            .header
            .phases
            .get(phase as usize)
            .map(|p| p.device_count)
            == Some(1);
        if first {
            self.publisher
                .publish(|| DeploymentEvent::PhaseStarted { phase: phase + 1 });
        }
        Some(phase)
    }

    /// A device that reported progress before it was ever handed the update is active in
    /// this deployment all the same, and the oldest deployment a device is active in is
    /// the one its check-in gets: it is handed the update now (or finishes `noartifact`).
    fn hand_to_active(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<CheckInReply> {
        let Some(artifact) = self.choose_artifact(device_type) else {
            return Ok(self.finish_at_check_in(
                device,
                device_type,
                artifact_name,
                DeviceStatus::Noartifact,
            ));
        };
        self.hand_out(device, device_type, artifact_name, artifact, None)
    }

    /// Record that `device` was handed `artifact`, with the data it asked with (a later
    /// check-in with other data is a conflict), and answer with the update once durable.
    /// `admitted`: the phase a new attempt was admitted into (it counts as an attempt);
    /// `None` for a device already past pending, whose report counted it.
    fn hand_out(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        artifact: Arc<ArtifactRecord>,
        admitted: Option<u32>,
    ) -> Result<CheckInReply> {
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        if let Some(phase) = admitted {
            rec.attempts += 1;
            rec.phase = Some(phase);
        }
        rec.device_type = Some(device_type.to_owned());
        rec.reported_artifact = Some(artifact_name.to_owned());
        rec.artifact_id = Some(artifact.id);
        let writes = vec![self.put_by_id(device)];
        Ok(CheckInReply {
            outcome: self.delivery(artifact),
            ack: self.commit(writes),
        })
    }

    /// A device that has the update and asks with the data it had then gets it again; so
    /// will its next asks, from the handouts, until the actor changes its record.
    fn again(
        &self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        artifact: Arc<ArtifactRecord>,
    ) -> CheckInReply {
        // A device reporting the release's name is `already-installed` unless the
        // deployment forces installation (fixed at creation): only the actor answers that.
        if self.header.force_installation || artifact_name != self.header.artifact_name {
            let key = device_key(&self.header.tenant, device);
            self.handouts
                .remember(key, artifact.clone(), device_type, artifact_name);
        }
        CheckInReply {
            outcome: self.delivery(artifact),
            ack: Ack(None),
        }
    }

    /// The update with the deployment's control map as it is now.
    fn delivery(&self, artifact: Arc<ArtifactRecord>) -> CheckInOutcome {
        CheckInOutcome::Deliver {
            artifact,
            control_map: self.header.safety.update_control_map.clone(),
        }
    }

    /// A check-in side effect that finishes the device (`already-installed`, `noartifact`).
    fn finish_at_check_in(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        to: DeviceStatus,
    ) -> CheckInReply {
        let now = self.clock.now();
        let mut writes = Vec::new();
        if let Some(rec) = self.record_mut(device) {
            rec.device_type = Some(device_type.to_owned());
            rec.reported_artifact = Some(artifact_name.to_owned());
            if let Some(c) = device::interrupt(rec, to, now) {
                writes.push(self.put_by_id(device));
                self.account(device, c, &mut writes);
            }
        }
        CheckInReply {
            outcome: CheckInOutcome::Finished(to),
            ack: self.commit(writes),
        }
    }

    /// The device reports other data than when it got the update: it fails (409).
    fn conflict(
        &mut self,
        device: &str,
        device_type: &str,
        artifact_name: &str,
        now: OffsetDateTime,
    ) -> CheckInReply {
        let mut writes = Vec::new();
        if let Some(rec) = self.record_mut(device) {
            let from = rec.status;
            device::set_status(rec, DeviceStatus::Failure, now);
            rec.substate = Some("device data changed during the deployment".into());
            writes.push(self.put_by_id(device));
            let to = DeviceStatus::Failure;
            self.account(device, Change { from, to }, &mut writes);
        }
        CheckInReply {
            outcome: CheckInOutcome::Conflict(format!(
                "device reported {device_type}/{artifact_name}, but started this deployment with another device type or artifact"
            )),
            ack: self.commit(writes),
        }
    }

    /// The release's artifact for a device type: the smallest compatible one.
    pub(super) fn choose_artifact(&self, device_type: &str) -> Option<Arc<ArtifactRecord>> {
        self.artifacts
            .iter()
            .filter(|a| installs_on(a, device_type))
            .min_by_key(|a| (a.size, a.id))
            .cloned()
    }

    fn artifact(&self, id: Uuid) -> Option<Arc<ArtifactRecord>> {
        self.artifacts.iter().find(|a| a.id == id).cloned()
    }
}

/// Whether `artifact` lists `device_type` among its compatible ones.
pub(super) fn installs_on(artifact: &ArtifactRecord, device_type: &str) -> bool {
    artifact
        .meta
        .device_types_compatible
        .iter()
        .any(|t| t == device_type)
}

fn nothing() -> CheckInReply {
    CheckInReply {
        outcome: CheckInOutcome::Nothing,
        ack: Ack(None),
    }
}
