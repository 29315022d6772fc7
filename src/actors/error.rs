//! The one error type of the AYS core: what a request to a repository or to the engine can fail
//! with. The doors map each kind to their own words (an HTTP status, a chat message).

use tracing::error;

/// Why an AYS request failed; the API maps each kind to its status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AysError {
    /// No such repository, blueprint, service, template or run (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the repository is busy (409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A blueprint (or action request) that does not validate: every problem (422).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Something on our side failed (500); the details are in the log.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for AysError {
    fn from(err: crate::store::StoreError) -> Self {
        error!(%err, "store failure");
        AysError::Internal("storage failure; see the server log".into())
    }
}
