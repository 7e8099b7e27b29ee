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
//! - [`Unavailable`]: the mark an adapter puts on a failure of its backend (down,
//!   unreachable, too slow), which the HTTP edge answers with 503.

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

/// A backend (the database, the session store, the event broker) could not be reached or
/// did not answer in time. Adapters attach it as context to such failures; the HTTP edge
/// answers any error carrying it with 503 `unavailable` and `Retry-After`, not 500:
/// nothing is wrong with the request, and the same request is expected to work once the
/// backend is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {backend} is unavailable")]
pub struct Unavailable {
    /// Which one, for humans and logs: `database`, `session store`, `event broker`.
    pub backend: &'static str,
}

impl Unavailable {
    /// The SQL database.
    pub const DATABASE: Self = Self {
        backend: "database",
    };
    /// Redis (sessions, login throttling, the activity log).
    pub const SESSION_STORE: Self = Self {
        backend: "session store",
    };
    /// Kafka or the Knative sink.
    pub const EVENT_BROKER: Self = Self {
        backend: "event broker",
    };
}
