//! `missive dev`'s dispatcher (KafkaSource's job) against real Kafka and a sink the test
//! scripts: retries with doubling backoff on 5xx, 404, 409 and 429; no retry on other
//! 4xx; dead-lettering after the last attempt, with the original event (attributes,
//! extensions, data) and Knative's error attributes, read back by an outside client.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use missive::dispatcher::{self, Delivery, Sink};
use missive_adapters::events::EventPublisher as _;
use missive_adapters::events::kafka::{KafkaConnection, KafkaPublisher, ensure_topics};
use missive_core::event::{AttributesReader as _, CloudEvent, EventExt as _};
use serde_json::{Value, json};
use std::process::Command;
use tokio_util::sync::CancellationToken;

/// Attempts seen per event id, with when they came.
type Attempts = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// The statuses the sink answers for an event, attempt by attempt (the last repeats):
/// the event id says which script.
fn script(id: &str) -> &'static [u16] {
    match id {
        "recovers" => &[503, 429, 202],
        "conflicts" => &[404, 409, 204],
        "always-fails" => &[500],
        "refused" | "verbose" => &[400],
        _ => &[202],
    }
}

async fn sink(State(attempts): State<Attempts>, headers: HeaderMap) -> (StatusCode, String) {
    let id = headers["ce-id"].to_str().unwrap().to_owned();
    let n = {
        let mut attempts = attempts.lock().unwrap();
        let seen = attempts.entry(id.clone()).or_default();
        seen.push(Instant::now());
        seen.len()
    };
    let statuses = script(&id);
    let status = statuses[(n - 1).min(statuses.len() - 1)];
    let body = if id == "verbose" {
        verbose_answer()
    } else {
        format!("attempt {n} of {id}")
    };
    (StatusCode::from_u16(status).unwrap(), body)
}

/// An answer longer than a dead letter keeps, with a multi-byte character cut at 1024.
fn verbose_answer() -> String {
    format!("x{}", "é".repeat(1500))
}

fn event(id: &str) -> CloudEvent {
    let mut event: CloudEvent = serde_json::from_value(json!({
        "specversion": "1.0", "datacontenttype": "application/json",
        "id": id, "source": "/tests/dispatcher", "type": "io.missive.message.submitted.v1",
        "subject": "alice", "time": "2026-12-02T10:00:00.000Z",
        "data": {"username": "alice", "text": format!("payload of {id} ✓")},
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "partitionkey": "alice"
    }))
    .unwrap();
    event.set_extension("custom", "kept");
    event
}

/// Up to `count` records of `topic`, waiting at most `secs`.
fn consume(topic: &str, count: usize, secs: u64) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["consume", &dev::kafka_brokers(), topic])
        .args([count.to_string(), secs.to_string()]);
    dev::run_with_stdin(cmd, None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_dead_letters_the_original_event() {
    let brokers = dev::kafka_brokers();
    let unique = format!(
        "dispatch-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (topic, dlq_topic) = (format!("{unique}.inbox"), format!("{unique}.dlq"));
    let kafka = KafkaConnection::plaintext(&brokers);
    ensure_topics(&kafka, &[&topic, &dlq_topic], 1)
        .await
        .unwrap();
    let producer = KafkaPublisher::new(&kafka, &topic).unwrap();
    let ids = [
        "recovers",
        "conflicts",
        "always-fails",
        "refused",
        "verbose",
        "fine",
    ];
    for id in ids {
        producer.publish(&event(id)).await.unwrap();
    }

    let attempts: Attempts = Arc::default();
    let backoff = Duration::from_millis(100);
    let delivery = Arc::new(Delivery {
        kafka: kafka.clone(),
        dlq_topic: dlq_topic.clone(),
        max_attempts: 3,
        backoff,
    });
    let sink = Sink {
        name: "test-sink",
        topic: topic.clone(),
        group: format!("{unique}-group"),
        router: Router::new()
            .route("/", post(sink))
            .with_state(attempts.clone()),
    };
    let shutdown = CancellationToken::new();
    let dlq = Arc::new(KafkaPublisher::new(&kafka, &dlq_topic).unwrap());
    let running = tokio::spawn(dispatcher::run(sink, delivery, dlq, shutdown.clone()));

    // Three dead letters (the one that always failed and the two refused); a fourth is
    // waited for a while, to see that none comes.
    let dead = tokio::task::spawn_blocking(move || consume(&dlq_topic, 4, 8))
        .await
        .unwrap();
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let attempts = attempts.lock().unwrap().clone();
    let count = |id: &str| attempts.get(id).map_or(0, Vec::len);
    assert_eq!(count("recovers"), 3, "503 and 429 are retried");
    assert_eq!(count("conflicts"), 3, "404 and 409 are retried");
    assert_eq!(count("always-fails"), 3, "retried up to the maximum");
    assert_eq!(count("refused"), 1, "400 is permanent: no retry");
    assert_eq!(count("fine"), 1);
    // The waits double: about 100 ms, then 200 ms.
    let gaps: Vec<Duration> = attempts["always-fails"]
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps[0] >= backoff, "{gaps:?}");
    assert!(gaps[1] >= 2 * backoff, "{gaps:?}");

    assert_eq!(
        dead.len(),
        3,
        "only the three failures are dead-lettered: {dead:?}"
    );
    // knativeerrordata as Knative's dispatchers write it: the answer's first 1024 bytes,
    // base64.
    let error_data = |id: &str| {
        let record = dead.iter().find(|r| r["headers"]["ce_id"] == id).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(record["headers"]["ce_knativeerrordata"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(error_data("verbose"), verbose_answer().as_bytes()[..1024]);
    for (id, code) in [("always-fails", "500"), ("refused", "400")] {
        let record = dead
            .iter()
            .find(|r| r["headers"]["ce_id"] == id)
            .unwrap_or_else(|| panic!("{id} is dead-lettered: {dead:?}"));
        let headers = &record["headers"];
        let original = event(id);
        // The original event, whole: attributes, extensions and the data bytes.
        assert_eq!(headers["ce_source"], original.source().as_str());
        assert_eq!(headers["ce_type"], original.ty());
        assert_eq!(headers["ce_subject"], "alice");
        assert_eq!(headers["ce_time"], "2026-12-02T10:00:00.000Z");
        assert_eq!(headers["ce_traceparent"], original.traceparent().unwrap());
        assert_eq!(headers["ce_partitionkey"], "alice");
        assert_eq!(headers["ce_custom"], "kept");
        assert_eq!(record["key"], "alice");
        let data: Value = serde_json::from_str(record["value"].as_str().unwrap()).unwrap();
        assert_eq!(data, original.json_data::<Value>().unwrap());
        // Why, as Knative's dead-letter extensions say it.
        assert_eq!(headers["ce_knativeerrorcode"], code);
        let attempts_made = if code == "500" { 3 } else { 1 };
        assert_eq!(
            error_data(id),
            format!("attempt {attempts_made} of {id}").as_bytes()
        );
        assert_eq!(headers["ce_knativeerrordest"], "/functions/test-sink");
    }
}
