//! The CloudEvents HTTP binding
//! (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md>):
//! binary mode (attributes in `ce-*` headers, body = data) and structured mode (the
//! whole event as `application/cloudevents+json`). Knative Eventing delivers both; we
//! send binary mode.
//!
//! Reading takes headers and a body already read within the function's body limit, so
//! no binding code can be made to read an unbounded body.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use http::{HeaderMap, Method, header};
use missive_core::event::CloudEvent;

/// Why a request is not a CloudEvent we accept; the HTTP edge answers 400
/// `invalid_event` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

/// Attributes that are not extensions, as `ce-*` header names (without the prefix).
const CORE_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

/// `event` as a binary-mode HTTP request to `uri`.
pub fn to_request(event: &CloudEvent, uri: &str) -> anyhow::Result<Request> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", &event.id)
        .header("ce-source", &event.source)
        .header("ce-type", &event.ty);
    if let Some(subject) = &event.subject {
        builder = builder.header("ce-subject", subject);
    }
    if let Some(time) = &event.time {
        builder = builder.header("ce-time", time);
    }
    for (name, value) in &event.extensions {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        builder = builder.header(format!("ce-{name}"), value);
    }
    Ok(builder.body(Body::from(serde_json::to_vec(&event.data)?))?)
}

/// Reads an event from an HTTP request in either mode.
pub fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let event = if content_type.starts_with("application/cloudevents+json") {
        from_structured(body)?
    } else {
        from_binary(headers, content_type, body)?
    };
    event.check().map_err(InvalidEvent)?;
    Ok(event)
}

fn invalid(message: impl Into<String>) -> InvalidEvent {
    InvalidEvent(message.into())
}

fn from_structured(body: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("structured event is not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| invalid("structured event must be an object"))?;
    check_specversion(
        object
            .remove("specversion")
            .as_ref()
            .and_then(|v| v.as_str()),
    )?;
    // Only JSON data is meaningful to our handlers; drop attributes we do not model.
    object.remove("datacontenttype");
    object.remove("dataschema");
    if object.contains_key("data_base64") {
        return Err(invalid("data_base64 is not supported"));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("invalid structured event: {e}")))
}

fn from_binary(
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<CloudEvent, InvalidEvent> {
    let attr = |name: &str| -> Result<Option<String>, InvalidEvent> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| invalid(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    check_specversion(attr("ce-specversion")?.as_deref())?;
    let required =
        |name: &str| attr(name)?.ok_or_else(|| invalid(format!("missing header {name}")));
    let data = if body.is_empty() {
        serde_json::Value::Null
    } else if content_type.is_empty() || content_type.contains("json") {
        serde_json::from_slice(body).map_err(|e| invalid(format!("event data is not JSON: {e}")))?
    } else {
        serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
    };
    let mut extensions = BTreeMap::new();
    for (name, value) in headers {
        let Some(ext) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if CORE_ATTRIBUTES.contains(&ext) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            extensions.insert(ext.to_owned(), serde_json::Value::String(value.to_owned()));
        }
    }
    Ok(CloudEvent {
        id: required("ce-id")?,
        source: required("ce-source")?,
        ty: required("ce-type")?,
        subject: attr("ce-subject")?,
        time: attr("ce-time")?,
        data,
        extensions,
    })
}

fn check_specversion(version: Option<&str>) -> Result<(), InvalidEvent> {
    match version {
        Some("1.0") => Ok(()),
        Some(other) => Err(invalid(format!("unsupported specversion {other}"))),
        None => Err(invalid("missing specversion")),
    }
}
