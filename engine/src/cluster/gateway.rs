//! The gateway: the one actor of a node that other nodes talk to. It takes a request for a
//! deployment this node owns, runs it on the deployment's actor through the local service,
//! and sends back the answer. Requests are JSON inside ractor's cluster messages; each one
//! runs in its own task, so a slow deployment never holds up another's requests (and many
//! forwarded status reports still share one store commit).

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::deployment::DeploymentService;

/// The process group a node's gateway joins: `rollout.gateway.<node id>`.
pub(crate) fn group(node: &str) -> String {
    format!("rollout.gateway.{node}")
}

/// Messages between nodes.
#[derive(RactorClusterMessage)]
pub(crate) enum GatewayMsg {
    /// A JSON-encoded forwarded request; the answer is JSON too.
    #[rpc]
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The gateway actor; its state is the local deployment service.
pub(crate) struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = DeploymentService;
    type Arguments = DeploymentService;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        service: DeploymentService,
    ) -> Result<DeploymentService, ActorProcessingErr> {
        ractor::pg::join(group(service.node_id()), vec![myself.get_cell()]);
        Ok(service)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        service: &mut DeploymentService,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Forward(request, reply) = msg;
        let service = service.clone();
        tokio::spawn(async move {
            let answer = service.serve_forwarded(&request).await;
            let _ = reply.send(answer);
        });
        Ok(())
    }
}
