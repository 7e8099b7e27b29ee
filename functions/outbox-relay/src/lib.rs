//! `outbox-relay`: publishes outbox rows that the request which wrote them did not (the
//! transport was down, or the instance stopped first). A Knative PingSource POSTs a
//! `dev.knative.sources.ping` CloudEvent to `/` every minute; each call publishes every
//! unsent row older than `OUTBOX_RELAY_MIN_AGE_SECS`, oldest first, and purges rows sent
//! more than a day ago.
//!
//! Runs safely beside itself: a lease row admits one relay at a time (the others answer
//! at once with `leased: false`), so nothing is published twice by relays and order is
//! kept. Reads/writes `outbox` and `outbox_lease`. Emits whatever the rows hold.

use missive_adapters::outbox::RelayReport;
use missive_app::http::Event;
use missive_app::{Function, Trigger};
use missive_core::event::AttributesReader as _;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use missive_app::AppState;
use missive_serve::ApiError;

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Schedule,
    publishes: true,
    router,
    openapi: missive_app::function::no_openapi,
};

/// Type of the PingSource event that triggers a run.
pub const PING_TYPE: &str = "dev.knative.sources.ping";

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new().route("/", post(relay)).with_state(state)
}

async fn relay(
    State(state): State<AppState>,
    Event(event): Event,
) -> Result<Json<RelayReport>, ApiError> {
    if event.ty() != PING_TYPE {
        return Err(ApiError::InvalidEvent(format!(
            "expected {PING_TYPE}, got {}",
            event.ty()
        )));
    }
    let holder = format!("{NAME}-{}", event.id());
    let min_age = Duration::from_secs(state.config.outbox_relay_min_age_secs);
    let report = state.outbox.relay(&holder, min_age).await?;
    if report.published > 0 {
        tracing::info!(published = report.published, "relayed outbox rows");
    }
    Ok(Json(report))
}
