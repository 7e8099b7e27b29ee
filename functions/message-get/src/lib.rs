//! `message-get`: `GET /api/messages/{id}` returns one message of the logged-in user.
//! Another user's message is 404, never 403: ids of others are not even confirmed.
//!
//! Reads: `messages`. Emits nothing.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::messages::{self, Message};
use missive_app::{Function, Trigger};
use missive_core::domain::MessageId;
use missive_serve::ApiError;
use missive_serve::ErrorBody;

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
        .route("/api/messages/{id}", get(get_message))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_message))]
pub struct ApiDoc;

/// One message.
#[utoipa::path(
    get, path = "/api/messages/{id}", tag = "messages",
    security(("session" = [])),
    params(("id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "Message id (any other value is 404)")),
    responses(
        (status = 200, body = Message),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn get_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id).ok_or(ApiError::NotFound)?;
    Ok(Json(messages::get(&state, &user, id).await?))
}
