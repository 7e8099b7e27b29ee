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
    let (id, seen) = next_event_with_id(&mut body, Duration::from_secs(10))
        .await
        .expect("the entry arrives");
    assert!(
        seen.starts_with("event: message.created\ndata: {"),
        "{seen}"
    );
    // Its id: the second entry of the log (after user.registered).
    assert_eq!(id, Some(2));
    let data: Value =
        serde_json::from_str(seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["type"], "message.created");
    assert_eq!(data["id"], 2);
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

/// The next event of a stream (skipping heartbeats and comments), without its `id:`
/// line, or `None` if none comes within `wait`.
async fn next_event(body: &mut axum::body::Body, wait: Duration) -> Option<String> {
    next_event_with_id(body, wait).await.map(|(_, event)| event)
}

/// Like [`next_event`], with the event's `id`.
async fn next_event_with_id(
    body: &mut axum::body::Body,
    wait: Duration,
) -> Option<(Option<u64>, String)> {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(end) = seen.find("\n\n") {
            let block = seen[..end].to_owned();
            seen.drain(..end + 2);
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|id| id.parse().unwrap());
            let event: Vec<&str> = block.lines().filter(|l| !l.starts_with("id: ")).collect();
            if event.first().is_some_and(|l| l.starts_with("event:")) {
                return Some((id, event.join("\n")));
            }
            continue;
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .ok()??;
        if let Ok(data) = frame.expect("frame").into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
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

/// `app`'s stream router with a short heartbeat (the session check runs at each).
fn quick_streams(app: &App) -> axum::Router {
    app.state.serve(activity_stream::router_with_heartbeat(
        app.state.clone(),
        Duration::from_millis(100),
    ))
}

async fn open_on(
    router: &axum::Router,
    cookie: &str,
    last_event_id: Option<u64>,
) -> axum::response::Response {
    let mut request = axum::http::Request::builder()
        .uri("/api/activity/stream")
        .header("cookie", cookie);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap()
}

/// Whether the stream ends (its body finishes) within `wait`.
async fn ends_within(body: &mut axum::body::Body, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await
    .is_ok()
}

api_test!(
    a_reconnect_with_last_event_id_resumes_without_a_gap,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let mut first = open_on(&app.router, &cookie, None).await.into_body();
        app.create(&cookie, "one").await;
        let (id, _) = next_event_with_id(&mut first, Duration::from_secs(10))
            .await
            .unwrap();
        // The connection drops; two entries are recorded while the browser is away.
        drop(first);
        app.create(&cookie, "two").await;
        app.create(&cookie, "three").await;
        let mut again = open_on(&app.router, &cookie, id).await.into_body();
        let mut texts = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (id, event) = next_event_with_id(&mut again, Duration::from_secs(10))
                .await
                .expect("a missed entry");
            ids.push(id.unwrap());
            texts.push(event);
        }
        assert_eq!(ids, [id.unwrap() + 1, id.unwrap() + 2], "{texts:?}");
        // Then live, in order.
        app.create(&cookie, "four").await;
        let (next, _) = next_event_with_id(&mut again, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(next, Some(id.unwrap() + 3));
        app.stop().await;
    }
);

api_test!(
    a_stream_ends_when_its_session_is_logged_out,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let streams = quick_streams(&app);
        let mut body = open_on(&streams, &cookie, None).await.into_body();
        assert!(
            !ends_within(&mut body, Duration::from_millis(400)).await,
            "ended early"
        );
        app.send(
            TestRequest::new(Method::POST, "/api/auth/logout")
                .header("content-type", "application/json")
                .cookie(Some(&cookie)),
        )
        .await;
        assert!(
            ends_within(&mut body, Duration::from_secs(3)).await,
            "the stream outlived its session"
        );
        app.stop().await;
    }
);

api_test!(a_stream_ends_before_the_platform_timeout, |b| async move {
    let app = App::start_with(b, |c| c.stream_max_secs = 1).await;
    let cookie = app.signup("alice").await;
    let mut body = open_on(&app.router, &cookie, None).await.into_body();
    let started = std::time::Instant::now();
    assert!(ends_within(&mut body, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
});

api_test!(
    streams_are_capped_per_user_and_per_instance,
    |b| async move {
        let app = App::start_with(b, |c| {
            c.streams_per_user = 2;
            c.streams_per_instance = 3;
        })
        .await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let carol = app.signup("carol").await;
        let a1 = open_on(&app.router, &alice, None).await;
        let a2 = open_on(&app.router, &alice, None).await;
        assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
        let a3 = open_on(&app.router, &alice, None).await;
        assert_eq!(a3.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(a3.headers().contains_key("retry-after"));
        let body: Value =
            serde_json::from_slice(&a3.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["code"], "too_many_streams");
        // Bob takes the instance's last place; Carol finds it full.
        let b1 = open_on(&app.router, &bob, None).await;
        assert_eq!(b1.status(), StatusCode::OK);
        let c1 = open_on(&app.router, &carol, None).await;
        assert_eq!(c1.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(c1.headers().contains_key("retry-after"));
        // A closed stream frees its place.
        drop(a1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while app.state.live.open_streams() > 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the place was not freed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            open_on(&app.router, &carol, None).await.status(),
            StatusCode::OK
        );
        drop((a2, b1));
        app.stop().await;
    }
);

/// Many streams, one Redis connection: counted on a Redis of the test's own, where no
/// other test's clients are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_of_a_process_shares_one_redis_subscription() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package)");
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = loop {
        if let Ok(conn) = client.get_multiplexed_async_connection().await {
            break conn;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let app = App::start_with(Backends::Real, |c| {
        c.redis_url = Some(secrecy::SecretString::from(url.clone()));
    })
    .await;
    let mut streams = Vec::new();
    for i in 0..10 {
        let cookie = app.signup(&format!("user{i}")).await;
        for _ in 0..2 {
            let res = open_on(&app.router, &cookie, None).await;
            assert_eq!(res.status(), StatusCode::OK);
            streams.push(res.into_body());
        }
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let subscribers = clients
        .lines()
        .filter(|l| !l.contains(" psub=0 ") || !l.contains(" sub=0 "))
        .count();
    assert_eq!(
        subscribers, 1,
        "20 streams, {subscribers} subscribed connections:\n{clients}"
    );
    // And they all still hear their own user's entries.
    let cookie = app
        .login("user3", "correct horse")
        .await
        .session_cookie()
        .unwrap();
    app.create(&cookie, "for user3's streams").await;
    for body in &mut streams[6..8] {
        // Its login's entry comes first, then the message's.
        let mut heard = Vec::new();
        while let Some(event) = next_event(body, Duration::from_secs(10)).await {
            let done = event.contains("message.created");
            heard.push(event);
            if done {
                break;
            }
        }
        assert!(
            heard.iter().any(|e| e.contains("message.created")),
            "{heard:?}"
        );
    }
    drop(streams);
    app.stop().await;
    let _ = server.kill();
    let _ = server.wait();
}
