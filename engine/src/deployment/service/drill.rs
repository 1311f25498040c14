//! Fault injection, for supervision tests and chaos drills only: crash a deployment's actor
//! on demand, or at random on a timer (`rollout serve --chaos-crash-every`).

use std::time::Duration;

use uuid::Uuid;

use super::DeploymentService;
use crate::deployment::actor::DeploymentMsg;

/// What an injected crash stands for (see [`DeploymentService::crash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// A bug in the actor: charged to the deployment's restart budget, so that enough of
    /// them in a burst end the deployment.
    Fault,
    /// A chaos drill (`rollout serve --chaos-crash-every`): restarted like any crash, never
    /// charged, so drills cannot end the deployments they exercise.
    Drill,
}

impl DeploymentService {
    /// Fault injection: make a deployment's actor panic (the supervisor restarts it from
    /// the store); false when it has no running actor. For supervision tests and chaos
    /// drills only.
    #[doc(hidden)]
    pub fn crash(&self, id: Uuid, kind: Crash) -> bool {
        let Some(actor) = self.registry.get(id) else {
            return false;
        };
        if kind == Crash::Drill {
            self.registry.mark_drill(id);
        }
        actor.send_message(DeploymentMsg::Crash).is_ok()
    }

    /// Chaos drill: from now until the runtime ends, make the actor of a random running
    /// deployment panic every `every` (as [`Crash::Drill`], so never charged to a restart
    /// budget). For drills only (`rollout serve --chaos-crash-every`), never in production.
    #[doc(hidden)]
    pub fn start_chaos_drill(&self, every: Duration) {
        tracing::warn!(
            every_ms = every.as_millis() as u64,
            "CHAOS DRILL: deployment actors will be crashed at random; never do this in production"
        );
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let running = svc.registry.ids();
                if running.is_empty() {
                    continue;
                }
                // A v4 uuid is 122 random bits: enough to pick one, without a random crate.
                let pick = (Uuid::new_v4().as_u128() % running.len() as u128) as usize;
                if svc.crash(running[pick], Crash::Drill) {
                    tracing::info!(deployment = %running[pick], "chaos drill: crashed its actor");
                }
            }
        });
    }
}
