//! Events on the move: the CloudEvents bindings ([`http_binding`], [`kafka`]) and the
//! transport-neutral [`EventPublisher`] with its implementations (the in-process bus of
//! `missive dev`, HTTP to a Knative sink, Kafka).
//!
//! The event model and the catalogue are `missive_core::event`.

mod content_modes;
pub mod http_binding;
pub mod kafka;

use std::sync::{Arc, RwLock};

use anyhow::Context;
use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use missive_core::event::{AttributesReader as _, CloudEvent};
use tower::ServiceExt;

/// Sends events to whoever consumes them. Transport-neutral: in-process today, HTTP to a
/// Knative sink (`K_SINK`) in a cluster, Kafka later.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Delivers `event`; an error means no consumer accepted it.
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()>;
}

/// Delivers each event to every subscribed router, as Knative would: a binary-mode HTTP
/// request through the consumer's own router, so the consumer code is exactly what runs
/// behind a Knative trigger.
#[derive(Default)]
pub struct InProcessBus {
    sinks: RwLock<Vec<(String, Router)>>,
}

impl InProcessBus {
    /// Adds a consumer, named for logs.
    pub fn subscribe(&self, name: &str, router: Router) {
        self.sinks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), router));
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()> {
        let sinks = self
            .sinks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if sinks.is_empty() {
            tracing::debug!(event.id = %event.id(), event.r#type = %event.ty(), "no in-process consumer");
        }
        for (name, router) in sinks {
            let response = router
                .oneshot(http_binding::to_request(event, "/")?)
                .await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::bail!(
                    "{name} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok(())
    }
}

/// Posts each event in binary mode to a sink URL (Knative's `K_SINK`: a broker, a channel
/// or a service).
pub struct HttpSink {
    url: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl HttpSink {
    /// A publisher to `url`; connects on first publish.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let _: http::Uri = url.parse().context("K_SINK is not a valid URL")?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Self {
            url: url.to_owned(),
            client,
        })
    }
}

#[async_trait]
impl EventPublisher for HttpSink {
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()> {
        use missive_telemetry::SpanExt as _;
        use tracing::Instrument as _;
        // A client span per delivery (HTTP conventions), its context sent as
        // `traceparent` so the sink's server span is its child.
        let span = tracing::info_span!(
            "HTTP client",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.full = %self.url,
            http.response.status_code = tracing::field::Empty,
            cloudevents.event_id = %event.id(),
            cloudevents.event_type = %event.ty(),
        );
        let (mut parts, body) = http_binding::to_request(event, &self.url)?.into_parts();
        missive_telemetry::inject_headers(&span.context(), &mut parts.headers);
        let body = body.collect().await?.to_bytes();
        let request = http::Request::from_parts(parts, Full::new(body));
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.client.request(request),
        )
        .instrument(span.clone())
        .await
        .context("event sink timed out")??;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if !status.is_success() {
            span.record("otel.status_code", "error");
        }
        anyhow::ensure!(status.is_success(), "event sink answered {status}");
        missive_telemetry::metrics::get().events_published.add(
            1,
            &[opentelemetry::KeyValue::new(
                "cloudevents.event_type",
                event.ty().to_owned(),
            )],
        );
        Ok(())
    }
}

/// Builds the event transport from config: Kafka when `KAFKA_BROKERS` is set, else HTTP
/// to `K_SINK` if set, else the in-process bus (returned separately so consumers in this
/// process can subscribe to it).
pub fn transport(
    kafka: Option<&kafka::KafkaConnection>,
    events_topic: &str,
    k_sink: Option<&str>,
) -> anyhow::Result<(Arc<dyn EventPublisher>, Arc<InProcessBus>)> {
    let bus = Arc::new(InProcessBus::default());
    let publisher: Arc<dyn EventPublisher> = match (kafka, k_sink) {
        (Some(kafka), _) => Arc::new(kafka::KafkaPublisher::new(kafka, events_topic)?),
        (None, Some(url)) => Arc::new(HttpSink::new(url)?),
        (None, None) => bus.clone(),
    };
    Ok((publisher, bus))
}

/// The transport of a function that publishes nothing (`message-list`, ...): such a
/// function starts without `KAFKA_BROKERS` or `K_SINK`. Should it ever write an event,
/// publishing fails and the event waits in the outbox for the relay; nothing is lost.
pub struct NoTransport;

#[async_trait]
impl EventPublisher for NoTransport {
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()> {
        anyhow::bail!(
            "this function has no event transport; event {} stays in the outbox",
            event.id()
        )
    }
}
