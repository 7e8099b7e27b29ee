//! The per-user activity log (the "real-time log"): the last 100 entries in a list, each
//! with a per-user sequence number (its SSE `id`), and a channel that live streams
//! follow through one subscription per process ([`live`]). Written only by the
//! `activity-record` event function ([`record_event`]); read by `activity-list` and
//! `activity-stream`.

pub mod live;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use missive_adapters::kv::{Kv, LogEntry};
use missive_core::domain::Username;
use missive_core::event::{AttributesReader as _, CloudEvent, EventExt as _, EventKind};
use missive_core::time::{now_millis, rfc3339_millis};
use missive_serve::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;

/// Channels (and list keys) of the activity logs: `activity:<username>`.
pub const CHANNEL_PREFIX: &str = "activity:";

/// Entries kept per user.
pub const MAX_ENTRIES: usize = 100;

/// How long an event id is remembered for de-duplication. Knative retries for minutes, so
/// a day is ample.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The events recorded in the activity log.
pub const RECORDED: [EventKind; 5] = [
    EventKind::UserRegistered,
    EventKind::UserLoggedIn,
    EventKind::UserLoggedOut,
    EventKind::MessageCreated,
    EventKind::MessageDeleted,
];

/// The activity feed, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ActivityList {
    /// Entries.
    pub items: Vec<Entry>,
}

/// One activity entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    /// Sequence number within the user's log, from 1 (0: recorded before numbering).
    /// A live stream's `id:`; reconnecting with `Last-Event-ID` resumes after it.
    #[serde(default)]
    pub id: u64,
    /// `user.registered`, `user.logged_in`, `user.logged_out`, `message.created` or
    /// `message.deleted`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, RFC 3339 UTC.
    pub at: String,
    /// The event's data, e.g. `{"id": "42"}` for message events.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What recording an event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Appended and published.
    New,
    /// Seen before (a redelivery); nothing changed.
    Duplicate,
}

/// The activity log.
#[derive(Clone)]
pub struct ActivityLog {
    kv: Arc<dyn Kv>,
}

impl ActivityLog {
    /// A log on this store.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Self { kv }
    }

    /// The list of `user`'s entries, also the channel they are published on.
    pub fn list_key(user: &Username) -> String {
        format!("{CHANNEL_PREFIX}{user}")
    }

    /// Appends the entry for `event` once per `source`+`id`, numbered, and publishes it
    /// live: one atomic step of the store (one Redis round trip), so a failure leaves
    /// nothing behind and the sender's retry records it.
    pub async fn record(
        &self,
        user: &Username,
        event: &CloudEvent,
        entry: &Entry,
    ) -> anyhow::Result<Recorded> {
        let dedup_key = format!("seen:{}:{}", event.source(), event.id());
        let key = Self::list_key(user);
        let counter = format!("activity_seq:{user}");
        // The store numbers the entry: its JSON is split where the number goes (`id` is
        // the first field).
        let json = serde_json::to_string(entry)?;
        let rest = json
            .strip_prefix(r#"{"id":0"#)
            .context("an entry's JSON starts with its id")?;
        let appended = self
            .kv
            .append_to_log(LogEntry {
                log: &key,
                max_len: MAX_ENTRIES,
                counter: &counter,
                once: Some((&dedup_key, DEDUP_WINDOW)),
                before: r#"{"id":"#,
                after: rest,
            })
            .await?;
        Ok(match appended {
            Some(_) => Recorded::New,
            None => Recorded::Duplicate,
        })
    }

    /// The newest `limit` entries.
    pub async fn list(&self, user: &Username, limit: usize) -> anyhow::Result<Vec<Entry>> {
        self.kv
            .list_front(&Self::list_key(user), limit)
            .await?
            .iter()
            .map(|raw| Ok(serde_json::from_str(raw)?))
            .collect()
    }

    /// The newest entry's id (0 for an empty log).
    pub async fn newest_id(&self, user: &Username) -> anyhow::Result<u64> {
        Ok(self
            .list(user, 1)
            .await?
            .first()
            .map_or(0, |entry| entry.id))
    }

    /// The entries after `id`, oldest first (at most the [`MAX_ENTRIES`] kept).
    pub async fn since(&self, user: &Username, id: u64) -> anyhow::Result<Vec<Entry>> {
        let mut entries = self.list(user, MAX_ENTRIES).await?;
        entries.retain(|entry| entry.id > id);
        entries.reverse();
        Ok(entries)
    }
}

/// Records one delivered event in its subject's activity log, once per `source`+`id`.
/// Events not in [`RECORDED`] are accepted and ignored (a trigger filter should not have
/// sent them; the dead-letter topic is for events that failed); an event whose subject is
/// not a username is 400 `invalid_event` (permanent, dead-lettered).
pub async fn record_event(state: &AppState, event: &CloudEvent) -> Result<(), ApiError> {
    let Some(kind) = event.kind().filter(|kind| RECORDED.contains(kind)) else {
        tracing::debug!(event.r#type = %event.ty(), "ignoring event type");
        return Ok(());
    };
    let user = event
        .subject()
        .and_then(|s| Username::parse(s).ok())
        .ok_or_else(|| ApiError::InvalidEvent("subject must be a username".into()))?;
    let entry = Entry {
        id: 0,
        kind: kind.name().to_owned(),
        at: event.time().map_or_else(
            || rfc3339_millis(now_millis()),
            missive_core::event::rfc3339,
        ),
        detail: event.json_data().map_err(ApiError::InvalidEvent)?,
    };
    match state.activity.record(&user, event, &entry).await? {
        Recorded::New => tracing::debug!(event.id = %event.id(), "recorded"),
        Recorded::Duplicate => tracing::debug!(event.id = %event.id(), "duplicate ignored"),
    }
    Ok(())
}
