//! The safety rules as the actor applies them: counting outcomes for the auto-abort and
//! acting when it trips, holding new starts to the pacing rate, pausing and resuming, and
//! failing devices stuck in progress past the timeout.

use std::time::Duration;

use ractor::ActorRef;
use storage::{AbortAction, DeviceStatus, EndAction, UpdateControlMap, Write};
use time::OffsetDateTime;

use super::{Ack, DeploymentMsg, DeploymentState};
use crate::deployment::device::{self, Change, Reported};
use crate::deployment::events::DeploymentEvent;
use crate::deployment::fleet::device_key;
use crate::deployment::safety;
use crate::error::{EngineError, Result};

impl DeploymentState {
    /// Count a status change for the auto-abort and the timeout; note the auto-abort's
    /// verdict if this change trips it (acted on by [`Self::trip`] once the message that
    /// caused it is answered).
    pub(super) fn watch(&mut self, device: &str, change: Change) {
        let key = device_key(&self.header.tenant, device);
        let phase = self.devices.get(key).and_then(|r| r.phase);
        self.tally.moved(phase, Some(change.from), change.to);
        if self.header.safety.device_timeout_secs.is_some() {
            self.timeouts.moved(key, change, self.clock.now());
        }
        let safety = &self.header.safety;
        if let (Some(rule), None, None) = (&safety.auto_abort, &safety.abort_reason, &self.tripped)
        {
            self.tripped = self.tally.verdict(rule);
        }
    }

    /// The auto-abort tripped: record why, then abort, or stop admitting devices.
    pub(super) async fn trip(&mut self, reason: String) -> Result<()> {
        let action = self
            .header
            .safety
            .auto_abort
            .map(|r| r.action)
            .unwrap_or_default();
        tracing::warn!(deployment = %self.header.id, %reason, ?action, "auto-abort tripped");
        crate::metrics::auto_aborted(action);
        self.publisher.publish(|| DeploymentEvent::AutoAbort {
            reason: reason.clone(),
            action,
        });
        self.header.safety.abort_reason = Some(reason);
        match action {
            // Rare, and final: wait for it, so that whoever asks next (the actor stops once
            // the deployment finished) reads it from the store.
            AbortAction::Abort => self.abort().await?.durable().await?,
            // Nobody waits on this change; the committer makes it durable.
            AbortAction::StopAdmitting => {
                self.header.safety.halted = true;
                drop(self.submit(vec![Write::PutDeployment(Box::new(self.header.clone()))]));
            }
        }
        Ok(())
    }

    /// Whether a device that has not started this attempt may start it now (not paused,
    /// not halted, before the end, inside a maintenance window, within the pacing rate).
    pub(super) fn may_start(&mut self, now: OffsetDateTime) -> bool {
        let safety = &self.header.safety;
        if !safety.admits() || safety.end.is_some_and(|e| now >= e.at) {
            return false;
        }
        if !self.windows.open(now) {
            return false;
        }
        let succeeded = self.stats.get(DeviceStatus::Success);
        match &self.header.safety.pacing {
            Some(p) => self.pacer.allows(p, succeeded, now),
            None => true,
        }
    }

    /// A device started an attempt now (counts against the pacing rate).
    pub(super) fn started(&mut self, now: OffsetDateTime) {
        if self.header.safety.pacing.is_some() {
            self.pacer.started(now);
        }
    }

    /// Pause, or resume (which also lifts an auto-abort's stop on admitting; the reason
    /// stays on record and the rule does not trip again).
    pub(super) fn set_paused(&mut self, paused: bool) -> Ack {
        let before = self.header.safety.clone();
        self.header.safety.paused = paused;
        if !paused {
            self.header.safety.halted = false;
        }
        if self.header.safety == before {
            return Ack(None);
        }
        tracing::info!(deployment = %self.header.id, paused, "deployment {}", if paused { "paused" } else { "resumed" });
        self.publisher.publish(|| {
            if paused {
                DeploymentEvent::Paused
            } else {
                DeploymentEvent::Resumed
            }
        });
        self.commit(vec![Write::PutDeployment(Box::new(self.header.clone()))])
    }

