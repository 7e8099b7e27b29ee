//! Making our events: the catalogue's [`EventKind::event`] in the trace of the work
//! being handled.

use missive_core::domain::Username;
use missive_core::event::{CloudEvent, EventKind};
use missive_core::trace_context::new_traceparent;

/// A new event of `kind` from `function` about `subject`, carrying the `traceparent` of
/// the request or event being handled. Outside any (a CLI producer, a test without
/// telemetry) it starts a trace of its own, so every event carries one.
pub fn new(
    kind: EventKind,
    function: &str,
    subject: &Username,
    data: &impl serde::Serialize,
) -> CloudEvent {
    let traceparent = missive_telemetry::current_traceparent().unwrap_or_else(new_traceparent);
    kind.event(function, subject, data, traceparent)
}
