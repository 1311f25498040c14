//! Fencing: a deployment actor writes only while its node surely holds the deployment's
//! lease. The lease's expiry is a wall-clock time in the store; the fence is the same
//! deadline on this process's monotonic clock, started *before* the claim was sent and cut
//! short by a safety margin, so it lapses before any other node can take the lease over,
//! whatever happened in between (a GC pause, SIGSTOP, a cut network: the monotonic clock
//! runs on while the process is stopped).
//!
//! The actor checks the fence before it hands writes to the store, and again before it
//! acknowledges them; past the deadline it writes nothing, answers 503 (the device retries,
//! and reaches the new owner) and stops. A node that wakes from a pause therefore makes no
//! write as owner, and acknowledges none. The one write the fence cannot stop is a batch the
//! store driver had already begun to send when the process froze; it was decided while the
//! lease was held, and its caller is not told it succeeded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// This process's clock origin for fence deadlines (stored as nanoseconds since it).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn since_origin(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}

/// Until when this node may write for one deployment, shared by its actor and the lease
/// loop that renews it.
#[derive(Debug, Clone)]
pub struct Fence {
    until: Arc<AtomicU64>,
}

impl Fence {
    /// A fence that never lapses: a node on its own store owns every deployment.
    pub fn unbounded() -> Self {
        Fence {
            until: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// A fence that has lapsed already, to be extended by the first granted claim.
    pub(crate) fn lapsed() -> Self {
        Fence {
            until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Extend the fence after a claim sent at `asked` was granted for `ttl`: it holds until
    /// `asked + ttl - margin`.
    pub(crate) fn extend(&self, asked: Instant, ttl: Duration, margin: Duration) {
        let until = asked + ttl.saturating_sub(margin);
        self.until.fetch_max(since_origin(until), Ordering::AcqRel);
    }

    /// End the fence now (the lease was lost or given up).
    pub(crate) fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Whether this node may still write as owner.
    pub fn holds(&self) -> bool {
        since_origin(Instant::now()) < self.until.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_the_lease_minus_the_margin_from_when_the_claim_was_sent() {
        let f = Fence::lapsed();
        assert!(!f.holds());
        let asked = Instant::now();
        f.extend(asked, Duration::from_secs(60), Duration::from_secs(1));
        assert!(f.holds());
        // A claim sent long ago gives a deadline already past, and never shortens one.
        f.extend(
            asked - Duration::from_secs(120),
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
        assert!(f.holds());
        f.revoke();
        assert!(!f.holds());
        let old = Fence::lapsed();
        old.extend(
            Instant::now() - Duration::from_secs(5),
            Duration::from_secs(3),
            Duration::from_millis(500),
        );
        assert!(
            !old.holds(),
            "a pause past the lease must leave the fence lapsed"
        );
        assert!(Fence::unbounded().holds());
    }
}
