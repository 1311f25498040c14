//! The supervisor: spawns one [`DeploymentActor`] per unfinished deployment, restarts a
//! crashed one from its persisted state, and keeps the registry of running actors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use storage::{MetaStore, TenantId};
use uuid::Uuid;

use super::actor::{DeploymentActor, DeploymentArgs, DeploymentMsg};
use super::clock::Clock;
use super::fleet::Fleet;
use crate::error::{EngineError, Result};

/// How many times a deployment actor is restarted before the supervisor gives up on it.
const MAX_RESTARTS: u32 = 5;

/// Running deployment actors by deployment id.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<Uuid, ActorRef<DeploymentMsg>>>>,
}

impl Registry {
    /// The actor of a running deployment.
    pub fn get(&self, id: Uuid) -> Option<ActorRef<DeploymentMsg>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: Uuid, actor: ActorRef<DeploymentMsg>) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, actor);
    }

    fn remove(&self, id: Uuid) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Ids of the running deployments.
    pub fn ids(&self) -> Vec<Uuid> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Number of running deployment actors.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no actor runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Supervisor messages.
pub enum SupervisorMsg {
    /// Start the actor of a persisted deployment.
    Start {
        /// Owner.
        tenant: TenantId,
        /// Deployment.
        id: Uuid,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
}

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
    running: HashMap<ActorId, (TenantId, Uuid)>,
    restarts: HashMap<Uuid, u32>,
}

impl SupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<()> {
        if self.args.registry.get(id).is_some() {
            return Ok(());
        }
        let args = DeploymentArgs {
            tenant: tenant.clone(),
            id,
            store: self.args.store.clone(),
            fleet: self.args.fleet.clone(),
            clock: self.args.clock,
        };
        let (actor, _) =
            DeploymentActor::spawn_linked(None, DeploymentActor, args, myself.get_cell())
                .await
                .map_err(|e| EngineError::Internal(format!("starting deployment {id}: {e}")))?;
        self.running.insert(actor.get_id(), (tenant, id));
        self.args.registry.insert(id, actor);
        metrics::gauge!("rollout_deployment_actors").set(self.args.registry.len() as f64);
        Ok(())
    }
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
        Ok(SupervisorState {
            args,
            running: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start { tenant, id, reply } => {
                let r = state.start(&myself, tenant, id).await;
                let _ = reply.send(r);
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
                    state.args.registry.remove(id);
                    state.restarts.remove(&id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some((tenant, id)) = state.running.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.args.registry.remove(id);
                let n = state.restarts.entry(id).or_default();
                *n += 1;
                tracing::error!(deployment = %id, error = %err, restart = *n, "deployment actor failed");
                metrics::counter!("rollout_deployment_actor_restarts_total").increment(1);
                if *n > MAX_RESTARTS {
                    tracing::error!(deployment = %id, "giving up restarting the deployment actor");
                    return Ok(());
                }
                // Writes the failed actor submitted may still be queued: an empty commit
                // waits for them, so the new actor loads everything that was acknowledged.
                state.args.store.commit(Vec::new()).await?;
                if let Err(e) = state.start(&myself, tenant, id).await {
                    tracing::error!(deployment = %id, error = %e, "restart failed");
                }
            }
            _ => {}
        }
        metrics::gauge!("rollout_deployment_actors").set(state.args.registry.len() as f64);
        Ok(())
    }
}
