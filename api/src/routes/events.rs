//! `GET /api/management/v1/deployments/deployments/{id}/events`: a deployment's live
//! progress as Server-Sent Events, for dashboards and CLIs. The first event is the
//! deployment as `GET …/deployments/{id}` shows it; then its actor's events (see
//! `engine::deployment::events`), a comment every 15 seconds to keep the connection alive,
//! and the stream ends when the deployment finishes, when the follower falls too far behind
//! (`dropped`), or when the server stops.

use std::convert::Infallible;

use engine::{DeploymentEvent, FollowItem, Followed};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::sse::Event;
use warp::Filter;

use super::deployments::{deployment_id, DeploymentView};
use super::management;
use crate::auth::{self, Identity};
use crate::error::{respond, ApiResult};
use crate::state::AppState;

/// The events route.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    management()
        .and(warp::path!("deployments" / String / "events"))
        .and(warp::get())
        .and(auth::user())
        .and(st)
        .then(|d, id, st| async move { respond(follow(d, id, st).await) })
        .boxed()
}

async fn follow(raw: String, id: Identity, st: AppState) -> ApiResult {
    let followed = st
        .deployments
        .follow(&id.tenant, deployment_id(&raw)?)
        .await?;
    let first = Event::default()
        .event("deployment")
        .json_data(DeploymentView::new(&followed.snapshot))
        .unwrap_or_else(|_| Event::default().event("deployment"));
    // A task follows and hands events over a small channel: the response body must be
    // `Sync`, which the follower (it may read the store) is not.
    let (tx, mut rx) = mpsc::channel(HANDOVER);
    tokio::spawn(forward(followed, tx, st.stopping.clone()));
    let events = stream::iter([Ok::<_, Infallible>(first)])
        .chain(stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok));
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// Events held between the follower and a client that reads slowly; behind that, the
/// deployment's own buffer fills and the client is dropped.
const HANDOVER: usize = 16;

/// Pass the follower's events on until there are none, the client is gone, or the server
/// starts stopping.
async fn forward(
    mut followed: Followed,
    tx: mpsc::Sender<Event>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let item = tokio::select! {
            item = followed.next() => item,
            () = tx.closed() => None,
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(item) = item else { return };
        if tx.send(to_sse(&item)).await.is_err() {
            return;
        }
    }
}

fn to_sse(item: &FollowItem) -> Event {
    let (name, data) = match item {
        FollowItem::Dropped => (
            "dropped",
            json!({"reason": "the client read too slowly and fell behind; follow again"}),
        ),
        FollowItem::Event(e) => event_data(e),
    };
    Event::default().event(name).data(data.to_string())
}

fn event_data(e: &DeploymentEvent) -> (&'static str, serde_json::Value) {
    match e {
        DeploymentEvent::Statistics { status, statistics } => (
            "statistics",
            json!({"status": status, "statistics": statistics.to_map()}),
        ),
        DeploymentEvent::PhaseStarted { phase } => ("phase_started", json!({"phase": phase})),
        DeploymentEvent::PhaseApproved { phase } => ("phase_approved", json!({"phase": phase})),
        DeploymentEvent::Paused => ("paused", json!({})),
        DeploymentEvent::Resumed => ("resumed", json!({})),
        DeploymentEvent::AutoAbort { reason, action } => {
            ("auto_abort", json!({"reason": reason, "action": action}))
        }
        DeploymentEvent::Finished {
            aborted,
            abort_reason,
            statistics,
        } => (
            "finished",
            json!({
                "status": "finished",
                "aborted": aborted,
                "abort_reason": abort_reason,
                "statistics": statistics.to_map(),
            }),
        ),
    }
}
