//! The shape every request must have: content type, body size, JSON, query strings.

use axum::http::{Method, StatusCode};
use missive_testkit::{Backends, TestRequest};
use serde_json::json;

use crate::support::{App, texts};

api_test!(mutating_requests_must_be_json, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for path in [
            "/api/messages",
            "/api/auth/signup",
            "/api/auth/login",
            "/api/auth/logout",
        ] {
            let mut req = TestRequest::new(Method::POST, path)
                .body(r#"{"text":"hi","username":"bob","password":"12345678"}"#)
                .cookie(Some(&cookie));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let res = app.send(req).await;
            assert_eq!(
                res.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}"
            );
            assert_eq!(res.error_code(), "unsupported_media_type");
        }
    }
    let res = app
        .send(
            TestRequest::new(Method::POST, "/api/messages")
                .header("content-type", "application/json; charset=utf-8")
                .body(r#"{"text":"hi"}"#)
                .cookie(Some(&cookie)),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    app.stop().await;
});

api_test!(malformed_json_and_wrong_types_are_400, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for body in [
        r#"{"text":"#,
        "[]",
        r#"{"text":5}"#,
        r#"{"other":"x"}"#,
        "",
        "\u{0}",
    ] {
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/messages")
                    .header("content-type", "application/json")
                    .body(body)
                    .cookie(Some(&cookie)),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(res.error_code(), "invalid_json");
    }
    let res = app
        .send(
            TestRequest::new(Method::POST, "/api/auth/signup")
                .header("content-type", "application/json")
                .body(r#"{"username":"bob","password":12345678}"#),
        )
        .await;
    assert_eq!(res.error_code(), "invalid_json");
    // Nothing was written by any of them.
    let list = app.get("/api/messages", Some(&cookie)).await;
    assert_eq!(texts(&list.json()).len(), 0);
    app.stop().await;
});

api_test!(bodies_over_the_limit_are_413, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let big = format!(r#"{{"text":"{}"}}"#, "a".repeat(64 * 1024));
    // Without Content-Length (read until the limit) and with it (refused up front).
    let declared = big.len().to_string();
    for length in [None, Some(declared.as_str())] {
        let mut req = TestRequest::new(Method::POST, "/api/messages")
            .header("content-type", "application/json")
            .body(big.clone())
            .cookie(Some(&cookie));
        if let Some(len) = length {
            req = req.header("content-length", len);
        }
        let res = app.send(req).await;
        assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.error_code(), "payload_too_large");
        assert!(
            res.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("65536")
        );
    }
    app.stop().await;
});

