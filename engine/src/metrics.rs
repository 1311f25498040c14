//! Metrics the engine emits through the `metrics` facade (exported by the API's Prometheus
//! recorder).

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
