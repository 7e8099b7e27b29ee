//! Probes, failures in our error shape, time limits, the OpenAPI document.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use missive_app::AppState;
use missive_testkit::{Backends, TestBackends, TestRequest};
use serde_json::json;
use tower::ServiceExt;

use crate::support::App;

api_test!(health_and_readiness_report_the_backends, |b| async move {
    let app = App::start(b).await;
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    app.stop().await;
});

#[tokio::test]
async fn readiness_names_the_dependency_that_is_down() {
    let backends = TestBackends::new(Backends::Real).await;
    for (db, redis, down) in [
        ("mysql://root@127.0.0.1:1/missive", None, "database"),
        (
            "mysql://root@127.0.0.1:1/missive",
            Some("redis://127.0.0.1:1"),
            "database, redis",
        ),
    ] {
        let mut config = backends.config.clone();
        config.database_url = Some(db.to_owned().into());
        config.redis_url = redis.map(|r| r.to_owned().into());
        let state = AppState::build(config).unwrap();
        let res = TestRequest::new(Method::GET, "/readyz")
            .send(&missive::app(state))
            .await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.error_code(), "not_ready");
        assert_eq!(
            res.json()["error"]["message"],
            format!("unavailable: {down}")
        );
    }
    let mut config = backends.config.clone();
    config.redis_url = Some("redis://127.0.0.1:1".to_owned().into());
    let res = TestRequest::new(Method::GET, "/readyz")
        .send(&missive::app(AppState::build(config).unwrap()))
        .await;
    assert_eq!(res.json()["error"]["message"], "unavailable: redis");
    backends.cleanup().await;
}

#[tokio::test]
async fn a_dead_database_is_a_503_unavailable_in_our_shape_not_a_hang() {
    let backends = TestBackends::new(Backends::Real).await;
    let mut config = backends.config.clone();
    config.database_url = Some("mysql://root@127.0.0.1:1/missive".to_owned().into());
    let state = AppState::build(config).unwrap();
    let started = std::time::Instant::now();
    let res = TestRequest::new(Method::POST, "/api/auth/signup")
        .json(&json!({"username": "alice", "password": "12345678"}))
        .send(&missive::app(state))
        .await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json(),
        json!({"error": {"code": "unavailable", "message": "database is unavailable; try again shortly"}})
    );
    assert_eq!(res.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    backends.cleanup().await;
}

#[tokio::test]
async fn panics_become_500_in_our_shape() {
    let backends = TestBackends::new(Backends::Embedded).await;
    let state = backends.state();
    let routes = Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("deliberate");
            }
        }),
    );
    let res = TestRequest::new(Method::GET, "/boom")
        .send(&state.serve(routes))
        .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.error_code(), "internal");
    backends.cleanup().await;
}

#[tokio::test]
async fn slow_requests_time_out_in_our_shape() {
    let mut backends = TestBackends::new(Backends::Embedded).await;
    backends.config.request_timeout_secs = 1;
    let state = backends.state();
    let routes = Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let res = TestRequest::new(Method::GET, "/slow")
        .send(&state.serve(routes))
        .await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.error_code(), "timeout");
    backends.cleanup().await;
}

