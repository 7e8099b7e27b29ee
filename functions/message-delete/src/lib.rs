//! `message-delete`: `DELETE /api/messages/{id}` deletes one message of the logged-in user
//! (404 for anyone else's).
//!
//! Writes, in one transaction: `messages` (its search tokens go by cascade) and the event
//! in the outbox. Emits
//! `io.missive.message.deleted.v1`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::delete;
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::messages;
use missive_app::{Function, Trigger};
use missive_core::domain::MessageId;
use missive_serve::ApiError;
use missive_serve::ErrorBody;

/// Knative service name, also the event source `/functions/message-delete`.
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
        .route("/api/messages/{id}", delete(delete_message))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(delete_message))]
pub struct ApiDoc;

/// Delete one message.
#[utoipa::path(
    delete, path = "/api/messages/{id}", tag = "messages",
    security(("session" = [])),
    params(("id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "Message id (any other value is 404)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn delete_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = MessageId::parse(&id).ok_or(ApiError::NotFound)?;
    messages::delete(&state, NAME, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
