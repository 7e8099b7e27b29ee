//! Events: the outbox, the relay, and message-ingest.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use missive_core::event::{AttributesReader as _, EventExt as _};
use missive_testkit::{Backends, TestRequest};
use serde_json::json;

use crate::support::{App, texts};

fn submitted(id: &str, username: &str, text: &str) -> TestRequest {
    event_of_type("io.missive.message.submitted.v1", id, username, text)
}

fn event_of_type(ty: &str, id: &str, username: &str, text: &str) -> TestRequest {
    TestRequest::new(Method::POST, "/_events/message-ingest")
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests/producer")
        .header("ce-type", ty)
        .body(json!({ "username": username, "text": text }).to_string())
}

api_test!(submitted_messages_are_stored_once, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for _ in 0..3 {
        let res = app
            .send(submitted("sub-1", "alice", "from a producer"))
            .await;
        assert_eq!(res.status, StatusCode::ACCEPTED);
    }
    // Structured mode and a plain record wrapped the KafkaSource way both work.
    let structured = json!({
        "specversion": "1.0", "id": "sub-2", "source": "/tests/producer",
        "type": "io.missive.message.submitted.v1",
        "data": {"username": "alice", "text": "structured 안녕"}
    });
    let res = app
        .send(
            TestRequest::new(Method::POST, "/_events/message-ingest")
                .header("content-type", "application/cloudevents+json")
                .body(structured.to_string()),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let res = app
        .send(
            TestRequest::new(Method::POST, "/_events/message-ingest")
                .header("content-type", "application/json")
                .header("ce-specversion", "1.0")
                .header("ce-id", "partition:0/offset:7")
                .header("ce-source", "/kafka/missive.inbox")
                .header("ce-type", "dev.knative.kafka.event")
                .body(r#"{"username":"alice","text":"plain record"}"#),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let body = app.get("/api/messages", Some(&cookie)).await.json();
    assert_eq!(
        texts(&body),
        ["plain record", "structured 안녕", "from a producer"]
    );
    // message-ingest publishes in the background: wait for the feed to catch up.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let created = app
            .activity_types(&cookie)
            .await
            .into_iter()
            .filter(|t| t == "message.created")
            .count();
        if created == 3 {
            break;
        }
        assert!(created < 3, "one message.created per stored message");
        assert!(
            std::time::Instant::now() < deadline,
            "feed has {created} of 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
});

api_test!(bad_submissions_fail_permanently, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let cases = [
        (
            submitted("x1", "nobody", "hi"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_user",
        ),
        (
            submitted("x2", "NOT VALID", "hi"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_user",
        ),
        (
            submitted("x3", "alice", "   "),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
        ),
        (
            submitted("x4", "alice", &"a".repeat(4001)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
        ),
        (
            TestRequest::new(Method::POST, "/_events/message-ingest")
                .header("content-type", "application/json")
                .body(r#"{"username":"alice","text":"not a cloudevent"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            event_of_type("io.missive.message.created.v1", "x5", "alice", "hi"),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let res = app.send(req).await;
        assert_eq!(res.status, status, "case {i}");
        assert_eq!(res.error_code(), code, "case {i}");
    }
    assert!(texts(&app.get("/api/messages", Some(&cookie)).await.json()).is_empty());
    // An unknown user is not remembered as processed: once the user exists, a retry works.
    app.signup("nobody").await;
    assert_eq!(
        app.send(submitted("x1", "nobody", "hi")).await.status,
        StatusCode::ACCEPTED
    );
    app.stop().await;
});

/// A state whose event transport is down (nothing listens on port 1).
async fn app_with_dead_transport(b: Backends) -> App {
    App::start_with(b, |c| c.k_sink = Some("http://127.0.0.1:1/".to_owned())).await
}

api_test!(
    a_dead_transport_leaves_events_in_the_outbox,
    |b| async move {
        let app = app_with_dead_transport(b).await;
        let cookie = app.signup("alice").await;
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({"text": "while the broker is down"}))
                    .header("traceparent", traceparent)
                    .cookie(Some(&cookie)),
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::CREATED,
            "the request still succeeds"
        );
        assert_eq!(app.state.db.unsent_count().await.unwrap(), 2);
        let rows = app.state.db.unsent(i64::MAX, 10).await.unwrap();
        let created = &rows[1].event;
        assert_eq!(created.ty(), "io.missive.message.created.v1");
        assert_eq!(created.subject(), Some("alice"));
        let data: serde_json::Value = created.json_data().unwrap();
        assert_eq!(data["id"], res.json()["id"]);
        // The event continues the request's trace.
        let carried = created.traceparent().unwrap();
        assert!(
            carried.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{carried}"
        );
        // Without a traceparent a new trace is started.
        assert!(missive_core::trace_context::valid_traceparent(
            rows[0].event.traceparent().unwrap()
        ));
        app.stop().await;
    }
);

api_test!(
    the_relay_publishes_what_was_left_once_and_in_order,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        // Rows nobody published (as if the instance had died right after commit).
        let alice = missive_core::domain::Username::parse("alice").unwrap();
        for i in 0..3 {
            let event = missive_app::events::new(
                missive_core::event::EventKind::MessageDeleted,
                "tests",
                &alice,
                &json!({ "id": i.to_string() }),
            );
            let _left_unpublished = app.state.db.outbox_alone(event).await.unwrap();
        }
        assert_eq!(app.state.db.unsent_count().await.unwrap(), 3);
        // Two relays at once: one holds the lease and publishes, the other stands aside.
        let ping = || {
            TestRequest::new(Method::POST, "/_events/outbox-relay")
                .header("content-type", "application/json")
                .header("ce-specversion", "1.0")
                .header("ce-id", uuid_like())
                .header(
                    "ce-source",
                    "/apis/v1/namespaces/missive/pingsources/outbox-relay",
                )
                .header("ce-type", "dev.knative.sources.ping")
                .body("{}")
        };
        // Rows younger than OUTBOX_RELAY_MIN_AGE_SECS (5 s) are left to their request.
        let report = app.send(ping()).await.json();
        assert_eq!(report["published"], 0);
        let mut config = (*app.state.config).clone();
        config.outbox_relay_min_age_secs = 0;
        let mut state = app.state.clone();
        state.config = std::sync::Arc::new(config);
        let relays_now = Router::new().nest("/_events/outbox-relay", outbox_relay::router(state));
        let (a, b2) = tokio::join!(ping().send(&relays_now), ping().send(&relays_now));
        let published: u64 = [a.json(), b2.json()]
            .iter()
            .map(|r| r["published"].as_u64().unwrap())
            .sum();
        assert_eq!(published, 3, "{} {}", a.json(), b2.json());
        // The lease admits one relay at a time: the rows are not split between them.
        for report in [a.json(), b2.json()] {
            let n = report["published"].as_u64().unwrap();
            assert!(n == 0 || n == 3, "{report}");
            assert!(n == 0 || report["leased"] == true, "{report}");
        }
        assert_eq!(app.state.db.unsent_count().await.unwrap(), 0);
        let items = app.get("/api/activity", Some(&cookie)).await.json()["items"].clone();
        let ids: Vec<&str> = items
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message.deleted")
            .map(|e| e["detail"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["2", "1", "0"], "published oldest first");
        let res = app
            .send(
                TestRequest::new(Method::POST, "/_events/outbox-relay")
                    .header("ce-specversion", "1.0")
                    .header("ce-id", "1")
                    .header("ce-source", "/x")
                    .header("ce-type", "com.example.other"),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        app.stop().await;
    }
);

fn uuid_like() -> String {
    format!(
        "ping-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

api_test!(published_events_are_marked_sent, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    app.create(&cookie, "hello").await;
    // Marks are written in batches shortly after publishing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.state.db.unsent_count().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "events never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
});
