//! `message-list`: `GET /api/messages?limit=&before=` pages through the logged-in user's
//! messages, newest first (keyset pagination on the message id).
//!
//! Reads: `messages`. Emits nothing.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::messages::{self, MessagePage};
use missive_app::{Function, Trigger};
use missive_core::domain::{Cursor, Limit};
use missive_serve::ApiError;
use missive_serve::ApiQuery;
use missive_serve::ErrorBody;
use serde::Deserialize;

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
        .route("/api/messages", get(list))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;

/// Query string of the list endpoint, as sent (parsed into domain types in the handler).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1-100 (default 20).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page (opaque; anything else is 422 `invalid_cursor`).
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    before: Option<String>,
}

/// The user's messages, newest first.
#[utoipa::path(
    get, path = "/api/messages", tag = "messages",
    security(("session" = [])),
    params(ListParams),
    responses(
        (status = 200, body = MessagePage),
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
    Ok(Json(messages::list(&state, &user, before, limit).await?))
}
