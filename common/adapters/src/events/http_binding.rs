//! The CloudEvents HTTP binding
//! (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md>):
//! binary mode (attributes in `ce-*` headers, percent-encoded; body = data) and
//! structured mode (the whole event as `application/cloudevents+json`, the SDK's JSON
//! event format). Knative Eventing delivers both; we send binary mode. See
//! [`super::content_modes`] for how headers map to the SDK's event, and why not through
//! the SDK's own HTTP binding.
//!
//! Reading takes headers and a body already read within the function's body limit (the
//! SDK's axum extractor reads without one), so no binding code can be made to read an
//! unbounded body.

use axum::body::Body;
use axum::extract::Request;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use missive_core::event::{CloudEvent, EventExt as _};

use super::content_modes::{self, HTTP};

/// Why a request is not a CloudEvent we accept; the HTTP edge answers 400
/// `invalid_event` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

fn invalid(message: impl Into<String>) -> InvalidEvent {
    InvalidEvent(message.into())
}

/// `event` as a binary-mode HTTP POST to `uri`.
pub fn to_request(event: &CloudEvent, uri: &str) -> anyhow::Result<Request> {
    let (headers, body) = content_modes::write_binary(HTTP, event).map_err(anyhow::Error::msg)?;
    let mut request = Request::builder().method(Method::POST).uri(uri);
    for (name, value) in headers {
        request = request.header(HeaderName::try_from(name)?, HeaderValue::try_from(value)?);
    }
    Ok(request.body(Body::from(body))?)
}

