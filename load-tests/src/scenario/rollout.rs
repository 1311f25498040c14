//! `--mode rollout`: each device does what a Mender client does during a rollout.
//!
//! A session of one device: check in; on 204 wait `--poll-interval-ms` and try again; on 200
//! download the artifact from `artifact.source.uri` (no token, the link is signed), report
//! `downloading`, `installing`, then `success` — or, for the `--fail-share` of devices,
//! upload a log and report `failure`. A failed device that has attempts left (`--retries`)
//! polls again and gets the same deployment. The run ends when every device has finished,
//! or at `--timeout`.

use std::sync::Arc;

use reqwest::StatusCode;

use super::Shared;
use crate::client::{CheckIn, Update};
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
        let Some(ticket) = driver.begin().await else {
            return SessionEnd::Stop;
        };
        let answer = shared.api.status(token, &update.deployment, status).await;
        let code = answer.as_ref().ok().copied();
        driver.finish(ticket, Kind::Status, code == Some(StatusCode::NO_CONTENT));
        match code {
            Some(StatusCode::NO_CONTENT) => {}
            // The deployment was aborted or the device decommissioned: the client stops.
            Some(StatusCode::CONFLICT) => return SessionEnd::Finish(Outcome::Stopped),
            // Anything else: start over from the check-in later.
            _ => return SessionEnd::Park,
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
    let driver = &shared.driver;
    let ticket = driver.begin().await?;
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
    let answer = shared.api.log(token, deployment, &messages).await;
    let code = answer.as_ref().ok().copied();
    driver.finish(ticket, Kind::Log, code == Some(StatusCode::NO_CONTENT));
    match code {
        Some(StatusCode::NO_CONTENT) => None,
        Some(StatusCode::CONFLICT) => Some(SessionEnd::Finish(Outcome::Stopped)),
        // A refused log does not stop the client from reporting the failure.
        _ => None,
    }
}
