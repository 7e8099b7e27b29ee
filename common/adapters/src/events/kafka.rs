//! Kafka: the production event transport. CloudEvents use the Kafka protocol binding
//! <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md>
//! in binary mode when we write (`ce_*` headers, `content-type`, value = data, key = the
//! subject, so one user's events stay in one partition and in order). Reading also
//! accepts structured mode and plain JSON records, which get the attributes Knative's
//! KafkaSource gives them (`dev.knative.kafka.event`, id `partition:<p>/offset:<o>`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use missive_core::event::CloudEvent;
use missive_telemetry::SpanExt as _;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

use super::EventPublisher;
use super::http_binding;

/// Domain events emitted by functions.
pub const EVENTS_TOPIC: &str = "missive.events";
/// Where event producers publish `message.submitted`.
pub const INBOX_TOPIC: &str = "missive.inbox";
/// Events that failed permanently.
pub const DLQ_TOPIC: &str = "missive.dlq";

/// Type Knative's KafkaSource gives records that are not CloudEvents.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";

/// Settings shared by our producers: idempotent, every in-sync replica acknowledges.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Give up (and leave the row to the relay) instead of queueing for 5 minutes.
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "2");
    config
}

/// Publishes events to one topic.
pub struct KafkaPublisher {
    brokers: String,
    // Replaced after a fatal error: an idempotent producer that lost its producer id (a
    // broker restart can fence it) refuses every later message until it is recreated.
    producer: RwLock<Arc<FutureProducer>>,
    topic: String,
}

impl KafkaPublisher {
    /// A producer for `topic`; connects in the background (no I/O here).
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        Ok(Self {
            brokers: brokers.to_owned(),
            producer: RwLock::new(Arc::new(Self::producer(brokers)?)),
            topic: topic.to_owned(),
        })
    }

    fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
        producer_config(brokers)
            .create()
            .context("creating the Kafka producer")
    }

    /// Sends `event` to `topic` and waits for the acknowledgement.
    pub async fn send_to(&self, topic: &str, event: &CloudEvent) -> anyhow::Result<(i32, i64)> {
        let span = producer_span(topic, event);
        let result = self
            .send_in(&span, topic, event)
            .instrument(span.clone())
            .await;
        match &result {
            Ok((partition, offset)) => {
                span.record("messaging.destination.partition.id", partition.to_string());
                span.record("messaging.kafka.offset", offset);
                missive_telemetry::metrics::get().events_published.add(
                    1,
                    &[
                        KeyValue::new("messaging.destination.name", topic.to_owned()),
                        KeyValue::new("cloudevents.event_type", event.ty.clone()),
                    ],
                );
            }
            Err(err) => {
                span.record("otel.status_code", "error");
                span.record("error.type", "kafka");
                tracing::debug!(parent: &span, error = format!("{err:#}"), "send failed");
            }
        }
        result
    }

    async fn send_in(
        &self,
        span: &tracing::Span,
        topic: &str,
        event: &CloudEvent,
    ) -> anyhow::Result<(i32, i64)> {
        // The record carries the send span's context, so the consumer's span is its child
        // and the trace reads request -> send -> process without a gap.
        let mut event = event.clone();
        if let Some(traceparent) = missive_telemetry::traceparent_of(&span.context()) {
            event.extensions.insert(
                "traceparent".to_owned(),
                serde_json::Value::String(traceparent),
            );
        }
        let event = &event;
        let (key, mut headers, payload) = to_record(event)?;
        if let Some(serde_json::Value::String(traceparent)) = event.extensions.get("traceparent") {
            // Plain W3C header too, for consumers that know tracing but not CloudEvents.
            headers = headers.insert(header("traceparent", traceparent));
        }
        let producer = self
            .producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let record = FutureRecord::to(topic)
            .key(&key)
            .headers(headers)
            .payload(&payload);
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((err, _)) => {
                let fenced = matches!(
                    err.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::UnknownProducerId
                            | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    )
                );
                if fenced || producer.client().fatal_error().is_some() {
                    tracing::warn!(error = %err, "Kafka producer lost its producer id; recreating it");
                    let fresh = Arc::new(Self::producer(&self.brokers)?);
                    let mut current = self
                        .producer
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if Arc::ptr_eq(&current, &producer) {
                        *current = fresh;
                    }
                }
                Err(anyhow::Error::new(err).context(format!("sending to {topic}")))
            }
        }
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()> {
        self.send_to(&self.topic, event).await.map(|_| ())
    }
}

/// The producer span of one send (OpenTelemetry messaging conventions). Its parent is the
/// trace the event belongs to (its `traceparent`), so an event the relay publishes a
/// minute later still lands in the request's trace; the relay's own span is linked.
fn producer_span(topic: &str, event: &CloudEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.operation.name = "send",
        messaging.operation.r#type = "send",
        messaging.message.id = %event.id,
        messaging.kafka.message.key = event.subject.as_deref(),
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        cloudevents.event_id = %event.id,
        cloudevents.event_type = %event.ty,
        "error.type" = tracing::field::Empty,
    );
    missive_telemetry::join_trace(&span, event.traceparent());
    span
}

