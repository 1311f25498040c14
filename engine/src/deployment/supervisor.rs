//! The supervisor: spawns one [`DeploymentActor`] per unfinished deployment, restarts a
//! crashed one from its persisted state, and keeps the registry of running actors.
//!
//! A crashed actor is restarted at once, within a budget of [`MAX_RESTARTS`] restarts per
//! [`RESTART_WINDOW`]. A deployment that crashes more often than that is taken to carry a
//! state its actor cannot handle, and the supervisor gives up on it: see [`give_up`] for what
//! that does. Nothing that goes wrong while restarting (a store error, a panic while giving
//! up) stops the supervisor itself: it logs, and tries again later.

mod budget;
mod registry;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use storage::{MetaStore, TenantId};
use uuid::Uuid;

use super::actor::{self, DeploymentActor, DeploymentArgs, Indexing};
use super::clock::Clock;
use super::fleet::Fleet;
use super::handouts::Handouts;
use crate::cluster::Fence;
use crate::error::{EngineError, Result};

pub use budget::{RestartBudget, MAX_RESTARTS, RESTART_WINDOW};
pub use registry::{Registry, Slot};

/// First delay before trying again a restart (or a give-up) that failed; it doubles on each
/// failure, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Supervisor messages.
pub enum SupervisorMsg {
    /// Start the actor of a persisted deployment.
    Start {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        id: Uuid,
        /// [`Indexing::New`] on creation, [`Indexing::Rehydrate`] at server start-up.
        indexing: Indexing,
        /// Until when this node may write for it; kept across restarts.
        fence: Fence,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
    /// Try again to restart a crashed deployment's actor (the previous try failed).
    Restart {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        id: Uuid,
        /// Tries that failed so far.
        failed: u32,
    },
    /// Try again to give up on a deployment (the previous try failed).
    GiveUp {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        id: Uuid,
        /// Tries that failed so far.
        failed: u32,
    },
}

impl ractor::Message for SupervisorMsg {}

/// What the supervisor shares with the actors it starts.
pub struct SupervisorArgs {
    /// Store.
    pub store: Arc<dyn MetaStore>,
    /// Fleet index.
    pub fleet: Fleet,
    /// Registry to fill.
    pub registry: Registry,
    /// Time.
    pub clock: Clock,
}

/// The supervisor actor.
pub struct Supervisor;

/// Supervisor state.
pub struct SupervisorState {
    args: SupervisorArgs,
    running: std::collections::HashMap<ActorId, (TenantId, Uuid)>,
    /// The fence of each deployment this supervisor runs, for its restarts.
    fences: std::collections::HashMap<Uuid, Fence>,
    budget: RestartBudget,
}

impl SupervisorState {
    fn deployment_args(&self, tenant: TenantId, id: Uuid, indexing: Indexing) -> DeploymentArgs {
        let fence = self
            .fences
            .get(&id)
            .cloned()
            .unwrap_or_else(Fence::unbounded);
        DeploymentArgs {
            tenant,
            id,
            store: self.args.store.clone(),
            fleet: self.args.fleet.clone(),
            clock: self.args.clock,
            indexing,
            fence: fence.clone(),
            handouts: Arc::new(Handouts::new(fence)),
        }
    }

    /// Spawn the deployment's actor and register it. Its slot says `Starting` meanwhile, so
    /// callers wait for it rather than take the deployment for finished.
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        tenant: TenantId,
        id: Uuid,
        indexing: Indexing,
    ) -> Result<()> {
        if matches!(self.args.registry.slot(id), Some(Slot::Running(..))) {
            return Ok(());
        }
        self.args.registry.starting(id);
        let args = self.deployment_args(tenant.clone(), id, indexing);
        let handouts = args.handouts.clone();
        let (actor, _) =
            DeploymentActor::spawn_linked(None, DeploymentActor, args, myself.get_cell())
                .await
                .map_err(|e| EngineError::Internal(format!("starting deployment {id}: {e}")))?;
        self.running.insert(actor.get_id(), (tenant, id));
        self.args.registry.insert(id, actor, handouts);
        self.publish();
        Ok(())
    }

