//! `/health` (and `/health/live`: the process answers), `/health/ready` (it serves: the
//! metadata store answers a read and the server is not stopping) and `/metrics`.
//!
//! `/metrics` shows every tenant's deployments and storage, so on the API listener it needs
//! the bearer token of `--metrics-token-file` (401 otherwise, and always 401 when no token
//! is configured). `--metrics-listen` serves it without a token on an address of its own,
//! meant for the scrape network only ([`metrics_app`]). A scrape costs one snapshot per
//! running deployment actor, never a read of the store.

use std::sync::Arc;

use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use storage::TenantId;
use tower_service::Service;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::error::{recover, ApiError};
use crate::server::{from_warp, App};
use crate::state::AppState;

/// The health and metrics routes of the API listener.
pub fn routes(state: AppState, metrics: Option<PrometheusHandle>) -> BoxedFilter<(Response,)> {
    let health = warp::path!("health")
        .or(warp::path!("health" / "live"))
        .unify()
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let ready_state = state.clone();
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .then(move || ready(ready_state.clone()));
    let token = state.settings.metrics_token.clone();
    let guarded = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |h: Option<String>| {
            let allowed = check_token(token.as_ref(), h.as_deref());
            async move { allowed.map_err(warp::reject::custom) }
        })
        .untuple_one();
    health
        .or(ready)
        .unify()
        .or(guarded.and(scrape_filter(state, metrics)))
        .unify()
        .boxed()
}

/// 200 when the server can serve requests: not stopping, and a read of the metadata store
/// (the embedded store, or the ScyllaDB cluster) answers; 503 with the reason otherwise.
async fn ready(st: AppState) -> Response {
    let unavailable = |reason: String| {
        let body = serde_json::json!({"status": "unavailable", "reason": reason});
        warp::reply::with_status(
            warp::reply::json(&body),
            warp::http::StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response()
    };
    if *st.stopping.borrow() {
        return unavailable("the server is stopping".into());
    }
    let tenant = TenantId::default_tenant();
    let probe = st.store.deployment(&tenant, Uuid::nil());
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => warp::reply::json(&serde_json::json!({"status": "ok"})).into_response(),
        Ok(Err(e)) => unavailable(format!("the metadata store failed a read: {e}")),
        Err(_) => unavailable(format!(
            "the metadata store did not answer within {READY_TIMEOUT:?}"
        )),
    }
}

/// How long `/health/ready` waits for the store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The app of `--metrics-listen`: `/metrics` without a token, and nothing else.
pub fn metrics_app(state: AppState, metrics: Option<PrometheusHandle>) -> App {
    let routes = warp::path!("metrics")
        .and(warp::get())
        .and(scrape_filter(state, metrics))
        .recover(recover)
        .unify()
        .boxed();
    let service = warp::service(routes);
    Arc::new(move |req| {
        let mut service = service.clone();
        async move {
            match service.call(req).await {
                Ok(r) => from_warp(r),
                Err(never) => match never {},
            }
        }
        .boxed()
    })
}

/// 401 unless the header carries the configured token; always 401 without one configured.
fn check_token(
    token: Option<&crate::metrics::ScrapeToken>,
    authorization: Option<&str>,
) -> Result<(), ApiError> {
    match token {
        Some(t) if t.admits(authorization) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "/metrics needs `Authorization: Bearer <token>` with the token of --metrics-token-file"
                .into(),
        )),
        None => Err(ApiError::Unauthorized(
            "/metrics on the API address is disabled: start rollout with --metrics-token-file \
             FILE and scrape with `Authorization: Bearer <token>`, or serve /metrics without \
             a token on a separate address with --metrics-listen ADDR"
                .into(),
        )),
    }
}

fn scrape_filter(
    state: AppState,
    metrics: Option<PrometheusHandle>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    warp::any().then(move || {
        let handle = metrics.clone();
        let state = state.clone();
        async move { scrape(handle, state).await }
    })
}

async fn scrape(handle: Option<PrometheusHandle>, state: AppState) -> Response {
    let mut text = handle.map(|h| h.render()).unwrap_or_default();
    let live = state
        .deployments
        .live(state.settings.metrics_max_deployments)
        .await;
    text.push_str(&crate::metrics::render_rollouts(&live));
    text.push_str(&crate::metrics::render_mailbox_backlog());
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}
