//! `--mode rollout`: each device does what a Mender client does during a rollout.
//!
//! A session of one device: check in; on 204 wait `--poll-interval-ms` and try again; on 200
//! download the artifact from `artifact.source.uri` (no token, the link is signed), report
//! `downloading`, `installing`, then `success` — or, for the `--fail-share` of devices,
//! upload a log and report `failure`. A failed device that has attempts left (`--retries`)
//! polls again and gets the same deployment. The run ends when every device has finished,
//! or at `--timeout`.
//!
//! Answers a device acts on, as mender-client does: `409` to a report or a log ends its
//! session (the deployment was aborted, it rolls back); `503` with `Retry-After` means
//! "not now": it waits that long and sends the same request again (mender-client retries a
//! failed status report; it checks in again at its next poll); anything else unexpected
//! sends it back to polling.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use super::Shared;
use crate::client::{Answer, CheckIn, Update};
use crate::fleet::{device_id, fails, FleetState, Next, Outcome, Scheduler};
use crate::stats::Kind;

/// How a session ended.
enum SessionEnd {
    /// The device polls again later.
    Park,
    /// The device is done.
    Finish(Outcome),
    /// The run is over.
    Stop,
}

/// Run the fleet through a rollout; `fleet` records how each device ended.
pub async fn run(shared: Arc<Shared>, fleet: Arc<FleetState>) {
    let scheduler = Arc::new(Scheduler::new(
        shared.devices,
        shared.behaviour.poll_interval,
    ));
    shared
        .driver
        .run_workers(|_| worker(shared.clone(), fleet.clone(), scheduler.clone()))
        .await;
}

async fn worker(shared: Arc<Shared>, fleet: Arc<FleetState>, scheduler: Arc<Scheduler>) {
    let stop = &shared.driver.stop;
    while !stop.is_over() {
        match scheduler.next() {
            Next::Device(i) => match session(&shared, &fleet, i).await {
                SessionEnd::Park => scheduler.park(i),
                SessionEnd::Finish(outcome) => {
                    fleet.finish(i, outcome);
                    if fleet.finished() == u64::from(fleet.len()) {
                        stop.cancel();
                    }
                }
                SessionEnd::Stop => break,
            },
            Next::WaitUntil(at) => {
                tokio::time::sleep_until(at.min(stop.deadline())).await;
            }
            Next::Idle => {
                // Others hold the remaining devices; one of them may park one soon.
                let nap = shared.behaviour.poll_interval.min(IDLE_NAP);
                tokio::time::sleep(nap).await;
            }
        }
    }
}

/// How many times in a row a device repeats a report answered `503` with `Retry-After`.
const MAX_503_RETRIES: u32 = 10;
/// Longest `Retry-After` a device waits out.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How a status report or log upload went.
enum Put {
    /// Answered with this status (after any `503` retries).
    Answered(StatusCode),
    /// No answer (transport error).
    Failed,
    /// The run is over.
    Over,
}

/// Send a status report or log upload, repeating it after a `503` with `Retry-After`.
async fn put_retrying<F, Fut>(shared: &Shared, kind: Kind, send: F) -> Put
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Answer>>,
{
    let driver = &shared.driver;
    let mut retries = 0;
    loop {
        let Some(ticket) = driver.begin().await else {
            return Put::Over;
        };
        let answer = send().await;
        let status = answer.as_ref().ok().map(|a| a.status);
        driver.finish(ticket, kind, status == Some(StatusCode::NO_CONTENT));
        let Ok(answer) = answer else {
            return Put::Failed;
        };
        driver.recorder.add_status(kind, answer.status);
        match answer.retry_after {
            Some(wait)
                if answer.status == StatusCode::SERVICE_UNAVAILABLE
                    && retries < MAX_503_RETRIES =>
            {
                retries += 1;
                driver.recorder.add_retry(kind);
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
            }
            _ => return Put::Answered(answer.status),
        }
    }
}

