//! Deployments: pure modules for the per-device state machine ([`device`]), phase planning
//! and admission ([`plan`]) and statistics ([`stats`]); the actors that own running
//! deployments ([`actor`], [`supervisor`]); the device → deployment index ([`fleet`]); the
//! index of dynamic deployments' filters ([`dynamic`]); the updates handed out, which
//! repeated check-ins get without asking the actor ([`handouts`]); the safety rules'
//! counters ([`safety`]) and maintenance windows ([`windows`]); live progress ([`events`]);
//! and the [`service`] the API calls.

pub mod actor;
pub mod clock;
pub mod device;
mod dynamic;
pub mod events;
pub mod fleet;
pub mod handouts;
pub mod plan;
pub mod roster;
mod safety;
pub mod service;
pub mod stats;
pub mod supervisor;
mod windows;

pub use actor::Snapshot;
pub use clock::Clock;
pub use events::{DeploymentEvent, FollowItem, Followed};
pub use plan::{NewDeployment, NewPhase};
pub use service::{Crash, Delivery, DeploymentService, ListQuery};
pub use stats::Statistics;
