//! Time as the engine sees it. Phase timers and admission read this clock, so tests can run
//! a whole phased rollout under `tokio::time::pause` without sleeping.

use time::OffsetDateTime;

/// Wall time anchored at start-up and advanced by tokio's clock (which tests can pause and
/// advance).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: OffsetDateTime,
    instant: tokio::time::Instant,
}

impl Clock {
    /// A clock that reads the current wall time now.
    pub fn new() -> Self {
        Clock {
            wall: OffsetDateTime::now_utc(),
            instant: tokio::time::Instant::now(),
        }
    }

    /// A clock that reads `wall` now: for tests and simulations that replay a given date
    /// (a daylight saving change, a maintenance window) under paused time.
    pub fn at(wall: OffsetDateTime) -> Self {
        Clock {
            wall,
            instant: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> OffsetDateTime {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.instant);
        self.wall + elapsed
    }

    /// How long until `t` (zero if past).
    pub fn until(&self, t: OffsetDateTime) -> std::time::Duration {
        let d = t - self.now();
        d.try_into().unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
