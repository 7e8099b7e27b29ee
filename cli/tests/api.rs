//! The HTTP API suite: every status code and limit of the contract, through the real
//! routers of every function mounted as `missive dev` mounts them.
//!
//! Each test runs twice: on the embedded defaults (SQLite file, in-process store) and on
//! MariaDB + Redis (`MISSIVE_TEST_DATABASE_URL`, `MISSIVE_TEST_REDIS_URL`, defaulting to
//! the local servers). The real-service variant fails when the servers are missing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use http_body_util::BodyExt;
use missive_app::AppState;
use missive_app::config::Config;
use missive_testkit::{Backends, TestBackends, TestRequest, TestResponse};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The whole app on fresh backends.
struct App {
    router: Router,
    state: AppState,
    backends: TestBackends,
}

impl App {
    async fn start(backends: Backends) -> Self {
        Self::start_with(backends, |_| {}).await
    }

    async fn start_with(backends: Backends, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut backends = TestBackends::new(backends).await;
        tweak(&mut backends.config);
        let state = backends.state();
        let router = missive::app(state.clone());
        Self {
            router,
            state,
            backends,
        }
    }

    async fn stop(self) {
        self.state.db.close().await;
        self.backends.cleanup().await;
    }

    async fn send(&self, request: TestRequest) -> TestResponse {
        request.send(&self.router).await
    }

    async fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> TestResponse {
        self.send(
            TestRequest::new(Method::POST, path)
                .json(&body)
                .cookie(cookie),
        )
        .await
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.send(TestRequest::new(Method::GET, path).cookie(cookie))
            .await
    }

    async fn delete(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.send(TestRequest::new(Method::DELETE, path).cookie(cookie))
            .await
    }

    /// Signs `name` up and returns the session cookie.
    async fn signup(&self, name: &str) -> String {
        let res = self
            .post(
                "/api/auth/signup",
                json!({"username": name, "password": "correct horse"}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
        res.session_cookie().expect("signup sets a cookie")
    }

    async fn login(&self, name: &str, password: &str) -> TestResponse {
        self.post(
            "/api/auth/login",
            json!({"username": name, "password": password}),
            None,
        )
        .await
    }

    async fn create(&self, cookie: &str, text: &str) -> Value {
        let res = self
            .post("/api/messages", json!({ "text": text }), Some(cookie))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
        res.json()
    }

    async fn search(&self, cookie: &str, q: &str) -> Vec<String> {
        let path = format!("/api/messages/search?q={}", urlencode(q));
        let res = self.get(&path, Some(cookie)).await;
        assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.json());
        texts(&res.json())
    }

    async fn activity_types(&self, cookie: &str) -> Vec<String> {
        let res = self.get("/api/activity", Some(cookie)).await;
        assert_eq!(res.status, StatusCode::OK);
        res.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["type"].as_str().expect("type").to_owned())
            .collect()
    }
}

fn texts(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items array")
        .iter()
        .map(|m| m["text"].as_str().expect("text").to_owned())
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a test body once per backend: `api_test!(name, |backends| async move { ... })`.
macro_rules! api_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                ($body)(Backends::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_redis() {
                ($body)(Backends::Real).await;
            }
        }
    };
}

// ---------------------------------------------------------------- auth

api_test!(
    signup_returns_201_and_a_hardened_session_cookie,
    |b| async move {
        let app = App::start(b).await;
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": "alice_01", "password": "12345678"}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        assert_eq!(res.json(), json!({"username": "alice_01"}));
        let set_cookie = res.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("missive_session="));
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(
                set_cookie.contains(attribute),
                "{set_cookie} lacks {attribute}"
            );
        }
        assert!(
            !set_cookie.contains("Secure"),
            "no Secure unless COOKIE_SECURE"
        );
        // 256 random bits, base64url.
        let id = res.session_cookie().unwrap();
        assert_eq!(id.len(), "missive_session=".len() + 43);
        let me = app.get("/api/auth/me", Some(&id)).await;
        assert_eq!(me.json(), json!({"username": "alice_01"}));
        app.stop().await;
    }
);

