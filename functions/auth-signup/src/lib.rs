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
use common::api::{Credentials, UserBody};
use common::domain::{Password, Username};
use common::error::ErrorBody;
use common::events::CloudEvent;
use common::extract::{ApiJson, session_cookie};
use common::sessions::CurrentUser;
use common::{ApiError, AppState};

/// Knative service name, also the event source `/functions/auth-signup`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_username` or `invalid_password`", body = ErrorBody),
    )
)]
async fn signup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let username = Username::parse(&body.username)?;
    let password = Password::parse(body.password)?;
    let hash = common::password::hash(password).await?;
    let event = CloudEvent::new(
        NAME,
        "user.registered",
        &username,
        serde_json::json!({ "username": username.as_str() }),
    );
    let (id, entry) = state
        .db
        .insert_user(&username, &hash, event)
        .await?
        .ok_or(ApiError::UsernameTaken)?;
    let user = CurrentUser {
        id,
        username: username.clone(),
    };
    let session = state.sessions.create(&user).await?;
    common::telemetry::metrics::get().signups.add(1, &[]);
    state.outbox.publish(vec![entry]).await;
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, session_cookie(&state, &session))],
        Json(UserBody {
            username: username.as_str().to_owned(),
        }),
    ))
}
