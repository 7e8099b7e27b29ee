//! `activity-record`: the event function behind the activity log. Knative Eventing (or the
//! in-process bus of `missive dev`) POSTs each domain event to `/` as a CloudEvent, in
//! binary or structured mode; the entry is appended to the user's activity list and
//! published to their live stream.
//!
//! Consumes: `io.missive.{user.registered,user.logged_in,user.logged_out,message.created,
//! message.deleted}.v1`. Idempotent on the event's `source` + `id`: a redelivered event is
//! recorded once. Emits nothing.
//!
//! Answers follow Knative's delivery contract: 2xx done, 400 permanent (a malformed
//! event, dead-lettered), 5xx retried.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::activity::{Entry, Recorded};
use common::domain::Username;
use common::events::CloudEvent;
use common::{ApiError, AppState};

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// Event kinds recorded in the activity log.
pub const KINDS: [&str; 5] = [
    "user.registered",
    "user.logged_in",
    "user.logged_out",
    "message.created",
    "message.deleted",
];

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/", post(record)).with_state(state)
}

async fn record(State(state): State<AppState>, event: CloudEvent) -> Result<StatusCode, ApiError> {
    event.handle(append(state, &event)).await
}

async fn append(state: AppState, event: &CloudEvent) -> Result<StatusCode, ApiError> {
    let Some(kind) = event.missive_kind().filter(|k| KINDS.contains(k)) else {
        // Not ours to record (a trigger filter should not have sent it); accepting it
        // keeps it out of the dead-letter topic, which is for events that failed.
        tracing::debug!(event.r#type = %event.ty, "ignoring event type");
        return Ok(StatusCode::NO_CONTENT);
    };
    let user = event
        .subject
        .as_deref()
        .and_then(|s| Username::parse(s).ok())
        .ok_or_else(|| ApiError::InvalidEvent("subject must be a username".into()))?;
    let entry = Entry {
        kind: kind.to_owned(),
        at: event
            .time
            .clone()
            .unwrap_or_else(|| common::db::rfc3339_millis(common::db::now_millis())),
        detail: event.data.clone(),
    };
    match state.activity.record(&user, event, &entry).await? {
        Recorded::New => tracing::debug!(event.id = %event.id, "recorded"),
        Recorded::Duplicate => tracing::debug!(event.id = %event.id, "duplicate ignored"),
    }
    Ok(StatusCode::NO_CONTENT)
}
