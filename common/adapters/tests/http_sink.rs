//! The `K_SINK` transport against a live HTTP receiver: what a Knative broker or service
//! gets (binary-mode headers, `traceparent`, the data as the body), and that a refusal
//! or an unreachable sink is an error, so the event stays in the outbox.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use missive_adapters::events::{EventPublisher, HttpSink};
use missive_core::event::CloudEvent;

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver answering `status`; returns its URL and what it received.
async fn receiver(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/",
            post(
                move |State(received): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    received.lock().unwrap().push((headers, body));
                    status
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn event() -> CloudEvent {
    serde_json::from_value(serde_json::json!({
        "specversion": "1.0", "datacontenttype": "application/json",
        "id": "e-1", "source": "/functions/message-create",
        "type": "io.missive.message.created.v1", "subject": "alice",
        "time": "2026-12-02T10:00:00.000Z", "data": {"id": "7", "text": "ü"},
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_sink_receives_the_event_in_binary_mode() {
    let (url, received) = receiver(StatusCode::ACCEPTED).await;
    HttpSink::new(&url)
        .unwrap()
        .publish(&event())
        .await
        .unwrap();
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "e-1"),
        ("ce-source", "/functions/message-create"),
        ("ce-type", "io.missive.message.created.v1"),
        ("ce-subject", "alice"),
        ("ce-time", "2026-12-02T10:00:00.000Z"),
        (
            "ce-traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("content-type", "application/json"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    let data: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(data, serde_json::json!({"id": "7", "text": "ü"}));
    // What the CloudEvents SDK reads from the request is the event that was sent.
    let mut read = cloudevents::binding::http::to_event(headers, body.to_vec()).unwrap();
    read.set_data("application/json", data);
    assert_eq!(read, event());
}

#[tokio::test]
async fn a_refusing_or_unreachable_sink_is_an_error() {
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::NOT_FOUND,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let (url, received) = receiver(status).await;
        let err = HttpSink::new(&url)
            .unwrap()
            .publish(&event())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(status.as_str()),
            "{status}: {err:#}"
        );
        assert_eq!(received.lock().unwrap().len(), 1);
    }
    // Nothing listens on port 1.
    let err = HttpSink::new("http://127.0.0.1:1/")
        .unwrap()
        .publish(&event())
        .await
        .unwrap_err();
    assert!(!format!("{err:#}").is_empty());
    // Not a URL at all: refused when the transport is built, naming the variable.
    let err = HttpSink::new("not a url").err().unwrap();
    assert!(err.to_string().contains("K_SINK"), "{err}");
}
