//! Where a request for a deployment runs: on this node's actor for the deployment, or, in a
//! cluster, forwarded to the node that owns it. Requests and answers are plain data
//! ([`Request`], [`Answer`]) so they can cross the wire; a request forwarded to a node runs
//! there only on a local actor, never forwarded again.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use storage::{
    DeploymentStatus, DeviceDeploymentRecord, DeviceStatus, LogMessage, TenantId, UpdateControlMap,
};
use uuid::Uuid;

use super::ask::{ASK_TIMEOUT, RESTART_WAIT};
use super::DeploymentService;
use crate::cluster::gateway::GatewayMsg;
use crate::deployment::actor::{Ack, CheckInOutcome, DeploymentMsg, Snapshot};
use crate::error::{EngineError, Result};

/// An operation on one deployment's actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    CheckIn {
        device: String,
        device_type: String,
        artifact_name: String,
    },
    Report {
        device: String,
        status: DeviceStatus,
        substate: Option<String>,
        /// The device has an older deployment it has not finished (by the fleet index of
        /// the node it reported to): its check-in would be served that one first.
        older_first: bool,
    },
    UploadLog {
        device: String,
        messages: Vec<LogMessage>,
    },
    Abort,
    SetPaused {
        paused: bool,
    },
    Approve {
        phase: usize,
    },
    SetControlMap {
        map: UpdateControlMap,
    },
    ControlMap {
        device: String,
    },
    Decommission {
        device: String,
    },
    Join {
        device: String,
    },
    Snapshot,
    Devices,
}

/// The answer of the deployment's actor, once what it changed is durable.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    CheckIn(CheckInOutcome),
    Done,
    /// Whether a device joined a dynamic deployment.
    Joined(bool),
    /// Boxed: by far the largest variant.
    Snapshot(Box<Snapshot>),
    Devices(Vec<DeviceDeploymentRecord>),
    ControlMap(UpdateControlMap),
}

/// A forwarded request, as it crosses the wire. The sending node has done the checks the
/// local path does (the tenant owns the deployment); the owner trusts it, as nodes prove
/// the cluster's cookie when they link.
#[derive(Serialize, Deserialize)]
struct Forward {
    tenant: TenantId,
    deployment: Uuid,
    request: Request,
}

/// The owner's reply: `Ok(None)` when it has no actor for the deployment (it finished, or
/// the owner just lost it).
type Reply = std::result::Result<Option<Answer>, WireError>;

/// An [`EngineError`] as it crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    NotFound(String),
    Invalid(String),
    Conflict(String),
    Unprocessable(String),
    Unavailable { reason: String, retry_after_ms: u64 },
    Other(String),
}

impl From<EngineError> for WireError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => WireError::NotFound(what.to_owned()),
            EngineError::Invalid(m) => WireError::Invalid(m),
            EngineError::Conflict(m) => WireError::Conflict(m),
            EngineError::Unprocessable(m) => WireError::Unprocessable(m),
            EngineError::Unavailable {
                reason,
                retry_after,
            } => WireError::Unavailable {
                reason,
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for EngineError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound(what) => EngineError::NotFound(not_found_subject(&what)),
            WireError::Invalid(m) => EngineError::Invalid(m),
            WireError::Conflict(m) => EngineError::Conflict(m),
            WireError::Unprocessable(m) => EngineError::Unprocessable(m),
            WireError::Unavailable {
                reason,
                retry_after_ms,
            } => EngineError::Unavailable {
                reason,
                retry_after: Duration::from_millis(retry_after_ms),
            },
            WireError::Other(m) => EngineError::Internal(format!("on the owning node: {m}")),
        }
    }
}

/// The subjects the deployment actors report as not found.
fn not_found_subject(what: &str) -> &'static str {
    match what {
        "deployment" => "deployment",
        "device in deployment" => "device in deployment",
        "unfinished device in deployment" => "unfinished device in deployment",
        "deployment log" => "deployment log",
        _ => "resource",
    }
}

/// How long a caller waits for a deployment without a live owner (the previous one died or
/// gave it up) to be claimed by some node, before it is told to come back.
const OWNERLESS_WAIT: Duration = Duration::from_secs(5);
/// Between two looks at an ownerless deployment.
const OWNERLESS_POLL: Duration = Duration::from_millis(100);

