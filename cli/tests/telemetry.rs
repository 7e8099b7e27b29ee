//! Observability end to end: the real `missive dev` binary exports OTLP/HTTP to a
//! receiver inside the test (decoding the real protobuf requests), on MariaDB, Redis and
//! Kafka. One trace must run from the browser's span through the API, SQL, the outbox,
//! Kafka and `activity-record` to Redis; logs must carry its ids; secrets must never show.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::collections::HashMap;
use std::time::Duration;

use dev::{Dev, Setup, eventually};
use missive_testkit::otlp::{OtlpReceiver, Span};
use serde_json::Value;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

const PASSWORD: &str = "correct horse battery";
/// Sent as `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20...`.
const AUTHORIZATION: &str = "Bearer otlp token";
const TEXT: &str = "the quiet secret note 🦀 메시지";

/// `missive dev` exporting to `receiver`, flushing often so the test does not wait.
fn exporting(setup: &Setup, receiver: &OtlpReceiver) -> Dev {
    let mut cmd = setup.command();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("authorization={}", AUTHORIZATION.replace(' ', "%20")),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("LOG_LEVEL", "info,rdkafka=warn");
    Dev::start(cmd)
}

/// The spans of one trace, by id.
struct Trace<'a> {
    spans: HashMap<&'a str, &'a Span>,
}

impl<'a> Trace<'a> {
    fn new(all: &'a [Span], trace_id: &str) -> Self {
        Self {
            spans: all
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (s.span_id.as_str(), s))
                .collect(),
        }
    }

    fn find(&self, what: &str, check: impl Fn(&Span) -> bool) -> &'a Span {
        let found: Vec<&&Span> = self.spans.values().filter(|s| check(s)).collect();
        assert!(
            !found.is_empty(),
            "no {what} span in the trace: {:#?}",
            self.names()
        );
        found[0]
    }

    fn all(&self, check: impl Fn(&Span) -> bool) -> Vec<&'a Span> {
        self.spans.values().copied().filter(|s| check(s)).collect()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.spans.values().map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    /// Whether `ancestor` is on `span`'s parent chain.
    fn descends(&self, span: &Span, ancestor: &Span) -> bool {
        let mut current = span;
        while let Some(parent) = self.spans.get(current.parent_span_id.as_str()) {
            if parent.span_id == ancestor.span_id {
                return true;
            }
            current = parent;
        }
        false
    }
}

