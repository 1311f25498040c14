//! `GET …/deployments/{id}/events`: a deployment's live progress as Server-Sent Events,
//! read as a dashboard would, through the real server: the deployment first, then what
//! devices and the operator do, the end; errors for bad and foreign ids; a stream that
//! never ends by itself does not keep the server from stopping.

mod common;

use std::time::Duration;

use common::fleet::Fleet;
use common::{assert_error, no_body, request_id, send};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const TENANT: &str = "acme";

/// Reads events off an SSE response.
struct Events {
    resp: Response,
    buffer: String,
}

impl Events {
    async fn open(fleet: &Fleet, id: &str) -> Events {
        let path = format!("/deployments/{id}/events");
        let resp = send(fleet.user().request(Method::GET, &path)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ct, "text/event-stream");
        request_id(&resp);
        Events {
            resp,
            buffer: String::new(),
        }
    }

    /// The next event's name and data; none once the stream ended. Comments (keep-alives)
    /// are skipped.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some((name, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.resp.chunk())
                .await
                .expect("an event within 20 s")
                .expect("reading the stream")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn expect(&mut self, name: &str) -> Value {
        match self.next().await {
            Some((n, data)) if n == name => data,
            other => panic!("expected {name}, got {other:?}"),
        }
    }
}

async fn act(fleet: &Fleet, id: &str, action: &str) {
    let path = format!("/deployments/{id}/{action}");
    no_body(
        send(fleet.user().request(Method::POST, &path)).await,
        StatusCode::NO_CONTENT,
    )
    .await;
}

#[tokio::test]
async fn a_follower_gets_the_deployment_then_its_progress_until_it_finishes() {
    let fleet = Fleet::start(TENANT).await;
    let id = fleet.deploy(&["d1"]).await;
    let mut events = Events::open(&fleet, &id).await;
    let first = events.expect("deployment").await;
    assert_eq!(first["id"], json!(id));
    assert_eq!(first["statistics"]["status"]["pending"], json!(1));

    let device = fleet.device("d1");
    assert_eq!(device.check_in().await.as_deref(), Some(id.as_str()));
    assert_eq!(events.expect("phase_started").await, json!({"phase": 1}));
    device.report_all(&id, &["downloading"]).await;
    let stats = events.expect("statistics").await;
    assert_eq!(stats["status"], json!("inprogress"));
    assert_eq!(stats["statistics"]["downloading"], json!(1));

    act(&fleet, &id, "pause").await;
    act(&fleet, &id, "resume").await;
    events.expect("paused").await;
    events.expect("resumed").await;

    device.report_all(&id, &["installing", "success"]).await;
    let end = loop {
        match events.next().await {
            Some((name, data)) if name == "finished" => break data,
            Some((name, _)) if name == "statistics" => continue,
            other => panic!("expected statistics or the end, got {other:?}"),
        }
    };
    assert_eq!(end["aborted"], json!(false));
    assert_eq!(end["statistics"]["success"], json!(1));
    assert_eq!(
        events.next().await,
        None,
        "the stream ends with the deployment"
    );
}

#[tokio::test]
async fn a_finished_deployment_streams_itself_and_ends_and_bad_ids_are_refused() {
    let fleet = Fleet::start(TENANT).await;
    let id = fleet.deploy(&["d1"]).await;
    let aborted = json!({"status": "aborted"});
    let abort = fleet
        .user()
        .put_json(&format!("/deployments/{id}/status"), &aborted)
        .await;
    no_body(abort, StatusCode::NO_CONTENT).await;
    let mut events = Events::open(&fleet, &id).await;
    let first = events.expect("deployment").await;
    assert_eq!(first["status"], json!("finished"));
    assert_eq!(events.next().await, None);

    let user = fleet.user();
    assert_error(
        user.get("/deployments/not-a-uuid/events").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = format!("/deployments/{}/events", uuid::Uuid::new_v4());
    assert_error(user.get(&unknown).await, StatusCode::NOT_FOUND).await;
    let other = fleet.server.as_user("globex");
    assert_error(
        other.get(&format!("/deployments/{id}/events")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let anonymous = fleet.server.anonymous();
    assert_error(
        anonymous.get(&format!("/deployments/{id}/events")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn an_open_stream_ends_when_the_server_stops_and_does_not_hold_it_up() {
    let mut fleet = Fleet::start(TENANT).await;
    let id = fleet.deploy(&["d1", "d2"]).await;
    let mut events = Events::open(&fleet, &id).await;
    events.expect("deployment").await;
    // A clean exit within the harness's 30 s (asserted by restart), then the stream ends.
    fleet.server.restart().await;
    assert_eq!(events.next().await, None);
    let mut again = Events::open(&fleet, &id).await;
    assert_eq!(again.expect("deployment").await["id"], json!(id));
}