/// Who runs a deployment, as far as this node can tell.
enum Owner {
    /// It has finished (or does not exist): the store answers.
    Finished,
    /// Another node, reachable through its gateway.
    Node(String),
    /// Nobody right now, or this node is about to start it: wait.
    Pending,
}

impl DeploymentService {
    /// Run `request` on the deployment's actor, here or on its owner. `Ok(None)` when the
    /// deployment has no actor anywhere because it has finished: the caller answers from
    /// the store. `wait` bounds the wait for an actor being restarted here.
    pub(crate) async fn perform(
        &self,
        tenant: &TenantId,
        id: Uuid,
        request: Request,
        wait: Duration,
    ) -> Result<Option<Answer>> {
        if let Some(answer) = self.perform_local(tenant, id, &request, wait).await? {
            return Ok(Some(answer));
        }
        if self.cluster.is_none() {
            return Ok(None);
        }
        // A caller that does not wait (a listing) gets one look at the owner.
        let patience = if wait.is_zero() {
            Duration::ZERO
        } else {
            OWNERLESS_WAIT.max(wait)
        };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.owner(tenant, id).await? {
                Owner::Finished => return Ok(None),
                Owner::Node(node) => {
                    if let Some(answer) = self.forward(tenant, id, &node, &request).await? {
                        return Ok(Some(answer));
                    }
                }
                Owner::Pending => {
                    if let Some(answer) = self.perform_local(tenant, id, &request, wait).await? {
                        return Ok(Some(answer));
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Unavailable {
                    reason: format!("deployment {id} is moving to another node"),
                    retry_after: Duration::from_secs(1),
                });
            }
            tokio::time::sleep(OWNERLESS_POLL).await;
        }
    }

    /// Run `request` on this node's actor for the deployment; `None` if it has none.
    pub(super) async fn perform_local(
        &self,
        tenant: &TenantId,
        id: Uuid,
        request: &Request,
        wait: Duration,
    ) -> Result<Option<Answer>> {
        let answer = match request {
            Request::CheckIn {
                device,
                device_type,
                artifact_name,
            } => {
                let build = |reply| DeploymentMsg::CheckIn {
                    device: device.clone(),
                    device_type: device_type.clone(),
                    artifact_name: artifact_name.clone(),
                    reply,
                };
                let Some(reply) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                let reply = reply?;
                reply.ack.durable().await?;
                Answer::CheckIn(reply.outcome)
            }
            Request::Report {
                device,
                status,
                substate,
                older_first,
            } => {
                let build = |reply| DeploymentMsg::ReportStatus {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    status: *status,
                    substate: substate.clone(),
                    older_first: *older_first,
                    reply,
                };
                return self.change(id, build, wait).await;
            }
            Request::UploadLog { device, messages } => {
                let build = |reply| DeploymentMsg::UploadLog {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    messages: messages.clone(),
                    reply,
                };
                return self.change(id, build, wait).await;
            }
            Request::Abort => {
                return self
                    .change(id, |reply| DeploymentMsg::Abort { reply }, wait)
                    .await;
            }
            Request::SetPaused { paused } => {
                let build = |reply| DeploymentMsg::SetPaused {
                    paused: *paused,
                    reply,
                };
                return self.change(id, build, wait).await;
            }
            Request::Approve { phase } => {
                let build = |reply| DeploymentMsg::Approve {
                    phase: *phase,
                    reply,
                };
                return self.change(id, build, wait).await;
            }
            Request::SetControlMap { map } => {
                let build = |reply| DeploymentMsg::SetControlMap {
                    map: map.clone(),
                    reply,
                };
                return self.change(id, build, wait).await;
            }
            Request::ControlMap { device } => {
                let build = |reply| DeploymentMsg::ControlMap {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    reply,
                };
                let Some(map) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                Answer::ControlMap(map?)
            }
            Request::Decommission { device } => {
                let build = |reply| DeploymentMsg::Decommission {
                    device: device.clone(),
                    reply,
                };
                let Some(ack) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                ack.durable().await?;
                Answer::Done
            }
            Request::Join { device } => {
                let build = |reply| DeploymentMsg::Join {
                    device: device.clone(),
                    reply,
                };
                let Some((joined, ack)) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                ack.durable().await?;
                Answer::Joined(joined)
            }
            Request::Snapshot => {
                let build = |reply| DeploymentMsg::Snapshot { reply };
                let Some(s) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                Answer::Snapshot(Box::new(s))
            }
            Request::Devices => {
                let build = |reply| DeploymentMsg::Devices { reply };
                let Some(records) = self.ask(id, build, wait).await? else {
                    return Ok(None);
                };
                Answer::Devices(records?)
            }
        };
        Ok(Some(answer))
    }

