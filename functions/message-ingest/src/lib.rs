//! `message-ingest`: the event function behind `missive.inbox`. Event producers publish
//! `io.missive.message.submitted.v1` with data `{"username", "text"}`; Knative's
//! KafkaSource (or `missive dev`'s dispatcher) POSTs each one here as a CloudEvent, binary
//! or structured. A plain JSON record, which KafkaSource wraps as
//! `dev.knative.kafka.event`, is accepted when its data has that shape.
//!
//! Writes, in one transaction: the event's `source`+`id` in `processed_events` (so a
//! redelivery stores nothing twice), the message and its search tokens, and its
//! `io.missive.message.created.v1` event in the outbox.
//!
//! Answers per Knative's delivery contract: 202 stored (or already stored); 400 not a
//! submitted message, 422 unknown user or invalid text (permanent: dead-lettered); 5xx
//! when the database fails (retried).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use missive_app::AppState;
use missive_app::http::Event;
use missive_app::messages;
use missive_app::{Function, Topic, Trigger};
use missive_core::event::CloudEvent;
use missive_serve::ApiError;

/// Knative service name, also the source of the events it emits.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Events(Topic::Inbox),
    publishes: true,
    router,
    openapi: missive_app::function::no_openapi,
};

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/", post(ingest)).with_state(state)
}

async fn ingest(
    State(state): State<AppState>,
    Event(event): Event,
) -> Result<StatusCode, ApiError> {
    // Everything below, and the message.created event it writes, continues the
    // producer's trace.
    missive_telemetry::handle_event(&event, store(&state, &event)).await
}

async fn store(state: &AppState, event: &CloudEvent) -> Result<StatusCode, ApiError> {
    messages::ingest(state, NAME, event).await?;
    Ok(StatusCode::ACCEPTED)
}
