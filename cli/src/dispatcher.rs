//! `missive dev`'s stand-in for Knative's KafkaSource, so the event functions run on
//! real Kafka without a cluster. Production uses the real KafkaSource (see `knative/`);
//! this keeps its delivery contract, small:
//!
//! - one consumer group per sink, so each sink sees every record of its topic (the
//!   group keeps the committed offsets; partitions are assigned, not balanced, since
//!   `missive dev` runs one dispatcher per sink);
//! - each record is delivered as a binary-mode HTTP CloudEvent through the sink's router;
//! - a record is finished before the next one is taken, so order holds per partition;
//! - 2xx is done; 404, 409, 429 and 5xx are retried with exponential backoff; any other
//!   status, or running out of attempts, sends the event to the dead-letter topic with
//!   `knativeerrorcode`, `knativeerrordata` and `knativeerrordest` extensions;
//! - the offset is stored only once the outcome is final (and committed every 200 ms), so
//!   a crash mid-delivery means redelivery (at-least-once), never loss.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use missive_adapters::events::http_binding;
use missive_adapters::events::kafka::{self, KafkaConnection, KafkaContext, KafkaPublisher};
use missive_core::event::{AttributesReader as _, CloudEvent};
use missive_telemetry as telemetry;
use missive_telemetry::SpanExt as _;
use opentelemetry::KeyValue;
use tracing::Instrument as _;

/// Where records of one topic go.
pub struct Sink {
    /// The event function's name (its Knative service).
    pub name: &'static str,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group; fixed per sink so a restart resumes from committed offsets.
    pub group: String,
    /// The function's router.
    pub router: Router,
}

/// Delivery settings shared by all sinks.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// How to reach Kafka.
    pub kafka: KafkaConnection,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
}

enum Outcome {
    Delivered,
    /// `data` is the sink's answer (or why the record is not an event), at most
    /// [`ERROR_DATA_MAX`] bytes.
    Failed {
        code: u16,
        data: Vec<u8>,
    },
    Interrupted,
}

