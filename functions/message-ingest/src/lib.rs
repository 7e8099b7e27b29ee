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
use common::db::Ingested;
use common::domain::{MessageText, Username};
use common::events::{self, CloudEvent};
use common::{ApiError, AppState};
use serde::Deserialize;

/// Knative service name, also the source of the events it emits.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// The event type this function handles.
pub const SUBMITTED_TYPE: &str = "io.missive.message.submitted.v1";

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/", post(ingest)).with_state(state)
}

/// Data of a submitted message.
#[derive(Deserialize)]
struct Submitted {
    username: String,
    text: String,
}

async fn ingest(State(state): State<AppState>, event: CloudEvent) -> Result<StatusCode, ApiError> {
    // Everything below, and the message.created event it writes, continues the
    // producer's trace.
    event.handle(store(state, &event)).await
}

async fn store(state: AppState, event: &CloudEvent) -> Result<StatusCode, ApiError> {
    if event.ty != SUBMITTED_TYPE && event.ty != common::kafka::KAFKA_EVENT_TYPE {
        return Err(ApiError::InvalidEvent(format!(
            "expected {SUBMITTED_TYPE}, got {}",
            event.ty
        )));
    }
    let submitted: Submitted = serde_json::from_value(event.data.clone()).map_err(|e| {
        ApiError::InvalidEvent(format!("data must be {{\"username\", \"text\"}}: {e}"))
    })?;
    let unknown_user = || ApiError::validation("unknown_user", "no user has this username");
    let username = Username::parse(&submitted.username).map_err(|_| unknown_user())?;
    let text = MessageText::parse(submitted.text)?;
    let created = events::message_created(NAME, &username);
    match state
        .db
        .ingest_message(&event.source, &event.id, &username, &text, created)
        .await?
    {
        Ingested::Created(written) => {
            let (_message, entry) = *written;
            common::telemetry::metrics::get()
                .messages_created
                .add(1, &[]);
            state.outbox.publish_in_background(vec![entry]);
        }
        Ingested::Duplicate => {
            tracing::debug!(event.id = %event.id, "duplicate submission ignored");
        }
        Ingested::UnknownUser => return Err(unknown_user()),
    }
    Ok(StatusCode::ACCEPTED)
}
