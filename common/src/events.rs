//! Domain events as CloudEvents 1.0, their HTTP binding, and the transport-neutral
//! [`EventPublisher`].
//!
//! Specs: CloudEvents 1.0 <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md>
//! and its HTTP binding
//! <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md>
//! (binary mode: attributes in `ce-*` headers, body = data; structured mode: the whole
//! event as `application/cloudevents+json`). Knative Eventing delivers both.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::ApiError;
use crate::domain::Username;

/// Prefix of every Missive event type: `io.missive.<noun>.<verb>.v1`.
pub const TYPE_PREFIX: &str = "io.missive.";

/// A CloudEvent with JSON data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Unique per `source`; with it, the de-duplication key.
    pub id: String,
    /// The producer, `/functions/<name>` for ours.
    pub source: String,
    /// E.g. `io.missive.message.created.v1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The username the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339 time of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Extension attributes (e.g. `traceparent`), lower-case names.
    #[serde(flatten, default)]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

impl CloudEvent {
    /// A new Missive event: `kind` like `message.created`, from function `function`. It
    /// carries the `traceparent` of the request or event being handled (the CloudEvents
    /// distributed-tracing extension).
    pub fn new(function: &str, kind: &str, subject: &Username, data: serde_json::Value) -> Self {
        let mut extensions = BTreeMap::new();
        // Outside any span (a CLI producer, a test without telemetry) the event starts
        // its own trace, so every event still carries one.
        let traceparent = crate::telemetry::current_traceparent().unwrap_or_else(new_traceparent);
        extensions.insert(
            "traceparent".to_owned(),
            serde_json::Value::String(traceparent),
        );
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            source: format!("/functions/{function}"),
            ty: format!("{TYPE_PREFIX}{kind}.v1"),
            subject: Some(subject.as_str().to_owned()),
            time: Some(crate::db::rfc3339_millis(crate::db::now_millis())),
            data,
            extensions,
        }
    }

    /// Runs an event function's `work` on this event: in its handling span, or, with spans
    /// off, in the event's trace context (when the delivery did not already carry it).
    pub async fn handle<F: std::future::Future>(&self, work: F) -> F::Output {
        use tracing::Instrument as _;
        if crate::telemetry::spans_enabled() {
            return work.instrument(self.handling_span()).await;
        }
        let current = crate::telemetry::current_traceparent();
        match self.traceparent().filter(|t| valid_traceparent(t)) {
            Some(event) if current.as_deref().map(|c| &c[3..35]) != Some(&event[3..35]) => {
                crate::telemetry::in_light_context(Some(event), work).await
            }
            _ => work.await,
        }
    }

    /// The span an event function handles this event in, with the CloudEvents semantic
    /// conventions' attributes. It continues the trace that caused the event: normally
    /// that is already the HTTP request's trace (Knative and our dispatcher send
    /// `traceparent`); when it is not (a structured-mode event without the header), the
    /// span joins the event's trace and links the request's.
    pub fn handling_span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "process event",
            otel.name = format!("process {}", self.ty),
            otel.kind = "consumer",
            cloudevents.event_id = %self.id,
            cloudevents.event_type = %self.ty,
            cloudevents.event_source = %self.source,
            cloudevents.event_subject = self.subject.as_deref(),
            cloudevents.event_spec_version = "1.0",
        );
        if let Some(lag) = self.time.as_deref().and_then(lag_since) {
            crate::telemetry::metrics::get().events_lag.record(
                lag,
                &[opentelemetry::KeyValue::new(
                    "cloudevents.event_type",
                    self.ty.clone(),
                )],
            );
        }
        crate::telemetry::join_trace(&span, self.traceparent());
        span
    }

    /// The event's `traceparent` extension, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions.get("traceparent").and_then(|v| v.as_str())
    }

    /// The short kind of a Missive event (`message.created` for
    /// `io.missive.message.created.v1`); `None` for foreign types.
    pub fn missive_kind(&self) -> Option<&str> {
        self.ty
            .strip_prefix(TYPE_PREFIX)
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(kind, _version)| kind)
    }

    /// This event as a binary-mode HTTP request to `uri`.
    pub fn to_http_request(&self, uri: &str) -> anyhow::Result<Request> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", &self.id)
            .header("ce-source", &self.source)
            .header("ce-type", &self.ty);
        if let Some(subject) = &self.subject {
            builder = builder.header("ce-subject", subject);
        }
        if let Some(time) = &self.time {
            builder = builder.header("ce-time", time);
        }
        for (name, value) in &self.extensions {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            builder = builder.header(format!("ce-{name}"), value);
        }
        Ok(builder.body(Body::from(serde_json::to_vec(&self.data)?))?)
    }

    /// Reads an event from an HTTP request in either mode.
    pub fn from_http(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/cloudevents+json") {
            return Self::from_structured(body);
        }
        Self::from_binary(headers, content_type, body)
    }

    fn from_structured(body: &[u8]) -> Result<Self, ApiError> {
        let mut value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidEvent(format!("structured event is not JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| ApiError::InvalidEvent("structured event must be an object".into()))?;
        check_specversion(
            object
                .remove("specversion")
                .as_ref()
                .and_then(|v| v.as_str()),
        )?;
        // Only JSON data is meaningful to our handlers; drop attributes we do not model.
        object.remove("datacontenttype");
        object.remove("dataschema");
        if object.contains_key("data_base64") {
            return Err(ApiError::InvalidEvent(
                "data_base64 is not supported".into(),
            ));
        }
        let event: Self = serde_json::from_value(value)
            .map_err(|e| ApiError::InvalidEvent(format!("invalid structured event: {e}")))?;
        event.checked()
    }

    fn from_binary(headers: &HeaderMap, content_type: &str, body: &[u8]) -> Result<Self, ApiError> {
        let attr = |name: &str| -> Result<Option<String>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .map_err(|_| ApiError::InvalidEvent(format!("{name} is not ASCII")))
                })
                .transpose()
        };
        check_specversion(attr("ce-specversion")?.as_deref())?;
        let required = |name: &str| {
            attr(name)?.ok_or_else(|| ApiError::InvalidEvent(format!("missing header {name}")))
        };
        let data = if body.is_empty() {
            serde_json::Value::Null
        } else if content_type.is_empty() || content_type.contains("json") {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::InvalidEvent(format!("event data is not JSON: {e}")))?
        } else {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        };
        let mut extensions = BTreeMap::new();
        for (name, value) in headers {
            let Some(ext) = name.as_str().strip_prefix("ce-") else {
                continue;
            };
            if matches!(
                ext,
                "specversion" | "id" | "source" | "type" | "subject" | "time"
            ) || matches!(ext, "datacontenttype" | "dataschema")
            {
                continue;
            }
            if let Ok(value) = value.to_str() {
                extensions.insert(ext.to_owned(), serde_json::Value::String(value.to_owned()));
            }
        }
        Self {
            id: required("ce-id")?,
            source: required("ce-source")?,
            ty: required("ce-type")?,
            subject: attr("ce-subject")?,
            time: attr("ce-time")?,
            data,
            extensions,
        }
        .checked()
    }

    fn checked(self) -> Result<Self, ApiError> {
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(ApiError::InvalidEvent(format!("{name} must not be empty")));
            }
        }
        if let Some(time) = &self.time {
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::InvalidEvent("time must be RFC 3339".into()))?;
        }
        Ok(self)
    }
}