api_test!(cookie_is_secure_when_configured, |b| async move {
    let app = App::start_with(b, |c| c.cookie_secure = true).await;
    let res = app
        .post(
            "/api/auth/signup",
            json!({"username": "alice", "password": "12345678"}),
            None,
        )
        .await;
    assert!(
        res.headers["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    app.stop().await;
});

api_test!(signup_validates_username_and_password, |b| async move {
    let app = App::start(b).await;
    let cases = [
        ("ab", "password1", "invalid_username"),
        (&"a".repeat(33), "password1", "invalid_username"),
        ("Alice", "password1", "invalid_username"),
        ("al ice", "password1", "invalid_username"),
        ("alice-x", "password1", "invalid_username"),
        ("alice", "1234567", "invalid_password"),
        ("alice", &"p".repeat(129), "invalid_password"),
    ];
    for (username, password, code) in cases {
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{username}");
        assert_eq!(res.error_code(), code, "{username}/{password}");
    }
    // The limits themselves are allowed; length is in characters, not bytes.
    for (username, password) in [
        ("abc", "한국어비밀번호다"),
        (&"a".repeat(32) as &str, &"p".repeat(128) as &str),
    ] {
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{username}");
    }
    app.stop().await;
});

api_test!(taken_username_returns_409, |b| async move {
    let app = App::start(b).await;
    app.signup("alice").await;
    let res = app
        .post(
            "/api/auth/signup",
            json!({"username": "alice", "password": "another one"}),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "username_taken");
    app.stop().await;
});

api_test!(
    racing_signups_for_one_name_create_one_account,
    |b| async move {
        let app = App::start(b).await;
        let attempts = (0..8).map(|i| {
            app.post(
                "/api/auth/signup",
                json!({"username": "racer", "password": format!("password{i}")}),
                None,
            )
        });
        let results = join_all(attempts).await;
        let created = results
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .count();
        let taken = results
            .iter()
            .filter(|r| r.status == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, taken), (1, 7));
        app.stop().await;
    }
);

api_test!(
    login_returns_a_fresh_session_and_revokes_the_old_one,
    |b| async move {
        let app = App::start(b).await;
        let first = app.signup("alice").await;
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/auth/login")
                    .json(&json!({"username": "alice", "password": "correct horse"}))
                    .cookie(Some(&first)),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.json(), json!({"username": "alice"}));
        let second = res.session_cookie().unwrap();
        assert_ne!(first, second);
        assert_eq!(
            app.get("/api/auth/me", Some(&second)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/api/auth/me", Some(&first)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // A third login gives yet another id.
        let third = app.login("alice", "correct horse").await.session_cookie();
        assert_ne!(third.as_deref(), Some(second.as_str()));
        app.stop().await;
    }
);

api_test!(
    unknown_user_and_wrong_password_look_the_same,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        let wrong = app.login("alice", "wrong password").await;
        let unknown = app.login("nobody", "wrong password").await;
        let malformed = app.login("NO", "x").await;
        for res in [&wrong, &unknown, &malformed] {
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
            assert_eq!(res.json(), wrong.json());
            assert!(res.session_cookie().is_none());
        }
        assert_eq!(wrong.error_code(), "invalid_credentials");
        app.stop().await;
    }
);

api_test!(
    five_failed_logins_lock_the_username_for_the_window,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        app.signup("bob").await;
        for _ in 0..5 {
            let res = app.login("alice", "wrong password").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        }
        // Even the right password is refused now, with a Retry-After inside the window.
        let res = app.login("alice", "correct horse").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.error_code(), "too_many_attempts");
        let retry: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&retry), "Retry-After {retry}");
        // Other usernames are unaffected.
        assert_eq!(
            app.login("bob", "correct horse").await.status,
            StatusCode::OK
        );
        app.stop().await;
    }
);

api_test!(parallel_guesses_cannot_exceed_the_limit, |b| async move {
    let app = App::start(b).await;
    app.signup("alice").await;
    let results = join_all((0..12).map(|_| app.login("alice", "wrong password"))).await;
    let judged = results
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(judged, 5, "only five guesses may be checked");
    app.stop().await;
});

api_test!(
    a_successful_login_resets_the_failure_count,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        for _ in 0..4 {
            app.login("alice", "wrong password").await;
        }
        assert_eq!(
            app.login("alice", "correct horse").await.status,
            StatusCode::OK
        );
        for _ in 0..4 {
            assert_eq!(
                app.login("alice", "wrong password").await.status,
                StatusCode::UNAUTHORIZED
            );
        }
        app.stop().await;
    }
);

