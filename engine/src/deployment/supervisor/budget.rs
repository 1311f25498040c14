//! How often a deployment's actor may be restarted: at most [`MAX_RESTARTS`] times within
//! any [`RESTART_WINDOW`]. The window slides, so a few crashes spread over months never add
//! up to the end of a deployment; only a burst does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Restarts allowed within [`RESTART_WINDOW`]; the next crash within it ends the deployment.
pub const MAX_RESTARTS: usize = 5;
/// The sliding window of the restart budget: 10 minutes.
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Recent restarts of each deployment.
#[derive(Debug, Default)]
pub struct RestartBudget {
    restarts: HashMap<Uuid, VecDeque<Instant>>,
}

impl RestartBudget {
    /// Charge a restart of `id` at `now`; false when the budget is spent (nothing is charged
    /// then: the caller gives up).
    pub fn charge(&mut self, id: Uuid, now: Instant) -> bool {
        let recent = self.restarts.entry(id).or_default();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RESTART_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= MAX_RESTARTS {
            return false;
        }
        recent.push_back(now);
        true
    }

    /// The deployment is over: drop its history.
    pub fn forget(&mut self, id: Uuid) {
        self.restarts.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_spends_the_budget_but_spread_out_crashes_never_do() {
        let start = Instant::now();
        let mut b = RestartBudget::default();
        let id = Uuid::new_v4();
        for i in 0..MAX_RESTARTS {
            assert!(b.charge(id, start + Duration::from_secs(i as u64)), "{i}");
        }
        assert!(!b.charge(id, start + Duration::from_secs(60)), "burst");
        // Once the first restart is older than the window, one more is allowed.
        assert!(b.charge(id, start + RESTART_WINDOW));
        assert!(!b.charge(id, start + RESTART_WINDOW));

        let other = Uuid::new_v4();
        for day in 0..100u64 {
            let at = start + Duration::from_secs(day * 86_400);
            assert!(b.charge(other, at), "a crash a day, day {day}");
        }
    }

    #[test]
    fn each_deployment_has_its_own_budget() {
        let now = Instant::now();
        let mut b = RestartBudget::default();
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..MAX_RESTARTS {
            assert!(b.charge(x, now));
        }
        assert!(b.charge(y, now));
        b.forget(x);
        assert!(b.charge(x, now));
    }
}
