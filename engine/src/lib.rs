//! The rollout domain, without HTTP: Mender artifacts (format, storage, generation) and
//! deployments (device state machine, phases, retries, statistics, and the actors that own
//! them), and the device inventory that groups and dynamic deployments select devices by.

pub mod artifact;
pub mod artifact_service;
pub mod cluster;
pub mod deployment;
pub mod error;
pub mod inventory;
pub mod metrics;

pub use artifact::SingleFileSpec;
pub use artifact_service::{
    ArtifactLimits, ArtifactService, GenerateRequest, Release, StorageUsage,
};
pub use cluster::ClusterConfig;
pub use deployment::{
    Clock, Crash, Delivery, DeploymentEvent, DeploymentService, FollowItem, Followed, ListQuery,
    NewDeployment, Snapshot,
};
pub use error::{EngineError, Result};
pub use inventory::InventoryService;
