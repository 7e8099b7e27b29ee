//! Span export: OTLP over HTTP with protobuf, each span written as protobuf the moment
//! it ends.
//!
//! The SDK's batch processor hands spans (`SpanData`) to a thread of its own, and
//! `opentelemetry-otlp`'s exporter there turns each into `opentelemetry-proto`'s structs
//! (a `String` or `Vec` for every id, name and attribute), encodes those and frees
//! everything. Under load that was most of the cost of tracing (`bench/README.md`). Here
//! the span layer ([`crate::spans`]) writes each attribute's bytes as the span records
//! it, and [`BatchSpanEncoder`] adds the rest of the span to the pending batch on the
//! thread that ended it; a thread of its own sends the batches. The wire format is
//! `opentelemetry-proto`'s (the tests check it byte for byte against prost), and so is
//! the behaviour around it: `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE` and
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and
//! `..._TIMEOUT`, retries with backoff on the statuses the OTLP specification calls
//! retryable, and a flush on shutdown. Metrics and logs, a few requests a minute, keep
//! `opentelemetry-otlp`'s exporters.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::Resource;

/// Retries after the first attempt, and the backoff between them (doubling, capped),
/// as `opentelemetry-otlp` does for its HTTP exporters.
const RETRIES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
/// How long `force_flush` waits for the export it asked for.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends export requests to `endpoint` (the full URL, `.../v1/traces`).
pub struct OtlpSender {
    client: Arc<dyn opentelemetry_http::HttpClient>,
    endpoint: http::Uri,
    headers: HeaderMap,
    /// Deadline of one export, retries included.
    timeout: Duration,
}

impl OtlpSender {
    /// A sender to `endpoint` (the full `.../v1/traces` URL) with these headers; one
    /// export, retries included, gives up after `timeout`.
    pub fn new(
        client: Arc<dyn opentelemetry_http::HttpClient>,
        endpoint: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("OTLP traces endpoint {endpoint:?}: {e}"))?;
        Ok(Self {
            client,
            endpoint,
            headers,
            timeout,
        })
    }

    /// Posts one export request, retrying as the specification says. Blocking: the
    /// sleeps between attempts are the thread's (see [`BatchSpanEncoder`]).
    fn send(&self, body: bytes::Bytes) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let mut request = Request::new(body.clone());
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.endpoint.clone();
            let headers = request.headers_mut();
            headers.clone_from(&self.headers);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            // The HTTP client is blocking underneath (reqwest's), so its future is ready
            // when first polled.
            let (failure, retry_after) =
                match futures_executor::block_on(self.client.send_bytes(request)) {
                    Ok(response) if response.status().is_success() => return Ok(()),
                    Ok(response) => {
                        let status = response.status();
                        let failure = format!("OTLP traces export: HTTP status {status}");
                        if !retryable(status) {
                            return Err(failure);
                        }
                        (failure, retry_after(response.headers()))
                    }
                    // The error can name the URL, never the headers.
                    Err(err) => (format!("OTLP traces export: {err}"), None),
                };
            attempt += 1;
            let jitter = Duration::from_millis(rand::random_range(0..100));
            let wait = retry_after.unwrap_or(delay + jitter);
            if attempt > RETRIES || Instant::now() + wait >= deadline {
                return Err(failure);
            }
            std::thread::sleep(wait);
            delay = (delay * 2).min(MAX_DELAY);
        }
    }
}

/// An ended span, as the span layer hands it over: the attributes, events and links
/// already encoded (each with its field tag), the rest as values.
pub(crate) struct SpanRecord {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: TraceFlags,
    pub(crate) trace_state: TraceState,
    /// `SpanId::INVALID` for a root span.
    pub(crate) parent_span_id: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) name: std::borrow::Cow<'static, str>,
    pub(crate) kind: SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// `Span.attributes` fields (9), see [`attr_str`] and its siblings.
    pub(crate) attributes: Vec<u8>,
    pub(crate) dropped_attributes: u32,
    /// `Span.events` fields (11), see [`event`].
    pub(crate) events: Vec<u8>,
    pub(crate) dropped_events: u32,
    /// `Span.links` fields (13), see [`link`].
    pub(crate) links: Vec<u8>,
    pub(crate) dropped_links: u32,
    pub(crate) status: Status,
}

