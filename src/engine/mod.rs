//! The AYS engine without IO: YAML text in, typed model out.
//!
//! Layout:
//! - [`template`]: actor templates (`schema.yaml`, `config.yaml`, the action names).
//! - [`blueprint`]: blueprint files parsed into blocks in file order.
//! - [`service`]: the service model the store persists, plus small graph edits
//!   (schedule one action, find event subscribers, remove a service tree).
//! - [`apply`]: executing a blueprint against the current services.
//! - [`plan`]: turning pending actions into ordered steps of parallel jobs.
//! - [`schedule`]: when a recurring action is due (a period or a cron expression in a time zone).
//!
//! Architecture invariant: nothing here touches the filesystem, the network or the clock;
//! callers read files and pass text in, and persist what comes out.

pub mod apply;
pub mod blueprint;
pub mod lines;
pub mod plan;
pub mod schedule;
pub mod service;
pub mod template;
mod yaml;

pub use apply::{Outcome, execute_blueprint};
pub use blueprint::{ActionEntry, Block, Blueprint, EventFilter, ServiceDecl, is_archived};
pub use plan::{JobSpec, Plan, PlanError, Step, consumer_cycle, plan_run, plan_scheduled};
pub use schedule::Schedule;
pub use service::{
    ActionState, EngineError, Service, ServiceRef, ServiceState, Subscription, remove_service,
    schedule_action, subscribers,
};
pub use template::{
    Consume, EventHook, Field, FieldType, PeriodError, Recurring, RetryPolicy, Schema, Template,
    TemplateConfig, parse_period, role_of,
};

use serde::{Deserialize, Serialize};

/// One thing wrong with an input file, reported to the user with where it is.
///
/// Validation collects every problem rather than stopping at the first, so that a user
/// fixes a blueprint in one round trip; the API returns them as a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{location}: {message}")]
pub struct Problem {
    /// Where the problem is, e.g. `web.yaml: node.ovc__cockpit.memory` or `web.yaml:3:5`
    /// for a YAML syntax error (file, line, column).
    pub location: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Problem {
    /// Builds a problem; a shorthand used throughout the engine.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// Whether `name` can be used as an actor or instance name: it ends up in service keys
/// (`role!name`) and in URL paths, so `!`, `/`, whitespace and emptiness are refused.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name
            .chars()
            .any(|c| c == '!' || c == '/' || c == '\\' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod testkit;
