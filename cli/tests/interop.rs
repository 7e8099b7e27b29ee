//! Interoperability with Python's `cloudevents` package (tests/support/cloudevents_peer.py),
//! an outside client, on both bindings and in both directions: what it writes, our
//! functions accept; what we write, it parses; an event that passes through our bindings
//! comes out whole (every attribute, extensions including `traceparent`, the data
//! bytes). Kafka tests use the broker at `MISSIVE_TEST_KAFKA_BROKERS` and fail without it.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use dev::{Dev, Setup, eventually};
use missive_adapters::events::http_binding;
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn peer(args: &[&str], stdin: &[Value]) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/cloudevents_peer.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    let lines: Vec<String> = stdin.iter().map(Value::to_string).collect();
    dev::run_with_stdin(cmd, Some(&lines.join("\n")))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Events at the spec's edges, as the peer builds them: a 20-character extension name,
/// a long value, values that need percent-encoding on HTTP (non-ASCII, space, `"`, `%`),
/// JSON, text and raw bytes as data, no `datacontenttype`, no data.
fn edge_events(mode: &str, ty: &str) -> Vec<Value> {
    let attributes = |id: &str| {
        json!({
            "id": id, "source": "/tests/python-peer", "type": ty,
            "subject": "zoë", "partitionkey": "zoë",
            "time": "2026-12-02T10:00:00.123Z",
            "traceparent": TRACEPARENT,
            "abcdefghijklmnopqrst": "x".repeat(2048),
            "spaced": "50% off, \"quoted\" ✓",
        })
    };
    let all_bytes: Vec<u8> = (0..=255).collect();
    let with = |id: &str, extra: Value| {
        let mut a = attributes(id);
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    vec![
        json!({"mode": mode, "attributes": with("json", json!({
            "datacontenttype": "application/json",
            "dataschema": "https://missive.example/schemas/submitted.json"})),
            "data": {"note": "hi ✓"}}),
        json!({"mode": mode, "attributes": with("text", json!({"datacontenttype": "text/plain"})),
            "data": "plain words, not JSON"}),
        json!({"mode": mode, "attributes": with("bytes", json!({"datacontenttype": "application/octet-stream"})),
            "data_b64": base64(&all_bytes)}),
        json!({"mode": mode, "attributes": with("untyped", json!({})), "data": {"a": 1}}),
        json!({"mode": mode, "attributes": with("empty", json!({}))}),
    ]
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An HTTP endpoint that reads each request with our binding and answers with the event
/// it read, written by our binding (binary mode).
async fn echo(headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let event = match http_binding::from_request(&headers, &body) {
        Ok(event) => event,
        Err(err) => return (StatusCode::BAD_REQUEST, err.0).into_response(),
    };
    let (parts, body) = http_binding::to_request(&event, "/").unwrap().into_parts();
    let mut response = axum::response::Response::new(body);
    *response.headers_mut() = parts.headers;
    response
}

#[test]
fn events_pass_through_our_http_binding_whole_both_ways() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    runtime.spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/", axum::routing::post(echo)),
        )
        .await
    });
    let mut sent = edge_events("binary", "io.missive.message.submitted.v1");
    sent.extend(edge_events("structured", "io.missive.message.submitted.v1"));
    let results = peer(&["http-echo", &url], &sent);
    assert_eq!(results.len(), sent.len());
    for result in results {
        assert_eq!(result["got"], result["sent"], "lost on the way");
    }
}

