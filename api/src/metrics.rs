//! Prometheus metrics: the recorder, HTTP request metrics and store commit metrics.

use std::time::Duration;

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use storage::embedded::{CommitObserver, CommitStats};

/// Install the global Prometheus recorder (once per process) and return its handle.
pub fn install() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .and_then(|b| b.install_recorder().map_err(Into::into))
    {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

/// Record one HTTP request.
pub fn record_request(method: &Method, path: &str, status: StatusCode, elapsed: Duration) {
    let labels = [
        ("method", method.as_str().to_owned()),
        ("route", route_template(path)),
        ("code", status.as_u16().to_string()),
    ];
    metrics::histogram!("rollout_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
}

/// The route with ids replaced by placeholders, so label cardinality stays bounded.
pub fn route_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').skip(1) {
        out.push('/');
        if seg.len() >= 16 || seg.chars().any(|c| c.is_ascii_digit()) {
            out.push_str(":id");
        } else {
            out.push_str(seg);
        }
    }
    out
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
    metrics::counter!("rollout_check_ins_total", "outcome" => outcome).increment(1);
}

/// A status report accepted.
pub fn status_report(status: storage::DeviceStatus) {
    metrics::counter!("rollout_status_reports_total", "status" => status.as_str()).increment(1);
}
