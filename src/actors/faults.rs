//! Fault injection by name, for the `/debug/crash/{actor}` route and the tests: every actor that
//! can be crashed on purpose joins the registry in its `pre_start` with a way to crash itself,
//! so the HTTP door crashes an actor without knowing its message type.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{ActorRef, Message};

/// Crashes one actor: true when the request reached it.
type Crash = Box<dyn Fn() -> bool + Send + Sync>;

/// The registry; cloning it shares it.
#[derive(Clone, Default)]
pub struct Faults {
    /// How to crash each actor, by its name (`ays`, `repo:<name>`, `api_server`...).
    crashes: Arc<Mutex<HashMap<String, Crash>>>,
}

impl Faults {
    /// Registers `actor` under `name` (replacing a predecessor): `crash()` builds the message
    /// that makes it panic.
    pub fn join<M: Message>(&self, name: impl Into<String>, actor: ActorRef<M>, crash: fn() -> M) {
        let crash: Crash = Box::new(move || actor.cast(crash()).is_ok());
        self.crashes.lock().insert(name.into(), crash);
    }

    /// Removes `name` (a deleted repository).
    pub fn leave(&self, name: &str) {
        self.crashes.lock().remove(name);
    }

    /// Crashes the actor registered as `name`: false when there is none or it is not running.
    pub fn crash(&self, name: &str) -> bool {
        self.crashes.lock().get(name).is_some_and(|crash| crash())
    }
}
