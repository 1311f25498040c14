//! `/health` and `/metrics`.

use metrics_exporter_prometheus::PrometheusHandle;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::state::AppState;

/// The health and metrics routes.
pub fn routes(state: AppState, metrics: Option<PrometheusHandle>) -> BoxedFilter<(Response,)> {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let metrics = warp::path!("metrics").and(warp::get()).then(move || {
        let handle = metrics.clone();
        let state = state.clone();
        async move { scrape(handle, state).await }
    });
    health.or(metrics).unify().boxed()
}

async fn scrape(handle: Option<PrometheusHandle>, state: AppState) -> Response {
    let mut text = handle.map(|h| h.render()).unwrap_or_default();
    let live = state
        .deployments
        .live(state.settings.metrics_max_deployments)
        .await;
    text.push_str(&crate::metrics::render_rollouts(&live));
    text.push_str(&crate::metrics::render_mailbox_backlog());
    match state.store.artifact_bytes_by_tenant().await {
        Ok(bytes) => text.push_str(&crate::metrics::render_artifact_bytes(&bytes)),
        Err(e) => tracing::warn!(error = %e, "artifact bytes for /metrics"),
    }
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}
