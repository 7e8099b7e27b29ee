//! Missive's events as CloudEvents 1.0
//! (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md>), and the
//! catalogue of the events we emit and consume: [`EventKind`] with one payload struct
//! each. Nothing else in the code spells an event type out; docs/events.md and
//! docs/asyncapi.yaml describe the same catalogue for outside producers and consumers.
//!
//! The bindings (HTTP binary and structured mode, Kafka records) live with the
//! transports, in the adapters crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Username;

/// Prefix of every Missive event type: `io.missive.<noun>.<verb>.v1`.
pub const TYPE_PREFIX: &str = "io.missive.";

/// A CloudEvent with JSON data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Unique per `source`; with it, the de-duplication key.
    pub id: String,
    /// The producer, `/functions/<name>` for ours.
    pub source: String,
    /// E.g. `io.missive.message.created.v1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The username the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339 time of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Extension attributes (e.g. `traceparent`), lower-case names.
    #[serde(flatten, default)]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

impl CloudEvent {
    /// A new Missive event of `kind` from function `function` about `subject`, now, in
    /// the trace `traceparent` names (the CloudEvents distributed-tracing extension).
    pub fn missive(
        kind: EventKind,
        function: &str,
        subject: &Username,
        data: &impl Serialize,
        traceparent: String,
    ) -> Self {
        let mut extensions = BTreeMap::new();
        extensions.insert(
            "traceparent".to_owned(),
            serde_json::Value::String(traceparent),
        );
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            source: format!("/functions/{function}"),
            ty: kind.type_name().to_owned(),
            subject: Some(subject.as_str().to_owned()),
            time: Some(crate::time::rfc3339_millis(crate::time::now_millis())),
            data: serde_json::to_value(data)
                .expect("BUG: event payloads are plain structs that serialize"),
            extensions,
        }
    }

    /// The event's `traceparent` extension, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions.get("traceparent").and_then(|v| v.as_str())
    }

    /// Which of our events this is; `None` for foreign types.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_type(&self.ty)
    }

    /// The rules every event must keep whatever its binding: non-empty `id`, `source`
    /// and `type`, and an RFC 3339 `time` if it has one. The error says which rule broke.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        if let Some(time) = &self.time
            && !crate::time::is_rfc3339(time)
        {
            return Err("time must be RFC 3339".into());
        }
        Ok(())
    }
}

/// Every event Missive emits or consumes, by its type `io.missive.<name>.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A user signed up. Data: [`UserData`].
    UserRegistered,
    /// A user logged in. Data: [`UserData`].
    UserLoggedIn,
    /// A user logged out. Data: [`UserData`].
    UserLoggedOut,
    /// A message was stored. Data: [`MessageCreatedData`].
    MessageCreated,
    /// A message was deleted. Data: [`MessageDeletedData`].
    MessageDeleted,
    /// An outside producer submits a message (the `missive.inbox` topic). Data:
    /// [`MessageSubmittedData`].
    MessageSubmitted,
}

impl EventKind {
    /// The whole catalogue.
    pub const ALL: [Self; 6] = [
        Self::UserRegistered,
        Self::UserLoggedIn,
        Self::UserLoggedOut,
        Self::MessageCreated,
        Self::MessageDeleted,
        Self::MessageSubmitted,
    ];

    /// The short name, as activity entries show it: `message.created`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UserRegistered => "user.registered",
            Self::UserLoggedIn => "user.logged_in",
            Self::UserLoggedOut => "user.logged_out",
            Self::MessageCreated => "message.created",
            Self::MessageDeleted => "message.deleted",
            Self::MessageSubmitted => "message.submitted",
        }
    }

    /// The CloudEvents `type`: `io.missive.message.created.v1`.
    pub const fn type_name(self) -> &'static str {
        match self {
            Self::UserRegistered => "io.missive.user.registered.v1",
            Self::UserLoggedIn => "io.missive.user.logged_in.v1",
            Self::UserLoggedOut => "io.missive.user.logged_out.v1",
            Self::MessageCreated => "io.missive.message.created.v1",
            Self::MessageDeleted => "io.missive.message.deleted.v1",
            Self::MessageSubmitted => "io.missive.message.submitted.v1",
        }
    }

    /// The kind of a CloudEvents `type`; `None` for foreign types and other versions.
    pub fn from_type(ty: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.type_name() == ty)
    }
}

/// Data of the `user.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    /// Who.
    pub username: String,
}

/// Data of `message.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCreatedData {
    /// The message's id, as the API shows it.
    pub id: String,
    /// When it was stored, RFC 3339.
    pub created_at: String,
}

/// Data of `message.deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDeletedData {
    /// The deleted message's id.
    pub id: String,
}

/// Data of `message.submitted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSubmittedData {
    /// The author, an existing user.
    pub username: String,
    /// The text, under the same rules as `POST /api/messages`.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_prefixed_versioned_and_round_trips() {
        for kind in EventKind::ALL {
            let ty = kind.type_name();
            assert_eq!(ty, format!("{TYPE_PREFIX}{}.v1", kind.name()));
            assert_eq!(EventKind::from_type(ty), Some(kind));
        }
        assert_eq!(EventKind::from_type("io.missive.message.created.v2"), None);
        assert_eq!(EventKind::from_type("dev.knative.kafka.event"), None);
    }

    #[test]
    fn a_missive_event_carries_its_attributes() {
        let alice = Username::parse("alice").expect("valid");
        let tp = crate::trace_context::new_traceparent();
        let event = CloudEvent::missive(
            EventKind::UserLoggedIn,
            "auth-login",
            &alice,
            &UserData {
                username: "alice".into(),
            },
            tp.clone(),
        );
        assert_eq!(event.ty, "io.missive.user.logged_in.v1");
        assert_eq!(event.source, "/functions/auth-login");
        assert_eq!(event.subject.as_deref(), Some("alice"));
        assert_eq!(event.traceparent(), Some(tp.as_str()));
        assert_eq!(event.data, serde_json::json!({"username": "alice"}));
        assert_eq!(event.kind(), Some(EventKind::UserLoggedIn));
        assert_eq!(event.check(), Ok(()));
    }

    #[test]
    fn check_names_the_broken_rule() {
        let mut event: CloudEvent = serde_json::from_value(serde_json::json!({
            "id": "1", "source": "/s", "type": "t", "time": "not a time"
        }))
        .expect("parses");
        assert_eq!(event.check(), Err("time must be RFC 3339".into()));
        event.time = None;
        event.id.clear();
        assert_eq!(event.check(), Err("id must not be empty".into()));
    }
}
