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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn event() -> CloudEvent {
        let mut event = CloudEvent {
            id: "42".into(),
            source: "/functions/message-create".into(),
            ty: "io.missive.message.created.v1".into(),
            subject: Some("alice".into()),
            time: Some("2026-12-02T10:00:00.123Z".into()),
            data: serde_json::json!({"id": "7", "created_at": "2026-12-02T10:00:00.123Z"}),
            extensions: BTreeMap::new(),
        };
        event.extensions.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        event
            .extensions
            .insert("partitionkey".into(), "alice".into());
        event
    }

    /// Headers and body of a request, as a server reads them.
    async fn parts(request: Request) -> (HeaderMap, Vec<u8>) {
        use http_body_util::BodyExt as _;
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        (parts.headers, body)
    }

    fn binary_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    const MINIMAL: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/test"),
        ("ce-type", "t"),
    ];

    #[tokio::test]
    async fn binary_mode_round_trips_every_attribute_and_extension() {
        let sent = event();
        let request = to_request(&sent, "/").expect("request");
        let (headers, body) = parts(request).await;
        assert_eq!(headers["ce-traceparent"], sent.traceparent().expect("tp"));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(from_request(&headers, &body), Ok(sent));
    }

    #[test]
    fn structured_mode_reads_attributes_extensions_and_data() {
        let headers = binary_headers(&[("content-type", "application/cloudevents+json")]);
        let body = serde_json::json!({
            "specversion": "1.0", "id": "42", "source": "/functions/message-create",
            "type": "io.missive.message.created.v1", "subject": "alice",
            "time": "2026-12-02T10:00:00.123Z", "datacontenttype": "application/json",
            "dataschema": "https://example.com/schema",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "partitionkey": "alice",
            "data": {"id": "7", "created_at": "2026-12-02T10:00:00.123Z"}
        });
        let read = from_request(&headers, body.to_string().as_bytes()).expect("valid");
        assert_eq!(read, event());
    }

    #[test]
    fn structured_mode_refuses_what_we_cannot_model() {
        let headers = binary_headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        for (body, why) in [
            (
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AA=="}"#,
                "data_base64",
            ),
            (
                r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
                "unsupported specversion 0.3",
            ),
            (
                r#"{"id":"1","source":"/s","type":"t"}"#,
                "missing specversion",
            ),
            (
                r#"{"specversion":"1.0","source":"/s","type":"t"}"#,
                "invalid structured event",
            ),
            (r#"["not", "an", "object"]"#, "must be an object"),
            ("not json", "not JSON"),
        ] {
            let err = from_request(&headers, body.as_bytes()).expect_err(body);
            assert!(err.0.contains(why), "{body}: {}", err.0);
        }
    }

    #[test]
    fn binary_mode_names_a_missing_attribute() {
        for missing in ["ce-id", "ce-source", "ce-type", "ce-specversion"] {
            let pairs: Vec<_> = MINIMAL
                .iter()
                .filter(|(n, _)| *n != missing)
                .copied()
                .collect();
            let err = from_request(&binary_headers(&pairs), b"").expect_err(missing);
            let expected = if missing == "ce-specversion" {
                "missing specversion".to_owned()
            } else {
                format!("missing header {missing}")
            };
            assert_eq!(err.0, expected);
        }
        let mut pairs = MINIMAL.to_vec();
        pairs[0] = ("ce-specversion", "0.3");
        let err = from_request(&binary_headers(&pairs), b"").expect_err("0.3");
        assert_eq!(err.0, "unsupported specversion 0.3");
    }

    #[test]
    fn binary_mode_checks_the_rules_of_every_event() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("ce-time", "yesterday"));
        let err = from_request(&binary_headers(&pairs), b"").expect_err("bad time");
        assert_eq!(err.0, "time must be RFC 3339");
        let mut pairs = MINIMAL.to_vec();
        pairs[1] = ("ce-id", "");
        let err = from_request(&binary_headers(&pairs), b"").expect_err("empty id");
        assert_eq!(err.0, "id must not be empty");
    }

    #[test]
    fn binary_mode_keeps_extensions_and_drops_core_attributes_it_does_not_model() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("ce-datacontenttype", "application/json"),
            ("ce-dataschema", "https://example.com/s"),
            (
                "ce-traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("ce-knativearrivaltime", "2026-12-02T10:00:00Z"),
            ("x-other", "not an attribute"),
        ]);
        let event = from_request(&binary_headers(&pairs), b"").expect("valid");
        let names: Vec<&str> = event.extensions.keys().map(String::as_str).collect();
        assert_eq!(names, ["knativearrivaltime", "traceparent"]);
        assert_eq!(event.data, serde_json::Value::Null);
    }

    #[test]
    fn binary_mode_data_follows_the_content_type() {
        let json = |ct: Option<&str>, body: &[u8]| {
            let mut pairs = MINIMAL.to_vec();
            if let Some(ct) = ct {
                pairs.push(("content-type", ct));
            }
            from_request(&binary_headers(&pairs), body)
        };
        assert_eq!(
            json(None, br#"{"a":1}"#).expect("json").data,
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            json(Some("text/plain"), b"plain words").expect("text").data,
            serde_json::json!("plain words")
        );
        // Non-UTF-8 bytes of a non-JSON type are kept, lossily, as text.
        assert_eq!(
            json(Some("application/octet-stream"), &[0x66, 0xff, 0x6f])
                .expect("bytes")
                .data,
            serde_json::json!("f\u{fffd}o")
        );
        let err = json(Some("application/json"), b"{not json").expect_err("bad json");
        assert!(err.0.starts_with("event data is not JSON"), "{}", err.0);
    }

    #[test]
    fn a_header_that_is_not_ascii_is_refused_by_name() {
        let mut headers = binary_headers(&MINIMAL);
        headers.insert(
            "ce-subject",
            HeaderValue::from_bytes(&[0xe2, 0x82, 0xac]).expect("opaque bytes"),
        );
        let err = from_request(&headers, b"").expect_err("non-ASCII");
        assert_eq!(err.0, "ce-subject is not ASCII");
    }
}
