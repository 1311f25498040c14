//! Prometheus metrics: the recorder, HTTP request metrics and store commit metrics.

use std::time::Duration;

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::Digest as _;
use storage::embedded::{CommitObserver, CommitStats};

/// Install the global Prometheus recorder (once per process) and return its handle.
pub fn install() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        // A count, not seconds: with the latency buckets every commit of more than five
        // writes fell in `+Inf`.
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("rollout_store_commit_writes".into()),
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            )
        })
        .and_then(|b| b.install_recorder())
    {
        Ok(h) => {
            describe();
            Some(h)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

/// Give every metric a HELP text (Prometheus linters, `promtool check metrics`, want one).
/// The engine's metrics are described here too, because the API owns the exporter.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "rollout_http_request_duration_seconds",
        "HTTP request latency in seconds, per method, route template and status code."
    );
    describe_histogram!(
        "rollout_store_commit_seconds",
        "Latency of one durable store commit (a group of writes) in seconds."
    );
    describe_histogram!(
        "rollout_store_commit_writes",
        "Writes batched into one durable store commit."
    );
    describe_counter!("rollout_store_commits_total", "Durable store commits.");
    describe_counter!(
        "rollout_check_ins_total",
        "Device check-ins, by outcome (update: a deployment was offered; nothing: 204)."
    );
    describe_counter!(
        "rollout_status_reports_total",
        "Device status reports accepted, by reported status."
    );
    describe_counter!(
        "rollout_device_status_changes_total",
        "Device status changes in deployments, by new status."
    );
    describe_counter!(
        "rollout_deployments_finished_total",
        "Deployments that finished."
    );
    describe_gauge!(
        "rollout_deployment_actors",
        "Running deployment actors (one per unfinished deployment)."
    );
    describe_counter!(
        "rollout_deployment_actor_restarts_total",
        "Deployment actors restarted by the supervisor after a crash."
    );
    describe_counter!(
        "rollout_deployment_actor_give_ups_total",
        "Deployments aborted because their actor kept crashing (the supervisor gave up)."
    );
    describe_gauge!(
        "rollout_artifact_bytes",
        "Bytes of artifacts stored per tenant."
    );
    describe_counter!(
        "rollout_deployments_auto_aborted_total",
        "Deployments whose auto-abort rule tripped, by action (abort, stop_admitting)."
    );
    describe_counter!(
        "rollout_devices_timed_out_total",
        "Devices failed for staying downloading, installing or rebooting past their deployment's timeout."
    );
    start_counters_at_zero();
}

/// Every counter (and each label value known ahead) is on `/metrics` from the start, at 0:
/// `increase()` and `rate()` over a series that appears with its first event miss that
/// event, so an alert on the first actor restart or auto-abort would never fire.
fn start_counters_at_zero() {
    for action in ["abort", "stop_admitting"] {
        metrics::counter!("rollout_deployments_auto_aborted_total", "action" => action).absolute(0);
    }
    for name in [
        "rollout_devices_timed_out_total",
        "rollout_deployments_finished_total",
        "rollout_deployment_actor_restarts_total",
        "rollout_deployment_actor_give_ups_total",
        "rollout_store_commits_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for outcome in CHECK_IN_OUTCOMES {
        metrics::counter!("rollout_check_ins_total", "outcome" => outcome).absolute(0);
    }
    for status in storage::DeviceStatus::ALL {
        let status = status.as_str();
        metrics::counter!("rollout_device_status_changes_total", "status" => status).absolute(0);
        metrics::counter!("rollout_status_reports_total", "status" => status).absolute(0);
    }
}

/// The outcomes [`check_in`] counts.
const CHECK_IN_OUTCOMES: [&str; 5] = [
    "update",
    "nothing",
    "already-installed",
    "noartifact",
    "conflict",
];

/// Most request series a thread keeps handles of (a client sending paths of ever more
/// segments makes new route templates; past this the handles are dropped and fetched
/// again).
const MAX_REQUEST_HANDLES: usize = 4096;

thread_local! {
    /// This thread's handles of the request duration series, by `METHOD CODE route`, and
    /// a buffer for that key. A request then costs a lookup here instead of registering
    /// its series with the recorder (three label strings, a key hash, a shared map):
    /// that was ~3 % of a check-in's cycles.
    static REQUEST_HANDLES: std::cell::RefCell<(String, std::collections::HashMap<String, metrics::Histogram>)> =
        std::cell::RefCell::default();
}

