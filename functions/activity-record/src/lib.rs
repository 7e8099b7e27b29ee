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
use missive_app::AppState;
use missive_app::activity;
use missive_app::http::Event;
use missive_app::{Function, Topic, Trigger};
use missive_serve::ApiError;

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Events(Topic::Events),
    publishes: false,
    router,
    openapi: missive_app::function::no_openapi,
};

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/", post(record)).with_state(state)
}

async fn record(
    State(state): State<AppState>,
    Event(event): Event,
) -> Result<StatusCode, ApiError> {
    missive_telemetry::handle_event(&event, activity::record_event(&state, &event)).await?;
    Ok(StatusCode::NO_CONTENT)
}
