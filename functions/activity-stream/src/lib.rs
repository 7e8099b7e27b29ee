//! `activity-stream`: `GET /api/activity/stream` streams the logged-in user's new
//! activity entries as server-sent events (`event: <type>`, `data: <entry JSON>`), with a
//! comment heartbeat every 15 s so proxies keep the connection open.
//!
//! Reads: the user's activity channel (Redis pub/sub). Emits nothing. The stream ends
//! when the process begins shutting down; `EventSource` reconnects by itself.

use missive_app::{Function, Trigger};
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use missive_app::AppState;
use missive_app::activity::Entry;
use missive_app::auth::CurrentUser;
use missive_serve::ApiError;

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Http,
    publishes: false,
    router,
    openapi: || <ApiDoc as utoipa::OpenApi>::openapi(),
};

/// Interval of the heartbeat comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The function's routes.
pub fn router(state: AppState) -> Router {
    router_with_heartbeat(state, HEARTBEAT)
}

/// The routes with another heartbeat interval (tests use a short one).
pub fn router_with_heartbeat(state: AppState, heartbeat: Duration) -> Router {
    Router::new()
        .route(
            "/api/activity/stream",
            get(move |state, user| stream(state, user, heartbeat)),
        )
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(stream))]
pub struct ApiDoc;

/// Live activity of the user.
#[utoipa::path(
    get, path = "/api/activity/stream", tag = "activity",
    security(("session" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: `event: <type>`, `data: <entry>`",
            content_type = "text/event-stream", body = Entry),
    )
)]
async fn stream(
    State(state): State<AppState>,
    user: CurrentUser,
    heartbeat: Duration,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let entries = state.activity.subscribe(&user.username).await?;
    let events = entries
        .map(|json| {
            let kind = serde_json::from_str::<Entry>(&json)
                .map(|entry| entry.kind)
                .unwrap_or_else(|_| "activity".to_owned());
            Ok(Event::default().event(kind).data(json))
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
