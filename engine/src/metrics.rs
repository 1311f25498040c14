//! Metrics the engine emits through the `metrics` facade (exported by the API's Prometheus
//! recorder).

use std::sync::atomic::{AtomicI64, Ordering};

use storage::DeploymentRecord;

use crate::deployment::device::Change;

/// A device changed status in a deployment.
pub fn status_changed(_deployment: &DeploymentRecord, change: Change) {
    metrics::counter!("rollout_device_status_changes_total", "status" => change.to.as_str())
        .increment(1);
}

/// A deployment finished.
pub fn deployment_finished(_deployment: &DeploymentRecord) {
    metrics::counter!("rollout_deployments_finished_total").increment(1);
}

/// A deployment's auto-abort tripped; `action` is what it did.
pub(crate) fn auto_aborted(action: storage::AbortAction) {
    let action = match action {
        storage::AbortAction::Abort => "abort",
        storage::AbortAction::StopAdmitting => "stop_admitting",
    };
    metrics::counter!("rollout_deployments_auto_aborted_total", "action" => action).increment(1);
}

/// A device stayed in progress past its deployment's timeout and was failed.
pub(crate) fn device_timed_out() {
    metrics::counter!("rollout_devices_timed_out_total").increment(1);
}

/// Messages sent to deployment actors and not yet answered (all deployments).
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

/// A message to a deployment actor was sent.
pub fn message_sent() {
    IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
}

/// A message to a deployment actor was answered (or dropped).
pub fn message_answered() {
    IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
}

/// The actors' mailbox backlog: messages sent and not yet answered, summed over all
/// deployment actors.
pub fn mailbox_backlog() -> i64 {
    IN_FLIGHT.load(Ordering::Relaxed).max(0)
}

/// Artifact bytes stored per tenant (`rollout_artifact_bytes`), kept current here on every
/// upload and delete so that a scrape never reads the store. The API seeds it at start-up.
pub fn artifact_bytes_changed(tenant: &storage::TenantId, delta: f64) {
    metrics::gauge!("rollout_artifact_bytes", "tenant" => tenant.as_str().to_owned())
        .increment(delta);
}

/// A request for a deployment owned by another node was forwarded to it.
pub(crate) fn forwarded() {
    metrics::counter!("rollout_cluster_forwarded_total").increment(1);
}

/// This node took a deployment's lease: `how` is `new` (nobody held it) or `takeover` (it
/// had lapsed in another node's hands).
pub(crate) fn lease_taken(how: &'static str) {
    metrics::counter!("rollout_cluster_leases_taken_total", "how" => how).increment(1);
}

/// This node lost a deployment's lease it held (it lapsed and another node took it).
pub(crate) fn lease_lost() {
    metrics::counter!("rollout_cluster_leases_lost_total").increment(1);
}
