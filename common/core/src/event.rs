//! Missive's events as CloudEvents 1.0
//! (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md>): the model is
//! the CloudEvents SDK's [`CloudEvent`] (`cloudevents-sdk`), and this module holds the
//! catalogue of the events we emit and consume: [`EventKind`] with one payload struct
//! each, converted into the SDK's model by [`EventKind::event`] and back out by
//! [`EventExt::kind`] and [`EventExt::json_data`]. Nothing else in the code spells an
//! event type out; docs/events.md and docs/asyncapi.yaml describe the same catalogue for
//! outside producers and consumers.
//!
//! The bindings (HTTP binary and structured mode, Kafka records) live with the
//! transports, in the adapters crate.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::Username;

/// The event model is the CloudEvents SDK's (`cloudevents-sdk`, spec 1.0): what our
/// bindings read and write, what handlers receive. [`EventExt`] adds what Missive asks
/// of every event.
pub use cloudevents::event::{ExtensionValue, SpecVersion};
pub use cloudevents::{
    AttributesReader, AttributesWriter, Data, Event as CloudEvent, EventBuilder, EventBuilderV10,
};

/// Prefix of every Missive event type: `io.missive.<noun>.<verb>.v1`.
pub const TYPE_PREFIX: &str = "io.missive.";

/// The `datacontenttype` of every event we emit.
pub const JSON: &str = "application/json";

/// The name of the distributed-tracing extension (W3C trace context).
pub const TRACEPARENT: &str = "traceparent";

impl EventKind {
    /// A new event of this kind from function `function` about `subject`, now, with
    /// `data` as JSON, in the trace `traceparent` names (the CloudEvents
    /// distributed-tracing extension): the catalogue's way into the SDK's model.
    pub fn event(
        self,
        function: &str,
        subject: &Username,
        data: &impl Serialize,
        traceparent: String,
    ) -> CloudEvent {
        EventBuilderV10::new()
            .id(uuid::Uuid::new_v4().to_string())
            .source(format!("/functions/{function}"))
            .ty(self.type_name())
            .subject(subject.as_str())
            .time(now())
            .extension(TRACEPARENT, traceparent)
            .data(
                JSON,
                serde_json::to_value(data)
                    .expect("BUG: event payloads are plain structs that serialize"),
            )
            .build()
            .expect("BUG: id, source and type are set")
    }
}

/// Now, to the millisecond (what our `time` attributes carry).
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(crate::time::now_millis())
        .expect("BUG: the clock is within chrono's range")
}

/// RFC 3339 UTC with milliseconds and `Z`: the form of `time` on our Kafka records and
/// in activity entries (the SDK writes HTTP headers as `+00:00`; both are RFC 3339).
pub fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What Missive asks of every event, on top of the SDK's accessors.
pub trait EventExt {
    /// The event's `traceparent` extension, if it is a string.
    fn traceparent(&self) -> Option<&str>;
    /// Which of our events this is; `None` for foreign types.
    fn kind(&self) -> Option<EventKind>;
    /// The rules every event must keep whatever its binding, beyond what the SDK checks
    /// (presence of the required attributes, types of `time` and `dataschema`): non-empty
    /// `id`, `source` and `type`, and extension names of lower-case letters and digits.
    /// The error says which rule broke.
    fn check(&self) -> Result<(), String>;
    /// The data as JSON of type `T` (a catalogue payload, or `serde_json::Value`): what
    /// handlers take from the catalogue's way back out of the SDK's model. Refused when
    /// `datacontenttype` is not JSON or the bytes do not parse as `T`.
    fn json_data<T: DeserializeOwned>(&self) -> Result<T, String>;
}

impl EventExt for CloudEvent {
    fn traceparent(&self) -> Option<&str> {
        match self.extension(TRACEPARENT)? {
            ExtensionValue::String(value) => Some(value),
            _ => None,
        }
    }

    fn kind(&self) -> Option<EventKind> {
        EventKind::from_type(self.ty())
    }

    fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("id", self.id()),
            ("source", self.source()),
            ("type", self.ty()),
        ] {
            if value.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        if let Some((name, _)) = self
            .iter_extensions()
            .find(|(name, _)| !is_attribute_name(name))
        {
            return Err(format!(
                "extension name {name:?} must be lower-case letters and digits"
            ));
        }
        Ok(())
    }

    fn json_data<T: DeserializeOwned>(&self) -> Result<T, String> {
        if let Some(content_type) = self.datacontenttype()
            && !is_json(content_type)
        {
            return Err(format!("data is {content_type}, not JSON"));
        }
        let parsed = match self.data() {
            None => serde_json::from_value(serde_json::Value::Null),
            Some(Data::Json(value)) => T::deserialize(value),
            Some(Data::Binary(bytes)) => serde_json::from_slice(bytes),
            Some(Data::String(text)) => serde_json::from_str(text),
        };
        parsed.map_err(|e| format!("event data: {e}"))
    }
}

/// CloudEvents attribute names: lower-case ASCII letters and digits (spec 1.0, "Attribute
/// Naming Convention"; the 20-character length is a SHOULD, so longer names are kept).
pub fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether a media type carries JSON (`application/json`, `text/json`, `...+json`), as the
/// CloudEvents JSON format decides it.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
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
        let event = EventKind::UserLoggedIn.event(
            "auth-login",
            &alice,
            &UserData {
                username: "alice".into(),
            },
            tp.clone(),
        );
        assert_eq!(event.specversion(), SpecVersion::V10);
        assert_eq!(event.ty(), "io.missive.user.logged_in.v1");
        assert_eq!(event.source(), "/functions/auth-login");
        assert_eq!(event.subject(), Some("alice"));
        assert_eq!(event.datacontenttype(), Some(JSON));
        assert_eq!(event.traceparent(), Some(tp.as_str()));
        let time = event.time().expect("time");
        assert_eq!(time.timestamp_subsec_nanos() % 1_000_000, 0, "milliseconds");
        assert!(rfc3339(time).ends_with('Z'));
        assert_eq!(
            event.json_data::<UserData>(),
            Ok(UserData {
                username: "alice".into()
            })
        );
        assert_eq!(event.kind(), Some(EventKind::UserLoggedIn));
        assert_eq!(event.check(), Ok(()));
    }

    #[test]
    fn check_names_the_broken_rule() {
        let mut event = EventBuilderV10::new()
            .id("")
            .source("/s")
            .ty("t")
            .build()
            .expect("builds");
        assert_eq!(event.check(), Err("id must not be empty".into()));
        event.set_id("1");
        assert_eq!(event.check(), Ok(()));
        event.set_extension("a20characternamexxxx", "kept");
        assert_eq!(event.check(), Ok(()));
        event.set_extension("Bad_Name", "x");
        assert_eq!(
            event.check(),
            Err(r#"extension name "Bad_Name" must be lower-case letters and digits"#.into())
        );
    }

    #[test]
    fn json_data_follows_the_content_type() {
        let event = |ct: Option<&str>, data: Option<Data>| {
            let mut event = EventBuilderV10::new()
                .id("1")
                .source("/s")
                .ty("t")
                .build()
                .expect("builds");
            if let Some(data) = data {
                match ct {
                    Some(ct) => {
                        event.set_data(ct, data);
                    }
                    None => {
                        event.set_data_unchecked(data);
                    }
                }
            }
            event
        };
        let value = |e: &CloudEvent| e.json_data::<serde_json::Value>();
        let json = serde_json::json!({"a": 1});
        assert_eq!(
            value(&event(None, Some(Data::Binary(br#"{"a":1}"#.to_vec())))),
            Ok(json.clone())
        );
        assert_eq!(
            value(&event(
                Some("application/cloudevents+json"),
                Some(Data::Json(json.clone()))
            )),
            Ok(json.clone())
        );
        assert_eq!(
            value(&event(
                Some("text/json; charset=utf-8"),
                Some(Data::String(r#"{"a":1}"#.into()))
            )),
            Ok(json)
        );
        assert_eq!(value(&event(None, None)), Ok(serde_json::Value::Null));
        assert_eq!(
            value(&event(Some("text/plain"), Some(Data::String("hi".into())))),
            Err("data is text/plain, not JSON".into())
        );
        let err = value(&event(None, Some(Data::Binary(b"{oops".to_vec())))).expect_err("bad JSON");
        assert!(err.starts_with("event data: "), "{err}");
        assert!(event(None, None).json_data::<UserData>().is_err());
    }
}
