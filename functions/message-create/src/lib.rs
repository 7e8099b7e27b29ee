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
use common::api::NewMessage;
use common::db::{Created, Message};
use common::domain::{IdempotencyKey, MessageText};
use common::error::ErrorBody;
use common::events::message_created;
use common::extract::ApiJson;
use common::sessions::CurrentUser;
use common::{ApiError, AppState};

/// Knative service name, also the event source `/functions/message-create`.
pub const NAME: &str = env!("CARGO_PKG_NAME");

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
    request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-255 visible ASCII characters; a repeat by the same user within 24 h returns the first response")),
    responses(
        (status = 201, body = Message),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
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
    let event = message_created(NAME, &user.username);
    let message = match state
        .db
        .create_message(user.id, &text, key.as_ref(), event)
        .await?
    {
        Created::New(message, entry) => {
            common::telemetry::metrics::get()
                .messages_created
                .add(1, &[]);
            state.outbox.publish(vec![entry]).await;
            message
        }
        Created::Replayed(first) => first,
    };
    Ok((StatusCode::CREATED, Json(message)))
}