/// Record one HTTP request.
pub fn record_request(method: &Method, path: &str, status: StatusCode, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    REQUEST_HANDLES.with_borrow_mut(|(key, handles)| {
        key.clear();
        key.push_str(method.as_str());
        key.push(' ');
        key.push_str(status.as_str());
        key.push(' ');
        let route_at = key.len();
        write_route_template(path, key);
        if let Some(histogram) = handles.get(key.as_str()) {
            histogram.record(seconds);
            return;
        }
        let labels = [
            ("method", method.as_str().to_owned()),
            ("route", key[route_at..].to_owned()),
            ("code", status.as_str().to_owned()),
        ];
        let histogram = metrics::histogram!("rollout_http_request_duration_seconds", &labels);
        histogram.record(seconds);
        if handles.len() >= MAX_REQUEST_HANDLES {
            handles.clear();
        }
        handles.insert(key.clone(), histogram);
    });
}

/// Whether a path segment is part of rollout's routes; anything else is an id. A `match`
/// (compiled to a decision on length and bytes) rather than a scan of a list: it runs for
/// every segment of every request.
fn is_route_word(segment: &str) -> bool {
    matches!(
        segment,
        "api"
            | "management"
            | "devices"
            | "v1"
            | "v2"
            | "deployments"
            | "artifacts"
            | "generate"
            | "download"
            | "device"
            | "next"
            | "status"
            | "log"
            | "releases"
            | "limits"
            | "storage"
            | "statistics"
            | "device_list"
            | "metrics"
            | "health"
            | "authentication"
            | "auth_requests"
            | "inventory"
            | "attributes"
            | "useradm"
            | "auth"
            | "login"
            | "devauth"
            | "approve"
            | "events"
            | "filters"
            | "group"
            | "groups"
            | "list"
            | "live"
            | "openapi.yaml"
            | "pause"
            | "phases"
            | "ready"
            | "resume"
            | "search"
            | "update_control_map"
    )
}

/// The route with ids replaced by `:id`, so label cardinality stays bounded whatever
/// paths clients send.
pub fn route_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    write_route_template(path, &mut out);
    out
}

/// [`route_template`], appended to `out`.
fn write_route_template(path: &str, out: &mut String) {
    for seg in path.split('/').skip(1) {
        out.push('/');
        out.push_str(if is_route_word(seg) { seg } else { ":id" });
    }
}

/// Report store commits as metrics.
pub fn commit_observer() -> CommitObserver {
    Box::new(|s: CommitStats| {
        metrics::histogram!("rollout_store_commit_seconds").record(s.latency.as_secs_f64());
        metrics::histogram!("rollout_store_commit_writes").record(s.writes as f64);
        metrics::counter!("rollout_store_commits_total").increment(1);
    })
}

/// A device check-in and what it got.
pub fn check_in(outcome: &'static str) {
    counter_of("rollout_check_ins_total", "outcome", outcome).increment(1);
}

/// A status report accepted.
pub fn status_report(status: storage::DeviceStatus) {
    counter_of("rollout_status_reports_total", "status", status.as_str()).increment(1);
}

thread_local! {
    /// This thread's handles of counters with one label, by name and label value.
    static COUNTERS: std::cell::RefCell<std::collections::HashMap<(&'static str, &'static str), metrics::Counter>> =
        std::cell::RefCell::default();
}

/// The counter `name{label="value"}`, from this thread's handles: registering it with the
/// recorder on every check-in (a key, its hash, a shared map) cost ~2 % of a check-in.
/// Names and values are static, so there are few of them.
fn counter_of(name: &'static str, label: &'static str, value: &'static str) -> metrics::Counter {
    COUNTERS.with_borrow_mut(|counters| {
        counters
            .entry((name, value))
            .or_insert_with(|| metrics::counter!(name, label => value))
            .clone()
    })
}

/// Prometheus text for the live rollouts: devices per status and phase progress of every
/// unfinished deployment (at most `--metrics-max-deployments` of them, so a tenant cannot
/// blow up cardinality), and unfinished deployments per status. Series of a deployment
/// disappear as soon as it finishes, because they are rendered from the running actors at
/// scrape time.
pub fn render_rollouts(live: &[engine::Snapshot]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str(
        "# HELP rollout_deployment_devices Devices per status in each unfinished deployment.\n",
    );
    out.push_str("# TYPE rollout_deployment_devices gauge\n");
    for s in live {
        let h = &s.header;
        for status in storage::DeviceStatus::ALL {
            let _ = writeln!(
                out,
                "rollout_deployment_devices{{tenant=\"{}\",deployment_id=\"{}\",deployment_name=\"{}\",status=\"{}\"}} {}",
                escape(h.tenant.as_str()),
                h.id,
                escape(&h.name),
                status.as_str(),
                s.stats.get(status)
            );
        }
    }
    out.push_str("# HELP rollout_deployment_phase_devices Devices admitted into each phase of an unfinished deployment.\n");
    out.push_str("# TYPE rollout_deployment_phase_devices gauge\n");
    let mut capacity = String::from("# HELP rollout_deployment_phase_capacity Devices each phase of an unfinished deployment admits.\n# TYPE rollout_deployment_phase_capacity gauge\n");
    for s in live {
        let h = &s.header;
        for (i, p) in h.phases.iter().enumerate() {
            let labels = format!(
                "tenant=\"{}\",deployment_id=\"{}\",phase=\"{}\"",
                escape(h.tenant.as_str()),
                h.id,
                i + 1
            );
            let _ = writeln!(
                out,
                "rollout_deployment_phase_devices{{{labels}}} {}",
                p.device_count
            );
            let _ = writeln!(
                capacity,
                "rollout_deployment_phase_capacity{{{labels}}} {}",
                p.capacity
            );
        }
    }
    out.push_str(&capacity);
    out.push_str("# HELP rollout_deployments Unfinished deployments per status.\n");
    out.push_str("# TYPE rollout_deployments gauge\n");
    for status in [
        storage::DeploymentStatus::Scheduled,
        storage::DeploymentStatus::Pending,
        storage::DeploymentStatus::Inprogress,
    ] {
        let n = live.iter().filter(|s| s.header.status == status).count();
        let _ = writeln!(
            out,
            "rollout_deployments{{status=\"{}\"}} {n}",
            status.as_str()
        );
    }
    out
}

