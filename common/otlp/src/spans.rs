//! `tracing` spans as OpenTelemetry spans: the layer that gives each span its trace
//! context, records its fields as OTLP attributes and hands it, ended, to the exporter.
//!
//! This does the job of `tracing-opentelemetry`'s layer and the SDK's tracer, for the
//! spans this code base makes. Through them a span cost about 8,000 instructions: a
//! `SpanBuilder` with a `Vec<KeyValue>` of owned strings, the SDK span built from it at
//! the end, its `SpanData`, and only then the protobuf. That kept tracing over its 10 %
//! budget on `GET /api/messages` (`bench/README.md`). Here a span's fields are written
//! as protobuf the moment they are recorded, into one buffer, and the span is encoded
//! into the export batch when it closes, on the thread that closes it.
//!
//! What the two crates did, and the code relies on, is kept:
//! - the trace context: a child gets its parent's trace id, flags and trace state;
//!   [`SpanExt::set_parent`] makes a span continue a remote caller's trace (baggage
//!   included) and [`SpanExt::context`] gives a span's context for outgoing calls;
//! - sampling per `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (the SDK's semantics:
//!   parent-based samplers follow the parent's sampled flag, ratios are taken from the
//!   trace id); spans of an unsampled trace get ids (they propagate) and are not
//!   exported;
//! - the span limits of `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT`
//!   and `OTEL_SPAN_LINK_COUNT_LIMIT` (default 128), with dropped counts;
//! - the special fields `otel.name`, `otel.kind`, `otel.status_code` and
//!   `otel.status_description`; every other field becomes an attribute, integers as
//!   integers, `%` and `?` values as strings;
//! - warnings and errors inside a span become span events (name: the message;
//!   attributes: `level`, `target` and the fields); an error sets the span's status to
//!   Error unless it was set.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::otlp_traces::{self, BatchSpanEncoder, SpanRecord};

/// Field numbers of `KeyValue` lists: in `Span` and in `Span.Event`.
const SPAN_ATTRIBUTES: u32 = 9;
const EVENT_ATTRIBUTES: u32 = 3;

/// The sampler and limits.
#[derive(Debug, Clone, Copy)]
struct Settings {
    sampler: Sampler,
    limits: SpanLimits,
}

/// The layer; installed only when spans are exported.
pub struct SpanLayer {
    encoder: Arc<BatchSpanEncoder>,
    ids: RandomIdGenerator,
    settings: Settings,
}

impl SpanLayer {
    /// With the sampler and limits the environment sets.
    pub fn new(encoder: Arc<BatchSpanEncoder>) -> Self {
        Self::with_settings(
            encoder,
            Settings {
                sampler: Sampler::from_env(),
                limits: SpanLimits::from_env(),
            },
        )
    }

    fn with_settings(encoder: Arc<BatchSpanEncoder>, settings: Settings) -> Self {
        Self {
            encoder,
            ids: RandomIdGenerator::default(),
            settings,
        }
    }
}

/// A span's OpenTelemetry side, in the registry's extensions while the span is open.
pub(crate) struct OtelSpan {
    record: SpanRecord,
    /// The caller's context, for the baggage it carries to this span's outgoing calls.
    parent_cx: opentelemetry::Context,
    /// Whether the span is exported (its trace is sampled). Its fields are recorded
    /// either way: `set_parent` may yet put it in a sampled trace (a server span whose
    /// caller sampled, a Kafka send joining the trace of the request that made the
    /// event).
    sampled: bool,
    attributes: u32,
    events: u32,
    links: u32,
}

