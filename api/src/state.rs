//! What every handler can reach: the engine's services and the server's settings.

use std::sync::Arc;

use engine::{ArtifactService, DeploymentService, InventoryService};
use storage::MetaStore;

use crate::auth::TokenVerifier;
use crate::identity::IdentityService;
use crate::signing::{LinkCache, LinkSigner};

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
    /// Most unfinished deployments given per-deployment series on `/metrics`.
    pub metrics_max_deployments: usize,
    /// The token `/metrics` on the API listener requires; `None`: it answers 401.
    pub metrics_token: Option<crate::metrics::ScrapeToken>,
    /// How long a handler waits for the next piece of a request body before answering 408.
    pub body_read_timeout: std::time::Duration,
}

/// Shared handler state: one `Arc`, so the clone each request makes costs one atomic
/// increment (cloning the services one by one showed up at ~10 % of an idle check-in).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Share these services.
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services and settings handlers use.
pub struct Services {
    /// Artifacts.
    pub artifacts: Arc<ArtifactService>,
    /// Deployments.
    pub deployments: DeploymentService,
    /// Device inventory, groups and saved filters.
    pub inventory: InventoryService,
    /// The metadata store.
    pub store: Arc<dyn MetaStore>,
    /// Download link signer.
    pub signer: LinkSigner,
    /// Device download links, reused while fresh.
    pub device_links: LinkCache,
    /// Bearer token verification (also reachable from each request's extensions).
    pub auth: Arc<TokenVerifier>,
    /// Device admission, login and the device registry.
    pub identity: Arc<IdentityService>,
    /// Settings.
    pub settings: Settings,
    /// Turns true when the server starts stopping: streams that would never end by
    /// themselves (a deployment's events) end then, so that shutdown does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}