#[test]
fn one_trace_runs_from_the_browser_through_kafka_to_redis() {
    let receiver = OtlpReceiver::start();
    let setup = Setup::new("otel_trace");
    let dev = exporting(&setup, &receiver);

    let signup = dev.request(
        "POST",
        "/api/auth/signup",
        None,
        Some(&format!(
            r#"{{"username":"alice","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(signup.status, 201, "{}", signup.body);
    let login = dev.request(
        "POST",
        "/api/auth/login",
        None,
        Some(&format!(
            r#"{{"username":"alice","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.cookie().unwrap();
    let session_id = cookie.split_once('=').unwrap().1.to_owned();

    // The browser's fetch span, as @opentelemetry/instrumentation-fetch would send it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let browser_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{browser_span}-01");
    let post = dev.request_with(
        "POST",
        "/api/messages",
        &[
            ("traceparent", &traceparent),
            ("User-Agent", "missive-telemetry-test"),
        ],
        Some(&cookie),
        Some(&format!(r#"{{"text":"{TEXT}"}}"#)),
    );
    assert_eq!(post.status, 201, "{}", post.body);
    eventually(Duration::from_secs(20), "the activity entry", || {
        dev.activity(&cookie)
            .contains(&"message.created".to_owned())
    });
    receiver.wait_for_spans(
        Duration::from_secs(20),
        "activity-record's Redis spans",
        |spans| {
            spans.iter().any(|s| {
                s.trace_id == trace_id && s.kind == CLIENT && s.attr("db.system.name") == "redis"
            })
        },
    );
    let output = dev.output.clone();
    // SIGTERM flushes what is still buffered (metrics and logs included).
    dev.stop();

    let spans = receiver.spans();
    let trace = Trace::new(&spans, trace_id);

    // HTTP server span, child of the browser's span.
    let server = trace.find("POST /api/messages server", |s| {
        s.name == "POST /api/messages" && s.kind == SERVER
    });
    assert_eq!(server.parent_span_id, browser_span);
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/api/messages");
    assert_eq!(server.attr("url.path"), "/api/messages");
    assert_eq!(server.attr("http.response.status_code"), "201");
    assert_eq!(server.attr("client.address"), "127.0.0.1");
    assert_eq!(server.attr("user_agent.original"), "missive-telemetry-test");
    assert_eq!(server.service, "missive");

    // SQL: the message insert and its outbox row, parameters never inlined.
    let insert = trace.find("INSERT messages", |s| {
        s.kind == CLIENT
            && s.attr("db.operation.name") == "INSERT"
            && s.attr("db.collection.name") == "messages"
    });
    assert_eq!(insert.name, "INSERT messages");
    assert_eq!(insert.attr("db.system.name"), "mariadb");
    assert_eq!(insert.attr("db.namespace"), setup.name);
    assert!(insert.attr("db.query.text").contains('?'));
    assert!(trace.descends(insert, server), "SQL under the request");
    let outbox = trace.find("INSERT outbox", |s| {
        s.kind == CLIENT && s.attr("db.collection.name") == "outbox"
    });
    assert!(trace.descends(outbox, server));
    trace.find("COMMIT", |s| s.name == "COMMIT" && s.kind == CLIENT);
    trace.find("pool acquire", |s| s.name == "acquire connection");

    // Kafka send, in the request's trace, with the record's coordinates.
    let events_topic = setup.topic("events");
    let send = trace.find("Kafka send", |s| {
        s.kind == PRODUCER && s.attr("messaging.destination.name") == events_topic
    });
    assert_eq!(send.name, format!("send {events_topic}"));
    assert_eq!(send.attr("messaging.system"), "kafka");
    assert_eq!(send.attr("messaging.operation.name"), "send");
    assert_eq!(send.attr("messaging.kafka.message.key"), "alice");
    assert_eq!(
        send.attr("cloudevents.event_type"),
        "io.missive.message.created.v1"
    );
    assert!(!send.attr("messaging.destination.partition.id").is_empty());
    assert!(!send.attr("messaging.kafka.offset").is_empty());
    assert!(trace.descends(send, server), "send under the request");

    // The dispatcher's consumer span is the send's child; activity-record's HTTP span and
    // its handling span follow, then Redis.
    let process = trace.find("Kafka process", |s| {
        s.kind == CONSUMER && s.name == format!("process {events_topic}")
    });
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(process.attr("messaging.operation.name"), "process");
    let delivery = trace.find("activity-record server", |s| {
        s.kind == SERVER && s.name == "POST /"
    });
    assert_eq!(delivery.parent_span_id, process.span_id);
    let handling = trace.find("activity-record handling", |s| {
        s.name == "process io.missive.message.created.v1"
    });
    assert_eq!(handling.kind, CONSUMER);
    assert!(trace.descends(handling, delivery));
    assert_eq!(
        handling.attr("cloudevents.event_type"),
        "io.missive.message.created.v1"
    );
    assert_eq!(
        handling.attr("cloudevents.event_source"),
        "/functions/message-create"
    );
    assert_eq!(handling.attr("cloudevents.event_subject"), "alice");
    assert!(!handling.attr("cloudevents.event_id").is_empty());
    let redis = trace.all(|s| s.kind == CLIENT && s.attr("db.system.name") == "redis");
    assert!(
        redis.iter().any(|s| trace.descends(s, handling)),
        "Redis spans under activity-record's handling"
    );
    for span in &redis {
        assert!(!span.attr("db.operation.name").is_empty());
    }

    // One tree: every span's parent is in the trace, except the server span's (the browser).
    for span in trace.spans.values() {
        if span.span_id != server.span_id {
            assert!(
                trace.spans.contains_key(span.parent_span_id.as_str()),
                "{} has a parent outside the trace",
                span.name
            );
        }
    }
    // 5xx only mark errors; nothing failed here.
    assert!(trace.spans.values().all(|s| s.status != 2));
    // SQL and Redis spans are never entered (only created and dropped around the call):
    // each still covers a time inside its parent's.
    let storage =
        trace.all(|s| s.name == "acquire connection" || !s.attr("db.system.name").is_empty());
    assert!(storage.len() >= 5, "{:#?}", trace.names());
    for span in storage {
        let parent = &trace.spans[span.parent_span_id.as_str()];
        assert!(
            parent.start_ns <= span.start_ns
                && span.start_ns <= span.end_ns
                && span.end_ns <= parent.end_ns,
            "{} is not inside {}",
            span.name,
            parent.name
        );
    }
    // Only warnings and errors become span events; the access line is in the logs.
    for span in trace.spans.values() {
        assert!(
            span.events.is_empty(),
            "{} has events {:?}",
            span.name,
            span.events
        );
    }

    // Signup: its own trace, with its SQL and Redis children.
    let signup_server = spans
        .iter()
        .find(|s| s.name == "POST /api/auth/signup")
        .expect("signup span");
    let signup_trace = Trace::new(&spans, &signup_server.trace_id);
    let user_insert = signup_trace.find("INSERT users", |s| s.name == "INSERT users");
    assert!(signup_trace.descends(user_insert, signup_server));
    let session_set = signup_trace.find("Redis SET", |s| {
        s.attr("db.system.name") == "redis" && s.attr("db.operation.name") == "SET"
    });
    assert!(signup_trace.descends(session_set, signup_server));

    // Nothing secret in any span attribute.
    for span in &spans {
        for value in span.attributes.values() {
            for secret in [PASSWORD, session_id.as_str(), TEXT] {
                assert!(
                    !value.contains(secret),
                    "{} carries a secret: {value}",
                    span.name
                );
            }
        }
    }

    // Logs exported over OTLP carry the trace: the access line of the POST.
    let logs = receiver.logs();
    let access = logs
        .iter()
        .find(|l| l.trace_id == trace_id && l.body == "request")
        .unwrap_or_else(|| panic!("no access log in the trace: {logs:#?}"));
    assert_eq!(access.span_id, server.span_id);
    assert_eq!(access.severity, "INFO");

    // And on stdout, as JSON lines with the same ids.
    let output = output.lock().unwrap().clone();
    let access_line: Value = output
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request" && l["trace_id"] == trace_id)
        .expect("access line on stdout");
    assert_eq!(access_line["span_id"], server.span_id.as_str());
    assert_eq!(access_line["route"], "/api/messages");
    assert_eq!(access_line["status"], 201);
    assert_eq!(access_line["level"], "INFO");
    assert_eq!(access_line["service.name"], "missive");

    // Metrics: the instruments the dashboards read.
    let names = receiver.metric_names();
    for metric in [
        "http.server.request.duration",
        "db.client.operation.duration",
        "missive.events.published",
        "missive.events.lag",
        "missive.events.consumed",
        "missive.session.lookups",
        "missive.signups",
        "missive.logins",
        "missive.messages.created",
        "missive.process.start_to_ready",
    ] {
        assert!(
            names.iter().any(|n| n == metric),
            "{metric} missing: {names:?}"
        );
    }

    // Every export carried OTEL_EXPORTER_OTLP_HEADERS, percent-decoded (traces have an
    // exporter of our own; metrics and logs opentelemetry-otlp's).
    for signal in ["traces", "logs", "metrics"] {
        let seen = receiver.authorization(signal);
        assert!(!seen.is_empty(), "no {signal} export");
        assert!(
            seen.iter().all(|a| a.as_deref() == Some(AUTHORIZATION)),
            "{signal}: {seen:?}"
        );
    }
}

#[test]
fn logs_are_json_lines_and_never_show_secrets() {
    let receiver = OtlpReceiver::start();
    let setup = Setup::new("otel_logs");
    let dev = exporting(&setup, &receiver);
    let body = format!(r#"{{"username":"bob","password":"{PASSWORD}"}}"#);
    assert_eq!(
        dev.request("POST", "/api/auth/signup", None, Some(&body))
            .status,
        201
    );
    let login = dev.request("POST", "/api/auth/login", None, Some(&body));
    assert_eq!(login.status, 200);
    let cookie = login.cookie().unwrap();
    let session_id = cookie.split_once('=').unwrap().1.to_owned();
    let post = dev.request_with(
        "POST",
        "/api/messages",
        &[("Authorization", "Bearer not-a-real-token")],
        Some(&cookie),
        Some(&format!(r#"{{"text":"{TEXT}"}}"#)),
    );
    assert_eq!(post.status, 201);
    // A failed login and a 4xx: refused quietly, no secret in the refusal either.
    let wrong = format!(r#"{{"username":"bob","password":"{PASSWORD} wrong"}}"#);
    assert_eq!(
        dev.request("POST", "/api/auth/login", None, Some(&wrong))
            .status,
        401
    );
    assert_eq!(
        dev.request("POST", "/api/auth/logout", Some(&cookie), Some("{}"))
            .status,
        204
    );
    eventually(Duration::from_secs(20), "events consumed", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.name == "process io.missive.user.logged_out.v1")
    });
    let output = dev.output.clone();
    dev.stop();

    let output = output.lock().unwrap().clone();
    let json: Vec<Value> = output
        .iter()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(json.len() > 5, "logged: {output:?}");
    for line in &json {
        for field in ["timestamp", "level", "message", "target", "service.name"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.contains('T'),
            "RFC 3339 UTC: {timestamp}"
        );
        if let Some(trace) = line.get("trace_id") {
            assert_eq!(trace.as_str().unwrap().len(), 32, "{line}");
            assert_eq!(line["span_id"].as_str().unwrap().len(), 16, "{line}");
        }
    }
    // Every request has one access line at INFO.
    let access: Vec<&Value> = json
        .iter()
        .filter(|l| {
            l["message"] == "request" && l["route"].as_str().is_some_and(|r| r.starts_with("/api"))
        })
        .collect();
    assert_eq!(access.len(), 5, "{access:#?}");
    assert!(access.iter().all(|l| l["level"] == "INFO"));
    // Nothing secret anywhere in stdout or in the exported log records.
    let exported: Vec<String> = receiver
        .logs()
        .iter()
        .map(|l| format!("{} {:?}", l.body, l.attributes))
        .collect();
    for text in output.iter().chain(&exported) {
        for secret in [
            PASSWORD,
            session_id.as_str(),
            TEXT,
            "not-a-real-token",
            "missive_session=",
        ] {
            assert!(!text.contains(secret), "secret {secret:?} logged: {text}");
        }
    }
}

#[test]
fn without_an_endpoint_nothing_is_exported() {
    // The receiver listens where an exporter that fell back to the OTLP default
    // (`http://localhost:4318`) would send, but nobody is told about it.
    let receiver = OtlpReceiver::start_on(4318);
    let setup = Setup::new("otel_off");
    let mut cmd = setup.command();
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let dev = Dev::start(cmd);
    let cookie = dev.signup("carol");
    let post = dev.request(
        "POST",
        "/api/messages",
        Some(&cookie),
        Some(r#"{"text":"hi"}"#),
    );
    assert_eq!(post.status, 201);
    // No exporter threads exist (the SDK's batch processors run on named threads).
    let threads = thread_names(dev.child.id());
    assert!(
        !threads.iter().any(|t| t.starts_with("OpenTelemetry")),
        "{threads:?}"
    );
    // Logs still carry trace ids: the trace context works without export.
    let output = dev.output.clone();
    dev.stop();
    assert_eq!(receiver.requests(), 0);
    let output = output.lock().unwrap().clone();
    assert!(
        output
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["message"] == "request" && l.get("trace_id").is_some()),
        "{output:?}"
    );

    // Whereas with an endpoint, the exporter threads are there (so the check above means
    // something).
    let setup = Setup::new("otel_on");
    let dev = exporting(&setup, &receiver);
    let threads = thread_names(dev.child.id());
    dev.stop();
    assert!(
        threads.iter().any(|t| t.starts_with("OpenTelemetry")),
        "{threads:?}"
    );
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}