api_test!(logout_revokes_the_session_server_side, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let res = app
        .send(
            TestRequest::new(Method::POST, "/api/auth/logout")
                .header("content-type", "application/json")
                .cookie(Some(&cookie)),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let cleared = res.headers["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("missive_session=;") && cleared.contains("Max-Age=0"));
    // The old cookie, replayed, is dead.
    let me = app.get("/api/auth/me", Some(&cookie)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.error_code(), "unauthenticated");
    // Idempotent: again, and without any session.
    for cookie in [Some(cookie.as_str()), None] {
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/auth/logout")
                    .header("content-type", "application/json")
                    .cookie(cookie),
            )
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    app.stop().await;
});

api_test!(me_requires_a_valid_session, |b| async move {
    let app = App::start(b).await;
    for cookie in [
        None,
        Some("missive_session=garbage"),
        Some("missive_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let res = app.get("/api/auth/me", cookie).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{cookie:?}");
        assert_eq!(res.error_code(), "unauthenticated");
    }
    app.stop().await;
});

api_test!(sessions_expire_and_slide, |b| async move {
    let app = App::start_with(b, |c| c.session_ttl_secs = 2).await;
    let cookie = app.signup("alice").await;
    // Used every 1.2 s, the session outlives its 2 s TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            app.get("/api/auth/me", Some(&cookie)).await.status,
            StatusCode::OK
        );
    }
    // Left alone longer than the TTL, it is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.get("/api/auth/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
});

// ---------------------------------------------------------------- request shape

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
        let res = app
            .send(
                TestRequest::new(Method::PUT, "/api/auth/me")
                    .header("content-type", "application/json"),
            )
            .await;
        assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.error_code(), "method_not_allowed");
        app.stop().await;
    }
);

// ---------------------------------------------------------------- messages

api_test!(creating_a_message_returns_it, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let text = "안녕하세요 👋 — Grüße!";
    let msg = app.create(&cookie, text).await;
    assert_eq!(msg["text"], text);
    assert!(msg["id"].is_string());
    let created_at = msg["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'));
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let got = app
        .get(
            &format!("/api/messages/{}", msg["id"].as_str().unwrap()),
            Some(&cookie),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), msg);
    app.stop().await;
});

api_test!(message_text_limits_are_enforced, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    // 4000 characters is fine even when they are 4-byte emoji.
    app.create(&cookie, &"😀".repeat(4000)).await;
    app.create(&cookie, "x").await;
    for text in [
        String::new(),
        " \n\t ".into(),
        "😀".repeat(4001),
        "a".repeat(4001),
    ] {
        let res = app
            .post("/api/messages", json!({ "text": text }), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.error_code(), "invalid_text");
    }
    let list = app.get("/api/messages", Some(&cookie)).await;
    assert_eq!(texts(&list.json()).len(), 2);
    app.stop().await;
});

api_test!(message_endpoints_require_a_session, |b| async move {
    let app = App::start(b).await;
    let checks = [
        app.post("/api/messages", json!({"text": "hi"}), None).await,
        app.get("/api/messages", None).await,
        app.get("/api/messages/1", None).await,
        app.get("/api/messages/search?q=hi", None).await,
        app.delete("/api/messages/1", None).await,
        app.get("/api/activity", None).await,
        app.get("/api/activity/stream", None).await,
    ];
    for res in checks {
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert_eq!(res.error_code(), "unauthenticated");
    }
    app.stop().await;
});

api_test!(
    concurrent_posts_are_each_stored_once_for_their_author,
    |b| async move {
        // Posts that arrive together are committed together; each must still land, once,
        // with its own author and id.
        let app = App::start(b).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let posts = (0..40).map(|i| {
            let cookie = if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            let app = &app;
            async move { app.create(&cookie, &format!("post {i}")).await }
        });
        let created = join_all(posts).await;
        let ids: std::collections::HashSet<&str> =
            created.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 40);
        for (cookie, parity) in [(&alice, 0), (&bob, 1)] {
            let body = app
                .get("/api/messages?limit=100", Some(cookie))
                .await
                .json();
            let mut mine = texts(&body);
            mine.sort();
            let mut expected: Vec<String> = (0..40)
                .filter(|i| i % 2 == parity)
                .map(|i| format!("post {i}"))
                .collect();
            expected.sort();
            assert_eq!(mine, expected);
            assert_eq!(app.search(cookie, "post").await.len(), 20);
        }
        app.stop().await;
    }
);

