//! What travels with an event from a door into the engine, besides its payload.

use std::sync::{Arc, OnceLock};

/// Work an event needs done once before the first run it starts, and only if it starts one: the
/// mail door writes a mail's file out only when an action is to get it. Every repository the
/// event goes to shares it; the first to start a run does the work, the others get its outcome.
#[derive(Clone)]
pub struct BeforeRun(Arc<BeforeRunInner>);

/// The work and, once done, its outcome.
struct BeforeRunInner {
    work: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    outcome: OnceLock<Result<(), String>>,
}

impl BeforeRun {
    /// Work to do at most once.
    pub fn new(work: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> BeforeRun {
        BeforeRun(Arc::new(BeforeRunInner {
            work: Box::new(work),
            outcome: OnceLock::new(),
        }))
    }

    /// Does the work the first time; later calls get the first outcome.
    pub fn run(&self) -> Result<(), String> {
        self.0.outcome.get_or_init(|| (self.0.work)()).clone()
    }
}

impl std::fmt::Debug for BeforeRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeRun")
    }
}
