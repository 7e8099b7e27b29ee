//! Missive's domain, with no transport or storage in it: what every other crate agrees
//! on. Nothing here knows HTTP, SQL, Redis or Kafka (Cargo enforces it: this crate does
//! not depend on them), so a rule written here holds wherever a value comes from.
//!
//! # Layout
//! - [`domain`]: parse-don't-validate newtypes (`Username`, `MessageText`, ...), each
//!   refusing bad input with a [`DomainError`] that the HTTP edge turns into a 422.
//! - [`event`]: the CloudEvent model and the typed catalogue of Missive's events
//!   ([`event::EventKind`] and one payload struct per event).
//! - [`time`]: Unix milliseconds and their RFC 3339 form.
//! - [`trace_context`]: W3C `traceparent` values.

pub mod domain;
pub mod event;
pub mod time;
pub mod trace_context;

/// A domain rule was broken: `code` names the rule (`invalid_username`, ...), `message`
/// says it for humans. The HTTP edge answers it with 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    /// Snake-case code, stable for programs.
    pub code: &'static str,
    /// The rule, for humans.
    pub message: String,
}

impl DomainError {
    /// A broken rule.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
