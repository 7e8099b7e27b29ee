//! `auth-logout`: `POST /api/auth/logout` ends the session server-side and clears the
//! cookie. Idempotent: without a (valid) session it still answers 204. The body, if
//! any, must be a JSON object (`{}`); it carries nothing.
//!
//! Writes: deletes the session from the key-value store. Emits
//! `io.missive.user.logged_out.v1` when a session was ended.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use missive_app::AppState;
use missive_app::auth;
use missive_app::http::{clear_session_cookie, session_id};
use missive_app::{Function, Trigger};
use missive_serve::ApiError;

/// Knative service name, also the event source `/functions/auth-logout`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Http,
    publishes: true,
    router,
    openapi: || <ApiDoc as utoipa::OpenApi>::openapi(),
};

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
    request_body(content = Object, content_type = "application/json",
        description = "`{}` (or no body at all). Like every state-changing request it must say \
            `Content-Type: application/json`, which a cross-site form cannot."),
    responses(
        (status = 204, description = "Logged out (also without a session); clears the cookie"),
    )
)]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // Nothing in the body is used, but what is sent must be what the document says.
    if !body.is_empty() {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).map_err(
            |err| ApiError::InvalidJson(format!("the body must be a JSON object: {err}")),
        )?;
    }
    auth::logout(&state, NAME, session_id(&state, &headers)).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie(&state))],
    ))
}
