//! This node's heartbeat in the store ([`storage::membership`]), and the cluster view that
//! `rollout cluster status` prints.

use std::sync::Arc;
use std::time::Duration;

use storage::{MetaStore, NodeRecord, Write};
use time::OffsetDateTime;

/// How often a node rewrites its record.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// A node is listed as alive while its latest heartbeat is this recent: three missed
/// heartbeats mark it dead.
pub(crate) const ALIVE_WINDOW: Duration = Duration::from_secs(15);

/// This node's id without `--node-id`: the host name and the bound port, unique among
/// the nodes of one host and readable in `rollout cluster status`.
pub(crate) fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "rollout".into()
    } else {
        host
    };
    format!("{host}:{port}")
}

/// Write this node's record now and every [`HEARTBEAT`] until the task is aborted. A
/// failed write is logged and tried again at the next beat.
pub(crate) async fn start_heartbeat(
    store: Arc<dyn MetaStore>,
    node: NodeRecord,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let record = move || NodeRecord {
        seen: OffsetDateTime::now_utc(),
        ..node.clone()
    };
    // The first beat is written before the node says it is ready, so a listing right after
    // start-up shows it.
    store.commit(vec![Write::PutNode(record())]).await?;
    Ok(tokio::spawn(async move {
        let mut beats = tokio::time::interval(HEARTBEAT);
        beats.tick().await;
        loop {
            beats.tick().await;
            if let Err(e) = store.commit(vec![Write::PutNode(record())]).await {
                tracing::warn!(error = %e, "writing this node's heartbeat failed");
            }
        }
    }))
}

/// The nodes and the unfinished deployments of a store, with each deployment's lease, as
/// text for an operator.
pub(crate) async fn status(store: &dyn MetaStore) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let now = OffsetDateTime::now_utc();
    let mut out = String::new();
    let nodes = store.nodes().await?;
    let _ = writeln!(
        out,
        "nodes ({}; alive: a heartbeat within {} s)",
        nodes.len(),
        ALIVE_WINDOW.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<32} {:<28} {:<6} {:>14}",
        "ID", "ADDRESS", "ALIVE", "LAST SEEN"
    );
    for n in &nodes {
        let ago = (now - n.seen).whole_seconds().max(0);
        let alive = if n.alive(now, ALIVE_WINDOW) {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(
            out,
            "{:<32} {:<28} {:<6} {:>12} s ago",
            n.id, n.address, alive, ago
        );
    }
    let unfinished = store.unfinished_deployments().await?;
    let _ = writeln!(out, "\nunfinished deployments ({})", unfinished.len());
    let _ = writeln!(
        out,
        "{:<36} {:<20} {:<32} {:>5}",
        "DEPLOYMENT", "TENANT", "OWNER", "EPOCH"
    );
    for d in &unfinished {
        let lease = store.lease(&d.tenant, d.id).await?;
        let live = lease.filter(|l| l.expires > now);
        let (owner, epoch) = match &live {
            Some(l) => (l.owner.as_str(), l.epoch.to_string()),
            None => ("-", "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{:<36} {:<20} {:<32} {:>5}",
            d.id,
            d.tenant.as_str(),
            owner,
            epoch
        );
    }
    Ok(out)
}
