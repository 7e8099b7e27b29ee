//! Interoperability with the CloudEvents SDK's own HTTP binding as the outside peer:
//! what the SDK writes, we read; what we write, the SDK reads; nothing lost either way
//! (every attribute, extensions including `traceparent`, the data bytes). Python's
//! `cloudevents` package is the other peer, in `cli/tests/interop.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use cloudevents::binding::http::to_event;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use missive_adapters::events::http_binding::{from_request, to_request};
use missive_core::event::{CloudEvent, Data, EventBuilder as _, EventBuilderV10, ExtensionValue};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Events at the edges: every optional attribute, extension names of the spec's
/// 20-character length, long and typed values, JSON, text, raw bytes and no data.
fn events() -> Vec<CloudEvent> {
    let base = || {
        EventBuilderV10::new()
            .id("evt-1")
            .source("/tests/sdk-peer")
            .ty("io.missive.message.submitted.v1")
            .subject("alice")
            .time("2026-12-02T10:00:00.123Z")
            .extension("traceparent", TRACEPARENT)
            .extension("abcdefghijklmnopqrst", "x".repeat(4096))
            .extension("int32max", 2_147_483_647_i64)
            .extension("int32min", -2_147_483_648_i64)
            .extension("flag", true)
    };
    let all_bytes: Vec<u8> = (0..=255).collect();
    vec![
        base()
            .data_with_schema(
                "application/json",
                url::Url::parse("https://missive.example/schemas/submitted.json").unwrap(),
                serde_json::json!({"username": "alice", "text": "hi ✓"}),
            )
            .build()
            .unwrap(),
        base()
            .data("text/plain; charset=utf-8", "plain words, not JSON")
            .build()
            .unwrap(),
        base()
            .data("application/octet-stream", all_bytes)
            .build()
            .unwrap(),
        // No datacontenttype, no data.
        base().build().unwrap(),
    ]
}

/// What a binary-mode hop keeps: attributes as they are; extension values as text (the
/// mode has no types); the data as bytes.
/// Attributes, extensions, data bytes.
type BinaryView = (Vec<(String, String)>, BTreeMap<String, String>, Vec<u8>);

fn binary_view(event: &CloudEvent) -> BinaryView {
    let attributes = event
        .iter_attributes()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect();
    let extensions = event
        .iter_extensions()
        .map(|(name, value)| {
            let text = match value {
                ExtensionValue::String(s) => s.clone(),
                other => other.to_string(),
            };
            (name.to_owned(), text)
        })
        .collect();
    let data = match event.data() {
        None => Vec::new(),
        Some(Data::Binary(bytes)) => bytes.clone(),
        Some(Data::String(text)) => text.clone().into_bytes(),
        Some(Data::Json(value)) => serde_json::to_vec(value).unwrap(),
    };
    (attributes, extensions, data)
}

#[test]
fn events_the_sdk_writes_in_binary_mode_are_read_whole() {
    for sent in events() {
        let request: http::Request<Option<Vec<u8>>> =
            http::Request::try_from(sent.clone()).unwrap();
        let (parts, body) = request.into_parts();
        let read = from_request(&parts.headers, &body.unwrap_or_default()).unwrap();
        assert_eq!(binary_view(&read), binary_view(&sent), "{sent}");
    }
}

#[test]
fn events_the_sdk_writes_in_structured_mode_are_read_with_their_types() {
    for sent in events() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/cloudevents+json".parse().unwrap(),
        );
        let body = serde_json::to_vec(&sent).unwrap();
        let read = from_request(&headers, &body).unwrap();
        assert_eq!(read, sent);
    }
}

#[tokio::test]
async fn events_we_write_are_read_whole_by_the_sdk() {
    for sent in events() {
        let (parts, body) = to_request(&sent, "http://peer/").unwrap().into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        let read = to_event(&parts.headers, body).unwrap();
        assert_eq!(binary_view(&read), binary_view(&sent), "{sent}");
        assert_eq!(parts.headers["ce-traceparent"], TRACEPARENT);
    }
}

#[test]
fn an_unknown_specversion_is_refused_in_both_modes() {
    let sent = events().remove(0);
    let request: http::Request<Option<Vec<u8>>> = http::Request::try_from(sent.clone()).unwrap();
    let (mut parts, body) = request.into_parts();
    parts
        .headers
        .insert("ce-specversion", "2.0".parse().unwrap());
    let err = from_request(&parts.headers, &body.unwrap_or_default()).unwrap_err();
    assert_eq!(err.0, "unsupported specversion 2.0");

    let mut structured = serde_json::to_value(&sent).unwrap();
    structured["specversion"] = "2.0".into();
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/cloudevents+json".parse().unwrap(),
    );
    let err = from_request(&headers, structured.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.0, "unsupported specversion 2.0");
}
