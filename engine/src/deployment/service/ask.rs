//! Asking a deployment's actor: the one way the service talks to running deployments. It
//! tells a finished deployment (answered from the store) from one whose actor is being
//! restarted (waited for, bounded), and bounds how long an actor may take to answer.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::RpcReplyPort;
use uuid::Uuid;

use super::DeploymentService;
use crate::deployment::actor::DeploymentMsg;
use crate::deployment::supervisor::Slot;
use crate::error::{EngineError, Result};

/// How long a caller waits for a crashed deployment actor to be back before it is told to
/// try again later. A restart loads the deployment from the store: milliseconds for
/// thousands of devices, seconds for millions.
pub const RESTART_WAIT: Duration = Duration::from_secs(5);
/// When to try again after [`RESTART_WAIT`] ran out.
const RESTART_RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long a running deployment actor may take to answer one message. Past it, its mailbox
/// is backed up far beyond normal load, and callers are told to come back later (the
/// message itself stays queued and is still handled).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// When to try again after [`ASK_TIMEOUT`] ran out.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Counts one message in the actors' mailbox backlog for as long as it lives, so that a
/// caller that gives up (a client that disconnects drops the request's future) still takes
/// its message off the gauge.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        crate::metrics::message_sent();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::message_answered();
    }
}

impl DeploymentService {
    /// Ask a deployment's actor. `Ok(None)` when the deployment has no actor because it
    /// has finished (or does not exist): the caller answers from the store. For an
    /// unfinished deployment whose actor is being restarted, or died with the message in
    /// its mailbox, it waits up to `wait` for the new actor and asks that one;
    /// [`EngineError::Unavailable`] when that does not come in time or the actor does not
    /// answer within [`ASK_TIMEOUT`]. Never `None` for an unfinished deployment: answering
    /// such a request from the store would read a state the actor may be changing.
    pub(super) async fn ask<T: Send + 'static>(
        &self,
        id: Uuid,
        build: impl Fn(RpcReplyPort<T>) -> DeploymentMsg,
        wait: Duration,
    ) -> Result<Option<T>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = None;
        loop {
            match self.registry.slot(id) {
                None => return Ok(None),
                Some(Slot::Running(actor, _)) => {
                    let _in_flight = InFlight::new();
                    match actor.call(&build, Some(ASK_TIMEOUT)).await {
                        Ok(CallResult::Success(v)) => return Ok(Some(v)),
                        Ok(CallResult::Timeout) => {
                            return Err(EngineError::Unavailable {
                                reason: format!("deployment {id} is too busy to answer"),
                                retry_after: BUSY_RETRY_AFTER,
                            })
                        }
                        // The actor stopped before answering: it crashed (the supervisor
                        // restarts it) or finished (the registry drops it). Either way the
                        // registry is about to change.
                        Ok(CallResult::SenderError) | Err(_) => {}
                    }
                }
                Some(Slot::Starting) => {}
            }
            let Some(rx) = changes.as_mut() else {
                // Subscribe, then look again: a change made in between is not missed.
                changes = Some(self.registry.subscribe());
                continue;
            };
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(EngineError::Unavailable {
                    reason: format!("deployment {id} is being restarted"),
                    retry_after: RESTART_RETRY_AFTER,
                });
            }
        }
    }
}
