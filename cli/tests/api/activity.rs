//! The activity log and its live stream.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use missive_testkit::{Backends, TestRequest};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::App;

api_test!(
    activity_records_each_state_change_newest_first,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let msg = app.create(&cookie, "hi").await;
        let id = msg["id"].as_str().unwrap();
        app.delete(&format!("/api/messages/{id}"), Some(&cookie))
            .await;
        app.send(
            TestRequest::new(Method::POST, "/api/auth/logout")
                .header("content-type", "application/json")
                .cookie(Some(&cookie)),
        )
        .await;
        let cookie = app
            .login("alice", "correct horse")
            .await
            .session_cookie()
            .unwrap();
        assert_eq!(
            app.activity_types(&cookie).await,
            [
                "user.logged_in",
                "user.logged_out",
                "message.deleted",
                "message.created",
                "user.registered"
            ]
        );
        let items = app.get("/api/activity", Some(&cookie)).await.json()["items"].clone();
        let deleted = &items[2];
        assert_eq!(deleted["type"], "message.deleted");
        assert_eq!(deleted["detail"]["id"], id);
        assert!(deleted["at"].as_str().unwrap().ends_with('Z'));
        let one = app.get("/api/activity?limit=1", Some(&cookie)).await.json();
        assert_eq!(one["items"].as_array().unwrap().len(), 1);
        for bad in ["0", "101", "x"] {
            let res = app
                .get(&format!("/api/activity?limit={bad}"), Some(&cookie))
                .await;
            assert_eq!(res.error_code(), "invalid_limit");
        }
        // Another user's feed is their own.
        let bob = app.signup("bob").await;
        assert_eq!(app.activity_types(&bob).await, ["user.registered"]);
        app.stop().await;
    }
);

api_test!(activity_keeps_the_last_100_entries, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for i in 0..105 {
        app.create(&cookie, &format!("m{i}")).await;
    }
    let types = app.activity_types(&cookie).await;
    assert_eq!(types.len(), 100);
    assert!(
        types.iter().all(|t| t == "message.created"),
        "oldest entries trimmed"
    );
    app.stop().await;
});

api_test!(stream_delivers_new_activity_as_it_happens, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let request = axum::http::Request::builder()
        .uri("/api/activity/stream")
        .header("cookie", &cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // Subscribed before the post: the entry must arrive (how fast is a benchmark's
    // question; the bound here only keeps a lost entry from hanging the test).
    app.create(&cookie, "live!").await;
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the entry arrives")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(
        seen.starts_with("event: message.created\ndata: {"),
        "{seen}"
    );
    let data: Value =
        serde_json::from_str(seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["type"], "message.created");
    // Shutdown ends the stream instead of holding the process open.
    app.state.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(end.is_ok(), "stream ends on shutdown");
    app.stop().await;
});

api_test!(redelivered_events_are_recorded_once, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let recorder = activity_record::router(app.state.clone());
    let binary = || {
        TestRequest::new(Method::POST, "/")
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "evt-1")
            .header("ce-source", "/functions/message-create")
            .header("ce-type", "io.missive.message.created.v1")
            .header("ce-subject", "alice")
            .header("ce-time", "2026-01-02T03:04:05Z")
            .body(r#"{"id":"77"}"#)
    };
    for _ in 0..3 {
        assert_eq!(
            binary().send(&recorder).await.status,
            StatusCode::NO_CONTENT
        );
    }
    // The same event in structured mode is still the same event.
    let structured = json!({
        "specversion": "1.0", "id": "evt-1", "source": "/functions/message-create",
        "type": "io.missive.message.created.v1", "subject": "alice",
        "datacontenttype": "application/json", "data": {"id": "77"}
    });
    let res = TestRequest::new(Method::POST, "/")
        .header("content-type", "application/cloudevents+json")
        .body(structured.to_string())
        .send(&recorder)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    // A new id from the same source is a new event.
    let mut other = structured.clone();
    other["id"] = json!("evt-2");
    TestRequest::new(Method::POST, "/")
        .header("content-type", "application/cloudevents+json")
        .body(other.to_string())
        .send(&recorder)
        .await;
    let items = app.get("/api/activity", Some(&cookie)).await.json()["items"].clone();
    let created: Vec<&Value> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message.created")
        .collect();
    assert_eq!(created.len(), 2);
    // The event's time, in the form every time in the API has (UTC, milliseconds).
    assert_eq!(created[1]["at"], "2026-01-02T03:04:05.000Z");
    assert_eq!(created[1]["detail"], json!({"id": "77"}));
    app.stop().await;
});

