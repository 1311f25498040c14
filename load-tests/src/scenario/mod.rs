//! What the simulated devices do, one module per `--mode`:
//! - [`checkin`]: check in, over and over, round robin over the fleet;
//! - [`rollout`]: take part in a rollout until every device has finished;
//! - [`mixed`]: a steady mix of check-ins, status reports and log uploads.
//!
//! Every scenario runs its workers through the shared [`Driver`], which decides when each
//! request may start and when the run ends.

pub mod checkin;
pub mod mixed;
pub mod rollout;

use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::Mix;
use crate::client::{CheckIn, DeviceApi};
use crate::driver::{Driver, Ticket};
use crate::fleet::device_id;
use crate::stats::Kind;
use crate::tokens::TokenSource;

/// Everything the workers of a run share.
pub struct Shared {
    /// Load shape, stop condition and measurements.
    pub driver: Driver,
    /// The server's device API.
    pub api: DeviceApi,
    /// Device tokens.
    pub tokens: TokenSource,
    /// Fleet size.
    pub devices: u32,
    /// What the devices do and how often.
    pub behaviour: Behaviour,
    /// The first error that ended the run early (e.g. a token that cannot be minted).
    fatal: Mutex<Option<String>>,
}

/// How the simulated devices behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Wait after a check-in that found nothing.
    pub poll_interval: Duration,
    /// Share of devices whose installation fails.
    pub fail_share: f64,
    /// Seed of the failing-device choice and of random picks.
    pub seed: u64,
    /// Extra attempts a deployment allows after a failure.
    pub retries: u32,
    /// Set once the created deployment is seen finished (an auto-abort): a device that
    /// then has nothing to install is done (it was aborted before it started).
    pub deployment_over: Arc<AtomicBool>,
    /// Weights of the `mixed` mode.
    pub mix: Mix,
}

impl Shared {
    /// Shared state of a run.
    pub fn new(
        driver: Driver,
        api: DeviceApi,
        tokens: TokenSource,
        devices: u32,
        behaviour: Behaviour,
    ) -> Self {
        Shared {
            driver,
            api,
            tokens,
            devices,
            behaviour,
            fatal: Mutex::new(None),
        }
    }

    /// The token of device `i`, or `None` after ending the run if it cannot be minted.
    pub fn token(&self, i: u32) -> Option<Cow<'_, str>> {
        match self.tokens.device(i) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(format!("minting the token of {}: {e:#}", device_id(i)));
                None
            }
        }
    }

    /// End the run because of `error`.
    pub fn fail(&self, error: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(error);
        self.driver.stop.cancel();
    }

    /// The error that ended the run early, if any.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Check in as device `i`, record it, and return the answer (`None` when the request
    /// failed). With `parse`, a 200 answer carries the update.
    pub async fn check_in(&self, ticket: Ticket, token: &str, parse: bool) -> Option<CheckIn> {
        match self.api.check_in(token, parse).await {
            Ok((answer, bytes)) => {
                let kind = match answer {
                    CheckIn::Update(_) => Kind::Checkin200,
                    CheckIn::Nothing => Kind::Checkin204,
                    CheckIn::Other(status) => {
                        self.driver.recorder.add_status(Kind::CheckinOther, status);
                        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                            // The device checks in again at its next poll, as mender-client does.
                            self.driver.recorder.add_retry(Kind::CheckinOther);
                        }
                        Kind::CheckinOther
                    }
                };
                self.driver.recorder.add_bytes(kind, bytes);
                self.driver.finish(ticket, kind, kind != Kind::CheckinOther);
                Some(answer)
            }
            Err(_) => {
                self.driver.finish(ticket, Kind::CheckinOther, false);
                None
            }
        }
    }
}
