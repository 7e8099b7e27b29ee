//! `message-list`: `GET /api/messages?limit=&before=` pages through the logged-in user's
//! messages, newest first (keyset pagination on the message id).
//!
//! Reads: `messages`. Emits nothing.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use common::db::MessagePage;
use common::domain::{Cursor, Limit};
use common::error::ErrorBody;
use common::extract::ApiQuery;
use common::sessions::CurrentUser;
use common::{ApiError, AppState};
use serde::Deserialize;

/// Knative service name.
pub const NAME: &str = env!("CARGO_PKG_NAME");

/// The function's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/messages", get(list))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;

/// Query string of the list endpoint, as sent (parsed into domain types in the handler).
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Page size, 1-100 (default 20).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    before: Option<String>,
}

/// The user's messages, newest first.
#[utoipa::path(
    get, path = "/api/messages", tag = "messages",
    params(ListParams),
    responses(
        (status = 200, body = MessagePage),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_limit` or `invalid_cursor`", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = Limit::parse(params.limit.as_deref())?;
    let before = params.before.as_deref().map(Cursor::parse).transpose()?;
    Ok(Json(state.db.list_messages(user.id, before, limit).await?))
}
