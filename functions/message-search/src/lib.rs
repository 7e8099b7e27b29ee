//! `message-search`: `GET /api/messages/search?q=&limit=` finds the logged-in user's
//! messages in which every word of `q` is a case-insensitive prefix of some word, in any
//! script, newest first.
//!
//! Reads: `message_tokens` (a range scan per word) joined to `messages`. Emits nothing.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::messages::{self, MessageList};
use missive_app::{Function, Trigger};
use missive_core::domain::{Limit, SearchQuery};
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
        .route("/api/messages/search", get(search))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(search))]
pub struct ApiDoc;

/// Query string of the search endpoint, as sent.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// 1-200 characters, not only whitespace, at most 10 different words; every word
    /// must prefix a word of the message. Required (its absence is 422 `invalid_query`).
    #[param(value_type = String, required = true, min_length = 1, max_length = 200, pattern = "[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]")]
    q: Option<String>,
    /// At most this many results, 1-100 (default 20).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// Search the user's messages.
#[utoipa::path(
    get, path = "/api/messages/search", tag = "messages",
    security(("session" = [])),
    params(SearchParams),
    responses(
        (status = 200, body = MessageList),
        (status = 422, description = "`invalid_query`, `too_many_terms` (more than 10 different words: letters and digits between separators, repeats counted once) or `invalid_limit`", body = ErrorBody),
    )
)]
async fn search(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<MessageList>, ApiError> {
    let query = SearchQuery::parse(params.q.as_deref())?;
    let limit = Limit::parse(params.limit.as_deref())?;
    let items = messages::search(&state, &user, &query, limit).await?;
    Ok(Json(MessageList { items }))
}