api_test!(idempotency_key_replays_the_first_response, |b| async move {
    let app = App::start(b).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let post = |cookie: String, text: &'static str, key: &'static str| {
        let app = &app;
        async move {
            app.send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({ "text": text }))
                    .header("idempotency-key", key)
                    .cookie(Some(&cookie)),
            )
            .await
        }
    };
    let first = post(alice.clone(), "once", "draft-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Any text, not only ASCII, is stored with its key (the response is replayed as is).
    let korean = post(alice.clone(), "안녕 🦀", "draft-ko").await;
    assert_eq!(korean.status, StatusCode::CREATED, "{}", korean.json());
    let replay = post(alice.clone(), "안녕 🦀", "draft-ko").await;
    assert_eq!(replay.json(), korean.json());
    let again = post(alice.clone(), "once, edited", "draft-1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(
        again.json(),
        first.json(),
        "the first response, not a new message"
    );
    // Double click: many at once with one key make one message.
    let burst = join_all((0..6).map(|_| post(alice.clone(), "burst", "draft-2"))).await;
    let ids: std::collections::HashSet<String> = burst
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    // Keys are per user.
    let bobs = post(bob.clone(), "bob's", "draft-1").await;
    assert_ne!(bobs.json()["id"], first.json()["id"]);
    let list = app.get("/api/messages", Some(&alice)).await;
    assert_eq!(texts(&list.json()), ["burst", "안녕 🦀", "once"]);
    // Only message.created events for real creations.
    let created = app
        .activity_types(&alice)
        .await
        .into_iter()
        .filter(|t| t == "message.created")
        .count();
    assert_eq!(created, 3);
    for bad in ["", &"k".repeat(256), "has space", "é"] {
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({"text": "x"}))
                    .header("idempotency-key", bad)
                    .cookie(Some(&alice)),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert_eq!(res.error_code(), "invalid_idempotency_key");
    }
    app.stop().await;
});

api_test!(listing_pages_newest_first_across_pages, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for i in 0..45 {
        app.create(&cookie, &format!("message {i}")).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/messages?limit=20".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        let body = page.json();
        seen.extend(texts(&body));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/messages?limit=20&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..45).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);
    // Default page size is 20; an exact last page has no cursor.
    let body = app.get("/api/messages", Some(&cookie)).await.json();
    assert_eq!(texts(&body).len(), 20);
    let body = app
        .get("/api/messages?limit=100", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 45);
    assert!(body["next_cursor"].is_null());
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("before=nope", "invalid_cursor"),
        ("before=MTI", "invalid_cursor"),
    ] {
        let res = app
            .get(&format!("/api/messages?{query}"), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(res.error_code(), code, "{query}");
    }
    app.stop().await;
});

api_test!(users_see_only_their_own_messages, |b| async move {
    let app = App::start(b).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let secret = app.create(&alice, "alice's secret plan").await;
    let id = secret["id"].as_str().unwrap();
    assert!(texts(&app.get("/api/messages", Some(&bob)).await.json()).is_empty());
    assert!(app.search(&bob, "secret").await.is_empty());
    let path = format!("/api/messages/{id}");
    for res in [
        app.get(&path, Some(&bob)).await,
        app.delete(&path, Some(&bob)).await,
    ] {
        assert_eq!(res.status, StatusCode::NOT_FOUND, "never 403");
        assert_eq!(res.error_code(), "not_found");
    }
    // Still there for its owner.
    assert_eq!(app.get(&path, Some(&alice)).await.status, StatusCode::OK);
    app.stop().await;
});

api_test!(get_and_delete_unknown_ids_are_404, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for id in ["999999", "abc", "0", "-1", "01", "99999999999999999999999"] {
        let path = format!("/api/messages/{id}");
        assert_eq!(
            app.get(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    app.stop().await;
});

api_test!(
    deleting_removes_the_message_and_its_search_entry,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let msg = app.create(&cookie, "ephemeral words").await;
        app.create(&cookie, "lasting words").await;
        let path = format!("/api/messages/{}", msg["id"].as_str().unwrap());
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.search(&cookie, "words").await, ["lasting words"]);
        assert!(app.search(&cookie, "ephem").await.is_empty());
        app.stop().await;
    }
);

// ---------------------------------------------------------------- search

api_test!(search_matches_word_prefixes_in_any_script, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    app.create(&cookie, "Hello, World!").await;
    app.create(&cookie, "메시지를 보냈다").await;
    app.create(&cookie, "Party time 🎉 tonight").await;
    app.create(&cookie, "Straße und Übermut").await;
    app.create(&cookie, "help wanted").await;
    assert_eq!(app.search(&cookie, "hel wor").await, ["Hello, World!"]);
    assert_eq!(app.search(&cookie, "HELLO").await, ["Hello, World!"]);
    assert_eq!(
        app.search(&cookie, "hel").await,
        ["help wanted", "Hello, World!"]
    );
    assert_eq!(app.search(&cookie, "메시").await, ["메시지를 보냈다"]);
    assert_eq!(app.search(&cookie, "보냈다").await, ["메시지를 보냈다"]);
    assert_eq!(app.search(&cookie, "🎉").await, ["Party time 🎉 tonight"]);
    assert_eq!(
        app.search(&cookie, "über stra").await,
        ["Straße und Übermut"]
    );
    // Every word must match; a suffix is not a prefix.
    assert!(app.search(&cookie, "hello nothing").await.is_empty());
    assert!(app.search(&cookie, "orld").await.is_empty());
    app.stop().await;
});