api_test!(
    unknown_routes_and_methods_answer_in_our_error_shape,
    |b| async move {
        let app = App::start(b).await;
        let res = app.get("/api/nope", None).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        assert_eq!(res.error_code(), "not_found");
        // A method a path does not serve is 405 with `Allow`, before any check of the
        // body or its type (a PUT with a form body is still a wrong method, not a 415).
        for (method, path, allow) in [
            (Method::PUT, "/api/auth/me", "GET,HEAD"),
            (Method::PUT, "/api/activity", "GET,HEAD"),
            (Method::PATCH, "/api/messages/search", "GET,HEAD"),
            (Method::PUT, "/api/messages", "GET,HEAD,POST"),
            (Method::GET, "/api/auth/login", "POST"),
        ] {
            for content_type in [None, Some("application/json"), Some("text/plain")] {
                let mut req = TestRequest::new(method.clone(), path).body("x=1");
                if let Some(ct) = content_type {
                    req = req.header("content-type", ct);
                }
                let res = app.send(req).await;
                assert_eq!(
                    res.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert_eq!(res.error_code(), "method_not_allowed");
                let mut allowed: Vec<&str> = res.headers["allow"]
                    .to_str()
                    .unwrap()
                    .split(',')
                    .map(str::trim)
                    .collect();
                allowed.sort_unstable();
                assert_eq!(allowed.join(","), allow, "{method} {path}");
            }
        }
        // An unknown path is 404 whatever its method and type.
        let res = app
            .send(
                TestRequest::new(Method::PUT, "/api/nope")
                    .header("content-type", "text/plain")
                    .body("x"),
            )
            .await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        app.stop().await;
    }
);

api_test!(
    a_configured_body_limit_holds_on_api_and_event_endpoints,
    |b| async move {
        let app = App::start_with(b, |c| c.body_limit_bytes = 1000).await;
        let cookie = app.signup("alice").await;
        // Just under the limit passes; just over is 413 naming the configured size.
        let fits = format!(r#"{{"text":"{}"}}"#, "a".repeat(1000 - 11));
        assert_eq!(fits.len(), 1000);
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/messages")
                    .header("content-type", "application/json")
                    .body(fits)
                    .cookie(Some(&cookie)),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
        let over = format!(r#"{{"text":"{}"}}"#, "a".repeat(1000));
        for path in [
            "/api/messages",
            "/_events/message-ingest",
            "/_events/activity-record",
        ] {
            let res = app
                .send(
                    TestRequest::new(Method::POST, path)
                        .header("content-type", "application/json")
                        .header("ce-specversion", "1.0")
                        .header("ce-id", "big")
                        .header("ce-source", "/tests")
                        .header("ce-type", "io.missive.message.submitted.v1")
                        .body(over.clone())
                        .cookie(Some(&cookie)),
                )
                .await;
            assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
            assert_eq!(res.error_code(), "payload_too_large", "{path}");
            assert!(
                res.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("1000 bytes"),
                "{path}: {}",
                res.json()
            );
        }
        let list = app.get("/api/messages", Some(&cookie)).await;
        assert_eq!(
            texts(&list.json()).len(),
            1,
            "nothing of the refused bodies stored"
        );
        app.stop().await;
    }
);

api_test!(
    state_changing_requests_from_other_sites_are_refused,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let post = |origin: Option<&str>| {
            let mut req = TestRequest::new(Method::POST, "/api/messages")
                .json(&json!({"text": "hello"}))
                .header("host", "localhost:8080")
                .cookie(Some(&cookie));
            if let Some(origin) = origin {
                req = req.header("origin", origin);
            }
            req
        };
        for origin in ["https://evil.example", "http://localhost:9999", "null"] {
            let res = app.send(post(Some(origin))).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{origin}");
            assert_eq!(res.error_code(), "cross_origin");
        }
        // Same origin, or no Origin at all (not a browser): accepted.
        assert_eq!(
            app.send(post(Some("http://localhost:8080"))).await.status,
            StatusCode::CREATED
        );
        assert_eq!(app.send(post(None)).await.status, StatusCode::CREATED);
        // Reads are not state-changing.
        let read = TestRequest::new(Method::GET, "/api/messages")
            .header("origin", "https://evil.example")
            .cookie(Some(&cookie));
        assert_eq!(app.send(read).await.status, StatusCode::OK);
        // Nothing cross-site was stored.
        let list = app.get("/api/messages", Some(&cookie)).await;
        assert_eq!(list.json()["items"].as_array().unwrap().len(), 2);
        app.stop().await;
    }
);

api_test!(
    behind_a_gateway_the_public_origins_are_the_allowed_ones,
    |b| async move {
        let app = App::start_with(b, |c| {
            c.public_origins = vec!["https://missive.example.com".to_owned()];
        })
        .await;
        let post = |origin: &str| {
            TestRequest::new(Method::POST, "/api/auth/signup")
                .json(&json!({"username": format!("u{}", origin.len()), "password": "12345678"}))
                // What the HTTPRoute rewrites Host to.
                .header("host", "auth-signup.missive.svc.cluster.local")
                .header("origin", origin)
        };
        assert_eq!(
            app.send(post("https://missive.example.com")).await.status,
            StatusCode::CREATED
        );
        let res = app
            .send(post("https://auth-signup.missive.svc.cluster.local"))
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        app.stop().await;
    }
);

api_test!(every_answer_says_nosniff, |b| async move {
    let app = App::start(b).await;
    for path in ["/api/auth/me", "/api/nope", "/healthz"] {
        let res = app.get(path, None).await;
        assert_eq!(res.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            res.headers["referrer-policy"], "strict-origin-when-cross-origin",
            "{path}"
        );
    }
    app.stop().await;
});