/// The span processor: encodes each ended span into the pending batch; a thread
/// (`otlp-spans`) sends the batch when it holds `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans,
/// after `OTEL_BSP_SCHEDULE_DELAY`, on [`Self::force_flush`] and on
/// [`Self::shutdown`]. Spans beyond `OTEL_BSP_MAX_QUEUE_SIZE` waiting are dropped and
/// counted, as the SDK's batch processor does.
pub struct BatchSpanEncoder {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for BatchSpanEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the sender's headers: they may carry credentials.
        f.debug_struct("BatchSpanEncoder")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The `Resource` message's body, and its schema URL.
    resource: (Vec<u8>, String),
    limits: Limits,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The batch processor's limits (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub(crate) schedule_delay: Duration,
    pub(crate) max_queue: usize,
    pub(crate) max_batch: usize,
}

impl Limits {
    /// From the `OTEL_BSP_*` variables, with the specification's defaults.
    pub fn from_env() -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let max_queue =
            usize::try_from(var("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1)).unwrap_or(2048);
        Self {
            schedule_delay: Duration::from_millis(var("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            max_queue,
            max_batch: usize::try_from(var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).max(1))
                .unwrap_or(512)
                .min(max_queue),
        }
    }
}

#[derive(Default)]
struct Pending {
    /// `ScopeSpans.spans` fields, each with its tag and length.
    encoded: Vec<u8>,
    spans: usize,
    /// Spans dropped because the queue was full, since the last export.
    dropped: u64,
    /// Callers of `force_flush` and `shutdown` waiting for the next export's result.
    waiting: Vec<mpsc::Sender<Result<(), String>>>,
    shutdown: bool,
}

/// Every span comes from the one span layer, so one instrumentation scope.
pub(crate) const SCOPE: &str = "missive";

impl BatchSpanEncoder {
    /// Starts the exporter thread.
    pub fn start(sender: OtlpSender, limits: Limits, resource: &Resource) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            resource: encode_resource(resource),
            limits,
        });
        let thread = std::thread::Builder::new()
            .name("otlp-spans".into())
            .spawn({
                let shared = shared.clone();
                move || export_loop(&shared, &sender)
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Adds an ended span to the pending batch (or drops it, the queue being full).
    pub(crate) fn end(&self, span: &SpanRecord) {
        let limits = self.shared.limits;
        let mut pending = self.shared.pending();
        if pending.shutdown {
            return;
        }
        if pending.spans >= limits.max_queue {
            pending.dropped += 1;
            return;
        }
        if pending.encoded.capacity() == 0 {
            pending.encoded.reserve(64 * 1024);
        }
        message(&mut pending.encoded, 2, |buf| encode_span(buf, span));
        pending.spans += 1;
        if pending.spans == limits.max_batch {
            self.shared.wake.notify_one();
        }
    }

    /// Exports what is pending and waits for the result.
    #[cfg(test)]
    fn force_flush(&self) -> Result<(), String> {
        self.export_now(false, FLUSH_TIMEOUT)
    }

    /// Exports what is pending, then stops the thread; later spans are dropped.
    pub fn shutdown(&self) -> Result<(), String> {
        self.export_now(true, FLUSH_TIMEOUT)
    }

    /// Asks the thread for an export now (and, with `shutdown`, to stop after it);
    /// waits up to `timeout` for its result.
    fn export_now(&self, shutdown: bool, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = self.shared.pending();
            if pending.shutdown {
                return Err("the span exporter is already shut down".into());
            }
            pending.shutdown = shutdown;
            pending.waiting.push(tx);
        }
        self.shared.wake.notify_one();
        let result = rx
            .recv_timeout(timeout)
            .map_err(|_| format!("no export within {timeout:?}"))?;
        if shutdown {
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        result
    }
}

/// The `otlp-spans` thread: waits for a full batch, the schedule delay or a request,
/// then sends what is pending. Outside any async runtime, so the sender may block.
fn export_loop(shared: &Shared, sender: &OtlpSender) {
    let limits = shared.limits;
    let mut last_export = Instant::now();
    let mut failing = false;
    loop {
        let (encoded, waiting, shutdown, dropped) = {
            let mut pending = shared.pending();
            loop {
                let elapsed = last_export.elapsed();
                if pending.shutdown
                    || !pending.waiting.is_empty()
                    || pending.spans >= limits.max_batch
                    || elapsed >= limits.schedule_delay
                {
                    break;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, limits.schedule_delay - elapsed)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            pending.spans = 0;
            (
                std::mem::take(&mut pending.encoded),
                std::mem::take(&mut pending.waiting),
                pending.shutdown,
                std::mem::take(&mut pending.dropped),
            )
        };
        last_export = Instant::now();
        if dropped > 0 {
            tracing::warn!(dropped, "spans dropped: the export queue was full");
        }
        let result = if encoded.is_empty() {
            Ok(())
        } else {
            let body = request(&shared.resource.0, &shared.resource.1, &encoded);
            drop(encoded);
            sender.send(body.into())
        };
        // One line when exports start failing, one when they recover.
        match &result {
            Err(err) if !failing => tracing::warn!(error = %err, "exporting spans failed"),
            Ok(()) if failing => tracing::info!("exporting spans works again"),
            _ => {}
        }
        failing = result.is_err();
        for waiter in waiting {
            let _ = waiter.send(result.clone());
        }
        if shutdown {
            return;
        }
    }
}

/// The statuses after which the OTLP specification says to retry.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A `Retry-After` given in seconds (the form collectors send), capped at the longest
/// backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_DELAY))
}

/// Headers for trace exports: `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
/// `OTEL_EXPORTER_OTLP_HEADERS`, as `key=value` pairs separated by commas, values
/// URL-encoded (the OTLP exporter specification).
pub fn headers_from_env() -> anyhow::Result<HeaderMap> {
    let value = [
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    value.map_or_else(|| Ok(HeaderMap::new()), |v| parse_headers(&v))
}

fn parse_headers(value: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // Errors name the header, never its value (it may be a credential).
        let (name, raw) = pair.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("OTLP header without '=': {:?}", pair.split('=').next())
        })?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| anyhow::anyhow!("OTLP header name {:?} is not valid", name.trim()))?;
        let decoded = percent_decode(raw.trim())
            .ok_or_else(|| anyhow::anyhow!("OTLP header {name}: bad %-encoding"))?;
        let value = HeaderValue::try_from(decoded)
            .map_err(|_| anyhow::anyhow!("OTLP header {name}: value is not a valid header"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// `%XX` sequences to bytes; `None` if one is malformed or the result is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// --- The protobuf encoding --------------------------------------------------------
//
// Field numbers are those of opentelemetry-proto's `trace/v1/trace.proto`,
// `common/v1/common.proto` and `resource/v1/resource.proto`, written in the order of
// their numbers, as prost does: the output is byte for byte prost's. As protobuf 3 does,
// scalar fields at their default value are left out; messages (including `Status`) and
// the members of a `oneof` are written even when empty.

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

/// The body of the `Resource` message, and the resource's schema URL.
fn encode_resource(resource: &Resource) -> (Vec<u8>, String) {
    let mut encoded = Vec::new();
    for (key, value) in resource.iter() {
        attribute(&mut encoded, 1, key.as_str(), value);
    }
    let schema_url = resource.schema_url().unwrap_or_default().to_owned();
    (encoded, schema_url)
}

/// One `ExportTraceServiceRequest`: one `ResourceSpans` with one `ScopeSpans` holding
/// the `spans`, already encoded.
fn request(resource: &[u8], resource_schema_url: &str, spans: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + resource.len() + spans.len());
    if spans.is_empty() {
        return buf;
    }
    message(&mut buf, 1, |buf| {
        message(buf, 1, |buf| buf.extend_from_slice(resource));
        message(buf, 2, |buf| {
            message(buf, 1, |buf| string(buf, 1, SCOPE));
            buf.extend_from_slice(spans);
        });
        string(buf, 3, resource_schema_url);
    });
    buf
}

fn encode_span(buf: &mut Vec<u8>, span: &SpanRecord) {
    bytes(buf, 1, &span.trace_id.to_bytes());
    bytes(buf, 2, &span.span_id.to_bytes());
    if span.trace_state != TraceState::NONE {
        string(buf, 3, &span.trace_state.header());
    }
    if span.parent_span_id != SpanId::INVALID {
        bytes(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, &span.name);
    uint(buf, 6, kind(&span.kind));
    fixed64(buf, 7, nanos(span.start));
    fixed64(buf, 8, nanos(span.end));
    buf.extend_from_slice(&span.attributes);
    uint(buf, 10, span.dropped_attributes.into());
    buf.extend_from_slice(&span.events);
    uint(buf, 12, span.dropped_events.into());
    buf.extend_from_slice(&span.links);
    uint(buf, 14, span.dropped_links.into());
    message(buf, 15, |buf| {
        let (code, description) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        string(buf, 2, description);
        uint(buf, 3, code);
    });
    fixed32(buf, 16, span_flags(span.flags, span.parent_is_remote));
}

/// A `Span.events` field: an event at `time` named `name`, with `attributes` already
/// encoded as `Event.attributes` fields (3).
pub(crate) fn event(
    buf: &mut Vec<u8>,
    time: SystemTime,
    name: &str,
    attributes: &[u8],
    dropped_attributes: u32,
) {
    message(buf, 11, |buf| {
        fixed64(buf, 1, nanos(time));
        string(buf, 2, name);
        buf.extend_from_slice(attributes);
        uint(buf, 4, dropped_attributes.into());
    });
}

/// A `Span.links` field: a link to `cx`, without attributes.
pub(crate) fn link(buf: &mut Vec<u8>, cx: &SpanContext) {
    message(buf, 13, |buf| {
        bytes(buf, 1, &cx.trace_id().to_bytes());
        bytes(buf, 2, &cx.span_id().to_bytes());
        string(buf, 3, &cx.trace_state().header());
        fixed32(buf, 6, span_flags(cx.trace_flags(), cx.is_remote()));
    });
}

/// `SpanFlags`: the W3C trace flags, and whether the parent (for a link: the linked
/// context) is remote, with the bit saying that this is known.
fn span_flags(flags: TraceFlags, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(flags.to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `KeyValue` field of any value.
fn attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    match value {
        Value::String(s) => attr_str(buf, field, key, s.as_str()),
        Value::Bool(b) => attr_bool(buf, field, key, *b),
        Value::I64(i) => attr_i64(buf, field, key, *i),
        Value::F64(f) => attr_f64(buf, field, key, *f),
        other => message(buf, field, |buf| key_value(buf, key, other)),
    }
}

// The scalar attributes, written with their lengths up front (spans carry a dozen each,
// and this saves `message`'s moving the bytes back): `field` is the `KeyValue`'s field
// in the message holding it (9 in `Span`, 3 in `Event`).

/// A string attribute.
pub(crate) fn attr_str(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    let value_len = 1 + varint_len(value.len()) + value.len();
    key_value_head(buf, field, key, value_len);
    string_always(buf, 1, value);
}

/// A boolean attribute.
pub(crate) fn attr_bool(buf: &mut Vec<u8>, field: u32, key: &str, value: bool) {
    key_value_head(buf, field, key, 2);
    tag(buf, 2, VARINT);
    buf.push(u8::from(value));
}

/// An integer attribute.
pub(crate) fn attr_i64(buf: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    // int64: two's complement, as a 10-byte varint when negative.
    let value = value.cast_unsigned();
    key_value_head(buf, field, key, 1 + varint_len_u64(value));
    tag(buf, 3, VARINT);
    varint(buf, value);
}

/// A floating-point attribute.
pub(crate) fn attr_f64(buf: &mut Vec<u8>, field: u32, key: &str, value: f64) {
    key_value_head(buf, field, key, 9);
    tag(buf, 4, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A `KeyValue`'s tag and length, its key, and the tag and length of its `AnyValue`,
/// whose body (`value_len` bytes) the caller writes.
fn key_value_head(buf: &mut Vec<u8>, field: u32, key: &str, value_len: usize) {
    let key_len = if key.is_empty() {
        0
    } else {
        1 + varint_len(key.len()) + key.len()
    };
    tag(buf, field, LEN);
    varint(
        buf,
        (key_len + 1 + varint_len(value_len) + value_len) as u64,
    );
    string(buf, 1, key);
    tag(buf, 2, LEN);
    varint(buf, value_len as u64);
}

fn varint_len(v: usize) -> usize {
    varint_len_u64(v as u64)
}

fn varint_len_u64(v: u64) -> usize {
    // 7 bits a byte, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key_value(buf: &mut Vec<u8>, key: &str, value: &Value) {
    string(buf, 1, key);
    message(buf, 2, |buf| any_value(buf, value));
}

/// The body of an `AnyValue`: its one `oneof` member.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string_always(buf, 1, s.as_str()),
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            tag(buf, 3, VARINT);
            // int64: two's complement, as a 10-byte varint when negative.
            varint(buf, i.cast_unsigned());
        }
        Value::F64(f) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::Array(array) => message(buf, 5, |buf| match array {
            Array::Bool(values) => array_values(buf, values, |v| Value::Bool(*v)),
            Array::I64(values) => array_values(buf, values, |v| Value::I64(*v)),
            Array::F64(values) => array_values(buf, values, |v| Value::F64(*v)),
            Array::String(values) => array_values(buf, values, |v| Value::String(v.clone())),
            // A kind of array added after this was written: its text.
            other => message(buf, 1, |buf| string_always(buf, 1, &other.to_string())),
        }),
        // A kind of value added after this was written: its text.
        other => string_always(buf, 1, &other.to_string()),
    }
}

fn array_values<T>(buf: &mut Vec<u8>, values: &[T], value: impl Fn(&T) -> Value) {
    for v in values {
        message(buf, 1, |buf| any_value(buf, &value(v)));
    }
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire)));
}

