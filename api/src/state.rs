//! What every handler can reach: the engine's services and the server's settings.

use std::sync::Arc;

use engine::{ArtifactService, DeploymentService};
use storage::MetaStore;

use crate::signing::LinkSigner;

/// Settings handlers need at request time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL for links, if configured (else taken from the Host header).
    pub public_url: Option<String>,
    /// Largest JSON body.
    pub max_json_body: u64,
    /// Validity of device download links, seconds.
    pub device_link_ttl: u64,
    /// Validity of operator download links, seconds.
    pub operator_link_ttl: u64,
}

/// Shared handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Artifacts.
    pub artifacts: Arc<ArtifactService>,
    /// Deployments.
    pub deployments: DeploymentService,
    /// The metadata store.
    pub store: Arc<dyn MetaStore>,
    /// Download link signer.
    pub signer: LinkSigner,
    /// Settings.
    pub settings: Arc<Settings>,
}