#[tokio::test]
async fn openapi_document_describes_every_endpoint() {
    let backends = TestBackends::new(Backends::Embedded).await;
    let res = TestRequest::new(Method::GET, "/api/openapi.json")
        .send(&missive::app(backends.state()))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let doc = res.json();
    assert_eq!(doc["openapi"], "3.1.0");
    // It parses back as an OpenAPI document.
    let parsed: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap();
    let expected = [
        ("/api/auth/signup", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/me", "get"),
        ("/api/messages", "post"),
        ("/api/messages", "get"),
        ("/api/messages/{id}", "get"),
        ("/api/messages/{id}", "delete"),
        ("/api/messages/search", "get"),
        ("/api/activity", "get"),
        ("/api/activity/stream", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(parsed.paths.paths.len(), 9);
    for schema in [
        "ErrorBody",
        "Message",
        "MessagePage",
        "Credentials",
        "UserBody",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    backends.cleanup().await;
}

#[tokio::test]
async fn stream_sends_heartbeat_comments() {
    assert_eq!(activity_stream::HEARTBEAT, Duration::from_secs(15));
    let backends = TestBackends::new(Backends::Embedded).await;
    let state = backends.state();
    let user = missive_app::auth::CurrentUser {
        id: missive_app::auth::UserId(1),
        username: missive_core::domain::Username::parse("alice").unwrap(),
    };
    let session = state.sessions.create(&user).await.unwrap();
    // The store lives as long as the state; keep one alive as a server would.
    let router = activity_stream::router_with_heartbeat(state.clone(), Duration::from_millis(300));
    let request = axum::http::Request::builder()
        .uri("/api/activity/stream")
        .header("cookie", format!("missive_session={}", session.expose()))
        .body(axum::body::Body::empty())
        .unwrap();
    let mut body = router.oneshot(request).await.unwrap().into_body();
    let started = std::time::Instant::now();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
    };
    // First what a browser needs to reconnect well: how soon.
    assert_eq!(&next().await[..], b"retry: 2000\n: connected\n\n");
    for _ in 0..2 {
        assert_eq!(&next().await[..], b": heartbeat\n\n");
    }
    assert!(started.elapsed() >= Duration::from_millis(550));
    backends.cleanup().await;
}

/// A TCP server that accepts connections and never answers: a dependency that hangs
/// rather than refuses. Returns its port.
async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn readiness_gives_up_on_a_dependency_that_hangs() {
    let backends = TestBackends::new(Backends::Real).await;
    let silent = silent_server().await;
    for (database, redis, down) in [
        (None, Some(format!("redis://127.0.0.1:{silent}")), "redis"),
        (
            Some(format!("mysql://root@127.0.0.1:{silent}/missive")),
            None,
            "database",
        ),
    ] {
        let mut config = backends.config.clone();
        if let Some(url) = database {
            config.database_url = Some(url.into());
        }
        if let Some(url) = redis {
            config.redis_url = Some(url.into());
        }
        let app = missive::app(AppState::build(config).unwrap());
        let started = std::time::Instant::now();
        let res = TestRequest::new(Method::GET, "/readyz").send(&app).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{down}");
        assert_eq!(
            res.json()["error"]["message"],
            format!("unavailable: {down}")
        );
        // Each check has 2 s; a probe must not hang on a silent peer.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{down}: {:?}",
            started.elapsed()
        );
    }
}

// Every answer of a probe is in the document: its status is one the operation lists,
// and an error's code is named in that status's description. Probes: no session, a
// session with a malformed body or query, and the wrong content type.
api_test!(
    the_openapi_document_lists_the_answers_the_server_gives,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let doc = app.get("/api/openapi.json", None).await.json();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let concrete = path.replace("{id}", "1");
                let verb: Method = method.to_uppercase().parse().unwrap();
                let responses = operation["responses"].as_object().unwrap();
                let mut probes = vec![("no session", TestRequest::new(verb.clone(), &concrete))];
                // With a session the live stream stays open: only its refusal is probed.
                if path != "/api/activity/stream" {
                    probes.push((
                        "malformed query",
                        TestRequest::new(verb.clone(), &format!("{concrete}?limit=abc&before=!"))
                            .cookie(Some(&cookie)),
                    ));
                }
                if verb == Method::POST {
                    probes.push((
                        "malformed JSON",
                        TestRequest::new(verb.clone(), &concrete)
                            .header("content-type", "application/json")
                            .body("{")
                            .cookie(Some(&cookie)),
                    ));
                    probes.push((
                        "not JSON",
                        TestRequest::new(verb.clone(), &concrete)
                            .header("content-type", "text/plain")
                            .body("hi")
                            .cookie(Some(&cookie)),
                    ));
                }
                for (probe, request) in probes {
                    let res = app.send(request).await;
                    let status = res.status.as_u16().to_string();
                    let documented = responses.get(&status).unwrap_or_else(|| {
                        panic!(
                            "{method} {path} ({probe}) answered {status}, not in the document: {}",
                            res.json()
                        )
                    });
                    // Shared answers (401, 413, 503, ...) are references to components.
                    let documented = match documented["$ref"].as_str() {
                        Some(name) => {
                            &doc["components"]["responses"]
                                [name.trim_start_matches("#/components/responses/")]
                        }
                        None => documented,
                    };
                    if res.status.is_client_error() {
                        let code = res.error_code();
                        let description = documented["description"].as_str().unwrap_or_default();
                        assert!(
                            description.contains(&format!("`{code}`")),
                            "{method} {path} ({probe}): {status} `{code}` is not in {description:?}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 26, "{checked}");
        app.stop().await;
    }
);
