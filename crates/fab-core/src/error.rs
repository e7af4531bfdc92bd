//! The errors core traits return. fab-web is the one place they become HTTP statuses.

use thiserror::Error;

/// An error from a storage backend (SQL, memory, Redis).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The row or key does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness or integrity rule refused the change; the message is safe to show a user.
    #[error("{0}")]
    Conflict(String),
    /// The backend could not be reached or timed out.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message is for the log, never for a client.
    #[error("storage error: {0}")]
    Internal(String),
}

/// Input that breaks a rule, naming the field.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field (form field or JSON key) at fault.
    pub field: String,
    /// Why, in words a user can act on.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