api_test!(malformed_events_are_rejected_permanently, |b| async move {
    let app = App::start(b).await;
    let recorder = activity_record::router(app.state.clone());
    let base = || {
        TestRequest::new(Method::POST, "/")
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-source", "/x")
            .header("ce-type", "io.missive.message.created.v1")
    };
    let cases = [
        base().header("ce-subject", "alice").body("{}"), // no id
        base().header("ce-id", "1").body("{}"),          // no subject
        base()
            .header("ce-id", "1")
            .header("ce-subject", "NOT A USER")
            .body("{}"),
        base()
            .header("ce-id", "1")
            .header("ce-subject", "alice")
            .body("{not json"),
        base()
            .header("ce-id", "1")
            .header("ce-subject", "alice")
            .header("ce-time", "yesterday")
            .body("{}"),
        TestRequest::new(Method::POST, "/")
            .header("content-type", "application/cloudevents+json")
            .body(r#"{"specversion":"0.3","id":"1","source":"/x","type":"t"}"#),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let res = req.send(&recorder).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "case {i}");
        assert_eq!(res.error_code(), "invalid_event", "case {i}");
    }
    // Foreign types are accepted and ignored, not dead-lettered.
    let res = TestRequest::new(Method::POST, "/")
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/elsewhere")
        .header("ce-type", "com.example.other")
        .send(&recorder)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    app.stop().await;
});

/// Opens `cookie`'s live stream on `app`.
async fn open_stream(app: &App, cookie: &str) -> axum::body::Body {
    let request = axum::http::Request::builder()
        .uri("/api/activity/stream")
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

/// The next event of a stream (skipping heartbeats), or `None` if none comes within
/// `wait`.
async fn next_event(body: &mut axum::body::Body, wait: Duration) -> Option<String> {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .ok()??;
        if let Ok(data) = frame.expect("frame").into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
        if let Some(end) = seen.find("\n\n") {
            let event = seen[..end].to_owned();
            if event.starts_with("event:") {
                return Some(event);
            }
            seen.drain(..end + 2);
        }
    }
}

api_test!(
    a_live_stream_carries_only_its_own_users_activity,
    |b| async move {
        let app = App::start(b).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let mut alices = open_stream(&app, &alice).await;
        // Bob's activity is not Alice's: nothing arrives on her stream.
        app.create(&bob, "bob's secret").await;
        assert_eq!(
            next_event(&mut alices, Duration::from_millis(500)).await,
            None,
            "another user's entry reached the stream"
        );
        // Her own does.
        app.create(&alice, "alice's own").await;
        let event = next_event(&mut alices, Duration::from_secs(10))
            .await
            .expect("her own entry");
        assert!(event.starts_with("event: message.created\n"), "{event}");
        assert!(!event.contains("secret"), "{event}");
        app.stop().await;
    }
);

api_test!(a_live_stream_outlives_the_request_timeout, |b| async move {
    // README: streams are bounded by REQUEST_TIMEOUT_SECS only until their headers.
    let app = App::start_with(b, |c| c.request_timeout_secs = 1).await;
    let cookie = app.signup("alice").await;
    let mut body = open_stream(&app, &cookie).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.create(&cookie, "after the timeout").await;
    let event = next_event(&mut body, Duration::from_secs(10))
        .await
        .expect("the stream is still open past the request timeout");
    assert!(event.starts_with("event: message.created\n"), "{event}");
    app.stop().await;
});
