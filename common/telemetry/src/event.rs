//! Handling an event in its trace: the consumer span of the CloudEvents semantic
//! conventions, or, with spans off, the event's light trace context.

use std::future::Future;

use missive_core::event::{AttributesReader as _, CloudEvent, EventExt as _};
use missive_core::trace_context::valid_traceparent;
use tracing::Instrument as _;

/// Runs an event function's `work` on `event`: in its handling span, or, with spans
/// off, in the event's trace context (when the delivery did not already carry it).
pub async fn handle_event<F: Future>(event: &CloudEvent, work: F) -> F::Output {
    if crate::spans_enabled() {
        return work.instrument(handling_span(event)).await;
    }
    let current = crate::current_traceparent();
    match event.traceparent().filter(|t| valid_traceparent(t)) {
        Some(origin) if current.as_deref().map(|c| &c[3..35]) != Some(&origin[3..35]) => {
            crate::in_light_context(Some(origin), work).await
        }
        _ => work.await,
    }
}

/// The span an event function handles `event` in, with the CloudEvents semantic
/// conventions' attributes. It continues the trace that caused the event: normally that
/// is already the HTTP request's trace (Knative and our dispatcher send `traceparent`);
/// when it is not (a structured-mode event without the header), the span joins the
/// event's trace and links the request's.
pub fn handling_span(event: &CloudEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "process event",
        otel.name = format!("process {}", event.ty()),
        otel.kind = "consumer",
        cloudevents.event_id = %event.id(),
        cloudevents.event_type = %event.ty(),
        cloudevents.event_source = %event.source(),
        cloudevents.event_subject = event.subject(),
        cloudevents.event_spec_version = "1.0",
    );
    if let Some(time) = event.time() {
        // Seconds from the occurrence to now (0 for a clock ahead of ours).
        let lag = (chrono::Utc::now() - *time).as_seconds_f64().max(0.0);
        crate::metrics::get().events_lag.record(
            lag,
            &[opentelemetry::KeyValue::new(
                "cloudevents.event_type",
                event.ty().to_owned(),
            )],
        );
    }
    crate::join_trace(&span, event.traceparent());
    span
}