/// How long an idle worker sleeps before asking for work again.
const IDLE_NAP: std::time::Duration = std::time::Duration::from_millis(20);

/// One device's turn: a check-in and, when it gets an update, the whole installation.
async fn session(shared: &Shared, fleet: &FleetState, i: u32) -> SessionEnd {
    let Some(token) = shared.token(i) else {
        return SessionEnd::Stop;
    };
    let Some(ticket) = shared.driver.begin().await else {
        return SessionEnd::Stop;
    };
    let update = match shared.check_in(ticket, &token, true).await {
        Some(CheckIn::Update(Some(u))) => u,
        Some(CheckIn::Nothing) if shared.behaviour.deployment_over.load(Ordering::Relaxed) => {
            return SessionEnd::Finish(Outcome::Stopped);
        }
        // 204, an error, or an answer we could not use: ask again later.
        _ => return SessionEnd::Park,
    };
    install(shared, fleet, i, &token, &update).await
}

/// Download, report progress, and finish with success or failure.
async fn install(
    shared: &Shared,
    fleet: &FleetState,
    i: u32,
    token: &str,
    update: &Update,
) -> SessionEnd {
    let driver = &shared.driver;
    let Some(ticket) = driver.begin().await else {
        return SessionEnd::Stop;
    };
    let downloaded = match shared.api.download(&update.uri).await {
        Ok((status, bytes)) => {
            driver.recorder.add_bytes(Kind::Download, bytes);
            let ok = status == StatusCode::OK && bytes > 0;
            driver.finish(ticket, Kind::Download, ok);
            ok
        }
        Err(_) => {
            driver.finish(ticket, Kind::Download, false);
            false
        }
    };
    let mut steps: Vec<&str> = vec!["downloading"];
    let failing = !downloaded || fails(shared.behaviour.seed, i, shared.behaviour.fail_share);
    if downloaded {
        steps.push("installing");
    }
    steps.push(if failing { "failure" } else { "success" });
    for status in steps {
        if status == "failure" {
            if let Some(end) = upload_log(shared, i, token, &update.deployment, downloaded).await {
                return end;
            }
        }
        let put = put_retrying(shared, Kind::Status, || {
            shared.api.status(token, &update.deployment, status)
        })
        .await;
        match put {
            Put::Answered(StatusCode::NO_CONTENT) => {}
            // The deployment was aborted or the device decommissioned: the client stops.
            Put::Answered(StatusCode::CONFLICT) => return SessionEnd::Finish(Outcome::Stopped),
            Put::Over => return SessionEnd::Stop,
            // Anything else: start over from the check-in later.
            Put::Answered(_) | Put::Failed => return SessionEnd::Park,
        }
    }
    if !failing {
        return SessionEnd::Finish(Outcome::Success);
    }
    if fleet.add_attempt(i) > shared.behaviour.retries {
        SessionEnd::Finish(Outcome::Failure)
    } else {
        SessionEnd::Park
    }
}

/// The log a failing device uploads before it reports `failure`; `Some` ends the session.
async fn upload_log(
    shared: &Shared,
    i: u32,
    token: &str,
    deployment: &str,
    downloaded: bool,
) -> Option<SessionEnd> {
    let id = device_id(i);
    let cause = if downloaded {
        format!("rollout-load: simulated installation failure on {id}")
    } else {
        format!("rollout-load: the artifact download failed on {id}")
    };
    let messages = [
        ("info", "rollout-load: installing the update"),
        ("error", cause.as_str()),
    ];
    match put_retrying(shared, Kind::Log, || {
        shared.api.log(token, deployment, &messages)
    })
    .await
    {
        Put::Answered(StatusCode::CONFLICT) => Some(SessionEnd::Finish(Outcome::Stopped)),
        Put::Over => Some(SessionEnd::Stop),
        // A refused log does not stop the client from reporting the failure.
        Put::Answered(_) | Put::Failed => None,
    }
}
