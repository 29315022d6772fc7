//! The restart policy every supervisor in the tree uses: exponential backoff, and a limit of
//! restarts per time window past which the supervisor gives up and escalates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::SupervisorConfig;

/// What to do about a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart it after this delay.
    RestartAfter(Duration),
    /// It failed this many times inside the window: give up.
    GiveUp(u32),
}

/// The recent failures of one child.
#[derive(Debug, Default, Clone)]
pub struct RestartTracker {
    /// Failure times inside the window, oldest first.
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    /// Records a failure at `now` and decides.
    pub fn record(&mut self, policy: &SupervisorConfig, now: Instant) -> Decision {
        let window = Duration::from_secs(policy.window_secs);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.failures.pop_front();
        }
        let recent = self.failures.len() as u32;
        if recent > policy.max_restarts {
            return Decision::GiveUp(recent);
        }
        let exponent = recent.saturating_sub(1).min(20);
        Decision::RestartAfter(Duration::from_millis(
            policy
                .backoff_initial_ms
                .saturating_mul(1 << exponent)
                .min(policy.backoff_max_ms),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_gives_up_and_forgets_old_failures() {
        let policy = SupervisorConfig {
            max_restarts: 3,
            window_secs: 10,
            backoff_initial_ms: 100,
            backoff_max_ms: 250,
        };
        let mut t = RestartTracker::default();
        let start = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(t.record(&policy, start), Decision::RestartAfter(ms(100)));
        assert_eq!(t.record(&policy, start), Decision::RestartAfter(ms(200)));
        assert_eq!(t.record(&policy, start), Decision::RestartAfter(ms(250)));
        assert_eq!(t.record(&policy, start), Decision::GiveUp(4));
        let later = start + Duration::from_secs(11);
        assert_eq!(t.record(&policy, later), Decision::RestartAfter(ms(100)));
    }
}
