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
use common::domain::MessageId;
use common::error::ErrorBody;
use common::events::CloudEvent;
use common::sessions::CurrentUser;
use common::{ApiError, AppState};

/// Knative service name, also the event source `/functions/message-delete`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

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
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn delete_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = MessageId::parse(&id).ok_or(ApiError::NotFound)?;
    let event = CloudEvent::new(
        NAME,
        "message.deleted",
        &user.username,
        serde_json::json!({ "id": id.to_string() }),
    );
    let entry = state
        .db
        .delete_message(user.id, id, event)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.outbox.publish(vec![entry]).await;
    Ok(StatusCode::NO_CONTENT)
}
