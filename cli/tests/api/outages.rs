//! A backend goes away under a running app: requests that need it are answered 503
//! `unavailable` with `Retry-After`, fast (within about `BACKEND_TIMEOUT_MS`, 1 s), never
//! 500 and never after the request timeout; nothing is half-written; and everything works
//! again once the backend is back, with no restart. Each backend is reached through a
//! proxy the test cuts (it closes connections, or holds them silent), so the servers other
//! tests share are untouched. Only the real backends can go away: MariaDB and Redis here,
//! Kafka in tests/kafka.rs.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use missive_testkit::proxy::{Mode, Proxy};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::support::App;
use missive_app::config::Config;
use missive_testkit::{Backends, TestResponse};

/// The answer must come within this; the backend timeout is 1 s.
const FAST: Duration = Duration::from_millis(2500);

/// `url` with its `host:port` replaced by the proxy's.
fn through(url: &SecretString, proxy: &Proxy) -> SecretString {
    let url = url.expose_secret();
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let at = if user.is_empty() { "" } else { "@" };
    format!("{scheme}://{user}{at}127.0.0.1:{}{path}", proxy.port()).into()
}

fn target(url: &SecretString) -> String {
    let rest = url.expose_secret().split_once("://").expect("scheme").1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().expect("host").to_owned()
}

/// The app on the real backends, with the one whose URL `backend` picks reached through a
/// proxy the test can cut.
async fn behind_proxy(
    backend: impl FnOnce(&mut Config) -> &mut Option<SecretString>,
) -> (App, Proxy) {
    let mut proxy = None;
    let app = App::start_with(Backends::Real, |config| {
        let url = backend(config);
        let real = url.clone().expect("the real backends are configured");
        let started = Proxy::start(&target(&real));
        *url = Some(through(&real, &started));
        proxy = Some(started);
    })
    .await;
    (app, proxy.expect("started"))
}

/// Asserts `res` is the honest outage answer, and that it came fast.
fn assert_unavailable(what: &str, res: &TestResponse, took: Duration) {
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        res.json()
    );
    assert_eq!(res.error_code(), "unavailable", "{what}");
    assert_eq!(
        res.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "{what}"
    );
    eprintln!("outage answer: {what}: 503 in {took:?}");
    assert!(took < FAST, "{what} took {took:?}");
}

async fn timed<F: Future<Output = TestResponse>>(request: F) -> (TestResponse, Duration) {
    let started = Instant::now();
    let res = request.await;
    (res, started.elapsed())
}

async fn eventually_ok(app: &App, cookie: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = app.get("/api/messages", Some(cookie)).await;
        if res.status == StatusCode::OK {
            return;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", res.json());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn credentials(name: &str) -> serde_json::Value {
    json!({"username": name, "password": "correct horse"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_store_going_away_is_a_fast_503_and_signup_leaves_nothing_behind() {
    let (app, proxy) = behind_proxy(|config| &mut config.redis_url).await;
    let alice = app.signup("alice").await;
    app.create(&alice, "before the outage").await;

    for mode in [Mode::Down, Mode::Hang] {
        proxy.set(mode);
        let (res, took) = timed(app.get("/api/messages", Some(&alice))).await;
        assert_unavailable(&format!("{mode:?}: list"), &res, took);
        let (res, took) = timed(app.post("/api/auth/signup", credentials("bob"), None)).await;
        assert_unavailable(&format!("{mode:?}: signup"), &res, took);
        let (res, took) = timed(app.post("/api/auth/login", credentials("alice"), None)).await;
        assert_unavailable(&format!("{mode:?}: login"), &res, took);
    }

    proxy.set(Mode::Up);
    eventually_ok(&app, &alice).await;
    // The refused signups created nothing: the retry succeeds, once.
    let res = app.post("/api/auth/signup", credentials("bob"), None).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    let res = app.post("/api/auth/signup", credentials("bob"), None).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_is_a_fast_503_and_nothing_is_half_written() {
    let (app, proxy) = behind_proxy(|config| &mut config.database_url).await;
    let alice = app.signup("alice").await;
    app.create(&alice, "before the outage").await;

    // Down: connections closed under the pool. Hang: open connections and new ones go
    // silent (first warmed up again, so the pool holds live connections to the hang).
    for mode in [Mode::Down, Mode::Hang] {
        if mode == Mode::Hang {
            proxy.set(Mode::Up);
            eventually_ok(&app, &alice).await;
        }
        proxy.set(mode);
        let (res, took) = timed(app.get("/api/messages", Some(&alice))).await;
        assert_unavailable(&format!("{mode:?}: list"), &res, took);
        let (res, took) = timed(app.post(
            "/api/messages",
            json!({"text": "during the outage"}),
            Some(&alice),
        ))
        .await;
        assert_unavailable(&format!("{mode:?}: post"), &res, took);
        let (res, took) = timed(app.post("/api/auth/signup", credentials("carol"), None)).await;
        assert_unavailable(&format!("{mode:?}: signup"), &res, took);
    }

    proxy.set(Mode::Up);
    eventually_ok(&app, &alice).await;
    let res = app.get("/api/messages", Some(&alice)).await;
    let texts = crate::support::texts(&res.json());
    assert_eq!(
        texts,
        ["before the outage"],
        "nothing from the outage was stored"
    );
    let res = app
        .post("/api/auth/signup", credentials("carol"), None)
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    app.create(&alice, "after the outage").await;
    app.stop().await;
}
