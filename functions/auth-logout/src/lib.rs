//! `auth-logout`: `POST /api/auth/logout` ends the session server-side and clears the
//! cookie; with `{"everywhere": true}`, every session of the user (other browsers and
//! devices too). Idempotent: without a (valid) session it still answers 204. The body,
//! if any, must be a JSON object.
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
#[openapi(paths(logout), components(schemas(LogoutBody)))]
pub struct ApiDoc;

/// `POST /api/auth/logout`'s optional body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct LogoutBody {
    /// End every session of the user, not only this one.
    #[serde(default)]
    pub everywhere: bool,
}

/// End the session (or every session of the user).
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    request_body(content = LogoutBody, content_type = "application/json",
        description = "`{}` (or no body at all), or `{\"everywhere\": true}` to end every session \
            of the user. Like every state-changing request it must say \
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
    // What is sent must be what the document says: an object, `everywhere` a boolean.
    let body: LogoutBody = if body.is_empty() {
        LogoutBody::default()
    } else {
        let invalid = |err: serde_json::Error| {
            ApiError::InvalidJson(format!(
                "the body must be a JSON object, with `everywhere` true or false: {err}"
            ))
        };
        // An object first: serde would also read a struct from an array (`[]`, `[true]`).
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body).map_err(invalid)?;
        serde_json::from_value(serde_json::Value::Object(object)).map_err(invalid)?
    };
    auth::logout(&state, NAME, session_id(&state, &headers), body.everywhere).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie(&state))],
    ))
}
