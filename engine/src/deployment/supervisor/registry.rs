//! The registry of deployment actors: for every unfinished deployment, its running actor or
//! the fact that one is being (re)started. A deployment that is not in the registry has
//! finished, so callers may answer for it from the store; one that is `Starting` has not,
//! and callers wait for its actor (bounded) instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorRef;
use tokio::sync::watch;
use uuid::Uuid;

use crate::deployment::actor::DeploymentMsg;
use crate::deployment::handouts::Handouts;

/// What the registry knows of an unfinished deployment's actor.
#[derive(Clone)]
pub enum Slot {
    /// It answers messages.
    Running(ActorRef<DeploymentMsg>, Arc<Handouts>),
    /// It is being started, or restarted after a crash.
    Starting,
}

/// Deployment actors by deployment id (shared, cheap to clone).
#[derive(Clone)]
pub struct Registry {
    slots: Arc<RwLock<HashMap<Uuid, Slot>>>,
    /// Ticks on every change, for callers waiting for a restart.
    changed: Arc<watch::Sender<()>>,
    /// Deployments whose next crash is a drill ([`crate::DeploymentService::crash`]).
    drills: Arc<Mutex<HashSet<Uuid>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            slots: Arc::default(),
            changed: Arc::new(watch::channel(()).0),
            drills: Arc::default(),
        }
    }
}

impl Registry {
    /// The deployment's slot; `None` once it has finished (or never existed).
    pub fn slot(&self, id: Uuid) -> Option<Slot> {
        self.read().get(&id).cloned()
    }

    /// The actor of a running deployment.
    pub fn get(&self, id: Uuid) -> Option<ActorRef<DeploymentMsg>> {
        match self.slot(id)? {
            Slot::Running(a, _) => Some(a),
            Slot::Starting => None,
        }
    }

    /// A receiver that sees every change made after this call.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub(super) fn insert(&self, id: Uuid, actor: ActorRef<DeploymentMsg>, h: Arc<Handouts>) {
        self.set(id, Some(Slot::Running(actor, h)));
    }

    /// The updates a running deployment's actor handed out (not while it is restarting).
    pub(crate) fn handouts(&self, id: Uuid) -> Option<Arc<Handouts>> {
        match self.read().get(&id)? {
            Slot::Running(_, h) => Some(h.clone()),
            Slot::Starting => None,
        }
    }

    pub(super) fn starting(&self, id: Uuid) {
        self.set(id, Some(Slot::Starting));
    }

    pub(super) fn remove(&self, id: Uuid) {
        self.set(id, None);
    }

    fn set(&self, id: Uuid, slot: Option<Slot>) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            match slot {
                Some(s) => slots.insert(id, s),
                None => slots.remove(&id),
            };
        }
        self.changed.send_replace(());
    }

    /// Mark the deployment's next crash as a drill.
    pub(crate) fn mark_drill(&self, id: Uuid) {
        self.drills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }

    /// Whether the crash being handled was a drill (and forget the mark).
    pub(super) fn take_drill(&self, id: Uuid) -> bool {
        self.drills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Ids of the deployments whose actor runs.
    pub fn ids(&self) -> Vec<Uuid> {
        self.read()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Running(..)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Number of running deployment actors.
    pub fn len(&self) -> usize {
        self.read()
            .values()
            .filter(|s| matches!(s, Slot::Running(..)))
            .count()
    }

    /// Whether no actor runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }
}
