//! `--mode mixed`: a steady state for `--duration`. Each request is, by the `--mix` weights,
//! a check-in of a random device, a status report, or a log upload.
//!
//! Status reports and logs need a device that is part of a deployment: the first 200
//! check-in tells which deployment, and every device that got a 200 may then be picked. Its
//! reports alternate `downloading` and `installing`, so it stays active and the state does
//! not drift. Until some device got an update, the other kinds fall back to check-ins.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use reqwest::StatusCode;

use super::Shared;
use crate::client::CheckIn;
use crate::fleet::Rng;
use crate::stats::Kind;

/// Device flag: it has been handed an update.
const UPDATED: u8 = 1;
/// Device flag: its next report is `installing` (else `downloading`).
const NEXT_INSTALLING: u8 = 2;
/// How many random devices a worker tries before falling back to a check-in.
const PICK_TRIES: usize = 16;

/// Which deployment the devices are in, and one byte of flags per device.
struct Known {
    deployment: OnceLock<String>,
    flags: Vec<AtomicU8>,
}

/// What one request does.
enum Op {
    CheckIn(u32),
    Status(u32),
    Log(u32),
}

/// Run the mix until the driver stops.
pub async fn run(shared: Arc<Shared>) {
    let known = Arc::new(Known {
        deployment: OnceLock::new(),
        flags: (0..shared.devices).map(|_| AtomicU8::new(0)).collect(),
    });
    let seed = shared.behaviour.seed;
    shared
        .driver
        .run_workers(|w| worker(shared.clone(), known.clone(), Rng::new(seed ^ w as u64)))
        .await;
}

async fn worker(shared: Arc<Shared>, known: Arc<Known>, mut rng: Rng) {
    let mix = shared.behaviour.mix;
    let total = u64::from(mix.checkin + mix.status + mix.log);
    while !shared.driver.stop.is_over() {
        let roll = rng.below(total);
        let device = rng.below(u64::from(shared.devices)) as u32;
        let op = if roll < u64::from(mix.checkin) {
            Op::CheckIn(device)
        } else {
            match pick_updated(&known, &mut rng, device) {
                None => Op::CheckIn(device),
                Some(d) if roll < u64::from(mix.checkin + mix.status) => Op::Status(d),
                Some(d) => Op::Log(d),
            }
        };
        if !step(&shared, &known, op).await {
            break;
        }
    }
}

/// A random device that has been handed an update, trying `device` first.
fn pick_updated(known: &Known, rng: &mut Rng, device: u32) -> Option<u32> {
    known.deployment.get()?;
    let n = known.flags.len() as u64;
    std::iter::once(device)
        .chain((1..PICK_TRIES).map(|_| rng.below(n) as u32))
        .find(|&d| known.flags[d as usize].load(Ordering::Relaxed) & UPDATED != 0)
}

/// Send one request; false when the run is over.
async fn step(shared: &Shared, known: &Known, op: Op) -> bool {
    let (Op::CheckIn(i) | Op::Status(i) | Op::Log(i)) = op;
    let Some(token) = shared.token(i) else {
        return false;
    };
    let Some(ticket) = shared.driver.begin().await else {
        return false;
    };
    let deployment = known.deployment.get().map(String::as_str).unwrap_or("");
    match op {
        Op::CheckIn(_) => {
            if let Some(CheckIn::Update(Some(u))) = shared.check_in(ticket, &token, true).await {
                known.flags[i as usize].fetch_or(UPDATED, Ordering::Relaxed);
                let _ = known.deployment.set(u.deployment);
            }
        }
        Op::Status(_) => {
            let flags = known.flags[i as usize].fetch_xor(NEXT_INSTALLING, Ordering::Relaxed);
            let status = if flags & NEXT_INSTALLING != 0 {
                "installing"
            } else {
                "downloading"
            };
            let code = shared
                .api
                .status(&token, deployment, status)
                .await
                .ok()
                .map(|a| a.status);
            if let Some(c) = code {
                shared.driver.recorder.add_status(Kind::Status, c);
            }
            let ok = code == Some(StatusCode::NO_CONTENT);
            shared.driver.finish(ticket, Kind::Status, ok);
        }
        Op::Log(_) => {
            let messages = [("info", "rollout-load: steady-state log line")];
            let code = shared
                .api
                .log(&token, deployment, &messages)
                .await
                .ok()
                .map(|a| a.status);
            if let Some(c) = code {
                shared.driver.recorder.add_status(Kind::Log, c);
            }
            let ok = code == Some(StatusCode::NO_CONTENT);
            shared.driver.finish(ticket, Kind::Log, ok);
        }
    }
    true
}
