//! Kafka: the production event transport. CloudEvents use the Kafka protocol binding
//! <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md>
//! in binary mode when we write (`ce_*` headers, `content-type`, value = data, key = the
//! subject, so one user's events stay in one partition and in order). Reading also
//! accepts structured mode and plain records, which get the attributes Knative's
//! KafkaSource gives them (`dev.knative.kafka.event`, id `partition:<p>/offset:<o>`).
//!
//! Binary-mode records are read into and written from the SDK's event by
//! [`super::content_modes`], structured ones by the SDK's JSON event format. The SDK's own
//! `rdkafka` binding is not used: cloudevents-sdk 0.9 builds it on rdkafka 0.38 with
//! `cmake-build` forced, so it would link a second librdkafka and its record types would
//! not be ours (and its reader unwraps header values). A release on rdkafka >= 0.39 that
//! leaves the build features to us would let this module shrink to calls into it.
mod connection;

pub use connection::{
    KafkaConnection, KafkaContext, KafkaSecurity, LastError, PROP_PREFIX, SaslMechanism,
    SecurityProtocol, TokenSource,
};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext as _;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use missive_core::event::{
    AttributesReader as _, CloudEvent, Data, EventBuilder as _, EventBuilderV10, EventExt as _,
    TRACEPARENT,
};
use missive_telemetry::SpanExt as _;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

use super::EventPublisher;
use super::content_modes::{self, KAFKA};

/// Domain events emitted by functions.
pub const EVENTS_TOPIC: &str = "missive.events";
/// Where event producers publish `message.submitted`.
pub const INBOX_TOPIC: &str = "missive.inbox";
/// Events that failed permanently.
pub const DLQ_TOPIC: &str = "missive.dlq";

/// Type Knative's KafkaSource gives records that are not CloudEvents.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";

/// Settings shared by our producers: idempotent, every in-sync replica acknowledges.
pub fn producer_config(kafka: &KafkaConnection) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Give up (and leave the row to the relay) instead of queueing for 5 minutes.
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "2");
    config
}

/// Publishes events to one topic.
pub struct KafkaPublisher {
    kafka: KafkaConnection,
    // Replaced after a fatal error: an idempotent producer that lost its producer id (a
    // broker restart can fence it) refuses every later message until it is recreated.
    producer: RwLock<Arc<Client>>,
    topic: String,
}

/// A producer and its last connection error.
struct Client {
    producer: FutureProducer<KafkaContext>,
    errors: LastError,
}

impl KafkaPublisher {
    /// A producer for `topic`; connects in the background (no I/O here). An unknown
    /// `KAFKA_PROP_*` setting fails here, at start.
    pub fn new(kafka: &KafkaConnection, topic: &str) -> anyhow::Result<Self> {
        Ok(Self {
            kafka: kafka.clone(),
            producer: RwLock::new(Arc::new(Self::producer(kafka)?)),
            topic: topic.to_owned(),
        })
    }

