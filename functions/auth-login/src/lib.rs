//! `auth-login`: `POST /api/auth/login` checks a password and starts a fresh session.
//!
//! Reads: `users`. Writes: a new session (and removes the one the request came with, if
//! any), failed-attempt counters per (username, client), per client and for the whole
//! deployment in the key-value store (see `missive_app::auth::login`). Emits
//! `io.missive.user.logged_in.v1`.

use missive_app::auth;
use missive_app::http::{ClientAddr, session_cookie, session_id};
use missive_app::{Function, Trigger};
use missive_serve::ApiJson;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::{Credentials, UserBody};
use missive_serve::ApiError;
use missive_serve::ErrorBody;

/// Knative service name, also the event source `/functions/auth-login`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// This function in the registry.
pub const FUNCTION: Function = Function {
    name: NAME,
    trigger: Trigger::Http,
    publishes: true,
    router,
    openapi: || <ApiDoc as utoipa::OpenApi>::openapi(),
};

pub use missive_app::auth::ATTEMPT_WINDOW;

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/auth/login", post(login))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(login))]
pub struct ApiDoc;

/// Log in with username and password.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in; sets a new `missive_session` cookie", body = UserBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many failed logins from this client for this username, or from this client at all; see `Retry-After`", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, session) =
        auth::login(&state, NAME, body, session_id(&state, &headers), &client).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&state, &session))],
        Json(UserBody::from(&user)),
    ))
}