#[test]
fn functions_accept_what_the_peer_sends_over_http_and_refuse_an_unknown_specversion() {
    // Embedded backends in a directory of this run's own (its SQLite file is there).
    let dir = std::env::temp_dir().join(format!("missive-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = dev::missive();
    cmd.current_dir(&dir);
    let dev = Dev::start(cmd);
    let cookie = dev.signup("alice");
    let url = format!("http://{}/_events/message-ingest", dev.events_addr);
    let submitted = |id: &str, mode: &str| {
        json!({"mode": mode, "attributes": {
            "id": id, "source": "/tests/python-peer", "type": "io.missive.message.submitted.v1",
            "subject": "alice", "datacontenttype": "application/json", "traceparent": TRACEPARENT},
            "data": {"username": "alice", "text": format!("{mode} from Python")}})
    };
    let answers = peer(
        &["http-post", &url],
        &[
            submitted("b-1", "binary"),
            submitted("s-1", "structured"),
            json!({"raw_headers": {
                "ce-specversion": "2.0", "ce-id": "x", "ce-source": "/tests", "ce-type": "t",
                "content-type": "application/json"}, "raw_body": "{}"}),
        ],
    );
    assert_eq!(answers[0]["status"], 202, "{answers:?}");
    assert_eq!(answers[1]["status"], 202, "{answers:?}");
    assert_eq!(answers[2]["status"], 400);
    let error: Value = serde_json::from_str(answers[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "invalid_event", "{error}");
    assert_eq!(error["error"]["message"], "unsupported specversion 2.0");
    let mut texts = dev.texts(&cookie);
    texts.sort();
    assert_eq!(texts, ["binary from Python", "structured from Python"]);
    dev.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_peer_parses_the_events_we_send_over_http() {
    // A free port for the peer's receiver.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/cloudevents_peer.py"
    );
    let mut receiver = Command::new("python3")
        .args([script, "http-receive", &port.to_string(), "1", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ready["listening"], port);
    let mut publish = dev::missive();
    publish.args(["publish", "--user", "alice", "--text", "hello ✓", "--http"]);
    publish.arg(format!("http://127.0.0.1:{port}/"));
    dev::run_with_stdin(publish, None);
    let got: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    receiver.wait().unwrap();
    let attributes = &got["attributes"];
    assert_eq!(attributes["specversion"], "1.0");
    assert_eq!(attributes["type"], "io.missive.message.submitted.v1");
    assert_eq!(attributes["source"], "/cli/missive-publish");
    assert_eq!(attributes["subject"], "alice");
    assert_eq!(attributes["datacontenttype"], "application/json");
    assert!(attributes["time"].as_str().unwrap().ends_with('Z'), "{got}");
    assert!(
        missive_core::trace_context::valid_traceparent(attributes["traceparent"].as_str().unwrap()),
        "{got}"
    );
    assert_eq!(
        got["data"],
        json!({"json": {"username": "alice", "text": "hello ✓"}})
    );
}

/// The trace an event belongs to (the trace id of its `traceparent`): a hop may add its
/// own span as parent, never change the trace.
fn trace_of(event: &Value) -> String {
    event["attributes"]["traceparent"].as_str().unwrap()[3..35].to_owned()
}

#[test]
fn over_kafka_the_peer_and_our_functions_understand_each_other_and_nothing_is_lost() {
    let setup = Setup::new("interop");
    let dev = Dev::start(setup.command());
    let cookie = dev.signup("alice");
    let brokers = dev::kafka_brokers();
    let inbox = setup.topic("inbox");
    let accepted = |id: &str, mode: &str| {
        json!({"mode": mode, "attributes": {
            "id": id, "source": "/tests/python-peer", "type": "io.missive.message.submitted.v1",
            "subject": "alice", "partitionkey": "alice",
            "datacontenttype": "application/json", "traceparent": TRACEPARENT},
            "data": {"username": "alice", "text": format!("{mode} over Kafka")}})
    };
    // The edge events fail in message-ingest (their data is not a submission), so the
    // dispatcher dead-letters them: what the DLQ holds is what our bindings made of them.
    let mut sent = vec![accepted("ok-b", "binary"), accepted("ok-s", "structured")];
    sent.extend(edge_events("binary", "io.missive.message.submitted.v1"));
    let mut structured = edge_events("structured", "io.missive.message.submitted.v1");
    for event in &mut structured {
        let id = event["attributes"]["id"].as_str().unwrap().to_owned();
        event["attributes"]["id"] = json!(format!("s-{id}"));
    }
    sent.extend(structured);
    let produced = peer(&["kafka-produce", &brokers, &inbox], &sent);
    assert_eq!(produced.len(), sent.len());

    // Accepted: stored, and their message.created events parse in the peer.
    eventually(Duration::from_secs(30), "both messages stored", || {
        dev.texts(&cookie).len() == 2
    });
    let mut texts = dev.texts(&cookie);
    texts.sort();
    assert_eq!(texts, ["binary over Kafka", "structured over Kafka"]);
    let created = peer(
        &["kafka-consume", &brokers, &setup.topic("events"), "3", "30"],
        &[],
    );
    let created: Vec<&Value> = created
        .iter()
        .filter(|e| e["attributes"]["type"] == "io.missive.message.created.v1")
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    for event in created {
        let attributes = &event["attributes"];
        assert_eq!(attributes["source"], "/functions/message-ingest");
        assert_eq!(attributes["subject"], "alice");
        assert_eq!(event["key"], "alice");
        assert_eq!(attributes["datacontenttype"], "application/json");
        assert_eq!(
            trace_of(event),
            &TRACEPARENT[3..35],
            "the producer's trace goes on"
        );
        assert!(event["data"]["json"]["id"].is_string(), "{event}");
    }

    // Dead-lettered: every attribute, extension and data byte as the peer sent it, plus
    // Knative's error extensions.
    let edge: Vec<&Value> = produced
        .iter()
        .filter(|e| !e["attributes"]["id"].as_str().unwrap().starts_with("ok-"))
        .collect();
    let dead = peer(
        &[
            "kafka-consume",
            &brokers,
            &setup.topic("dlq"),
            &edge.len().to_string(),
            "60",
        ],
        &[],
    );
    assert_eq!(dead.len(), edge.len(), "{dead:?}");
    for sent in edge {
        let id = &sent["attributes"]["id"];
        let got = dead
            .iter()
            .find(|d| &d["attributes"]["id"] == id)
            .unwrap_or_else(|| panic!("{id} is dead-lettered"));
        assert_eq!(got["attributes"]["knativeerrorcode"], "400", "{got}");
        assert_eq!(trace_of(got), trace_of(sent));
        let strip = |event: &Value| {
            let mut event = event.clone();
            let attributes = event["attributes"].as_object_mut().unwrap();
            attributes.retain(|name, _| !name.starts_with("knativeerror") && name != "traceparent");
            event
        };
        assert_eq!(strip(got), strip(sent), "lost on the way");
    }
    dev.stop();
}