impl OtelSpan {
    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            self.record.trace_id,
            self.record.span_id,
            self.record.flags,
            false,
            self.record.trace_state.clone(),
        )
    }

    /// The span's context, with the caller's baggage: what outgoing calls propagate.
    fn context(&self) -> opentelemetry::Context {
        self.parent_cx.with_remote_span_context(self.span_context())
    }

    fn set_sampled(&mut self, sampled: bool) {
        self.sampled = sampled;
        self.record.flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
    }

    /// Makes the span a child of the span in `cx` (a remote caller's, usually).
    fn set_parent(&mut self, cx: opentelemetry::Context, settings: &Settings) {
        let parent = cx.span();
        let parent = parent.span_context();
        if parent.is_valid() {
            self.record.trace_id = parent.trace_id();
            self.record.parent_span_id = parent.span_id();
            self.record.parent_is_remote = parent.is_remote();
            self.record.trace_state = parent.trace_state().clone();
            let sampled = settings
                .sampler
                .sample(Some(parent.is_sampled()), parent.trace_id());
            self.set_sampled(sampled);
        }
        self.parent_cx = cx;
    }

    fn add_link(&mut self, cx: &SpanContext, settings: &Settings) {
        if !self.sampled || !cx.is_valid() {
            return;
        }
        if self.links >= settings.limits.links {
            self.record.dropped_links += 1;
            return;
        }
        self.links += 1;
        otlp_traces::link(&mut self.record.links, cx);
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let settings = &self.settings;
        let parent = span.parent();
        let parent_ext = parent.as_ref().map(|p| p.extensions());
        let parent = parent_ext.as_ref().and_then(|e| e.get::<OtelSpan>());
        let (trace_id, parent_span_id, trace_state, parent_cx, parent_sampled) = match parent {
            Some(p) => (
                p.record.trace_id,
                p.record.span_id,
                p.record.trace_state.clone(),
                p.parent_cx.clone(),
                Some(p.sampled),
            ),
            None => (
                self.ids.new_trace_id(),
                SpanId::INVALID,
                TraceState::NONE,
                opentelemetry::Context::new(),
                None,
            ),
        };
        drop(parent_ext);
        let sampled = settings.sampler.sample(parent_sampled, trace_id);
        let now = SystemTime::now();
        let mut otel = OtelSpan {
            record: SpanRecord {
                trace_id,
                span_id: self.ids.new_span_id(),
                flags: TraceFlags::default(),
                trace_state,
                parent_span_id,
                parent_is_remote: false,
                name: Cow::Borrowed(attrs.metadata().name()),
                kind: SpanKind::Internal,
                start: now,
                end: now,
                attributes: Vec::new(),
                dropped_attributes: 0,
                events: Vec::new(),
                dropped_events: 0,
                links: Vec::new(),
                dropped_links: 0,
                status: Status::Unset,
            },
            parent_cx,
            sampled: false,
            attributes: 0,
            events: 0,
            links: 0,
        };
        otel.set_sampled(sampled);
        otel.record.attributes.reserve(256);
        attrs.record(&mut Fields::of_span(&mut otel, settings.limits.attributes));
        span.extensions_mut().insert(otel);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(otel) = extensions.get_mut::<OtelSpan>() {
            values.record(&mut Fields::of_span(otel, self.settings.limits.attributes));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (Some(span), Some(follows)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(cx) = follows
            .extensions()
            .get::<OtelSpan>()
            .map(OtelSpan::span_context)
        else {
            return;
        };
        if let Some(otel) = span.extensions_mut().get_mut::<OtelSpan>() {
            otel.add_link(&cx, &self.settings);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Only warnings and errors: the access line of every request is in the logs,
        // and as span events it would double every request's export for nothing.
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(otel) = extensions.get_mut::<OtelSpan>() else {
            return;
        };
        if !otel.sampled {
            return;
        }
        if level == tracing::Level::ERROR && otel.record.status == Status::Unset {
            otel.record.status = Status::error("");
        }
        let limits = self.settings.limits;
        if otel.events >= limits.events {
            otel.record.dropped_events += 1;
            return;
        }
        otel.events += 1;
        let (mut name, mut attributes) = (String::new(), Vec::with_capacity(128));
        otlp_traces::attr_str(&mut attributes, EVENT_ATTRIBUTES, "level", level.as_str());
        let target = event.metadata().target();
        otlp_traces::attr_str(&mut attributes, EVENT_ATTRIBUTES, "target", target);
        let (mut count, mut dropped) = (2, 0);
        event.record(&mut Fields {
            buf: &mut attributes,
            field: EVENT_ATTRIBUTES,
            count: &mut count,
            dropped: &mut dropped,
            limit: limits.attributes_per_event,
            special: Special::Event { name: &mut name },
        });
        let name = if name.is_empty() {
            event.metadata().name()
        } else {
            &name
        };
        let events = &mut otel.record.events;
        otlp_traces::event(events, SystemTime::now(), name, &attributes, dropped);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(mut otel) = span.extensions_mut().remove::<OtelSpan>() else {
            return;
        };
        if otel.sampled {
            otel.record.end = SystemTime::now();
            self.encoder.end(&otel.record);
        }
    }
}

/// Writes a span's or an event's fields: the ones with a meaning of their own (a span's
/// `otel.*`, an event's `message`) where they belong, the others as `KeyValue`s (field
/// number `field`) into `buf`, up to `limit` of them, counting those dropped.
struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    field: u32,
    count: &'a mut u32,
    dropped: &'a mut u32,
    limit: u32,
    special: Special<'a>,
}

enum Special<'a> {
    Span {
        name: &'a mut Cow<'static, str>,
        kind: &'a mut SpanKind,
        status: &'a mut Status,
    },
    Event {
        name: &'a mut String,
    },
}

