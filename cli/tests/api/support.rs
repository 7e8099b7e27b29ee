//! What the API tests share: the whole app on fresh backends, and small helpers.

#![allow(dead_code)]

use axum::Router;
use axum::http::{Method, StatusCode};
use missive_app::AppState;
use missive_app::config::Config;
use missive_testkit::{Backends, TestBackends, TestRequest, TestResponse};
use serde_json::{Value, json};

/// The whole app on fresh backends.
pub struct App {
    pub router: Router,
    /// The event endpoints (`/_events/<function>`).
    pub events: Router,
    pub state: AppState,
    pub backends: TestBackends,
}

impl App {
    pub async fn start(backends: Backends) -> Self {
        Self::start_with(backends, |_| {}).await
    }

    pub async fn start_with(backends: Backends, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut backends = TestBackends::new(backends).await;
        tweak(&mut backends.config);
        let state = backends.state();
        let router = missive::app(state.clone());
        let events = missive::events_app(state.clone());
        Self {
            router,
            events,
            state,
            backends,
        }
    }

    pub async fn stop(self) {
        self.state.db.close().await;
        self.backends.cleanup().await;
    }

    /// Sends to the public app, or to the event endpoints for `/_events/...` (their own
    /// port in `missive dev`).
    pub async fn send(&self, request: TestRequest) -> TestResponse {
        if request.path().starts_with("/_events/") {
            request.send(&self.events).await
        } else {
            request.send(&self.router).await
        }
    }

    pub async fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> TestResponse {
        self.send(
            TestRequest::new(Method::POST, path)
                .json(&body)
                .cookie(cookie),
        )
        .await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.send(TestRequest::new(Method::GET, path).cookie(cookie))
            .await
    }

    pub async fn delete(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        self.send(TestRequest::new(Method::DELETE, path).cookie(cookie))
            .await
    }

    /// Signs `name` up and returns the session cookie.
    pub async fn signup(&self, name: &str) -> String {
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

    pub async fn login(&self, name: &str, password: &str) -> TestResponse {
        self.post(
            "/api/auth/login",
            json!({"username": name, "password": password}),
            None,
        )
        .await
    }

    /// A login attempt from the client at `ip`.
    pub async fn login_from(&self, ip: &str, name: &str, password: &str) -> TestResponse {
        self.send(
            TestRequest::new(Method::POST, "/api/auth/login")
                .json(&json!({"username": name, "password": password}))
                .from_ip(ip),
        )
        .await
    }

    pub async fn create(&self, cookie: &str, text: &str) -> Value {
        let res = self
            .post("/api/messages", json!({ "text": text }), Some(cookie))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
        res.json()
    }

    pub async fn search(&self, cookie: &str, q: &str) -> Vec<String> {
        let path = format!("/api/messages/search?q={}", urlencode(q));
        let res = self.get(&path, Some(cookie)).await;
        assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.json());
        texts(&res.json())
    }

    pub async fn activity_types(&self, cookie: &str) -> Vec<String> {
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

pub fn texts(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items array")
        .iter()
        .map(|m| m["text"].as_str().expect("text").to_owned())
        .collect()
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
