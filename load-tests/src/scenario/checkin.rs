//! `--mode checkin`: every request is a check-in (`GET …/next`) of the next device, round
//! robin over the fleet. Answers are read but not parsed, so the client does the same work
//! against rollout and against the baseline server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Shared;

/// Run check-ins until the driver stops.
pub async fn run(shared: Arc<Shared>) {
    let cursor = Arc::new(AtomicU64::new(0));
    shared
        .driver
        .run_workers(|_| {
            let shared = shared.clone();
            let cursor = cursor.clone();
            async move {
                while !shared.driver.stop.is_over() {
                    let i =
                        (cursor.fetch_add(1, Ordering::Relaxed) % u64::from(shared.devices)) as u32;
                    // Minted before the clock starts: token cost is not server latency.
                    let Some(token) = shared.token(i) else { break };
                    let Some(ticket) = shared.driver.begin().await else {
                        break;
                    };
                    shared.check_in(ticket, &token, false).await;
                }
            }
        })
        .await;
}