impl<'a> Fields<'a> {
    fn of_span(otel: &'a mut OtelSpan, limit: u32) -> Self {
        let record = &mut otel.record;
        Self {
            buf: &mut record.attributes,
            field: SPAN_ATTRIBUTES,
            count: &mut otel.attributes,
            dropped: &mut record.dropped_attributes,
            limit,
            special: Special::Span {
                name: &mut record.name,
                kind: &mut record.kind,
                status: &mut record.status,
            },
        }
    }

    /// Room for one more attribute? Counts it, or counts it dropped.
    fn room(&mut self) -> bool {
        if *self.count >= self.limit {
            *self.dropped += 1;
            return false;
        }
        *self.count += 1;
        true
    }

    /// Takes a field with a meaning of its own; `false` for any other.
    fn special(&mut self, key: &str, value: &str) -> bool {
        match &mut self.special {
            Special::Event { name } if key == "message" => value.clone_into(name),
            Special::Span { name, kind, status } if key.starts_with("otel.") => match key {
                "otel.name" => **name = Cow::Owned(value.to_owned()),
                "otel.kind" => {
                    **kind = match value {
                        "server" => SpanKind::Server,
                        "client" => SpanKind::Client,
                        "producer" => SpanKind::Producer,
                        "consumer" => SpanKind::Consumer,
                        _ => SpanKind::Internal,
                    };
                }
                "otel.status_code" => {
                    if value.eq_ignore_ascii_case("ok") {
                        **status = Status::Ok;
                    } else if !value.eq_ignore_ascii_case("error") {
                        **status = Status::Unset;
                    } else if !matches!(status, Status::Error { .. }) {
                        // An error keeps the description it may already have.
                        **status = Status::error("");
                    }
                }
                "otel.status_description" => **status = Status::error(value.to_owned()),
                _ => {}
            },
            _ => return false,
        }
        true
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let key = field.name();
        if !self.special(key, value) && self.room() {
            otlp_traces::attr_str(self.buf, self.field, key, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.room() {
            otlp_traces::attr_i64(self.buf, self.field, field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.record_i64(field, value),
            Err(_) => self.record_str(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.room() {
            otlp_traces::attr_f64(self.buf, self.field, field.name(), value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.room() {
            otlp_traces::attr_bool(self.buf, self.field, field.name(), value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = error_chain(value);
        self.record_str(field, &chain);
        // An event's error is also an exception, as the semantic conventions name it.
        if matches!(self.special, Special::Event { .. }) && self.room() {
            otlp_traces::attr_str(self.buf, self.field, "exception.message", &chain);
        }
    }
}

/// An error and its causes, as `{:#}` prints an `anyhow` error.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The samplers of `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sampler {
    /// `always_on`, `always_off`, `traceidratio`: the same for every span.
    Root(Root),
    /// `parentbased_*`: the parent's decision, or for a root span the inner sampler's.
    ParentBased(Root),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    AlwaysOn,
    AlwaysOff,
    /// Sampled when the trace id's lower 63 bits fall under the ratio (the SDK's rule,
    /// so every service keeps or drops the same traces).
    Ratio(f64),
}

impl Root {
    fn sample(self, trace_id: TraceId) -> bool {
        match self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            Self::Ratio(ratio) if ratio >= 1.0 => true,
            Self::Ratio(ratio) => {
                let bound = (ratio.max(0.0) * (1_u64 << 63) as f64) as u64;
                let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or([0; 8]));
                (low >> 1) < bound
            }
        }
    }
}

impl Sampler {
    /// Whether a span is sampled; `parent` is its parent's decision, `None` for a root.
    fn sample(self, parent: Option<bool>, trace_id: TraceId) -> bool {
        match (self, parent) {
            (Self::ParentBased(_), Some(parent)) => parent,
            (Self::ParentBased(root) | Self::Root(root), _) => root.sample(trace_id),
        }
    }

    fn from_env() -> Self {
        Self::parse(
            std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
        )
    }

    /// As the SDK reads the variables: unknown samplers fall back to
    /// `parentbased_always_on`, a missing or bad ratio to 1.0; each with a warning.
    fn parse(name: Option<&str>, arg: Option<&str>) -> Self {
        let ratio = || match arg.and_then(|a| a.trim().parse::<f64>().ok()) {
            Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            _ => {
                eprintln!(
                    "telemetry: OTEL_TRACES_SAMPLER_ARG {arg:?} is not a ratio between 0 and 1; \
                     sampling every trace"
                );
                1.0
            }
        };
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None | Some("parentbased_always_on") => Self::ParentBased(Root::AlwaysOn),
            Some("always_on") => Self::Root(Root::AlwaysOn),
            Some("always_off") => Self::Root(Root::AlwaysOff),
            Some("traceidratio") => Self::Root(Root::Ratio(ratio())),
            Some("parentbased_always_off") => Self::ParentBased(Root::AlwaysOff),
            Some("parentbased_traceidratio") => Self::ParentBased(Root::Ratio(ratio())),
            Some(other) => {
                eprintln!(
                    "telemetry: OTEL_TRACES_SAMPLER {other:?} is not supported; \
                     using parentbased_always_on"
                );
                Self::ParentBased(Root::AlwaysOn)
            }
        }
    }
}

/// The OpenTelemetry span limits (count limits only; attribute values are not cut).
#[derive(Debug, Clone, Copy)]
struct SpanLimits {
    attributes: u32,
    events: u32,
    links: u32,
    attributes_per_event: u32,
}

impl SpanLimits {
    fn from_env() -> Self {
        let var = |name: &str, default: u32| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        Self {
            attributes: var("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 128),
            events: var("OTEL_SPAN_EVENT_COUNT_LIMIT", 128),
            links: var("OTEL_SPAN_LINK_COUNT_LIMIT", 128),
            attributes_per_event: var("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", 128),
        }
    }
}

/// The OpenTelemetry side of a `tracing` span, for the code that makes the span: what
/// `tracing-opentelemetry`'s `OpenTelemetrySpanExt` offered, for the span layer here.
/// Without a traces endpoint (no span layer), or on a span that is disabled, these do
/// nothing and `context` is empty.
pub trait SpanExt {
    /// The span's context, with the caller's baggage: what outgoing calls propagate.
    fn context(&self) -> opentelemetry::Context;
    /// Makes the span continue the trace of the span in `cx` (a remote caller's), and
    /// carry `cx`'s baggage. Call it before the span is entered or has children.
    fn set_parent(&self, cx: opentelemetry::Context);
    /// Links the span to another span's context.
    fn add_link(&self, cx: SpanContext);
}

impl SpanExt for tracing::Span {
    fn context(&self) -> opentelemetry::Context {
        with_otel(self, |otel, _| otel.context()).unwrap_or_default()
    }

    fn set_parent(&self, cx: opentelemetry::Context) {
        with_otel(self, |otel, settings| otel.set_parent(cx, settings));
    }

    fn add_link(&self, cx: SpanContext) {
        with_otel(self, |otel, settings| otel.add_link(&cx, settings));
    }
}

/// The `traceparent` of the current span, `None` outside spans or without the layer.
pub fn current_traceparent() -> Option<String> {
    with_otel(&tracing::Span::current(), |otel, _| {
        crate::traceparent(&otel.span_context())
    })
}

/// Runs `f` on `span`'s [`OtelSpan`], found in the registry the span lives in, with
/// the span layer's settings.
fn with_otel<R>(span: &tracing::Span, f: impl FnOnce(&mut OtelSpan, &Settings) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let layer = dispatch.downcast_ref::<SpanLayer>()?;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        extensions
            .get_mut::<OtelSpan>()
            .map(|otel| f(otel, &layer.settings))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Context, KeyValue};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{Root, Sampler, Settings, SpanExt as _, SpanLayer, SpanLimits};
    use crate::otlp_traces::{BatchSpanEncoder, Limits, OtlpSender};
    use crate::receiver::{OtlpReceiver, Span};

    const LIMITS: SpanLimits = SpanLimits {
        attributes: 128,
        events: 128,
        links: 128,
        attributes_per_event: 128,
    };

    /// The spans `work` makes under the span layer with `settings`, as a collector
    /// receives them.
    fn exported(settings: Settings, work: impl FnOnce()) -> Vec<Span> {
        let receiver = OtlpReceiver::start();
        let client: Arc<dyn opentelemetry_http::HttpClient> =
            Arc::new(crate::LazyClient::new(Duration::from_secs(5)));
        let sender = OtlpSender::new(
            client,
            &format!("{}/v1/traces", receiver.endpoint()),
            http::HeaderMap::new(),
            Duration::from_secs(5),
        )
        .expect("sender");
        let limits = Limits {
            schedule_delay: Duration::from_secs(3600),
            max_queue: 1000,
            max_batch: 1000,
        };
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "spans-test")])
            .build();
        let encoder =
            Arc::new(BatchSpanEncoder::start(sender, limits, &resource).expect("encoder"));
        let subscriber = tracing_subscriber::registry()
            .with(SpanLayer::with_settings(encoder.clone(), settings));
        tracing::subscriber::with_default(subscriber, work);
        encoder.shutdown().expect("exported");
        receiver.spans()
    }

    fn remote(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new()
            .with_remote_span_context(SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
                SpanId::from(0x00f0_67aa_0ba9_02b7),
                flags,
                true,
                "vendor=1".parse::<TraceState>().expect("trace state"),
            ))
            .with_baggage([KeyValue::new("tenant", "t1")])
    }

    fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    }

