//! `auth-login`: `POST /api/auth/login` checks a password and starts a fresh session.
//!
//! Reads: `users`. Writes: a new session (and removes the one the request came with, if
//! any), a failed-attempt counter per username in the key-value store. Emits
//! `io.missive.user.logged_in.v1`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::api::{Credentials, UserBody};
use common::domain::{Password, Username};
use common::error::ErrorBody;
use common::events::CloudEvent;
use common::extract::{ApiJson, session_cookie, session_id};
use common::sessions::CurrentUser;
use common::{ApiError, AppState};

/// Knative service name, also the event source `/functions/auth-login`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// Failed logins allowed per username within [`ATTEMPT_WINDOW`].
pub const MAX_FAILED_ATTEMPTS: u64 = 5;

/// The window in which failed logins are counted.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`; see `Retry-After`", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    // A name that breaks the signup rule cannot exist: same answer as an unknown user.
    let Ok(username) = Username::parse(&body.username) else {
        let _ = common::password::verify(Password::parse(body.password).ok(), None).await;
        return Err(ApiError::InvalidCredentials);
    };
    // Count the attempt before checking it, atomically: parallel guesses cannot slip in
    // between a check and an increment. Success clears the counter.
    let counter = format!("login_failures:{username}");
    let (attempts, window_left) = state.kv.incr_window(&counter, ATTEMPT_WINDOW).await?;
    if attempts > MAX_FAILED_ATTEMPTS {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_left,
        });
    }
    let found = state.db.find_user(&username).await?;
    let password = Password::parse(body.password).ok();
    let (id, hash) = match found {
        Some((id, hash)) => (Some(id), Some(hash)),
        None => (None, None),
    };
    let ok = common::password::verify(password, hash).await?;
    let Some(id) = id.filter(|_| ok) else {
        return Err(ApiError::InvalidCredentials);
    };
    state.kv.del(&counter).await?;
    if let Some(old) = session_id(&headers) {
        state.sessions.delete(&old).await?;
    }
    let user = CurrentUser {
        id,
        username: username.clone(),
    };
    let session = state.sessions.create(&user).await?;
    let entry = state
        .db
        .outbox_alone(CloudEvent::new(
            NAME,
            "user.logged_in",
            &username,
            serde_json::json!({ "username": username.as_str() }),
        ))
        .await?;
    common::telemetry::metrics::get().logins.add(1, &[]);
    state.outbox.publish(vec![entry]).await;
    Ok((
        [(header::SET_COOKIE, session_cookie(&state, &session))],
        Json(UserBody {
            username: username.as_str().to_owned(),
        }),
    ))
}
