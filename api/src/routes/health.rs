//! `/health` and `/metrics`.

use metrics_exporter_prometheus::PrometheusHandle;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

/// The health and metrics routes.
pub fn routes(metrics: Option<PrometheusHandle>) -> BoxedFilter<(Response,)> {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        let text = metrics.as_ref().map(|h| h.render()).unwrap_or_default();
        warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
    });
    health.or(metrics).unify().boxed()
}