    #[test]
    fn a_request_becomes_one_trace_with_its_fields_events_and_links() {
        let always = Settings {
            sampler: Sampler::ParentBased(Root::AlwaysOn),
            limits: LIMITS,
        };
        let mut outgoing = None;
        let spans = exported(always, || {
            let server = tracing::info_span!(
                "HTTP request",
                otel.name = "GET /api/messages",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = %"GET",
                http.response.status_code = tracing::field::Empty,
            );
            server.set_parent(remote(true));
            server.in_scope(|| {
                let query = tracing::info_span!(
                    "query",
                    otel.name = format!("SELECT {}", "messages"),
                    otel.kind = "client",
                    rows = 20_u64,
                    ratio = 0.5,
                    cached = false,
                    negative = -3_i64,
                    huge = u64::MAX,
                );
                query.in_scope(|| {
                    tracing::info!("not an event: below warnings");
                    tracing::warn!(attempt = 2, "slow query");
                    tracing::error!("query failed");
                });
                outgoing = Some(query.context());
                let other = tracing::info_span!("other");
                other.add_link(query.context().span().span_context().clone());
            });
            server.record("http.response.status_code", 200);
            server.record("otel.status_code", "error");
        });
        assert_eq!(spans.len(), 3, "{spans:#?}");
        let server = find(&spans, "GET /api/messages");
        let query = find(&spans, "SELECT messages");
        let other = find(&spans, "other");
        // The caller's trace, continued.
        for span in [server, query, other] {
            assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(span.service, "spans-test");
        }
        assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(query.parent_span_id, server.span_id);
        assert_eq!(other.parent_span_id, server.span_id);
        assert_eq!((server.kind, query.kind, other.kind), (2, 3, 1));
        // Fields as attributes, recorded late ones included; `otel.*` ones not.
        assert_eq!(server.attr("http.request.method"), "GET");
        assert_eq!(server.attr("http.response.status_code"), "200");
        assert!(!server.attributes.keys().any(|k| k.starts_with("otel.")));
        assert_eq!(server.status, 2);
        assert_eq!(query.attr("rows"), "20");
        assert_eq!(query.attr("ratio"), "0.5");
        assert_eq!(query.attr("cached"), "false");
        assert_eq!(query.attr("negative"), "-3");
        assert_eq!(query.attr("huge"), u64::MAX.to_string());
        // Warnings and errors as events, an error marking the span failed.
        assert_eq!(query.events, ["slow query", "query failed"]);
        assert_eq!(query.status, 2);
        assert_eq!(
            other.links,
            [(query.trace_id.clone(), query.span_id.clone())]
        );
        // The context an outgoing call propagates: the span's ids, the caller's trace
        // state and baggage.
        let outgoing = outgoing.expect("context");
        let cx = outgoing.span().span_context().clone();
        assert_eq!(cx.span_id().to_string(), query.span_id);
        assert!(cx.is_sampled());
        assert_eq!(cx.trace_state().header(), "vendor=1");
        assert_eq!(
            outgoing.baggage().get("tenant").map(ToString::to_string),
            Some("t1".to_owned())
        );
    }

