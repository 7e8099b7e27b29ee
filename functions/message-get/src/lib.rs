//! `message-get`: `GET /api/messages/{id}` returns one message of the logged-in user.
//! Another user's message is 404, never 403: ids of others are not even confirmed.
//!
//! Reads: `messages`. Emits nothing.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use common::db::Message;
use common::domain::MessageId;
use common::error::ErrorBody;
use common::sessions::CurrentUser;
use common::{ApiError, AppState};

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

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
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 200, body = Message),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn get_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = MessageId::parse(&id).ok_or(ApiError::NotFound)?;
    state
        .db
        .get_message(user.id, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
