//! `activity-stream`: `GET /api/activity/stream` streams the logged-in user's new
//! activity entries as server-sent events (`id: <n>`, `event: <type>`, `data: <entry
//! JSON>`), with a comment heartbeat every 15 s so proxies keep the connection open.
//!
//! - Every entry carries its `id`; a reconnect with `Last-Event-ID` (what `EventSource`
//!   sends by itself) first gets the entries after it, so nothing is missed between two
//!   connections (as far back as the 100 entries the log keeps).
//! - One Redis subscription per process serves every stream (`missive_app::activity::
//!   live`); at most `STREAMS_PER_USER` streams per user (429 `too_many_streams`) and
//!   `STREAMS_PER_INSTANCE` per instance (503 `overloaded`).
//! - A stream ends when its session is logged out or expires (checked at every
//!   heartbeat), after `STREAM_MAX_SECS` (under the platform's request timeout; the
//!   browser reconnects and resumes), and when the process begins shutting down.
//!
//! Reads: the user's activity log and channel. Emits nothing.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use missive_app::AppState;
use missive_app::activity::Entry;
use missive_app::activity::live::{Full, Listener, Signal};
use missive_app::auth::CurrentUser;
use missive_app::http::session_id;
use missive_app::{Function, Trigger};
use missive_core::domain::{SessionId, Username};
use missive_serve::ApiError;
use tokio::sync::{broadcast, mpsc};

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

/// Interval of the heartbeat comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The function's routes.
pub fn router(state: AppState) -> Router {
    router_with_heartbeat(state, HEARTBEAT)
}

/// The routes with another heartbeat interval (tests use a short one).
pub fn router_with_heartbeat(state: AppState, heartbeat: Duration) -> Router {
    Router::new()
        .route(
            "/api/activity/stream",
            get(move |state, headers, user| stream(state, headers, user, heartbeat)),
        )
        .with_state(state)
}

/// OpenAPI of this function.
#[derive(utoipa::OpenApi)]
#[openapi(paths(stream))]
pub struct ApiDoc;

/// How soon a browser reconnects after a stream ends (the SSE `retry:` field).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// Live activity of the user.
#[utoipa::path(
    get, path = "/api/activity/stream", tag = "activity",
    security(("session" = [])),
    params(
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last entry received: the stream starts with the entries after it"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `id: <n>`, `event: <type>`, `data: <entry>`; \
            ends when the session does, after `STREAM_MAX_SECS`, or at shutdown (reconnect with `Last-Event-ID`)",
            content_type = "text/event-stream", body = Entry),
        (status = 429, description = "`too_many_streams`: this user has `STREAMS_PER_USER` streams open; see `Retry-After`",
            body = missive_serve::ErrorBody),
    )
)]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
    heartbeat: Duration,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let session = session_id(&state, &headers).ok_or(ApiError::Unauthenticated)?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Listening first, then reading where to start: an entry recorded in between is
    // both in the log and heard, and sent once (by its id).
    let listener = match state.live.listen(&user.username).await? {
        Ok(listener) => listener,
        Err(Full::User) => {
            return Err(ApiError::TooManyRequests {
                code: "too_many_streams",
                message: "this account has too many live streams open; close one".into(),
                retry_after: RECONNECT_AFTER * 5,
            });
        }
        Err(Full::Instance) => {
            return Err(ApiError::Overloaded {
                what: "live activity",
                retry_after: RECONNECT_AFTER,
            });
        }
    };
    let since = match resume_after {
        Some(id) => id,
        None => state.activity.newest_id(&user.username).await?,
    };
    let (events, rx) = mpsc::channel(16);
    tokio::spawn(follow(
        Following {
            state: state.clone(),
            user: user.username,
            session,
            heartbeat,
            sent: since,
            resume: resume_after.is_some(),
        },
        listener,
        events,
    ));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

/// One stream's progress.
struct Following {
    state: AppState,
    user: Username,
    session: SessionId,
    heartbeat: Duration,
    /// The id of the last entry sent (or the newest one when the stream began).
    sent: u64,
    /// Whether to start with the entries after `sent`.
    resume: bool,
}

type Events = mpsc::Sender<Result<Event, Infallible>>;

/// Feeds one stream until it should end; dropping `events` ends the response.
async fn follow(mut f: Following, mut listener: Listener, events: Events) {
    let hello = Event::default().retry(RECONNECT_AFTER).comment("connected");
    if events.send(Ok(hello)).await.is_err() {
        return;
    }
    if f.resume && !f.catch_up(&events).await {
        return;
    }
    let max_age = tokio::time::sleep(Duration::from_secs(f.state.config.stream_max_secs));
    tokio::pin!(max_age);
    let mut check = tokio::time::interval(f.heartbeat);
    check.tick().await;
    let shutdown = f.state.shutdown.clone();
    loop {
        tokio::select! {
            () = events.closed() => return,
            () = shutdown.cancelled() => return,
            () = &mut max_age => return,
            _ = check.tick() => {
                // Not sliding the session: an open tab alone must not keep it alive. A
                // Redis blip keeps the stream; the next check decides.
                if let Ok(false) = f.state.sessions.is_live(&f.session).await {
                    tracing::debug!("the stream's session ended");
                    return;
                }
            }
            signal = listener.signals.recv() => {
                let open = match signal {
                    Ok(Signal::Entry(json)) => f.send_live(&json, &events).await,
                    Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        f.catch_up(&events).await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !open {
                    return;
                }
            }
        }
    }
}

impl Following {
    /// Sends a live entry; one that skips ids means some were missed: they are read
    /// from the log instead. `false` when the stream is gone.
    async fn send_live(&mut self, json: &str, events: &Events) -> bool {
        let Ok(entry) = serde_json::from_str::<Entry>(json) else {
            return true;
        };
        if entry.id <= self.sent {
            return true;
        }
        if entry.id > self.sent + 1 {
            return self.catch_up(events).await;
        }
        self.send(&entry, json.to_owned(), events).await
    }

    /// Sends every logged entry after the last one sent. `false` when the stream is gone.
    async fn catch_up(&mut self, events: &Events) -> bool {
        let missed = match self.state.activity.since(&self.user, self.sent).await {
            Ok(missed) => missed,
            Err(err) => {
                // The stream goes on; the next entry or resync tries again.
                tracing::warn!(error = format!("{err:#}"), "reading missed activity failed");
                return true;
            }
        };
        for entry in missed {
            let Ok(json) = serde_json::to_string(&entry) else {
                continue;
            };
            if !self.send(&entry, json, events).await {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, entry: &Entry, json: String, events: &Events) -> bool {
        self.sent = self.sent.max(entry.id);
        let event = Event::default()
            .id(entry.id.to_string())
            .event(&entry.kind)
            .data(json);
        events.send(Ok(event)).await.is_ok()
    }
}