/// Consumes `sink.topic` until `shutdown`, delivering each record to `sink.router`.
/// Partitions are worked on concurrently, each strictly in order.
pub async fn run(
    sink: Sink,
    delivery: Arc<Delivery>,
    dlq: Arc<KafkaPublisher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let context = delivery.kafka.context();
    let errors = context.errors();
    let consumer: Arc<StreamConsumer<KafkaContext>> = Arc::new(
        delivery
            .kafka
            .client_config()
            .set("group.id", &sink.group)
            // Offsets are stored by hand once a record's outcome is final, and committed
            // in the background every 200 ms: one commit request per interval instead of
            // one per record. A crash redelivers at most that window, which consumers
            // absorb (they are idempotent).
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("auto.offset.reset", "earliest")
            // Latency over batching: tansu holds a fetch for its full wait even when
            // records arrive, so the default 500 ms became the end-to-end lag.
            .set("fetch.wait.max.ms", "20")
            .create_with_context(context)
            .context("creating the Kafka consumer")?,
    );
    // Every partition is assigned to this one consumer, from the group's committed
    // offsets. missive dev runs one dispatcher per sink, so there is nothing to balance,
    // and a restart after a crash resumes at once instead of waiting for the dead
    // member's session to expire.
    let metadata = consumer
        .fetch_metadata(Some(&sink.topic), Duration::from_secs(10))
        .with_context(|| format!("reading the partitions of {}", sink.topic))
        .map_err(|err| errors.explain(err))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {} has no partitions",
        sink.topic
    );
    let sink = Arc::new(sink);
    let mut workers = tokio::task::JoinSet::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        // Each partition gets its own queue (split before assigning, so no record lands
        // on the main queue) and its own worker.
        let queue = consumer
            .split_partition_queue(&sink.topic, partition)
            .with_context(|| format!("splitting partition {partition}"))?;
        assignment.add_partition_offset(&sink.topic, partition, Offset::Stored)?;
        let (consumer, sink, delivery, dlq, shutdown) = (
            consumer.clone(),
            sink.clone(),
            delivery.clone(),
            dlq.clone(),
            shutdown.clone(),
        );
        workers.spawn(async move {
            loop {
                let record = tokio::select! {
                    record = queue.recv() => record,
                    () = shutdown.cancelled() => break,
                };
                match record {
                    Ok(record) => {
                        let span = process_span(&sink, &record);
                        let settled = handle(&sink, &record, &delivery, &dlq, &shutdown)
                            .instrument(span)
                            .await;
                        if !settled {
                            break;
                        }
                        // The outcome is final: only now may the group move past it.
                        if let Err(err) = consumer.store_offset_from_message(&record) {
                            tracing::warn!(sink = sink.name, error = %err, "offset not stored; the record may be redelivered");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(sink = sink.name, error = %err, "consuming failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("consuming {}", sink.topic))?;
    tracing::info!(sink = sink.name, topic = %sink.topic, group = %sink.group, partitions = partitions.len(), "dispatching");
    // The main queue carries no records now, but polling it runs the consumer's
    // callbacks and surfaces errors.
    loop {
        tokio::select! {
            result = consumer.recv() => {
                if let Err(err) = result {
                    tracing::debug!(sink = sink.name, error = %err, "consumer");
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    while workers.join_next().await.is_some() {}
    tracing::info!(sink = sink.name, "dispatcher stopped");
    Ok(())
}

/// The consumer span of one record (OpenTelemetry messaging conventions), continuing the
/// producer's trace from the record's `traceparent` (or `ce_traceparent`) header.
fn process_span<M: Message>(sink: &Sink, record: &M) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka process",
        otel.name = format!("process {}", record.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = record.topic(),
        messaging.operation.name = "process",
        messaging.operation.r#type = "process",
        messaging.consumer.group.name = %sink.group,
        messaging.destination.partition.id = record.partition().to_string(),
        messaging.kafka.offset = record.offset(),
        missive.sink = sink.name,
    );
    let traceparent = record.headers().and_then(|headers| {
        let find = |name: &str| {
            headers
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(name))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        find("traceparent").or_else(|| find("ce_traceparent"))
    });
    if let Some(traceparent) =
        traceparent.filter(|t| missive_core::trace_context::valid_traceparent(t))
    {
        span.set_parent(telemetry::context_from_traceparent(&traceparent));
    }
    span
}

/// Delivers one record and settles its outcome (dead-lettering it if it failed). `false`
/// when shutdown interrupted it: the record must not be committed.
async fn handle<M: Message>(
    sink: &Sink,
    record: &M,
    delivery: &Delivery,
    dlq: &KafkaPublisher,
    shutdown: &CancellationToken,
) -> bool {
    let (event, outcome) = match kafka::from_record(record) {
        Ok(event) => {
            let outcome = deliver(sink, &event, delivery, shutdown).await;
            (event, outcome)
        }
        // Not even a CloudEvent: nothing to deliver; keep it, with why, in the DLQ.
        Err(why) => {
            let event = kafka::wrap_plain(record);
            (
                event,
                Outcome::Failed {
                    code: 400,
                    data: truncated(why.as_bytes()),
                },
            )
        }
    };
    let metrics = telemetry::metrics::get();
    let sink_attr = [KeyValue::new("missive.sink", sink.name)];
    let settled = match outcome {
        Outcome::Delivered => {
            metrics.events_consumed.add(1, &sink_attr);
            true
        }
        Outcome::Interrupted => false,
        Outcome::Failed { code, data } => {
            tracing::warn!(sink = sink.name, event.id = %event.id(), code, "dead-lettering event");
            let done = dead_letter(dlq, delivery, sink.name, event, code, data, shutdown).await;
            if done {
                metrics.events_dead_lettered.add(1, &sink_attr);
            }
            done
        }
    };
    tracing::debug!(
        sink = sink.name,
        partition = record.partition(),
        offset = record.offset(),
        settled,
        "record done"
    );
    settled
}

async fn deliver(
    sink: &Sink,
    event: &CloudEvent,
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut backoff = delivery.backoff;
    let mut last = Outcome::Interrupted;
    for attempt in 1..=delivery.max_attempts {
        let request = match http_binding::to_request(event, "/") {
            Ok(mut request) => {
                // Like KafkaSource: the call to the sink continues the consumer's span.
                telemetry::inject_headers(
                    &tracing::Span::current().context(),
                    request.headers_mut(),
                );
                request
            }
            Err(err) => {
                return Outcome::Failed {
                    code: 400,
                    data: truncated(err.to_string().as_bytes()),
                };
            }
        };
        let response = match sink.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let data = truncated(&body);
        let retryable = status.is_server_error() || matches!(status.as_u16(), 404 | 409 | 429);
        last = Outcome::Failed {
            code: status.as_u16(),
            data,
        };
        if !retryable || attempt == delivery.max_attempts {
            break;
        }
        tracing::debug!(event.id = %event.id(), %status, attempt, "retrying delivery");
        telemetry::metrics::get()
            .events_retried
            .add(1, &[KeyValue::new("missive.sink", sink.name)]);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Outcome::Interrupted,
        }
        backoff = backoff.saturating_mul(2);
    }
    last
}

/// Publishes the failed event to the DLQ, retrying until it is accepted; `false` if
/// shutdown came first (the record is then not committed and will be redelivered).
async fn dead_letter(
    dlq: &KafkaPublisher,
    delivery: &Delivery,
    sink: &str,
    mut event: CloudEvent,
    code: u16,
    data: Vec<u8>,
    shutdown: &CancellationToken,
) -> bool {
    event.set_extension("knativeerrorcode", code.to_string());
    // As Knative's dispatchers write it: the answer's bytes, base64 (any bytes survive).
    event.set_extension(
        "knativeerrordata",
        base64::engine::general_purpose::STANDARD.encode(data),
    );
    event.set_extension("knativeerrordest", format!("/functions/{sink}"));
    let mut backoff = delivery.backoff;
    loop {
        match dlq.send_to(&delivery.dlq_topic, &event).await {
            Ok(_) => return true,
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "dead-letter topic unavailable; retrying"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return false,
        }
        backoff = backoff.saturating_mul(2).min(Duration::from_secs(10));
    }
}

/// The most of a failed delivery's answer a dead letter keeps, as Knative's dispatchers
/// (`KnativeErrorDataExtensionMaxLength`).
const ERROR_DATA_MAX: usize = 1024;

fn truncated(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(ERROR_DATA_MAX)].to_vec()
}