/// Binary-mode record parts of `event`: key, headers, value.
pub fn to_record(event: &CloudEvent) -> anyhow::Result<(String, OwnedHeaders, Vec<u8>)> {
    let mut headers = OwnedHeaders::new()
        .insert(header("ce_specversion", "1.0"))
        .insert(header("ce_id", &event.id))
        .insert(header("ce_source", &event.source))
        .insert(header("ce_type", &event.ty))
        .insert(header("content-type", "application/json"));
    if let Some(subject) = &event.subject {
        headers = headers.insert(header("ce_subject", subject));
    }
    if let Some(time) = &event.time {
        headers = headers.insert(header("ce_time", time));
    }
    for (name, value) in &event.extensions {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        headers = headers.insert(Header {
            key: &format!("ce_{name}"),
            value: Some(value.as_bytes()),
        });
    }
    let key = event.subject.clone().unwrap_or_default();
    Ok((key, headers, serde_json::to_vec(&event.data)?))
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

/// Reads a record as a CloudEvent: binary mode (`ce_` headers), structured mode
/// (`content-type: application/cloudevents+json`), or a plain record wrapped the way
/// KafkaSource wraps it. `Err` says why a record is not an event (it goes to the DLQ).
pub fn from_record<M: Message>(record: &M) -> Result<CloudEvent, String> {
    let mut headers = BTreeMap::new();
    if let Some(hs) = record.headers() {
        for h in hs.iter() {
            if let Some(value) = h.value {
                let value = std::str::from_utf8(value)
                    .map_err(|_| format!("header {} is not UTF-8", h.key))?;
                headers.insert(h.key.to_ascii_lowercase(), value.to_owned());
            }
        }
    }
    let payload = record.payload().unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("");
    let mut http = http::HeaderMap::new();
    if content_type.starts_with("application/cloudevents+json") {
        http.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/cloudevents+json"),
        );
        return http_binding::from_request(&http, payload).map_err(|e| e.0);
    }
    if headers.contains_key("ce_specversion") {
        for (name, value) in &headers {
            let name = match name.strip_prefix("ce_") {
                Some(attr) => format!("ce-{attr}"),
                None if name == "content-type" => name.clone(),
                None => continue,
            };
            let name = http::HeaderName::try_from(name).map_err(|e| e.to_string())?;
            let value = http::HeaderValue::try_from(value).map_err(|e| e.to_string())?;
            http.insert(name, value);
        }
        return http_binding::from_request(&http, payload).map_err(|e| e.0);
    }
    // Not a CloudEvent: what KafkaSource makes of it.
    let data = serde_json::from_slice(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    });
    Ok(CloudEvent {
        id: format!(
            "partition:{}/offset:{}",
            record.partition(),
            record.offset()
        ),
        source: format!("/kafka/{}", record.topic()),
        ty: KAFKA_EVENT_TYPE.to_owned(),
        subject: record
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned),
        time: None,
        data,
        extensions: BTreeMap::new(),
    })
}

/// Creates `topics` if missing (the broker may not auto-create them).
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    fn event() -> CloudEvent {
        let mut event = CloudEvent {
            id: "42".into(),
            source: "/functions/message-create".into(),
            ty: "io.missive.message.created.v1".into(),
            subject: Some("alice".into()),
            time: Some("2026-12-02T10:00:00.123Z".into()),
            data: serde_json::json!({"id": "7"}),
            extensions: BTreeMap::new(),
        };
        event.extensions.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        event
    }

    fn record(key: Option<&str>, headers: OwnedHeaders, payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            "missive.inbox".into(),
            Timestamp::NotAvailable,
            3,
            17,
            Some(headers),
        )
    }

    #[test]
    fn binary_records_round_trip_with_the_subject_as_key() {
        let sent = event();
        let (key, headers, value) = to_record(&sent).expect("record");
        assert_eq!(key, "alice");
        let read = from_record(&record(Some(&key), headers, &value)).expect("event");
        assert_eq!(read, sent);
    }

    #[test]
    fn structured_records_are_read_whole() {
        let headers =
            OwnedHeaders::new().insert(header("content-type", "application/cloudevents+json"));
        let mut body = serde_json::to_value(event()).expect("json");
        body["specversion"] = "1.0".into();
        let read = from_record(&record(None, headers, body.to_string().as_bytes())).expect("event");
        assert_eq!(read, event());
    }

    #[test]
    fn plain_records_are_wrapped_as_knative_kafkasource_does() {
        let read = from_record(&record(
            Some("alice"),
            OwnedHeaders::new(),
            br#"{"username":"alice","text":"hi"}"#,
        ))
        .expect("event");
        assert_eq!(read.id, "partition:3/offset:17");
        assert_eq!(read.source, "/kafka/missive.inbox");
        assert_eq!(read.ty, KAFKA_EVENT_TYPE);
        assert_eq!(read.subject.as_deref(), Some("alice"));
        assert_eq!(
            read.data,
            serde_json::json!({"username": "alice", "text": "hi"})
        );
        // Not JSON: the bytes as text.
        let read = from_record(&record(None, OwnedHeaders::new(), b"plain \xff")).expect("event");
        assert_eq!(read.data, serde_json::json!("plain \u{fffd}"));
        assert_eq!(read.subject, None);
    }

    #[test]
    fn bad_binary_records_say_why() {
        let (_, headers, value) = to_record(&event()).expect("record");
        // Without ce_id: the binding's error names the attribute.
        let without_id =
            headers
                .iter()
                .filter(|h| h.key != "ce_id")
                .fold(OwnedHeaders::new(), |hs, h| {
                    hs.insert(Header {
                        key: h.key,
                        value: h.value,
                    })
                });
        let err = from_record(&record(None, without_id, &value)).expect_err("no id");
        assert_eq!(err, "missing header ce-id");
        // A header value that is not UTF-8.
        let bad = headers.clone().insert(Header {
            key: "ce_subject2",
            value: Some(&[0xff_u8, 0xfe][..]),
        });
        let err = from_record(&record(None, bad, &value)).expect_err("not UTF-8");
        assert_eq!(err, "header ce_subject2 is not UTF-8");
        // Data that is not JSON under a JSON content type.
        let err = from_record(&record(None, headers, b"{oops")).expect_err("bad data");
        assert!(err.starts_with("event data is not JSON"), "{err}");
    }
}