/// The `message.created` event of a message once it is stored (its id is known only
/// then): from `function`, about `author`, in the trace of the work being handled.
pub fn message_created(function: &str, author: &Username) -> crate::db::EventFor {
    let template = CloudEvent::new(function, "message.created", author, serde_json::Value::Null);
    Arc::new(move |message: &crate::db::Message| {
        let mut event = template.clone();
        event.id = uuid::Uuid::new_v4().to_string();
        event.data = serde_json::json!({ "id": message.id, "created_at": message.created_at });
        event
    })
}

/// Seconds from an RFC 3339 time to now (0 if it lies in the future).
fn lag_since(time: &str) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    Some(
        (time::OffsetDateTime::now_utc() - at)
            .as_seconds_f64()
            .max(0.0),
    )
}

/// Whether `value` is a W3C `traceparent` we can continue (version 00, non-zero ids).
/// <https://www.w3.org/TR/trace-context/#traceparent-header>
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// A fresh sampled `traceparent` for work that arrived without one.
pub fn new_traceparent() -> String {
    let trace: [u8; 16] = rand::random();
    let span: [u8; 8] = rand::random();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

fn check_specversion(version: Option<&str>) -> Result<(), ApiError> {
    match version {
        Some("1.0") => Ok(()),
        Some(other) => Err(ApiError::InvalidEvent(format!(
            "unsupported specversion {other}"
        ))),
        None => Err(ApiError::InvalidEvent("missing specversion".into())),
    }
}

impl<S: Send + Sync> FromRequest<S> for CloudEvent {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        // Bytes honours the body limit layer (the reason we do not use an extractor that
        // reads the body unbounded).
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(0)
            } else {
                ApiError::InvalidEvent("could not read the body".into())
            }
        })?;
        Self::from_http(&headers, &body)
    }
}

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
            tracing::debug!(event.id = %event.id, event.r#type = %event.ty, "no in-process consumer");
        }
        for (name, router) in sinks {
            let response = router.oneshot(event.to_http_request("/")?).await?;
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
        let _: axum::http::Uri = url.parse().context("K_SINK is not a valid URL")?;
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
        use crate::telemetry::SpanExt as _;
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
            cloudevents.event_id = %event.id,
            cloudevents.event_type = %event.ty,
        );
        let (mut parts, body) = event.to_http_request(&self.url)?.into_parts();
        crate::telemetry::inject_headers(&span.context(), &mut parts.headers);
        let body = body.collect().await?.to_bytes();
        let request = axum::http::Request::from_parts(parts, Full::new(body));
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
        crate::telemetry::metrics::get().events_published.add(
            1,
            &[opentelemetry::KeyValue::new(
                "cloudevents.event_type",
                event.ty.clone(),
            )],
        );
        Ok(())
    }
}

/// Builds the event transport from config: Kafka when `KAFKA_BROKERS` is set, else HTTP
/// to `K_SINK` if set, else the in-process bus (returned separately so consumers in this
/// process can subscribe to it).
pub fn transport(
    config: &crate::config::Config,
) -> anyhow::Result<(Arc<dyn EventPublisher>, Arc<InProcessBus>)> {
    let bus = Arc::new(InProcessBus::default());
    let publisher: Arc<dyn EventPublisher> = match (&config.kafka_brokers, &config.k_sink) {
        (Some(brokers), _) => Arc::new(crate::kafka::KafkaPublisher::new(
            brokers,
            &config.kafka_events_topic,
        )?),
        (None, Some(url)) => Arc::new(HttpSink::new(url)?),
        (None, None) => bus.clone(),
    };
    Ok((publisher, bus))
}