    fn producer(kafka: &KafkaConnection) -> anyhow::Result<Client> {
        let context = kafka.context();
        let errors = context.errors();
        let producer = FutureProducer::from_config_and_context(&producer_config(kafka), context)
            .context("creating the Kafka producer (KAFKA_* settings)")?;
        Ok(Client { producer, errors })
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
                        KeyValue::new("cloudevents.event_type", event.ty().to_owned()),
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
            event.set_extension(TRACEPARENT, traceparent);
        }
        let event = &event;
        let (key, mut headers, payload) = to_record(event)?;
        if let Some(traceparent) = event.traceparent() {
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
        match producer
            .producer
            .send(record, Duration::from_secs(10))
            .await
        {
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
                if fenced || producer.producer.client().fatal_error().is_some() {
                    tracing::warn!(error = %err, "Kafka producer lost its producer id; recreating it");
                    let fresh = Arc::new(Self::producer(&self.kafka)?);
                    let mut current = self
                        .producer
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if Arc::ptr_eq(&current, &producer) {
                        *current = fresh;
                    }
                }
                let err = anyhow::Error::new(err).context(format!("sending to {topic}"));
                Err(producer.errors.explain(err))
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
        messaging.message.id = %event.id(),
        messaging.kafka.message.key = event.subject(),
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        cloudevents.event_id = %event.id(),
        cloudevents.event_type = %event.ty(),
        "error.type" = tracing::field::Empty,
    );
    missive_telemetry::join_trace(&span, event.traceparent());
    span
}

/// Binary-mode record parts of `event`: key, headers, value.
pub fn to_record(event: &CloudEvent) -> anyhow::Result<(String, OwnedHeaders, Vec<u8>)> {
    let key = event.subject().unwrap_or_default().to_owned();
    let (headers, value) = content_modes::write_binary(KAFKA, event).map_err(anyhow::Error::msg)?;
    let headers = headers
        .iter()
        .fold(OwnedHeaders::new(), |all, (name, value)| {
            all.insert(header(name, value))
        });
    Ok((key, headers, value))
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

/// Reads a record as the SDK's event: binary mode (`ce_` headers), structured mode
/// (`content-type: application/cloudevents+json`), or a plain record wrapped the way
/// KafkaSource wraps it. The data is kept as the record's bytes, whatever they are: a
/// handler decides whether it can use them, and a dead-lettered event carries them
/// unchanged. `Err` says why a record is not an event (it goes to the DLQ).
pub fn from_record<M: Message>(record: &M) -> Result<CloudEvent, String> {
    let headers: Vec<(String, Vec<u8>)> = record
        .headers()
        .into_iter()
        .flat_map(|hs| hs.iter())
        .map(|h| {
            (
                h.key.to_ascii_lowercase(),
                h.value.unwrap_or_default().to_vec(),
            )
        })
        .collect();
    let text = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let payload = record.payload().unwrap_or_default();
    let event =
        if text("content-type").is_some_and(|ct| ct.starts_with("application/cloudevents+json")) {
            content_modes::read_structured(payload)?
        } else if text("ce_specversion").is_some() {
            content_modes::read_binary(KAFKA, headers, payload)?
        } else {
            wrap_plain(record)
        };
    event.check()?;
    Ok(event)
}

/// A record as KafkaSource wraps one that is not a CloudEvent: type
/// `dev.knative.kafka.event`, id `partition:<p>/offset:<o>`, the key as subject, the value
/// as data, byte for byte. Also how a record that cannot be read is dead-lettered.
pub fn wrap_plain<M: Message>(record: &M) -> CloudEvent {
    let mut builder = EventBuilderV10::new()
        .id(format!(
            "partition:{}/offset:{}",
            record.partition(),
            record.offset()
        ))
        .source(format!("/kafka/{}", record.topic()))
        .ty(KAFKA_EVENT_TYPE);
    if let Some(key) = record.key().and_then(|k| std::str::from_utf8(k).ok()) {
        builder = builder.subject(key);
    }
    let mut event = builder.build().expect("BUG: id, source and type are set");
    if let Some(payload) = record.payload().filter(|p| !p.is_empty()) {
        event.set_data_unchecked(Data::Binary(payload.to_vec()));
    }
    event
}

/// Creates `topics` if missing (the broker may not auto-create them).
pub async fn ensure_topics(
    kafka: &KafkaConnection,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    reachable(kafka).await?;
    let context = kafka.context();
    let errors = context.errors();
    let admin = AdminClient::from_config_and_context(&kafka.client_config(), context)
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    // Both bounds: a broker that cannot be reached (or whose TLS fails) is reported in
    // seconds, with librdkafka's reason, instead of after a minute's socket timeout.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = match admin.create_topics(&new, &options).await {
        Ok(results) => results,
        Err(err) => return Err(errors.explain(err.into())),
    };
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(errors.explain(anyhow::anyhow!("creating topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// Whether the brokers answer (metadata within 10 s), and if not, why: the TLS, SASL or
/// network failure librdkafka met. A producer's polling thread is what delivers those
/// reasons (an admin client's log and error events are never polled).
pub async fn reachable(kafka: &KafkaConnection) -> anyhow::Result<()> {
    let client = KafkaPublisher::producer(kafka)?;
    tokio::task::spawn_blocking(move || {
        client
            .producer
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|_| ())
            .map_err(|err| {
                client
                    .errors
                    .explain(anyhow::Error::new(err).context("reaching the Kafka brokers"))
            })
    })
    .await
    .context("the Kafka probe panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::event::ExtensionValue;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    fn event() -> CloudEvent {
        EventBuilderV10::new()
            .id("42")
            .source("/functions/message-create")
            .ty("io.missive.message.created.v1")
            .subject("zoë")
            .time("2026-12-02T10:00:00.123Z")
            .extension(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .data("application/json", br#"{"id":"7"}"#.to_vec())
            .build()
            .expect("event")
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

    fn header_value<'a>(headers: &'a OwnedHeaders, key: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| std::str::from_utf8(h.value?).ok())
    }

    #[test]
    fn binary_records_round_trip_with_the_subject_as_key() {
        let sent = event();
        let (key, headers, value) = to_record(&sent).expect("record");
        assert_eq!(key, "zoë");
        assert_eq!(
            header_value(&headers, "ce_time"),
            Some("2026-12-02T10:00:00.123Z")
        );
        assert_eq!(
            header_value(&headers, "content-type"),
            Some("application/json")
        );
        assert_eq!(value, br#"{"id":"7"}"#);
        let read = from_record(&record(Some(&key), headers, &value)).expect("event");
        assert_eq!(read, sent);
    }

    #[test]
    fn structured_records_are_read_whole() {
        let headers =
            OwnedHeaders::new().insert(header("content-type", "application/cloudevents+json"));
        let body = serde_json::json!({
            "specversion": "1.0", "id": "42", "source": "/functions/message-create",
            "type": "io.missive.message.created.v1", "subject": "zoë",
            "time": "2026-12-02T10:00:00.123Z", "datacontenttype": "text/plain",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "count": 7, "data": "words"
        });
        let read = from_record(&record(None, headers, body.to_string().as_bytes())).expect("event");
        assert_eq!(read.subject(), Some("zoë"));
        assert_eq!(read.data(), Some(&Data::String("words".into())));
        assert_eq!(read.extension("count"), Some(&ExtensionValue::Integer(7)));
    }

    #[test]
    fn plain_records_are_wrapped_as_knative_kafkasource_does() {
        let read = from_record(&record(
            Some("alice"),
            OwnedHeaders::new(),
            br#"{"username":"alice","text":"hi"}"#,
        ))
        .expect("event");
        assert_eq!(read.id(), "partition:3/offset:17");
        assert_eq!(read.source(), "/kafka/missive.inbox");
        assert_eq!(read.ty(), KAFKA_EVENT_TYPE);
        assert_eq!(read.subject(), Some("alice"));
        assert_eq!(
            read.json_data::<serde_json::Value>(),
            Ok(serde_json::json!({"username": "alice", "text": "hi"}))
        );
        // Not JSON: the bytes as they are.
        let read = from_record(&record(None, OwnedHeaders::new(), b"plain \xff")).expect("event");
        assert_eq!(read.data(), Some(&Data::Binary(b"plain \xff".to_vec())));
        assert_eq!(read.subject(), None);
    }

    #[test]
    fn bad_records_say_why() {
        let (_, headers, value) = to_record(&event()).expect("record");
        let without = |name: &str| {
            headers
                .iter()
                .filter(|h| h.key != name)
                .fold(OwnedHeaders::new(), |hs, h| {
                    hs.insert(Header {
                        key: h.key,
                        value: h.value,
                    })
                })
        };
        let err = from_record(&record(None, without("ce_id"), &value)).expect_err("no id");
        assert_eq!(err, "missing header ce_id");
        let v03 = without("ce_specversion").insert(header("ce_specversion", "0.3"));
        let err = from_record(&record(None, v03, &value)).expect_err("0.3");
        assert_eq!(err, "unsupported specversion 0.3");
        let bad_time = without("ce_time").insert(header("ce_time", "yesterday"));
        let err = from_record(&record(None, bad_time, &value)).expect_err("time");
        assert_eq!(err, "time must be RFC 3339");
        // A CloudEvents header value that is not UTF-8.
        let bad = headers.clone().insert(Header {
            key: "ce_subject2",
            value: Some(&[0xff_u8, 0xfe][..]),
        });
        let err = from_record(&record(None, bad, &value)).expect_err("not UTF-8");
        assert_eq!(err, "header ce_subject2 is not UTF-8");
        // Structured records that are not events.
        let structured =
            || OwnedHeaders::new().insert(header("content-type", "application/cloudevents+json"));
        let err = from_record(&record(None, structured(), b"{oops")).expect_err("not JSON");
        assert!(err.starts_with("structured event is not JSON"), "{err}");
        let err =
            from_record(&record(None, structured(), br#"{"specversion":"2.0"}"#)).expect_err("2.0");
        assert_eq!(err, "unsupported specversion 2.0");
        let err = from_record(&record(
            None,
            structured(),
            br#"{"specversion":"1.0","id":"1","type":"t"}"#,
        ))
        .expect_err("no source");
        assert!(
            err.starts_with("invalid structured event: missing field `source`"),
            "{err}"
        );
    }

    #[test]
    fn data_that_is_not_json_is_kept_for_the_handler_to_refuse() {
        let (_, headers, _) = to_record(&event()).expect("record");
        let read = from_record(&record(None, headers, b"{oops")).expect("kept");
        assert_eq!(read.data(), Some(&Data::Binary(b"{oops".to_vec())));
        assert!(read.json_data::<serde_json::Value>().is_err());
    }
}
