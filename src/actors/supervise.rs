//! Supervision, written once for every supervisor in the tree (the root supervisor, `Ays` over
//! its repositories, the Telegram bot over its chats): which child a supervision event is about,
//! why it ended, and the restart policy (exponential backoff, and a limit of restarts per time
//! window past which the supervisor gives up and escalates).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use ractor::{ActorId, SupervisionEvent};

use crate::config::SupervisorConfig;

/// A child that ended, as its supervisor learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended<K> {
    /// Which child.
    pub key: K,
    /// Why it ended: the panic or error, or the stop reason.
    pub reason: String,
    /// True when it failed (panicked or returned an error); false when it stopped.
    pub failed: bool,
}

/// The children of one supervisor: who is who, and their recent failures.
#[derive(Debug)]
pub struct Children<K> {
    /// The running children by actor id.
    by_id: HashMap<ActorId, K>,
    /// Recent failures by child.
    restarts: HashMap<K, RestartTracker>,
}

impl<K> Default for Children<K> {
    fn default() -> Self {
        Children {
            by_id: HashMap::new(),
            restarts: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Children<K> {
    /// Records that actor `id` is child `key` (after a spawn or a restart).
    pub fn started(&mut self, id: ActorId, key: K) {
        self.by_id.insert(id, key);
    }

    /// Forgets actor `id` (stopped on purpose: deleted, idle); its events are then ignored.
    pub fn forget(&mut self, id: ActorId) {
        self.by_id.remove(&id);
    }

    /// Forgets child `key` entirely, failures included.
    pub fn remove(&mut self, key: &K) {
        self.by_id.retain(|_, k| k != key);
        self.restarts.remove(key);
    }

    /// The child a supervision event reports as ended, and why; `None` for other events and
    /// for actors that are not (or no longer) children.
    pub fn ended(&mut self, event: &SupervisionEvent) -> Option<Ended<K>> {
        let (id, reason, failed) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string(), true),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                reason.clone().unwrap_or_else(|| "stopped".into()),
                false,
            ),
            _ => return None,
        };
        let key = self.by_id.remove(&id)?;
        Some(Ended {
            key,
            reason,
            failed,
        })
    }

    /// Records a failure of `key` now and decides what to do about it.
    pub fn decide(&mut self, key: &K, policy: &SupervisorConfig) -> Decision {
        self.restarts
            .entry(key.clone())
            .or_default()
            .record(policy, Instant::now())
    }
}

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
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    struct Child;

    impl Actor for Child {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<()>,
            _: (),
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("boom".into())
        }
    }

    #[tokio::test]
    async fn events_name_the_child_and_why_it_ended() {
        let (child, handle) = Actor::spawn(None, Child, ()).await.expect("spawn");
        let mut children = Children::default();
        children.started(child.get_id(), "one");
        let failed = SupervisionEvent::ActorFailed(child.get_cell(), "boom".into());
        let ended = children.ended(&failed).expect("a child");
        assert_eq!((ended.key, ended.failed), ("one", true));
        assert_eq!(ended.reason, "boom");
        // Reported once: a second event about the same actor is not a child's any more.
        assert_eq!(children.ended(&failed), None);
        child.stop(None);
        let _ = handle.await;
    }

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