api_test!(
    search_treats_sql_and_fulltext_syntax_as_text,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        app.create(&cookie, "50% off today").await;
        app.create(&cookie, "snake_case names").await;
        app.create(&cookie, "hello world").await;
        app.create(&cookie, "C++ (and C) rocks").await;
        // Alone, operator characters are no words: they match nothing rather than everything.
        for q in ["%", "_", "*", "+", "-", "\"", "(", "%%", "'", "\\", ";--"] {
            assert!(
                app.search(&cookie, q).await.is_empty(),
                "{q} matched something"
            );
        }
        assert_eq!(app.search(&cookie, "50%").await, ["50% off today"]);
        assert_eq!(
            app.search(&cookie, "snake_case").await,
            ["snake_case names"]
        );
        // In FULLTEXT boolean mode `-world` would exclude; here it is just the word "world".
        assert_eq!(app.search(&cookie, "+hello -world").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "\"hello\"").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "hel*").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "(and").await, ["C++ (and C) rocks"]);
        assert_eq!(app.search(&cookie, "' OR 1=1 --").await.len(), 0);
        app.stop().await;
    }
);

api_test!(search_validates_query_and_limit, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for i in 0..30 {
        app.create(&cookie, &format!("note {i}")).await;
    }
    let body = app
        .get("/api/messages/search?q=note", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 20, "default limit");
    assert_eq!(texts(&body)[0], "note 29", "newest first");
    let body = app
        .get("/api/messages/search?q=note&limit=25", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 25);
    let long = "a".repeat(201);
    for (query, code) in [
        ("", "invalid_query"),
        ("q=", "invalid_query"),
        ("q=%20%20", "invalid_query"),
        (&format!("q={long}") as &str, "invalid_query"),
        ("q=note&limit=0", "invalid_limit"),
        ("q=note&limit=101", "invalid_limit"),
    ] {
        let res = app
            .get(&format!("/api/messages/search?{query}"), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(res.error_code(), code, "{query}");
    }
    let ok = app
        .get(
            &format!("/api/messages/search?q={}", "a".repeat(200)),
            Some(&cookie),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    app.stop().await;
});

// ---------------------------------------------------------------- activity

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

api_test!(
    stream_delivers_new_activity_within_a_second,
    |b| async move {
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
        // Subscribed before the post: the entry must arrive.
        let posted = std::time::Instant::now();
        app.create(&cookie, "live!").await;
        let mut seen = String::new();
        while !seen.contains("\n\n") {
            let frame = tokio::time::timeout(Duration::from_secs(1), body.frame())
                .await
                .expect("an event within a second")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        assert!(posted.elapsed() < Duration::from_secs(1));
        assert!(
            seen.starts_with("event: message.created\ndata: {"),
            "{seen}"
        );
        let data: Value =
            serde_json::from_str(seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
                .unwrap();
        assert_eq!(data["type"], "message.created");
        // Shutdown ends the stream instead of holding the process open.
        app.state.shutdown.cancel();
        let end = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        assert!(end.is_ok(), "stream ends on shutdown");
        app.stop().await;
    }
);

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
    assert_eq!(created[1]["at"], "2026-01-02T03:04:05Z");
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

// ---------------------------------------------------------------- health and docs

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
async fn a_dead_database_is_a_500_in_our_shape_not_a_hang() {
    let backends = TestBackends::new(Backends::Real).await;
    let mut config = backends.config.clone();
    config.database_url = Some("mysql://root@127.0.0.1:1/missive".to_owned().into());
    let state = AppState::build(config).unwrap();
    let res = TestRequest::new(Method::POST, "/api/auth/signup")
        .json(&json!({"username": "alice", "password": "12345678"}))
        .send(&missive::app(state))
        .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        res.json(),
        json!({"error": {"code": "internal", "message": "internal error"}})
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
    for _ in 0..2 {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&frame[..], b": heartbeat\n\n");
    }
    assert!(started.elapsed() >= Duration::from_millis(550));
    backends.cleanup().await;
}

// ---------------------------------------------------------------- events: outbox and ingest

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
        assert_eq!(created.ty, "io.missive.message.created.v1");
        assert_eq!(created.subject.as_deref(), Some("alice"));
        assert_eq!(created.data["id"], res.json()["id"]);
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