    /// Replace the update control map; devices get the new one at their next check-in or
    /// map refresh.
    pub(super) fn set_control_map(&mut self, map: UpdateControlMap) -> Ack {
        if self.header.safety.update_control_map.as_ref() == Some(&map) {
            return Ack(None);
        }
        tracing::info!(deployment = %self.header.id, "update control map replaced");
        self.header.safety.update_control_map = Some(map.clone());
        self.handouts.set_control_map(Some(map));
        self.commit(vec![Write::PutDeployment(Box::new(self.header.clone()))])
    }

    /// The control map for a device of this deployment that has not finished it (no map
    /// set: one that lets every point continue).
    pub(super) fn control_map(&mut self, device: &str) -> Result<UpdateControlMap> {
        let rec = self
            .record_mut(device)
            .ok_or(EngineError::NotFound("device in deployment"))?;
        if rec.status.is_terminal() {
            return Err(EngineError::NotFound("unfinished device in deployment"));
        }
        Ok(self
            .header
            .safety
            .update_control_map
            .clone()
            .unwrap_or_default())
    }

    /// Approve phase `phase` (0-based): 404 if there is no such phase, 409 if it needs no
    /// approval; approving it again changes nothing.
    pub(super) fn approve(&mut self, phase: usize) -> Result<Ack> {
        let now = self.clock.now();
        let p = self
            .header
            .phases
            .get_mut(phase)
            .ok_or(EngineError::NotFound("phase"))?;
        if !p.needs_approval {
            return Err(EngineError::Conflict(format!(
                "phase {} does not need approval",
                phase + 1
            )));
        }
        if p.approved.is_some() {
            return Ok(Ack(None));
        }
        p.approved = Some(now);
        tracing::info!(deployment = %self.header.id, phase = phase + 1, "phase approved");
        let number = phase as u32 + 1;
        self.publisher
            .publish(|| DeploymentEvent::PhaseApproved { phase: number });
        Ok(self.commit(vec![Write::PutDeployment(Box::new(self.header.clone()))]))
    }

    /// Wake the actor at the deployment's end if it aborts then (stopping admission needs
    /// no timer: [`Self::may_start`] reads the time).
    pub(super) fn schedule_end(&self, myself: &ActorRef<DeploymentMsg>) {
        if let Some(end) = self.header.safety.end {
            if end.action == EndAction::Abort {
                myself.send_after(self.clock.until(end.at), || DeploymentMsg::EndDue);
            }
        }
    }

    /// The end time came: abort, recording why. False if it has not come yet (a timer
    /// that fired early), to be scheduled again.
    pub(super) async fn end_reached(&mut self) -> Result<bool> {
        let Some(end) = self.header.safety.end else {
            return Ok(true);
        };
        if self.clock.now() < end.at {
            return Ok(false);
        }
        let reason = format!("the deployment's end time ({}) passed", end.at);
        tracing::info!(deployment = %self.header.id, %reason, "deployment ended");
        self.header.safety.abort_reason = Some(reason);
        self.abort().await?.durable().await?;
        Ok(true)
    }

    pub(super) fn schedule_sweep(&self, myself: &ActorRef<DeploymentMsg>) {
        if let Some(t) = self.header.safety.device_timeout_secs {
            myself.send_after(safety::sweep_every(t), || DeploymentMsg::Sweep);
        }
    }

    /// Fail every device downloading, installing or rebooting for longer than the timeout
    /// (back to pending if it has attempts left, as a reported failure would); the ack of
    /// the writes.
    pub(super) fn time_out_stuck_devices(&mut self) -> Ack {
        let Some(secs) = self.header.safety.device_timeout_secs else {
            return Ack(None);
        };
        let now = self.clock.now();
        let terms = device::Terms::of(&self.header);
        let mut writes = Vec::new();
        for key in self.timeouts.expired(now - Duration::from_secs(secs)) {
            let Some(id) = self.devices.get(key).map(|r| r.device_id.clone()) else {
                continue;
            };
            let Some(rec) = self.record_mut(&id) else {
                continue;
            };
            let substate = format!("timed out: {} for over {secs} s", rec.status.as_str());
            let Ok(Reported::Moved(change)) =
                device::report(rec, DeviceStatus::Failure, Some(substate), terms, now)
            else {
                continue;
            };
            crate::metrics::device_timed_out();
            writes.push(self.put_by_id(&id));
            self.account(&id, change, &mut writes);
        }
        self.commit(writes)
    }
}
