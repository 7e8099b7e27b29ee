//! An OTLP/HTTP receiver for tests: it decodes the real protobuf export requests that
//! our exporters send (`/v1/traces`, `/v1/logs`, `/v1/metrics`) and keeps what arrived,
//! flattened to plain structs tests can assert on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// A received span.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// All attributes of that resource.
    pub resource: BTreeMap<String, String>,
    /// Span name.
    pub name: String,
    /// `SpanKind` as in the protocol: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Linked (trace id, span id) pairs.
    pub links: Vec<(String, String)>,
    /// Names of the span's events.
    pub events: Vec<String>,
    /// Start and end, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
}

impl Span {
    /// An attribute's value, or "" when it is absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// A received log record.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The body (the message) as text.
    pub body: String,
    /// `INFO`, `WARN`, ...
    pub severity: String,
    /// Hex trace id; empty outside spans.
    pub trace_id: String,
    /// Hex span id; empty outside spans.
    pub span_id: String,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    logs: Vec<LogRecord>,
    metrics: Vec<String>,
    requests: usize,
    /// The `authorization` header of each export request, by signal (`traces`, ...).
    authorization: Vec<(&'static str, Option<String>)>,
}

impl Received {
    fn count(&mut self, signal: &'static str, headers: &HeaderMap) {
        self.requests += 1;
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.authorization.push((signal, authorization));
    }
}

/// A running receiver; stops with the process.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    /// Starts listening on a free port, on a thread of its own (usable from sync tests).
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Starts listening on `port` of 127.0.0.1 (0: a free one). Panics if it is taken.
    pub fn start_on(port: u16) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap_or_else(|e| panic!("binding the OTLP receiver on {port}: {e}"));
                let _ = tx.send(listener.local_addr().expect("local addr"));
                let app = Router::new()
                    .route("/v1/traces", post(traces))
                    .route("/v1/logs", post(logs))
                    .route("/v1/metrics", post(metrics))
                    .with_state(state);
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = rx.recv().expect("OTLP receiver started");
        Self { addr, received }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// Log records received so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.lock().logs.clone()
    }

    /// Names of the metrics received so far (once each).
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = self.lock().metrics.clone();
        names.sort();
        names.dedup();
        names
    }

    /// Export requests of any signal received so far.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The `authorization` header each export request of `signal` (`traces`, `logs`,
    /// `metrics`) came with.
    pub fn authorization(&self, signal: &str) -> Vec<Option<String>> {
        self.lock()
            .authorization
            .iter()
            .filter(|(s, _)| *s == signal)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Waits until `check` holds for the spans received, or panics after `within`.
    pub fn wait_for_spans(&self, within: Duration, what: &str, check: impl Fn(&[Span]) -> bool) {
        let deadline = Instant::now() + within;
        while !check(&self.spans()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Shared = State<Arc<Mutex<Received>>>;

async fn traces(State(received): Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = service_name(resource_spans.resource.as_ref().map(|r| &r.attributes[..]));
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    status: span.status.map_or(0, |s| s.code),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
    }
    let mut received = received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    received.spans.extend(spans);
    received.count("traces", &headers);
    StatusCode::OK
}

async fn logs(State(received): Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(request) = ExportLogsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut logs = Vec::new();
    for resource_logs in request.resource_logs {
        let service = service_name(resource_logs.resource.as_ref().map(|r| &r.attributes[..]));
        for scope in resource_logs.scope_logs {
            for record in scope.log_records {
                logs.push(LogRecord {
                    service: service.clone(),
                    body: record.body.as_ref().map(text).unwrap_or_default(),
                    severity: record.severity_text,
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    attributes: attributes(&record.attributes),
                });
            }
        }
    }
    let mut received = received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    received.logs.extend(logs);
    received.count("logs", &headers);
    StatusCode::OK
}

async fn metrics(State(received): Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let names = request
        .resource_metrics
        .into_iter()
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .map(|m| m.name);
    let mut received = received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    received.metrics.extend(names);
    received.count("metrics", &headers);
    StatusCode::OK
}

fn service_name(resource: Option<&[KeyValue]>) -> String {
    resource
        .map(attributes)
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
