//! The links between nodes: ractor's cluster layer (`ractor_cluster`). Each node runs a
//! node server; nodes find each other's addresses in the store's node records (no static
//! peer list) and dial the ones they are not yet linked to. Once two nodes are linked,
//! ractor shares their process groups, so a node's gateway is found by its group name.
//!
//! Why ractor's layer rather than, say, forwarding HTTP to the owner: it is the actor
//! framework's own transport, so a forwarded message is an actor call with its timeout and
//! its reply port, links are authenticated with the shared cookie, and a node that dies
//! leaves its group at once, so callers stop trying it without waiting for a timeout.
//!
//! ractor's node server binds its own listener, but cannot say which port it got when asked
//! for port 0; this node binds the listener itself (port 0 allowed, and reported in its
//! node record) and hands each accepted connection to the node server. The server's own
//! listener is bound to a free loopback port and left idle.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NetworkStream, NodeServer, NodeServerMessage};
use tokio::net::TcpListener;

use super::gateway::{group, GatewayMsg};
use super::ClusterConfig;
use crate::error::{EngineError, Result};

/// This node's end of the cluster links.
pub(crate) struct Transport {
    server: ActorRef<NodeServerMessage>,
    address: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Transport {
    /// Bind the cluster listener and start the node server.
    pub(crate) async fn start(config: &ClusterConfig) -> Result<Self> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            EngineError::Internal(format!(
                "binding the cluster listener {}: {e}",
                config.listen
            ))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| EngineError::Internal(format!("the cluster listener: {e}")))?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let node = NodeServer::new(
            0,
            config.cookie.clone(),
            config.node_id.clone(),
            address.clone(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(Ipv4Addr::LOCALHOST.into());
        let (server, _) = Actor::spawn(None, node, ())
            .await
            .map_err(|e| EngineError::Internal(format!("starting the node server: {e}")))?;
        let accept = tokio::spawn(accept(listener, server.clone()));
        tracing::info!(%bound, %address, "cluster listener started");
        Ok(Transport {
            server,
            address,
            accept,
        })
    }

    /// Where other nodes reach this one.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The gateway of `node`, if this node is linked to it.
    pub(crate) fn gateway(&self, node: &str) -> Option<ActorRef<GatewayMsg>> {
        ractor::pg::get_members(&group(node))
            .into_iter()
            .next()
            .map(ActorRef::from)
    }

    /// Dial `node` at `address` unless already linked: `false` if it cannot be reached
    /// (a dead node refuses at once). The link is ready once ractor has authenticated it
    /// and shared the process groups, a few milliseconds after a successful dial.
    pub(crate) async fn link(&self, node: &str, address: &str) -> bool {
        if self.gateway(node).is_some() {
            return true;
        }
        let dial = ractor_cluster::client_connect(&self.server, address);
        match tokio::time::timeout(Duration::from_secs(2), dial).await {
            Ok(Ok(())) => {
                tracing::info!(peer = node, %address, "linking to a cluster node");
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = node, %address, error = %e, "dialing a cluster node failed");
                false
            }
            Err(_) => {
                tracing::debug!(peer = node, %address, "dialing a cluster node timed out");
                false
            }
        }
    }

    /// Close every link.
    pub(crate) fn stop(&self) {
        self.accept.abort();
        self.server.stop(Some("shutdown".into()));
    }
}

/// Hand every accepted connection to the node server.
async fn accept(listener: TcpListener, server: ActorRef<NodeServerMessage>) {
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a cluster connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local_addr = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let opened = NodeServerMessage::ConnectionOpened {
            stream: Box::new(NetworkStream::Raw {
                peer_addr,
                local_addr,
                stream,
            }),
            is_server: true,
        };
        if server.cast(opened).is_err() {
            return;
        }
    }
}
