//! The Knative runtime contract, checked on the real `auth-signup` binary as a process:
//! port from `$PORT` (0 here), probes, h2c, lazy start-up, and graceful shutdown on
//! SIGTERM with an in-flight request. Runs against real MariaDB and Redis.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use missive_testkit::process::{
    accepted_connection, answers_h2c, sigterm, wait_exit, wait_listener_closed, wait_until_read,
};
use missive_testkit::{Backends, TestBackends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Function {
    child: Child,
    port: u16,
}

/// Starts the binary with `env` and waits for its "serving" log line.
fn start(env: &[(&str, &str)]) -> Function {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-signup"))
        .env_clear()
        .env("PORT", "0")
        // An event transport is required; an HTTP sink connects only when used.
        .env("K_SINK", "http://127.0.0.1:1/")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the function logs before exiting")
            .unwrap();
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if log["message"] == "serving" {
            let addr = log["addr"].as_str().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Function { child, port }
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
async fn http(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let backends = TestBackends::new(Backends::Real).await;
    let mut env = backends.env();
    env.push(("SHUTDOWN_GRACE_SECS", "20".to_owned()));
    let mut f = start(&as_refs(&env));

    assert_eq!(http(f.port, &get("/healthz")).await.0, 200);
    let (status, body) = http(f.port, &get("/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready"));

    // A slow client: headers and half the body now, the rest after SIGTERM.
    let body = r#"{"username":"slowpoke","password":"12345678"}"#;
    let (first, rest) = body.split_at(20);
    let mut slow = accepted_connection(f.port).await;
    slow.write_all(
        format!(
            "POST /api/auth/signup HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_until_read(f.child.id(), &slow);
    sigterm(f.child.id());
    // Draining: no new connections are accepted...
    wait_listener_closed(f.port).await;
    assert!(f.child.try_wait().unwrap().is_none(), "still draining");
    // ...but the in-flight request completes.
    slow.write_all(rest.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut slow).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("slowpoke"));

    let exit = wait_exit(&mut f.child, Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    backends.cleanup().await;
}

#[tokio::test]
async fn the_grace_period_bounds_draining() {
    let backends = TestBackends::new(Backends::Real).await;
    let mut env = backends.env();
    env.push(("SHUTDOWN_GRACE_SECS", "1".to_owned()));
    let mut f = start(&as_refs(&env));
    // A request that never finishes sending its body.
    let mut stuck = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
    stuck
        .write_all(
            b"POST /api/auth/signup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    wait_until_read(f.child.id(), &stuck);
    let signalled = Instant::now();
    sigterm(f.child.id());
    let exit = wait_exit(&mut f.child, Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited the grace period: {took:?}"
    );
    backends.cleanup().await;
}

#[tokio::test]
async fn start_up_does_no_network_io() {
    // Nothing listens on port 1: a function that connected at start would fail or hang.
    let mut f = start(&[
        ("DATABASE_URL", "mysql://root@127.0.0.1:1/missive"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ]);
    assert_eq!(http(f.port, &get("/healthz")).await.0, 200);
    let (status, body) = http(f.port, &get("/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("unavailable: database, redis"), "{body}");
    sigterm(f.child.id());
    assert_eq!(
        wait_exit(&mut f.child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_on_the_same_port() {
    let mut f = start(&[
        ("DATABASE_URL", "mysql://root@127.0.0.1:1/missive"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ]);
    assert!(
        answers_h2c(f.port).await,
        "server answers with an HTTP/2 SETTINGS frame"
    );
    sigterm(f.child.id());
    assert_eq!(
        wait_exit(&mut f.child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn missing_configuration_fails_fast_naming_the_variable() {
    for (env, variable) in [
        (
            vec![("REDIS_URL", "redis://127.0.0.1:6379")],
            "DATABASE_URL",
        ),
        (
            vec![("DATABASE_URL", "mysql://root@127.0.0.1/x")],
            "REDIS_URL",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ],
            "DATABASE_URL",
        ),
        (
            vec![
                ("DATABASE_URL", "mysql://root@127.0.0.1/x"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("PORT", "not-a-port"),
            ],
            "PORT",
        ),
        (
            vec![
                ("DATABASE_URL", "mysql://root@127.0.0.1/x"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ],
            "KAFKA_BROKERS or K_SINK",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_auth-signup"))
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

/// Scale to zero must not lose the last spans: a request served just before SIGTERM is
/// exported before the process exits, although the batch exporter's 5 s delay (the
/// default) has not passed.
#[tokio::test]
async fn spans_emitted_just_before_sigterm_reach_the_collector() {
    let backends = TestBackends::new(Backends::Real).await;
    let receiver = missive_testkit::otlp::OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let mut env = backends.env();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    env.push(("K_SERVICE", "auth-signup".to_owned()));
    env.push(("K_REVISION", "auth-signup-00042".to_owned()));
    env.push(("K_CONFIGURATION", "auth-signup".to_owned()));
    env.push((
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=test".to_owned(),
    ));
    let mut f = start(&as_refs(&env));

    let body = r#"{"username":"flushed","password":"12345678"}"#;
    let request = format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(f.port, &request).await.0, 201);
    sigterm(f.child.id());
    assert!(wait_exit(&mut f.child, Duration::from_secs(15)).success());

    // Nothing waits here: what was not exported before exit is lost.
    let spans = receiver.spans();
    let server = spans
        .iter()
        .find(|s| s.name == "POST /api/auth/signup")
        .unwrap_or_else(|| panic!("the request's span was not flushed: {spans:#?}"));
    assert_eq!(server.service, "auth-signup");
    for (key, value) in [
        ("service.namespace", "missive"),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("knative.revision", "auth-signup-00042"),
        ("faas.version", "auth-signup-00042"),
        ("knative.service", "auth-signup"),
        ("knative.configuration", "auth-signup"),
        ("deployment.environment.name", "test"),
    ] {
        assert_eq!(
            server.resource.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == server.trace_id && s.name == "INSERT users"),
        "its SQL span too: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        receiver
            .logs()
            .iter()
            .any(|l| l.body == "request" && l.trace_id == server.trace_id),
        "and its access log record"
    );
}
