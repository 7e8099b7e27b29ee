//! `activity-list`: `GET /api/activity?limit=` returns the logged-in user's latest
//! activity entries (the log keeps 100), newest first.
//!
//! Reads: the activity list in the key-value store. Emits nothing.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::activity::ActivityList;
use missive_app::auth::CurrentUser;
use missive_app::{Function, Trigger};
use missive_core::domain::Limit;
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
        .route("/api/activity", get(list))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;

/// Query string of the activity list, as sent.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityParams {
    /// At most this many entries, 1-100 (default 100: the whole log).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// The user's activity, newest first.
#[utoipa::path(
    get, path = "/api/activity", tag = "activity",
    security(("session" = [])),
    params(ActivityParams),
    responses(
        (status = 200, body = ActivityList),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<ActivityParams>,
) -> Result<Json<ActivityList>, ApiError> {
    let limit = Limit::parse_or(params.limit.as_deref(), Limit::MAX)?;
    let items = state
        .activity
        .list(&user.username, limit.get() as usize)
        .await?;
    Ok(Json(ActivityList { items }))
}