/// Set the artifact bytes gauge of every tenant from the store, once at start-up. From then
/// on the artifact service keeps it current on every upload and delete, so a scrape never
/// reads the store.
pub async fn seed_artifact_bytes(
    store: &dyn storage::MetaStore,
) -> Result<(), storage::StoreError> {
    for (tenant, bytes) in store.artifact_bytes_by_tenant().await? {
        metrics::gauge!("rollout_artifact_bytes", "tenant" => tenant.as_str().to_owned())
            .set(bytes as f64);
    }
    Ok(())
}

/// The bearer token `/metrics` on the API listener requires (`--metrics-token-file`).
///
/// Only its SHA-256 is kept, and a presented token is hashed and compared in constant
/// time, so neither the comparison's duration nor the token's length tells an attacker how
/// close a guess was.
#[derive(Clone)]
pub struct ScrapeToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ScrapeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeToken(..)")
    }
}

/// Why a metrics token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeTokenError {
    /// The file cannot be read.
    #[error("reading the metrics token file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error("the metrics token file {0} must hold one token of visible ASCII characters (a trailing newline is fine)")]
    Invalid(std::path::PathBuf),
}

impl ScrapeToken {
    /// The token in `path`, surrounding whitespace ignored (Prometheus' `credentials_file`
    /// trims it the same way).
    pub fn load(path: &std::path::Path) -> Result<Self, ScrapeTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScrapeTokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::new(text.trim()).ok_or_else(|| ScrapeTokenError::Invalid(path.to_owned()))
    }

    /// A token, if it can be sent in an `Authorization` header at all.
    fn new(token: &str) -> Option<Self> {
        let usable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        usable.then(|| ScrapeToken {
            digest: sha2::Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(presented) = authorization.and_then(crate::auth::bearer_token) else {
            return false;
        };
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        aws_lc_rs::constant_time::verify_slices_are_equal(&digest, &self.digest).is_ok()
    }
}

/// Prometheus text for the deployment actors' mailbox backlog.
pub fn render_mailbox_backlog() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str("# HELP rollout_actor_mailbox_backlog Messages sent to deployment actors and not yet answered.\n");
    out.push_str("# TYPE rollout_actor_mailbox_backlog gauge\n");
    let _ = writeln!(
        out,
        "rollout_actor_mailbox_backlog {}",
        engine::metrics::mailbox_backlog()
    );
    out
}

/// Escape a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_bearer_token_is_admitted() {
        let token = ScrapeToken::new("s3cret-Token").unwrap();
        assert!(token.admits(Some("Bearer s3cret-Token")));
        assert!(
            token.admits(Some("bearer s3cret-Token")),
            "the scheme is case-insensitive"
        );
        for refused in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Bearer s3cret-Toke"),
            Some("Bearer s3cret-Token2"),
            Some("Basic s3cret-Token"),
            Some("s3cret-Token"),
        ] {
            assert!(!token.admits(refused), "{refused:?}");
        }
        assert!(ScrapeToken::new("").is_none());
        assert!(ScrapeToken::new("two words").is_none());
    }

    #[test]
    fn route_templates_keep_route_words_and_hide_ids() {
        assert_eq!(
            route_template("/api/devices/v1/deployments/device/deployments/3f2a/status"),
            "/api/devices/v1/deployments/device/deployments/:id/status"
        );
        assert_eq!(route_template("/anything/else"), "/:id/:id");
    }

    /// Every literal segment of a documented path is kept, so dashboards can tell the
    /// routes apart (`/inventory/groups` is not `/inventory/:id`).
    #[test]
    fn every_word_of_the_documented_paths_is_a_route_word() {
        for seg in crate::routes::openapi::literal_segments() {
            assert!(is_route_word(seg), "{seg:?} would be :id");
        }
    }
}
