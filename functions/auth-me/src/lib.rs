//! `auth-me`: `GET /api/auth/me` says who is logged in (and slides the session's expiry).
//!
//! Reads: the session. Emits nothing.

use axum::routing::get;
use axum::{Json, Router};
use common::AppState;
use common::api::UserBody;
use common::error::ErrorBody;
use common::sessions::CurrentUser;

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/auth/me", get(me))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(me))]
pub struct ApiDoc;

/// The logged-in user.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth",
    responses(
        (status = 200, body = UserBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    )
)]
async fn me(user: CurrentUser) -> Json<UserBody> {
    Json(UserBody {
        username: user.username.as_str().to_owned(),
    })
}