    /// Ask the actor for a change, and answer once it is durable.
    async fn change(
        &self,
        id: Uuid,
        build: impl Fn(RpcReplyPort<Result<Ack>>) -> DeploymentMsg,
        wait: Duration,
    ) -> Result<Option<Answer>> {
        let Some(ack) = self.ask(id, build, wait).await? else {
            return Ok(None);
        };
        ack?.durable().await?;
        Ok(Some(Answer::Done))
    }

    /// Who runs the deployment: the lease this node last saw, or the store's when that
    /// one names this node, has lapsed, or is unknown.
    async fn owner(&self, tenant: &TenantId, id: Uuid) -> Result<Owner> {
        let Some(cluster) = &self.cluster else {
            return Ok(Owner::Finished);
        };
        if let Some(node) = cluster.live_owner(id) {
            if node != cluster.node_id() {
                return Ok(Owner::Node(node));
            }
        }
        match self.store.deployment(tenant, id).await? {
            None => return Ok(Owner::Finished),
            Some(d) if d.status == DeploymentStatus::Finished => return Ok(Owner::Finished),
            Some(_) => {}
        }
        let lease = self.store.lease(tenant, id).await?;
        let now = time::OffsetDateTime::now_utc();
        Ok(match lease {
            Some(l) if l.expires > now && l.owner != cluster.node_id() => {
                let node = l.owner.clone();
                cluster.saw(l);
                Owner::Node(node)
            }
            _ => Owner::Pending,
        })
    }

    /// Send `request` to `node`'s gateway. `None` when that node does not run the
    /// deployment (any more), or cannot be reached: the caller looks for the owner again.
    async fn forward(
        &self,
        tenant: &TenantId,
        id: Uuid,
        node: &str,
        request: &Request,
    ) -> Result<Option<Answer>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let Some(gateway) = cluster.gateway(node).await else {
            cluster.forget_owner(id);
            return Ok(None);
        };
        let body = serde_json::to_vec(&Forward {
            tenant: tenant.clone(),
            deployment: id,
            request: request.clone(),
        })
        .map_err(|e| EngineError::Internal(format!("encoding a forwarded request: {e}")))?;
        crate::metrics::forwarded();
        let call = gateway
            .call(
                |reply| GatewayMsg::Forward(body.clone(), reply),
                Some(ASK_TIMEOUT),
            )
            .await;
        let bytes = match call {
            Ok(CallResult::Success(b)) => b,
            Ok(CallResult::Timeout) => {
                return Err(EngineError::Unavailable {
                    reason: format!("node {node} did not answer for deployment {id}"),
                    retry_after: Duration::from_secs(5),
                })
            }
            Ok(CallResult::SenderError) | Err(_) => {
                cluster.forget_owner(id);
                return Ok(None);
            }
        };
        let reply: Reply = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Internal(format!("decoding a forwarded answer: {e}")))?;
        match reply {
            Ok(Some(answer)) => Ok(Some(answer)),
            Ok(None) => {
                cluster.forget_owner(id);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Run a request another node forwarded, on this node's actor only.
    pub(crate) async fn serve_forwarded(&self, body: &[u8]) -> Vec<u8> {
        let reply: Reply = match serde_json::from_slice::<Forward>(body) {
            Ok(f) => self
                .perform_local(&f.tenant, f.deployment, &f.request, RESTART_WAIT)
                .await
                .map_err(WireError::from),
            Err(e) => Err(WireError::Invalid(format!(
                "undecodable forwarded request: {e}"
            ))),
        };
        serde_json::to_vec(&reply).unwrap_or_else(|e| {
            let fallback: Reply = Err(WireError::Other(format!("encoding the answer: {e}")));
            serde_json::to_vec(&fallback).unwrap_or_default()
        })
    }
}

/// An unexpected answer for the request sent (a bug, or nodes of different versions).
pub(crate) fn unexpected(answer: Answer) -> EngineError {
    EngineError::Internal(format!("unexpected answer from a deployment: {answer:?}"))
}