/// Reads an event from an HTTP request in either mode. A batch
/// (`application/cloudevents-batch+json`) and anything that is not a CloudEvent 1.0 are
/// refused.
pub fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let event = if content_type.starts_with("application/cloudevents-batch+json") {
        return Err(invalid(
            "batched events are not supported; send one event per request",
        ));
    } else if content_type.starts_with("application/cloudevents+json") {
        content_modes::read_structured(body).map_err(InvalidEvent)?
    } else {
        let headers = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()));
        content_modes::read_binary(HTTP, headers, body).map_err(InvalidEvent)?
    };
    event.check().map_err(InvalidEvent)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::event::{
        AttributesReader as _, Data, EventBuilder as _, EventBuilderV10, ExtensionValue,
    };

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn event() -> CloudEvent {
        EventBuilderV10::new()
            .id("42")
            .source("/functions/message-create")
            .ty("io.missive.message.created.v1")
            .subject("alice")
            .time("2026-12-02T10:00:00.123Z")
            .extension("traceparent", TRACEPARENT)
            .extension("partitionkey", "alice")
            .data(
                "application/json",
                serde_json::json!({"id": "7", "created_at": "2026-12-02T10:00:00.123Z"}),
            )
            .build()
            .expect("event")
    }

    /// Headers and body of a request, as a server reads them.
    async fn parts(request: Request) -> (HeaderMap, Vec<u8>) {
        use http_body_util::BodyExt as _;
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        (parts.headers, body)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
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
        let request = to_request(&sent, "http://sink.example/path").expect("request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://sink.example/path");
        let (headers, body) = parts(request).await;
        assert_eq!(headers["ce-traceparent"], TRACEPARENT);
        assert_eq!(headers["ce-time"], "2026-12-02T10:00:00.123Z");
        assert_eq!(headers["content-type"], "application/json");
        let mut read = from_request(&headers, &body).expect("valid");
        // Binary mode carries the data as bytes; as JSON they are what was sent.
        let data = read.json_data::<serde_json::Value>().expect("JSON");
        read.set_data("application/json", data);
        assert_eq!(read, sent);
    }

    #[test]
    fn structured_mode_reads_attributes_extensions_and_data() {
        let headers = headers(&[("content-type", "application/cloudevents+json")]);
        let body = serde_json::json!({
            "specversion": "1.0", "id": "42", "source": "/functions/message-create",
            "type": "io.missive.message.created.v1", "subject": "alice",
            "time": "2026-12-02T10:00:00.123Z", "datacontenttype": "application/json",
            "traceparent": TRACEPARENT,
            "partitionkey": "alice",
            "data": {"id": "7", "created_at": "2026-12-02T10:00:00.123Z"}
        });
        let read = from_request(&headers, body.to_string().as_bytes()).expect("valid");
        assert_eq!(read, event());
    }

    #[test]
    fn structured_mode_keeps_base64_data_and_typed_extensions() {
        let headers = headers(&[("content-type", "application/cloudevents+json")]);
        let body = serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": "application/octet-stream", "data_base64": "AP8=",
            "flag": true, "count": 2147483647, "negative": -2147483648
        });
        let read = from_request(&headers, body.to_string().as_bytes()).expect("valid");
        assert_eq!(read.data(), Some(&Data::Binary(vec![0x00, 0xff])));
        assert_eq!(read.extension("flag"), Some(&ExtensionValue::Boolean(true)));
        assert_eq!(
            read.extension("count"),
            Some(&ExtensionValue::Integer(2_147_483_647))
        );
        assert_eq!(
            read.extension("negative"),
            Some(&ExtensionValue::Integer(-2_147_483_648))
        );
    }

    #[test]
    fn structured_mode_refuses_what_is_not_an_event() {
        let headers = headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        for (body, why) in [
            (
                r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
                "unsupported specversion 0.3",
            ),
            (
                r#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#,
                "specversion must be a string",
            ),
            (
                r#"{"id":"1","source":"/s","type":"t"}"#,
                "missing specversion",
            ),
            (
                r#"{"specversion":"1.0","source":"/s","type":"t"}"#,
                "invalid structured event: missing field `id`",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":1.5}"#,
                "invalid structured event",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}"#,
                "invalid structured event",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad-Name":"x"}"#,
                "extension name \"Bad-Name\"",
            ),
            (r#"["not", "an", "object"]"#, "must be an object"),
            ("not json", "not JSON"),
        ] {
            let err = from_request(&headers, body.as_bytes()).expect_err(body);
            assert!(err.0.contains(why), "{body}: {}", err.0);
        }
    }

    #[test]
    fn a_batch_is_refused() {
        let headers = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let err = from_request(&headers, b"[]").expect_err("batch");
        assert!(
            err.0.starts_with("batched events are not supported"),
            "{}",
            err.0
        );
    }

    #[test]
    fn binary_mode_names_a_missing_attribute() {
        for missing in ["ce-id", "ce-source", "ce-type", "ce-specversion"] {
            let pairs: Vec<_> = MINIMAL
                .iter()
                .filter(|(n, _)| *n != missing)
                .copied()
                .collect();
            let err = from_request(&headers(&pairs), b"").expect_err(missing);
            let expected = if missing == "ce-specversion" {
                "missing specversion".to_owned()
            } else {
                format!("missing header {missing}")
            };
            assert_eq!(err.0, expected);
        }
        let mut pairs = MINIMAL.to_vec();
        pairs[0] = ("ce-specversion", "0.3");
        let err = from_request(&headers(&pairs), b"").expect_err("0.3");
        assert_eq!(err.0, "unsupported specversion 0.3");
    }

    #[test]
    fn binary_mode_checks_the_rules_of_every_event() {
        for (name, value, why) in [
            ("ce-time", "yesterday", "time must be RFC 3339"),
            (
                "ce-dataschema",
                "relative/path",
                "dataschema must be an absolute URI",
            ),
            ("ce-id", "", "id must not be empty"),
        ] {
            let mut pairs = MINIMAL.to_vec();
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value));
            let err = from_request(&headers(&pairs), b"").expect_err(why);
            assert_eq!(err.0, why);
        }
    }

    #[test]
    fn binary_mode_keeps_every_attribute_and_extension() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("content-type", "application/json"),
            ("ce-dataschema", "https://example.com/s"),
            ("ce-traceparent", TRACEPARENT),
            ("ce-knativearrivaltime", "2026-12-02T10:00:00Z"),
            ("x-other", "not an attribute"),
        ]);
        let event = from_request(&headers(&pairs), b"").expect("valid");
        let mut names: Vec<&str> = event.iter_extensions().map(|(name, _)| name).collect();
        names.sort_unstable();
        assert_eq!(names, ["knativearrivaltime", "traceparent"]);
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(
            event.dataschema().map(|u| u.as_str()),
            Some("https://example.com/s")
        );
        assert_eq!(event.data(), None);
    }

    #[test]
    fn binary_mode_keeps_the_body_as_it_came() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("content-type", "application/octet-stream"));
        let bytes = [0x66, 0xff, 0x00, 0x6f];
        let event = from_request(&headers(&pairs), &bytes).expect("bytes");
        assert_eq!(event.data(), Some(&Data::Binary(bytes.to_vec())));
        // Not JSON under a JSON type is the handler's to refuse, not the binding's.
        let event = from_request(&headers(&MINIMAL), b"{not json").expect("kept");
        assert!(event.json_data::<serde_json::Value>().is_err());
    }

    #[test]
    fn a_header_that_is_not_ascii_is_refused_by_name() {
        let mut headers = headers(&MINIMAL);
        headers.insert(
            "ce-subject",
            HeaderValue::from_bytes(&[0xe2, 0x82, 0xac]).expect("opaque bytes"),
        );
        let err = from_request(&headers, b"").expect_err("non-ASCII");
        assert_eq!(err.0, "ce-subject is not ASCII");
    }
}
