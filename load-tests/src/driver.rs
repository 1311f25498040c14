//! The load shape: how many requests may be in flight, when each may start, and when the
//! run stops.
//!
//! Every scenario runs `--concurrency` workers; a worker has at most one request in flight.
//! - Closed loop (no `--rate`): a worker sends its next request as soon as the previous one
//!   is answered. Latency is the time from send to answer.
//! - Open loop (`--rate R`): request starts are scheduled every `1/R` seconds, whatever the
//!   answers do; a worker takes the next slot and sends at that time. When every worker is
//!   busy, slots fall behind schedule, and the latency of a late request counts from its
//!   *scheduled* start, so a slow server cannot hide its queueing (the "coordinated omission"
//!   correction of wrk2). The concurrency is then only the cap on requests in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{Kind, Recorder};

/// Schedules request starts at a fixed rate.
pub struct Pacer {
    start: Instant,
    /// Nanoseconds between two starts.
    interval_ns: f64,
    /// The next slot to hand out.
    next: AtomicU64,
}

impl Pacer {
    /// Starts at `rate` per second from now.
    pub fn new(rate: f64) -> Self {
        Pacer {
            start: Instant::now(),
            interval_ns: 1e9 / rate,
            next: AtomicU64::new(0),
        }
    }

    /// Wait for the next slot; returns the instant latency is measured from.
    async fn wait(&self) -> Instant {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let at = self.start + Duration::from_nanos((slot as f64 * self.interval_ns) as u64);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
            // On time: measure from the actual send, so the timer's millisecond granularity
            // is not counted against the server.
            Instant::now()
        } else {
            // Behind schedule: the wait for a free worker is part of the latency.
            at
        }
    }
}

/// When the run ends: a deadline, an optional request budget, or an explicit cancel.
pub struct Stop {
    deadline: Instant,
    budget: Option<u64>,
    issued: AtomicU64,
    cancelled: AtomicBool,
}

impl Stop {
    /// Stop after `limit`, or after `budget` requests.
    pub fn new(limit: Duration, budget: Option<u64>) -> Self {
        Stop {
            deadline: Instant::now() + limit,
            budget,
            issued: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the run is over.
    pub fn is_over(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
            || Instant::now() >= self.deadline
            || self
                .budget
                .is_some_and(|b| self.issued.load(Ordering::Relaxed) >= b)
    }

    /// End the run (every device finished, or a fatal error).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Reserve one request of the budget; false when the run is over.
    fn take(&self) -> bool {
        if self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        match self.budget {
            None => true,
            Some(b) => self.issued.fetch_add(1, Ordering::Relaxed) < b,
        }
    }
}

/// A permission to send one request, and the instant its latency counts from.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    start: Instant,
}

/// What every worker shares: the load shape and the recorder.
pub struct Driver {
    /// Open-loop schedule, if any.
    pacer: Option<Pacer>,
    /// When to stop.
    pub stop: Stop,
    /// Measurements.
    pub recorder: Recorder,
    /// Workers (requests in flight at most).
    pub concurrency: usize,
}

impl Driver {
    /// A driver for `concurrency` workers, paced at `rate` if given, stopping after `limit`
    /// or `budget` requests.
    pub fn new(
        concurrency: usize,
        rate: Option<f64>,
        limit: Duration,
        budget: Option<u64>,
    ) -> Self {
        Driver {
            pacer: rate.map(Pacer::new),
            stop: Stop::new(limit, budget),
            recorder: Recorder::new(),
            concurrency,
        }
    }

    /// Wait until the next request may start; `None` when the run is over.
    pub async fn begin(&self) -> Option<Ticket> {
        if !self.stop.take() {
            return None;
        }
        let start = match &self.pacer {
            Some(p) => p.wait().await,
            None => Instant::now(),
        };
        // The pacer may have slept past the deadline.
        if Instant::now() >= self.stop.deadline() {
            return None;
        }
        Some(Ticket { start })
    }

    /// Record the answer to the request of `ticket`.
    pub fn finish(&self, ticket: Ticket, kind: Kind, ok: bool) {
        self.recorder.record(kind, ticket.start.elapsed(), ok);
    }

    /// Run `worker(i)` for every worker `i` and wait for them, giving in-flight requests a
    /// few seconds past the deadline before abandoning them.
    pub async fn run_workers<F, Fut>(&self, worker: F)
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.concurrency {
            set.spawn(worker(i));
        }
        let grace = self.stop.deadline() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(grace, set.join_next()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    set.abort_all();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_budget_stops_the_run() {
        let d = Driver::new(1, None, Duration::from_secs(60), Some(3));
        for _ in 0..3 {
            assert!(d.begin().await.is_some());
        }
        assert!(d.begin().await.is_none());
        assert!(d.stop.is_over());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_request_starts() {
        let d = Driver::new(1, Some(10.0), Duration::from_secs(60), None);
        let t0 = Instant::now();
        for _ in 0..5 {
            d.begin().await.unwrap();
        }
        // Slots 0..4 at 100 ms apart: the fifth starts at 400 ms.
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_the_run() {
        let d = Driver::new(1, None, Duration::from_secs(1), None);
        assert!(d.begin().await.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(d.begin().await.is_none());
    }
}
