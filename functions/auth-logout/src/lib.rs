//! `auth-logout`: `POST /api/auth/logout` ends the session server-side and clears the
//! cookie. Idempotent: without a (valid) session it still answers 204.
//!
//! Writes: deletes the session from the key-value store. Emits
//! `io.missive.user.logged_out.v1` when a session was ended.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use common::error::ErrorBody;
use common::events::CloudEvent;
use common::extract::{clear_session_cookie, session_id};
use common::{ApiError, AppState};

/// Knative service name, also the event source `/functions/auth-logout`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/auth/logout", post(logout))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(logout))]
pub struct ApiDoc;

/// End the session.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Logged out (also without a session); clears the cookie"),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(id) = session_id(&headers)
        && let Some(user) = state.sessions.get(&id).await?
    {
        state.sessions.delete(&id).await?;
        let entry = state
            .db
            .outbox_alone(CloudEvent::new(
                NAME,
                "user.logged_out",
                &user.username,
                serde_json::json!({ "username": user.username.as_str() }),
            ))
            .await?;
        state.outbox.publish(vec![entry]).await;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie(&state))],
    ))
}
