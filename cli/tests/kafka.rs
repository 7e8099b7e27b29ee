//! Events over real Kafka (the tansu broker that `scripts/kafka.sh` starts, at
//! `MISSIVE_TEST_KAFKA_BROKERS`, default 127.0.0.1:9092), through the real `missive dev`
//! binary on MariaDB and Redis. Each test has its own topics, consumer groups, database
//! and Redis prefix. A missing broker fails the tests.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use dev::{Dev, Setup, eventually};
use missive_testkit::proxy::{Mode, Proxy};
use serde_json::{Value, json};

fn kafka_client(args: &[&str], stdin: Option<&str>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    dev::run_with_stdin(cmd, stdin)
}

fn produce(topic: &str, records: &[Value]) {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    kafka_client(
        &["produce", &dev::kafka_brokers(), topic],
        Some(&lines.join("\n")),
    );
}

fn consume(topic: &str, count: usize, timeout_secs: u64) -> Vec<Value> {
    kafka_client(
        &[
            "consume",
            &dev::kafka_brokers(),
            topic,
            &count.to_string(),
            &timeout_secs.to_string(),
        ],
        None,
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// Waits until `missive dev`'s consumer for `function` has committed every record of
/// `topic`: each was handled for good (stored, ignored or dead-lettered), so a duplicate
/// would have shown by now. The positive signal a fixed sleep only hoped for.
fn wait_consumed(topic: &str, function: &str) {
    wait_consumed_on(&dev::kafka_brokers(), topic, function);
}

/// [`wait_consumed`] on the broker at `brokers`.
fn wait_consumed_on(brokers: &str, topic: &str, function: &str) {
    let group = format!("{topic}-{function}");
    eventually(
        Duration::from_secs(30),
        &format!("{group} commits all of {topic}"),
        || {
            kafka_client(&["lag", brokers, &group, topic], None)
                .trim()
                .parse::<i64>()
                .unwrap()
                == 0
        },
    );
}

/// A binary-mode `message.submitted` record, as an event producer writes it.
fn submitted(id: &str, username: &str, text: &str) -> Value {
    json!({
        "key": username,
        "headers": {
            "ce_specversion": "1.0",
            "ce_id": id,
            "ce_source": "/tests/python-producer",
            "ce_type": "io.missive.message.submitted.v1",
            "ce_traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "content-type": "application/json"
        },
        "value": json!({"username": username, "text": text}).to_string()
    })
}

#[test]
fn an_http_post_reaches_the_activity_feed_through_kafka() {
    let setup = Setup::new("http");
    let dev = Dev::start(setup.command());
    let cookie = dev.signup("alice");
    // Live stream first, so the entry must arrive on it.
    let mut stream = TcpStream::connect(&dev.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/activity/stream HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let res = dev.request(
        "POST",
        "/api/messages",
        Some(&cookie),
        Some(r#"{"text":"via kafka"}"#),
    );
    assert_eq!(res.status, 201);
    let id = res.json()["id"].as_str().unwrap().to_owned();
    let mut seen = String::new();
    while !seen.contains("event: message.created") {
        line.clear();
        reader.read_line(&mut line).expect("SSE entry within 10 s");
        seen.push_str(&line);
    }
    drop(reader);
    drop(stream);
    eventually(Duration::from_secs(10), "both entries in the feed", || {
        dev.activity(&cookie) == ["message.created", "user.registered"]
    });
    // On the topic: binary mode, keyed by user, trace context carried.
    let records = consume(&setup.topic("events"), 2, 15);
    let created = records
        .iter()
        .find(|r| r["headers"]["ce_type"] == "io.missive.message.created.v1")
        .expect("message.created on the events topic");
    assert_eq!(created["key"], "alice");
    assert_eq!(created["headers"]["ce_subject"], "alice");
    assert_eq!(created["headers"]["ce_source"], "/functions/message-create");
    assert_eq!(created["headers"]["content-type"], "application/json");
    assert!(
        created["headers"]["ce_traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-")
    );
    let data: Value = serde_json::from_str(created["value"].as_str().unwrap()).unwrap();
    assert_eq!(data["id"], id);
    dev.stop();
}

#[test]
fn inbox_events_from_an_outside_client_are_stored_once_and_failures_dead_lettered() {
    let setup = Setup::new("inbox");
    let dev = Dev::start(setup.command());
    let cookie = dev.signup("alice");
    let structured = json!({
        "specversion": "1.0", "id": "s-1", "source": "/tests/python-producer",
        "type": "io.missive.message.submitted.v1",
        "data": {"username": "alice", "text": "structured mode"}
    });
    produce(
        &setup.topic("inbox"),
        &[
            submitted("e-1", "alice", "from python 🐍"),
            submitted("e-1", "alice", "from python 🐍"), // redelivered
            submitted("e-2", "nobody", "unknown user"),  // permanent failure
            json!({"key": "alice", "headers": {"content-type": "application/cloudevents+json"},
                   "value": structured.to_string()}),
            json!({"key": null, "headers": {}, "value": "{not json at all"}), // not an event
            json!({"key": "alice", "headers": {},
                   "value": json!({"username": "alice", "text": "plain record"}).to_string()}),
        ],
    );
    eventually(Duration::from_secs(20), "three stored messages", || {
        dev.texts(&cookie).len() >= 3
    });
    // Every record handled, the duplicate included: now there must be none.
    wait_consumed(&setup.topic("inbox"), "message-ingest");
    let mut texts = dev.texts(&cookie);
    texts.sort();
    assert_eq!(texts, ["from python 🐍", "plain record", "structured mode"]);
    let dead = consume(&setup.topic("dlq"), 2, 15);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let unknown = dead
        .iter()
        .find(|r| r["headers"]["ce_id"] == "e-2")
        .expect("the unknown user's event is dead-lettered");
    assert_eq!(unknown["headers"]["ce_knativeerrorcode"], "422");
    let error_data = base64::engine::general_purpose::STANDARD
        .decode(unknown["headers"]["ce_knativeerrordata"].as_str().unwrap())
        .unwrap();
    assert!(
        String::from_utf8(error_data)
            .unwrap()
            .contains("unknown_user")
    );
    assert_eq!(
        unknown["headers"]["ce_knativeerrordest"],
        "/functions/message-ingest"
    );
    let garbage = dead
        .iter()
        .find(|r| r["headers"]["ce_id"] != "e-2")
        .unwrap();
    assert_eq!(garbage["headers"]["ce_knativeerrorcode"], "400");
    dev.stop();
}

#[test]
fn a_consumer_killed_mid_stream_resumes_without_loss_or_duplicates() {
    let setup = Setup::new("resume");
    let dev = Dev::start(setup.command());
    let cookie = dev.signup("bulk");
    // Enough that the consumer is still busy when it is killed (about 2,000 a second
    // here).
    let total = 3000;
    let records: Vec<Value> = (0..total)
        .map(|i| submitted(&format!("bulk-{i}"), "bulk", &format!("m{i}")))
        .collect();
    produce(&setup.topic("inbox"), &records);
    eventually(Duration::from_secs(30), "some messages stored", || {
        let res = dev.request("GET", "/api/messages?limit=100", Some(&cookie), None);
        res.json()["items"].as_array().unwrap().len() >= 20
    });
    dev.kill();
    let count = || {
        dev::mariadb(&format!("SELECT COUNT(*) FROM `{}`.messages", setup.name))
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    let at_kill = count();
    assert!(
        0 < at_kill && at_kill < total,
        "killed mid-stream: {at_kill} of {total} stored"
    );
    let dev = Dev::start(setup.command());
    eventually(Duration::from_secs(60), "every message stored", || {
        count() >= total
    });
    wait_consumed(&setup.topic("inbox"), "message-ingest");
    assert_eq!(count(), total, "no duplicates");
    let distinct = dev::mariadb(&format!(
        "SELECT COUNT(DISTINCT text) FROM `{}`.messages",
        setup.name
    ));
    assert_eq!(distinct.trim(), total.to_string());
    dev.stop();
}

/// A tansu broker of one test's own (scripts/kafka.sh on another port), stopped when
/// dropped: also when the test fails half-way.
struct PrivateBroker {
    port: u32,
}

impl PrivateBroker {
    fn start(port: u32, advertised_port: u32) -> Self {
        let status = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh"))
            .env("KAFKA_PORT", port.to_string())
            .env("KAFKA_ADVERTISED_PORT", advertised_port.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "the private broker starts");
        Self { port }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh"))
            .arg("stop")
            .env("KAFKA_PORT", self.port.to_string())
            .status();
    }
}

#[test]
fn events_posted_while_the_broker_is_unreachable_arrive_once_it_is_back() {
    // A broker of this test's own behind a proxy we can cut, so no other test is
    // disturbed. Ports below the ephemeral range (32768+), where a reconnecting client
    // could otherwise end up connected to itself.
    let broker_port = 20000 + (std::process::id() % 5000) * 2;
    let proxy_port = broker_port + 1;
    let _broker = PrivateBroker::start(broker_port, proxy_port);
    let proxy = Proxy::start_on(proxy_port as u16, &format!("127.0.0.1:{broker_port}"));
    let brokers = format!("127.0.0.1:{proxy_port}");
    let setup = Setup::new("outage");
    let mut cmd = setup.command();
    cmd.env("KAFKA_BROKERS", &brokers)
        .env("OUTBOX_RELAY_MIN_AGE_SECS", "0");
    let dev = Dev::start(cmd);
    let cookie = dev.signup("carol");
    eventually(Duration::from_secs(10), "registration recorded", || {
        dev.activity(&cookie) == ["user.registered"]
    });
    proxy.set(Mode::Down);
    for i in 0..5 {
        let started = std::time::Instant::now();
        let res = dev.request(
            "POST",
            "/api/messages",
            Some(&cookie),
            Some(&format!(r#"{{"text":"during outage {i}"}}"#)),
        );
        assert_eq!(res.status, 201, "the API still accepts posts");
        // The first post waits for the broker (up to PUBLISH_WAIT, 2 s); once that failed,
        // the next ones do not wait for it at all.
        let took = started.elapsed();
        eprintln!("post {i} during the broker outage: 201 in {took:?}");
        if i > 0 {
            assert!(took < Duration::from_millis(500), "post {i} took {took:?}");
        }
    }
    assert_eq!(
        dev.activity(&cookie),
        ["user.registered"],
        "nothing got through"
    );
    proxy.set(Mode::Up);
    // Whatever the producer gave up on is still in the outbox: the relay (PingSource's
    // job) publishes it.
    let ping = |dev: &Dev| {
        let mut stream = TcpStream::connect(&dev.events_addr).unwrap();
        write!(
            stream,
            "POST /_events/outbox-relay HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nce-specversion: 1.0\r\nce-id: {}\r\n\
             ce-source: /tests\r\nce-type: dev.knative.sources.ping\r\nContent-Length: 2\r\n\r\n{{}}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
        .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    };
    let created = |dev: &Dev| {
        dev.activity(&cookie)
            .iter()
            .filter(|t| *t == "message.created")
            .count()
    };
    eventually(Duration::from_secs(60), "every post in the feed", || {
        ping(&dev);
        created(&dev) >= 5
    });
    // Every event handled, the relay's republished ones included: no second entry.
    wait_consumed_on(&brokers, &setup.topic("events"), "activity-record");
    assert_eq!(created(&dev), 5, "each post recorded exactly once");
    let unsent = dev::mariadb(&format!(
        "SELECT COUNT(*) FROM `{}`.outbox WHERE sent_at IS NULL",
        setup.name
    ));
    assert_eq!(unsent.trim(), "0");
    dev.stop();
}

#[test]
fn missive_publish_submits_messages_to_kafka_and_over_http() {
    let setup = Setup::new("publish");
    let dev = Dev::start(setup.command());
    let cookie = dev.signup("dana");
    let publish = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = dev::missive();
        cmd.arg("publish")
            .args(args)
            .env("KAFKA_BROKERS", dev::kafka_brokers())
            .env("KAFKA_INBOX_TOPIC", setup.topic("inbox"));
        dev::run_with_stdin(cmd, stdin);
    };
    publish(&["--user", "dana", "--text", "one from the CLI"], None);
    publish(
        &["--file", "-"],
        Some(
            "{\"username\":\"dana\",\"text\":\"line one\"}\n{\"username\":\"dana\",\"text\":\"line two\"}\n",
        ),
    );
    let url = format!("http://{}/_events/message-ingest", dev.events_addr);
    publish(
        &["--user", "dana", "--text", "over HTTP", "--http", &url],
        None,
    );
    eventually(Duration::from_secs(15), "four messages", || {
        dev.texts(&cookie).len() >= 4
    });
    let mut texts = dev.texts(&cookie);
    texts.sort();
    assert_eq!(
        texts,
        ["line one", "line two", "one from the CLI", "over HTTP"]
    );
    // Bad input is refused before anything is sent.
    let out = dev::missive()
        .args(["publish", "--user", "dana"])
        .env("KAFKA_BROKERS", dev::kafka_brokers())
        .output()
        .unwrap();
    assert!(!out.status.success());
    dev.stop();
}
