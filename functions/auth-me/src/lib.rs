//! `auth-me`: `GET /api/auth/me` says who is logged in (and slides the session's expiry).
//!
//! Reads: the session. Emits nothing.

use axum::routing::get;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::auth::UserBody;
use missive_app::{Function, Trigger};

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
    security(("session" = [])),
    responses(
        (status = 200, body = UserBody),
    )
)]
async fn me(user: CurrentUser) -> Json<UserBody> {
    Json(UserBody::from(&user))
}