    #[test]
    fn unsampled_traces_propagate_but_export_nothing() {
        let ratio_zero = Settings {
            sampler: Sampler::ParentBased(Root::Ratio(0.0)),
            limits: LIMITS,
        };
        let mut unsampled = None;
        let spans = exported(ratio_zero, || {
            // A new trace: not sampled at a ratio of 0, but it has ids to propagate.
            let root = tracing::info_span!("root");
            let child = root.in_scope(|| tracing::info_span!("child"));
            unsampled = Some(child.context().span().span_context().clone());
            // A caller that sampled: the root follows it, fields recorded before
            // `set_parent` included, and so do its children.
            let server = tracing::info_span!("server", http.route = "/api");
            server.set_parent(remote(true));
            server.in_scope(|| drop(tracing::info_span!("query")));
            // A span in an unsampled trace joining a sampled one (as a Kafka send joins
            // the trace of the request that made its event): exported, with its fields.
            root.in_scope(|| {
                let send = tracing::info_span!("send", messaging.system = "kafka");
                send.set_parent(remote(true));
            });
            // A caller that did not: nothing.
            let dropped = tracing::info_span!("dropped");
            dropped.set_parent(remote(false));
            dropped.in_scope(|| drop(tracing::info_span!("dropped child")));
        });
        let unsampled = unsampled.expect("context");
        assert!(unsampled.is_valid() && !unsampled.is_sampled());
        let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["query", "send", "server"]);
        assert_eq!(find(&spans, "server").attr("http.route"), "/api");
        assert_eq!(find(&spans, "send").attr("messaging.system"), "kafka");
    }

    #[test]
    fn attributes_events_and_links_stop_at_their_limits() {
        let small = Settings {
            sampler: Sampler::ParentBased(Root::AlwaysOn),
            limits: SpanLimits {
                attributes: 2,
                events: 1,
                links: 1,
                attributes_per_event: 3,
            },
        };
        let spans = exported(small, || {
            let span =
                tracing::info_span!("limited", a = 1, b = 2, c = 3, d = tracing::field::Empty);
            span.record("d", 4);
            span.in_scope(|| {
                tracing::warn!(x = 1, y = 2, "first");
                tracing::warn!("second");
            });
            let cx = span.context().span().span_context().clone();
            span.add_link(cx.clone());
            span.add_link(cx);
        });
        let span = find(&spans, "limited");
        assert_eq!(span.attributes.len(), 2, "{span:#?}");
        assert_eq!(span.events, ["first"]);
        assert_eq!(span.links.len(), 1);
    }

    #[test]
    fn samplers_are_read_as_the_sdk_reads_them() {
        let parse = Sampler::parse;
        assert_eq!(parse(None, None), Sampler::ParentBased(Root::AlwaysOn));
        assert_eq!(
            parse(Some("parentbased_traceidratio"), Some("0.2")),
            Sampler::ParentBased(Root::Ratio(0.2))
        );
        assert_eq!(
            parse(Some("traceidratio"), Some("x")),
            Sampler::Root(Root::Ratio(1.0))
        );
        assert_eq!(
            parse(Some("parentbased_always_off"), None),
            Sampler::ParentBased(Root::AlwaysOff)
        );
        assert_eq!(
            parse(Some("always_off"), None),
            Sampler::Root(Root::AlwaysOff)
        );
        assert_eq!(
            parse(Some("xray"), None),
            Sampler::ParentBased(Root::AlwaysOn)
        );
    }

    #[test]
    fn parent_based_sampling_follows_the_parent_and_ratios_the_roots() {
        let sampler = Sampler::ParentBased(Root::Ratio(0.25));
        // The SDK's rule: the trace id's low 63 bits against ratio * 2^63.
        let low = |v: u64| TraceId::from(u128::from(v));
        assert!(sampler.sample(None, low(0)));
        assert!(sampler.sample(None, low((1 << 62) - 2)));
        assert!(!sampler.sample(None, low(1 << 62)));
        assert!(sampler.sample(Some(true), low(u64::MAX)));
        assert!(!sampler.sample(Some(false), low(0)));
        // A quarter of random trace ids, give or take.
        let kept = (0..10_000_u64)
            .filter(|i| {
                sampler.sample(
                    None,
                    TraceId::from(u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                )
            })
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept}");
        // Not parent-based: the same rule for children.
        let ratio = Sampler::Root(Root::Ratio(0.0));
        assert!(!ratio.sample(Some(true), low(0)));
        assert!(Sampler::Root(Root::AlwaysOn).sample(Some(false), low(0)));
    }
}
