//! `auth-signup`: `POST /api/auth/signup` creates an account and logs it in.
//!
//! Reads/writes: `users` (insert; the unique index on `username` decides races) with its
//! event in the outbox, in one transaction; a new session in the key-value store. Emits
//! `io.missive.user.registered.v1`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth;
use missive_app::auth::{Credentials, UserBody};
use missive_app::http::ClientAddr;
use missive_app::http::session_cookie;
use missive_app::{Function, Trigger};
use missive_serve::ApiError;
use missive_serve::ApiJson;
use missive_serve::ErrorBody;

/// Knative service name, also the event source `/functions/auth-signup`.
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
        .route("/api/auth/signup", post(signup))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(signup))]
pub struct ApiDoc;

/// Create an account and start a session.
#[utoipa::path(
    post, path = "/api/auth/signup", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Created; sets the `missive_session` cookie", body = UserBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_username` or `invalid_password`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many signups from this client (`SIGNUPS_PER_CLIENT_PER_HOUR`); see `Retry-After`", body = ErrorBody),
    )
)]
async fn signup(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, session) = auth::signup(&state, NAME, body, &client).await?;
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, session_cookie(&state, &session))],
        Json(UserBody::from(&user)),
    ))
}
