//! `message-create`: `POST /api/messages` stores a message of the logged-in user.
//!
//! Writes, in one transaction: `messages`, its search tokens in `message_tokens`, its event
//! in the outbox, and the `Idempotency-Key` (if sent) with the response, so a retried
//! request replays the first response instead of posting twice. Emits
//! `io.missive.message.created.v1`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use missive_app::AppState;
use missive_app::auth::CurrentUser;
use missive_app::messages::{self, Message, NewMessage};
use missive_app::{Function, Trigger};
use missive_core::domain::{IdempotencyKey, MessageText};
use missive_serve::ApiError;
use missive_serve::ApiJson;
use missive_serve::ErrorBody;

/// Knative service name, also the event source `/functions/message-create`.
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
        .route("/api/messages", post(create))
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create))]
pub struct ApiDoc;

/// Post a message.
#[utoipa::path(
    post, path = "/api/messages", tag = "messages",
    security(("session" = [])),
    request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "1-255 visible ASCII characters. A repeat by the same user within 24 h with the same text creates nothing and returns the first response (201, same body), also after a crash between the two; with another text, or after the message was deleted, it is refused with 409 `idempotency_key_reused`.")),
    responses(
        (status = 201, body = Message),
        (status = 409, description = "`idempotency_key_reused`: the key was used for another text, or for a message deleted since", body = ErrorBody),
        (status = 422, description = "`invalid_text` or `invalid_idempotency_key`", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<impl IntoResponse, ApiError> {
    let text = MessageText::parse(body.text)?;
    let key = headers
        .get("idempotency-key")
        .map(|v| IdempotencyKey::parse(v.as_bytes()))
        .transpose()?;
    let message = messages::create(&state, NAME, &user, text, key).await?;
    Ok((StatusCode::CREATED, Json(message)))
}