fn varint(buf: &mut Vec<u8>, v: u64) {
    let mut bytes = [0; 10];
    let n = varint_into(&mut bytes, v);
    buf.extend_from_slice(&bytes[..n]);
}

/// Writes the varint of `v` at the start of `out` (long enough for it); returns its length.
fn varint_into(out: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        string_bytes(buf, field, v);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, v: &str) {
    bytes(buf, field, v.as_bytes());
}

/// A string written even when empty (a `oneof` member).
fn string_always(buf: &mut Vec<u8>, field: u32, v: &str) {
    string_bytes(buf, field, v.as_bytes());
}

fn string_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

/// A nested message: its length is known only once `body` has written it, so five
/// bytes are set aside (enough for any length under 32 GiB) and the body is moved back
/// over the ones its length did not need.
fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    const RESERVED: usize = 5;
    tag(buf, field, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0; RESERVED]);
    body(buf);
    let len = buf.len() - at - RESERVED;
    let used = varint_len(len);
    buf.copy_within(at + RESERVED.., at + used);
    buf.truncate(at + used + len);
    varint_into(&mut buf[at..at + used], len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::SpanData;
    use prost::Message as _;
    use std::borrow::Cow;

    fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state.parse::<TraceState>().unwrap_or_default(),
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c,
                0xb7ad6b7169203331,
                false,
                "",
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// Spans covering every field and kind of value.
    fn batch() -> Vec<SpanData> {
        let missive = InstrumentationScope::builder(SCOPE).build();
        let mut server = span("GET /api/messages", &missive);
        server.span_kind = SpanKind::Server;
        server.parent_span_id = SpanId::from(0x1122334455667788);
        server.parent_span_is_remote = true;
        server.span_context = context(7, 8, false, "vendor=value,other=x");
        server.attributes = vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", String::from("/api/messages")),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("negative", -42_i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("flag", false),
            KeyValue::new("empty", ""),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec!["a".into(), "".into()])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        ];
        server.dropped_attributes_count = 3;
        server.status = Status::error("boom: 🦀");
        server.events.events.push(Event::new(
            "exception",
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            vec![KeyValue::new("exception.message", "no")],
            1,
        ));
        server.events.dropped_count = 2;
        server
            .links
            .links
            .push(Link::new(context(9, 10, true, "k=v"), Vec::new(), 0));
        server
            .links
            .links
            .push(Link::new(context(11, 12, false, ""), Vec::new(), 0));
        server.links.dropped_count = 5;
        let mut client = span("SELECT messages", &missive);
        client.span_kind = SpanKind::Client;
        client.parent_span_id = SpanId::from(8);
        client.status = Status::Ok;
        let mut producer = span("send missive.events", &missive);
        producer.span_kind = SpanKind::Producer;
        producer.span_context = context(1, 2, false, "");
        let mut consumer = span("process", &missive);
        consumer.span_kind = SpanKind::Consumer;
        consumer.start_time = UNIX_EPOCH;
        consumer.end_time = UNIX_EPOCH;
        vec![server, producer, client, consumer]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "message-list"),
                KeyValue::new("service.namespace", "missive"),
                KeyValue::new("process.pid", 42_i64),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.29.0")
            .build()
    }

    /// `span` as the span layer hands it over, written with the encoder's functions.
    fn record_of(span: &SpanData) -> SpanRecord {
        let cx = &span.span_context;
        let encode = |field: u32, attributes: &[KeyValue]| {
            let mut buf = Vec::new();
            for kv in attributes {
                attribute(&mut buf, field, kv.key.as_str(), &kv.value);
            }
            buf
        };
        let attributes = encode(9, &span.attributes);
        let mut events = Vec::new();
        for e in span.events.iter() {
            let encoded = encode(3, &e.attributes);
            event(
                &mut events,
                e.timestamp,
                &e.name,
                &encoded,
                e.dropped_attributes_count,
            );
        }
        let mut links = Vec::new();
        for l in span.links.iter() {
            link(&mut links, &l.span_context);
        }
        SpanRecord {
            trace_id: cx.trace_id(),
            span_id: cx.span_id(),
            flags: cx.trace_flags(),
            trace_state: cx.trace_state().clone(),
            parent_span_id: span.parent_span_id,
            parent_is_remote: span.parent_span_is_remote,
            name: span.name.clone(),
            kind: span.span_kind.clone(),
            start: span.start_time,
            end: span.end_time,
            attributes,
            dropped_attributes: span.dropped_attributes_count,
            events,
            dropped_events: span.events.dropped_count,
            links,
            dropped_links: span.links.dropped_count,
            status: span.status.clone(),
        }
    }

    /// The export request for `batch`, as the processor writes it.
    fn ours(resource: &Resource, batch: &[SpanData]) -> Vec<u8> {
        let (resource, schema_url) = encode_resource(resource);
        let mut spans = Vec::new();
        for span in batch {
            message(&mut spans, 2, |buf| encode_span(buf, &record_of(span)));
        }
        request(&resource, &schema_url, &spans)
    }

    #[test]
    fn writes_the_bytes_opentelemetry_proto_writes() {
        let resource = resource();
        let theirs = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        // The batch is what it claims to be: every part of a span set.
        let scopes = &theirs.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 1);
        let server = &scopes[0].spans[0];
        assert!(!server.events.is_empty() && !server.links.is_empty());
        assert!(server.attributes.len() > 10 && !server.trace_state.is_empty());

        let ours = ours(&resource, &batch());
        assert_eq!(
            ExportTraceServiceRequest::decode(&ours[..]).expect("decodes"),
            theirs
        );
        assert_eq!(ours, theirs.encode_to_vec());
    }

    #[test]
    fn an_empty_batch_is_an_empty_request() {
        assert!(ours(&resource(), &[]).is_empty());
    }

    #[test]
    fn varint_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(varint_len_u64(v), buf.len(), "{v}");
        }
    }

    #[test]
    fn message_lengths_take_as_many_bytes_as_they_need() {
        for len in [0_usize, 1, 127, 128, 16_383, 16_384, 2_097_152] {
            let mut buf = vec![0xAA];
            message(&mut buf, 1, |buf| buf.resize(buf.len() + len, 7));
            let mut expected = vec![0xAA, 0x0A];
            varint(&mut expected, len as u64);
            expected.resize(expected.len() + len, 7);
            assert_eq!(buf, expected, "length {len}");
        }
    }

    /// A collector answering each export request with the next of `statuses` (then
    /// 200), on a thread; returns its endpoint and the requests it got.
    fn collector(statuses: &'static [u16]) -> (String, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().expect("length");
                        }
                        line.clear();
                    }
                    if line.is_empty() {
                        break;
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).expect("body");
                    let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid");
                    let n = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(request);
                        seen.len()
                    };
                    let status = statuses.get(n - 1).copied().unwrap_or(200);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n"
                    );
                }
            }
        });
        (endpoint, received)
    }

    fn sender(endpoint: &str) -> OtlpSender {
        let client: Arc<dyn opentelemetry_http::HttpClient> =
            Arc::new(crate::LazyClient::new(Duration::from_secs(5)));
        OtlpSender::new(client, endpoint, HeaderMap::new(), Duration::from_secs(5)).expect("sender")
    }

    fn spans_in(requests: &[ExportTraceServiceRequest]) -> usize {
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    #[test]
    fn retries_what_the_specification_calls_retryable_and_nothing_else() {
        let body = || bytes::Bytes::from(ours(&resource(), &batch()));
        let (endpoint, received) = collector(&[503, 429]);
        sender(&endpoint)
            .send(body())
            .expect("exported on the third attempt");
        assert_eq!(received.lock().expect("lock").len(), 3);

        let (endpoint, received) = collector(&[400]);
        let err = sender(&endpoint).send(body()).expect_err("a 400 is final");
        assert!(err.contains("400"), "{err}");
        assert_eq!(received.lock().expect("lock").len(), 1);

        let (endpoint, received) = collector(&[503, 503, 503, 503, 503]);
        sender(&endpoint).send(body()).expect_err("gives up");
        assert_eq!(received.lock().expect("lock").len(), 1 + RETRIES as usize);
    }

    #[test]
    fn the_processor_sends_full_batches_flushes_and_drops_past_its_queue() {
        let (endpoint, received) = collector(&[]);
        let limits = Limits {
            schedule_delay: Duration::from_secs(3600),
            max_queue: 6,
            max_batch: 4,
        };
        let processor =
            BatchSpanEncoder::start(sender(&endpoint), limits, &resource()).expect("start");
        let spans_received = || spans_in(&received.lock().expect("lock"));

        // A full batch goes without being asked.
        for span in batch() {
            processor.end(&record_of(&span));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while spans_received() < 4 {
            assert!(Instant::now() < deadline, "the full batch was not sent");
            std::thread::sleep(Duration::from_millis(10));
        }
        {
            let requests = received.lock().expect("lock");
            assert_eq!(requests.len(), 1);
            let resource = resource();
            let theirs = group_spans_by_resource_and_scope(
                batch(),
                &ResourceAttributesWithSchema::from(&resource),
            );
            assert_eq!(
                requests[0].resource_spans[0].scope_spans,
                theirs[0].scope_spans
            );
            // Attributes in the resource's order, which is a hash map's.
            let keys = |r: &opentelemetry_proto::tonic::trace::v1::ResourceSpans| {
                let resource = r.resource.as_ref().expect("resource");
                let mut keys: Vec<_> = resource
                    .attributes
                    .iter()
                    .map(|kv| kv.key.clone())
                    .collect();
                keys.sort();
                keys
            };
            assert_eq!(keys(&requests[0].resource_spans[0]), keys(&theirs[0]));
        }

        // Shutdown sends what is left, then refuses.
        processor.end(&record_of(&batch()[0]));
        processor.shutdown().expect("shut down");
        assert_eq!(spans_received(), 4 + 1);
        assert!(processor.force_flush().is_err());
        processor.end(&record_of(&batch()[0]));
        assert_eq!(spans_received(), 5);

        // With no batch ever full, spans past the queue's 6 are dropped, and a flush sends
        // what was kept.
        let (endpoint, received) = collector(&[]);
        let limits = Limits {
            max_batch: 100,
            ..limits
        };
        let processor =
            BatchSpanEncoder::start(sender(&endpoint), limits, &resource()).expect("start");
        for _ in 0..3 {
            for span in batch() {
                processor.end(&record_of(&span));
            }
        }
        processor.force_flush().expect("flushed");
        assert_eq!(spans_in(&received.lock().expect("lock")), 6);
    }

    #[test]
    fn headers_are_parsed_and_percent_decoded() {
        let headers =
            parse_headers(" authorization=Bearer%20abc%3D%3D , x-scope-orgid = tenant-1,,")
                .expect("valid");
        assert_eq!(headers["authorization"], "Bearer abc==");
        assert_eq!(headers["x-scope-orgid"], "tenant-1");
        assert_eq!(headers.len(), 2);
        for bad in ["novalue", "bad name=x", "k=%zz", "k=%4", "k=%ff", "k=a\nb"] {
            parse_headers(bad).expect_err(bad);
        }
        // A credential never appears in an error.
        let err = parse_headers("authorization=secret%zz")
            .expect_err("bad")
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