    /// Restart a crashed deployment's actor from the store; on failure, try again later.
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        tenant: TenantId,
        id: Uuid,
        failed: u32,
    ) {
        // Writes the failed actor submitted may still be queued: an empty commit waits for
        // them, so the new actor loads everything that was acknowledged. Without it the new
        // actor could miss them, so a failed barrier is a failed restart.
        let restarted = match self.args.store.commit(Vec::new()).await {
            Ok(()) => self.start(myself, tenant.clone(), id, Indexing::Keep).await,
            Err(e) => Err(e.into()),
        };
        match restarted {
            Ok(()) => {}
            Err(EngineError::NotFound(_)) => {
                tracing::warn!(deployment = %id, "the crashed deployment is gone from the store");
                self.forget(id);
            }
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, failed, "restarting the deployment actor failed; trying again");
                retry_later(myself, failed, move |failed| SupervisorMsg::Restart {
                    tenant,
                    id,
                    failed,
                });
            }
        }
    }

    /// Give up on a deployment whose actor keeps crashing: abort it from the store.
    ///
    /// Why abort, rather than keep it unfinished without an actor: a deployment nobody
    /// serves still holds its devices' fleet memberships, so they would never receive a
    /// newer deployment, and devices in the middle of the update would get no answer; the
    /// operator would see it `inprogress` forever, and the next server start would load the
    /// same state and crash again. Aborted, it is finished with every status a device
    /// reported kept, the other devices `aborted` (a device in the middle of it is told 409
    /// and rolls back, as after an operator's abort), its memberships released, and the
    /// reason in the log (`rollout_deployment_actor_give_ups_total` counts them). The abort
    /// runs the operator's abort code on a freshly loaded state, outside any actor; a panic
    /// there is caught, and like a store error only means trying again later.
    async fn give_up(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        tenant: TenantId,
        id: Uuid,
        failed: u32,
    ) {
        let args = self.deployment_args(tenant.clone(), id, Indexing::Keep);
        let aborted = AssertUnwindSafe(actor::abort_stopped(args))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(EngineError::Internal("panic while aborting".into())));
        match aborted {
            Ok(()) | Err(EngineError::NotFound(_)) => {
                tracing::error!(
                    deployment = %id,
                    tenant = %tenant.as_str(),
                    "deployment aborted: its actor crashed {} times within {} s",
                    MAX_RESTARTS + 1,
                    RESTART_WINDOW.as_secs()
                );
                self.forget(id);
            }
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, failed, "aborting the crashing deployment failed; trying again");
                retry_later(myself, failed, move |failed| SupervisorMsg::GiveUp {
                    tenant,
                    id,
                    failed,
                });
            }
        }
    }

    /// The deployment no longer has, nor will have, an actor.
    fn forget(&mut self, id: Uuid) {
        self.args.registry.remove(id);
        self.fences.remove(&id);
        self.budget.forget(id);
        self.publish();
    }

    /// A deployment's actor panicked (or failed to start): restart it, or give up on it.
    async fn failed(&mut self, myself: &ActorRef<SupervisorMsg>, actor: ActorId, err: &str) {
        let Some((tenant, id)) = self.running.remove(&actor) else {
            return;
        };
        self.args.registry.starting(id);
        let drill = self.args.registry.take_drill(id);
        tracing::error!(deployment = %id, error = %err, drill, "deployment actor failed");
        metrics::counter!("rollout_deployment_actor_restarts_total").increment(1);
        // A drill tests the restart path, not a faulty deployment: it is not charged, or
        // drills would end the deployments they exercise.
        if drill || self.budget.charge(id, tokio::time::Instant::now()) {
            self.restart(myself, tenant, id, 0).await;
        } else {
            metrics::counter!("rollout_deployment_actor_give_ups_total").increment(1);
            self.give_up(myself, tenant, id, 0).await;
        }
    }

    fn publish(&self) {
        metrics::gauge!("rollout_deployment_actors").set(self.args.registry.len() as f64);
    }
}

/// Send `msg(failed + 1)` to the supervisor after a delay that grows with `failed`.
fn retry_later(
    myself: &ActorRef<SupervisorMsg>,
    failed: u32,
    msg: impl FnOnce(u32) -> SupervisorMsg + Send + 'static,
) {
    let delay = FIRST_RETRY_DELAY
        .saturating_mul(2u32.saturating_pow(failed.min(16)))
        .min(MAX_RETRY_DELAY);
    myself.send_after(delay, move || msg(failed + 1));
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> std::result::Result<SupervisorState, ActorProcessingErr> {
        let state = SupervisorState {
            args,
            running: std::collections::HashMap::new(),
            fences: std::collections::HashMap::new(),
            budget: RestartBudget::default(),
        };
        // A series from the start: a dashboard shows 0 actors, not "no data".
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start {
                tenant,
                id,
                indexing,
                fence,
                reply,
            } => {
                state.fences.insert(id, fence);
                let r = state.start(&myself, tenant, id, indexing).await;
                if r.is_err() {
                    state.args.registry.remove(id);
                }
                let _ = reply.send(r);
            }
            SupervisorMsg::Restart { tenant, id, failed } => {
                state.restart(&myself, tenant, id, failed).await;
            }
            SupervisorMsg::GiveUp { tenant, id, failed } => {
                state.give_up(&myself, tenant, id, failed).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, id)) = state.running.remove(&cell.get_id()) {
                    state.forget(id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                state.failed(&myself, cell.get_id(), &err.to_string()).await;
            }
            _ => {}
        }
        Ok(())
    }
}
