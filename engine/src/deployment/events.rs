//! Live progress of a deployment for dashboards and CLIs. Its actor publishes what happens
//! (statistics, at most every [`STATISTICS_EVERY`]; phase starts and approvals; pause and
//! resume; an auto-abort; the end) into a broadcast buffer of [`BUFFER`] events per
//! subscriber. Publishing never waits: a subscriber that falls a whole buffer behind is
//! dropped ([`Followed::next`] says so), and with no subscriber nothing is built at all.

use std::time::Duration;

use storage::{AbortAction, DeploymentStatus, TenantId};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::actor::Snapshot;
use super::service::DeploymentService;
use super::stats::Statistics;

/// Events a subscriber may fall behind by before it is dropped.
pub const BUFFER: usize = 64;
/// Statistics are published at most this often (a million devices reporting would
/// otherwise be a million events).
pub(crate) const STATISTICS_EVERY: Duration = Duration::from_millis(250);
/// How often a deployment run by another node is looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Something that happened to a deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentEvent {
    /// Devices per status changed.
    Statistics {
        /// The deployment's status.
        status: DeploymentStatus,
        /// Devices per status.
        statistics: Statistics,
    },
    /// A phase admitted its first device (phases counted from 1).
    PhaseStarted {
        /// The phase.
        phase: u32,
    },
    /// An operator approved a phase (counted from 1).
    PhaseApproved {
        /// The phase.
        phase: u32,
    },
    /// An operator paused the deployment.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// The auto-abort rule tripped.
    AutoAbort {
        /// Why.
        reason: String,
        /// What it did.
        action: AbortAction,
    },
    /// The deployment finished; nothing follows.
    Finished {
        /// Whether it was aborted (by an operator, its auto-abort or its end).
        aborted: bool,
        /// Why it stopped by itself, if it did.
        abort_reason: Option<String>,
        /// Devices per status at the end.
        statistics: Statistics,
    },
}

/// The actor's side: the buffer, made at the first subscription, and whether statistics
/// changed since they were last published.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    tx: Option<broadcast::Sender<DeploymentEvent>>,
    statistics_changed: bool,
    flush_scheduled: bool,
}

impl Publisher {
    pub(crate) fn subscribe(&mut self) -> broadcast::Receiver<DeploymentEvent> {
        self.tx
            .get_or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    /// Publish the event `make` builds, if anybody listens.
    pub(crate) fn publish(&self, make: impl FnOnce() -> DeploymentEvent) {
        if let Some(tx) = self.tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
            // Fails only when the last subscriber left meanwhile.
            let _ = tx.send(make());
        }
    }

    pub(crate) fn statistics_changed(&mut self) {
        self.statistics_changed = true;
    }

    /// Whether the actor should schedule a flush of the statistics now (they changed,
    /// somebody listens, and no flush is scheduled); notes that one is.
    pub(crate) fn flush_needed(&mut self) -> bool {
        let listening = self.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0);
        if self.statistics_changed && listening && !self.flush_scheduled {
            self.flush_scheduled = true;
            return true;
        }
        false
    }

    /// The scheduled flush came: whether statistics are to be published.
    pub(crate) fn flush(&mut self) -> bool {
        self.flush_scheduled = false;
        std::mem::take(&mut self.statistics_changed)
    }
}

/// What a follower gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowItem {
    /// An event.
    Event(DeploymentEvent),
    /// The follower fell [`BUFFER`] events behind and is dropped; nothing follows.
    Dropped,
}

/// A deployment followed from its state at subscription on.
pub struct Followed {
    /// The deployment when following began.
    pub snapshot: Snapshot,
    source: Source,
}

enum Source {
    /// This node runs the deployment: its actor's events.
    Live(broadcast::Receiver<DeploymentEvent>),
    /// Another node runs it: look at it every [`POLL_EVERY`] and tell what changed.
    Polled {
        service: Box<DeploymentService>,
        tenant: TenantId,
        id: Uuid,
        last: Statistics,
    },
    /// Nothing more will happen.
    Over,
}

impl Followed {
    pub(crate) fn live(snapshot: Snapshot, rx: broadcast::Receiver<DeploymentEvent>) -> Self {
        Followed {
            snapshot,
            source: Source::Live(rx),
        }
    }

    /// A deployment this node does not run: finished (nothing follows), or run elsewhere.
    pub(crate) fn elsewhere(snapshot: Snapshot, service: &DeploymentService) -> Self {
        let source = if snapshot.header.status == DeploymentStatus::Finished {
            Source::Over
        } else {
            Source::Polled {
                service: Box::new(service.clone()),
                tenant: snapshot.header.tenant.clone(),
                id: snapshot.header.id,
                last: snapshot.stats.clone(),
            }
        };
        Followed { snapshot, source }
    }

    /// The next event; none once the deployment finished, its actor stopped (it restarts
    /// elsewhere, or after a crash: follow again), or the follower was dropped.
    pub async fn next(&mut self) -> Option<FollowItem> {
        let item = match &mut self.source {
            Source::Over => return None,
            Source::Live(rx) => match rx.recv().await {
                Ok(e) => FollowItem::Event(e),
                Err(broadcast::error::RecvError::Lagged(_)) => FollowItem::Dropped,
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            Source::Polled {
                service,
                tenant,
                id,
                last,
            } => loop {
                tokio::time::sleep(POLL_EVERY).await;
                let Ok(s) = service.get(tenant, *id).await else {
                    continue;
                };
                if s.header.status == DeploymentStatus::Finished {
                    break finished(&s);
                }
                if s.stats != *last {
                    *last = s.stats.clone();
                    break FollowItem::Event(DeploymentEvent::Statistics {
                        status: s.header.status,
                        statistics: s.stats,
                    });
                }
            },
        };
        if matches!(
            item,
            FollowItem::Dropped | FollowItem::Event(DeploymentEvent::Finished { .. })
        ) {
            self.source = Source::Over;
        }
        Some(item)
    }
}

fn finished(s: &Snapshot) -> FollowItem {
    FollowItem::Event(DeploymentEvent::finished(s))
}

impl DeploymentEvent {
    /// The end of the deployment in `s`.
    pub(crate) fn finished(s: &Snapshot) -> Self {
        DeploymentEvent::Finished {
            aborted: s.header.aborted,
            abort_reason: s.header.safety.abort_reason.clone(),
            statistics: s.stats.clone(),
        }
    }
}
