//! Messages: post (over HTTP or as a submitted event), list, get, search and delete the
//! logged-in user's own messages.
//!
//! A new message is written once ([`create`], [`ingest`]): its row, its search tokens
//! and its `message.created` event commit in one transaction ([`store`]), then the event
//! is published. Every change publishes its event here, so no handler can forget to.

mod batch;
pub mod store;

use missive_adapters::events::kafka::KAFKA_EVENT_TYPE;
use missive_adapters::outbox::OutboxEntry;
use missive_core::domain::{
    Cursor, IdempotencyKey, Limit, MessageId, MessageText, SearchQuery, Username,
};
use missive_core::event::{
    AttributesReader as _, AttributesWriter as _, CloudEvent, EventExt as _, EventKind, JSON,
    MessageCreatedData, MessageDeletedData, MessageSubmittedData,
};
use missive_serve::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use store::MessageStore;
use store::{Created, EventFor, Ingested};

use crate::AppState;
use crate::auth::CurrentUser;

/// A message as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Opaque id.
    pub id: String,
    /// The text as written.
    pub text: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub items: Vec<Message>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/messages`.
#[derive(Deserialize, ToSchema)]
pub struct NewMessage {
    /// 1-4000 characters (Unicode scalar values, as JSON Schema counts them), not only
    /// whitespace. The pattern asks for one character that is not White_Space as Rust's
    /// `str::trim` (the server's rule) knows it, spelled out because regex engines'
    /// `\s` disagree with it (ECMAScript's has U+FEFF and lacks U+0085).
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = "[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub text: String,
}

/// Search results, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    /// Matching messages.
    pub items: Vec<Message>,
}

/// How long a new message's request waits for its event to be out.
enum Publish {
    /// Up to [`missive_adapters::outbox::PUBLISH_WAIT`]: a browser that posts sees its
    /// own activity at once.
    Wait,
    /// Not at all: an event function that has committed its work should take the next
    /// event, not wait for a broker round trip.
    Background,
}

/// The `message.created` event of a message once it is stored (its id is known only
/// then): from `function`, about `author`, in the trace of the work being handled.
fn message_created(function: &str, author: &Username) -> EventFor {
    let template = crate::events::new(
        EventKind::MessageCreated,
        function,
        author,
        &serde_json::Value::Null,
    );
    std::sync::Arc::new(move |message: &Message| {
        let mut event = template.clone();
        event.set_id(uuid::Uuid::new_v4().to_string());
        event.set_data(
            JSON,
            serde_json::to_value(MessageCreatedData {
                id: message.id.clone(),
                created_at: message.created_at.clone(),
            })
            .expect("BUG: event payloads serialize"),
        );
        event
    })
}

/// What follows a committed new message, whichever way it came in.
async fn created(state: &AppState, entry: OutboxEntry, publish: Publish) {
    missive_telemetry::metrics::get()
        .messages_created
        .add(1, &[]);
    match publish {
        Publish::Wait => state.outbox.publish(vec![entry]).await,
        Publish::Background => state.outbox.publish_in_background(vec![entry]),
    }
}

/// Posts `text` as `user`. With an idempotency key, a repeat within
/// [`store::IDEMPOTENCY_WINDOW`] returns the first response and creates nothing.
pub async fn create(
    state: &AppState,
    function: &str,
    user: &CurrentUser,
    text: MessageText,
    key: Option<IdempotencyKey>,
) -> Result<Message, ApiError> {
    let event = message_created(function, &user.username);
    match state
        .messages
        .create_message(user.id, &text, key.as_ref(), event)
        .await?
    {
        Created::New(written) => {
            let (message, entry) = *written;
            created(state, entry, Publish::Wait).await;
            Ok(message)
        }
        Created::Replayed(first) => Ok(first),
        Created::KeyReused => Err(ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for another text, or for a message \
                      deleted since; use a new key for a new message"
                .to_owned(),
        }),
    }
}

/// Stores the message a `message.submitted` event carries, once per event `source`+`id`
/// (a redelivery stores nothing). A plain JSON record that KafkaSource wrapped as
/// `dev.knative.kafka.event` is accepted when its data has the same shape. 400
/// `invalid_event` for anything else; 422 for an unknown user or invalid text.
pub async fn ingest(state: &AppState, function: &str, event: &CloudEvent) -> Result<(), ApiError> {
    let submitted_type = EventKind::MessageSubmitted.type_name();
    if event.ty() != submitted_type && event.ty() != KAFKA_EVENT_TYPE {
        return Err(ApiError::InvalidEvent(format!(
            "expected {submitted_type}, got {}",
            event.ty()
        )));
    }
    let submitted: MessageSubmittedData = event.json_data().map_err(|e| {
        ApiError::InvalidEvent(format!("data must be {{\"username\", \"text\"}}: {e}"))
    })?;
    let unknown_user = || ApiError::validation("unknown_user", "no user has this username");
    let username = Username::parse(&submitted.username).map_err(|_| unknown_user())?;
    let text = MessageText::parse(submitted.text)?;
    let created_event = message_created(function, &username);
    match state
        .messages
        .ingest_message(event.source(), event.id(), &username, &text, created_event)
        .await?
    {
        Ingested::Created(written) => {
            let (_message, entry) = *written;
            created(state, entry, Publish::Background).await;
        }
        Ingested::Duplicate => {
            tracing::debug!(event.id = %event.id(), "duplicate submission ignored");
        }
        Ingested::UnknownUser => return Err(unknown_user()),
    }
    Ok(())
}

/// One page of the user's messages, newest first.
pub async fn list(
    state: &AppState,
    user: &CurrentUser,
    before: Option<Cursor>,
    limit: Limit,
) -> Result<MessagePage, ApiError> {
    Ok(state.messages.list_messages(user.id, before, limit).await?)
}

/// One message of the user; 404 for anyone else's.
pub async fn get(state: &AppState, user: &CurrentUser, id: MessageId) -> Result<Message, ApiError> {
    state
        .messages
        .get_message(user.id, id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The user's messages matching every word of `query`, newest first.
pub async fn search(
    state: &AppState,
    user: &CurrentUser,
    query: &SearchQuery,
    limit: Limit,
) -> Result<Vec<Message>, ApiError> {
    Ok(state
        .messages
        .search_messages(user.id, query.words(), limit)
        .await?)
}

/// Deletes one message of the user with its `message.deleted` event; 404 for anyone
/// else's.
pub async fn delete(
    state: &AppState,
    function: &str,
    user: &CurrentUser,
    id: MessageId,
) -> Result<(), ApiError> {
    let event = crate::events::new(
        EventKind::MessageDeleted,
        function,
        &user.username,
        &MessageDeletedData { id: id.to_string() },
    );
    let entry = state
        .messages
        .delete_message(user.id, id, event)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.outbox.publish(vec![entry]).await;
    Ok(())
}
