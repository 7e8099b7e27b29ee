//! Telemetry, set up by one call from each binary's `main`: JSON logs on stdout, and
//! OpenTelemetry traces, metrics and logs over OTLP/HTTP (protobuf) when a collector is
//! configured.
//!
//! Configured only by the standard OpenTelemetry variables:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_/_METRICS_/_LOGS_ENDPOINT`):
//!   unset means nothing is exported, no exporter thread runs and no span is built;
//! - `OTEL_EXPORTER_OTLP_HEADERS` (e.g. `authorization=Bearer%20...` for a remote collector),
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION`;
//! - `OTEL_SERVICE_NAME` (default: the function's name), `OTEL_RESOURCE_ATTRIBUTES`;
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`;
//!   `parentbased_traceidratio` keeps the caller's decision and samples new roots);
//! - `OTEL_SDK_DISABLED=true` turns export off whatever else is set.
//!
//! With a traces endpoint, spans are `tracing` spans that the span layer
//! ([`missive_otlp::SpanLayer`]) turns into OTLP spans. Without one, that layer is not
//! installed (spans cost nothing) and each request or event runs in a task-local
//! `traceparent` instead ([`in_light_context`]). Code does not ask which: it continues a
//! caller's trace with [`continue_trace`] and handles an event with [`handle_event`].
//! Either way the W3C trace context flows through HTTP calls and events, and every log
//! line of a request carries its `trace_id` and `span_id`.
//!
//! # Layout
//! - this file: [`init`] and [`Telemetry`], the current context
//!   ([`current_traceparent`], [`continue_trace`], [`join_trace`]) and propagation
//!   ([`context_from_headers`], [`inject_headers`]).
//! - `event`: [`handle_event`] and [`handling_span`], the consumer side of events.
//! - `json_log`: the JSON log line format on stdout.
//! - [`metrics`]: the instruments every function reports.

mod event;
mod json_log;
pub mod metrics;

pub use event::{handle_event, handling_span};
pub use missive_otlp::SpanExt;
use missive_otlp::{otlp_traces, spans};

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use missive_core::trace_context;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Level of the spans sent to OpenTelemetry (independent of the log level): every span
/// we create is INFO, so traces are whole even when logs show only warnings.
const SPAN_LEVEL: tracing::Level = tracing::Level::INFO;

/// Log records that must never be exported as OTLP logs (these targets and their
/// modules): the exporter's own HTTP client logging its requests would feed itself.
const EXPORT_LOOP_TARGETS: &[&str] = &[
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
];

/// The installed providers; flushed and shut down by [`Telemetry::shutdown`].
#[derive(Default)]
pub struct Telemetry {
    exporting: Option<Exporting>,
}

struct Exporting {
    /// The span exporter, when a traces endpoint is set: only then are spans built.
    spans: Option<Arc<otlp_traces::BatchSpanEncoder>>,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
}

impl Telemetry {
    /// Exports everything still buffered and stops the exporters. Blocking (the
    /// exporters' HTTP client is); called once when the process is about to exit, so a
    /// function that scales to zero loses none of its last spans.
    pub fn shutdown(self) {
        let Some(exporting) = self.exporting else {
            return;
        };
        // Each provider flushes its batch on shutdown; failures can only be reported to
        // stderr now, since logging itself is being shut down.
        for (signal, result) in [
            (
                "traces",
                exporting.spans.map_or(Ok(()), |spans| spans.shutdown()),
            ),
            (
                "metrics",
                exporting.meter.shutdown().map_err(|e| e.to_string()),
            ),
            (
                "logs",
                exporting.logger.shutdown().map_err(|e| e.to_string()),
            ),
        ] {
            if let Err(err) = result {
                eprintln!("telemetry: flushing {signal} failed: {err}");
            }
        }
    }
}

/// Set by the first [`init`].
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs logging and OpenTelemetry for the process. `service` is the default
/// `service.name` (a function's name, or `missive`); `log_level` the default filter when
/// `RUST_LOG` is unset. Safe to call more than once: later calls install nothing and
/// return an inert handle (tests rely on that).
pub fn init(service: &'static str, log_level: &str) -> Telemetry {
    metrics::mark_process_start();
    if INSTALLED.set(()).is_err() {
        return Telemetry::default();
    }
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let resource = resource(service);
    let service_name = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map_or_else(|| service.to_owned(), |v| v.to_string());
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(log_level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let stdout = json_log::JsonLog::new(service_name);

    let exporting = match export_settings() {
        Some(settings) => match Exporting::start(&settings, &resource) {
            Ok(exporting) => Some(exporting),
            Err(err) => {
                eprintln!("telemetry: not exporting: {err:#}");
                None
            }
        },
        None => None,
    };
    // Without a traces endpoint no span is built at all (see `spans_enabled`).
    let encoder = exporting.as_ref().and_then(|e| e.spans.clone());
    let _ = SPANS.set(encoder.is_some());
    let spans = encoder.map(spans::SpanLayer::new);
    let otlp_logs = exporting.as_ref().map(|e| {
        InSpanContext(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&e.logger),
        )
    });
    if let Some(e) = &exporting {
        global::set_meter_provider(e.meter.clone());
    }
    // One global filter and no per-layer filter: a per-layer filter costs a registry
    // look-up on every enter and exit of every span, and spans are entered on every poll
    // of the future they instrument. The span layer keeps only warnings and errors of
    // the events itself.
    let _ = tracing_subscriber::registry()
        .with(Select {
            logs: log_filter(),
            spans: spans.is_some(),
        })
        .with(spans)
        .with(stdout)
        .with(otlp_logs)
        .try_init();
    Telemetry { exporting }
}

/// The OTLP settings from the environment, or `None` when nothing is to be exported.
fn export_settings() -> Option<HashMap<&'static str, String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let signals = [
        ("traces", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ("metrics", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        ("logs", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
    ];
    let base = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    let mut endpoints = HashMap::new();
    for (signal, specific) in signals {
        // The base endpoint gets the signal's path appended; a per-signal one is used as
        // is (the OTLP exporter spec).
        if let Some(url) = var(specific) {
            endpoints.insert(signal, url);
        } else if let Some(base) = &base {
            endpoints.insert(
                signal,
                format!("{}/v1/{signal}", base.trim_end_matches('/')),
            );
        }
    }
    if !cfg!(feature = "otlp-tls") && endpoints.values().any(|url| url.starts_with("https:")) {
        eprintln!(
            "telemetry: not exporting: an https:// OTLP endpoint needs a build with \
             --features missive-telemetry/otlp-tls (or point at the in-cluster collector over http://)"
        );
        return None;
    }
    (!endpoints.is_empty()).then_some(endpoints)
}

impl Exporting {
    fn start(
        endpoints: &HashMap<&'static str, String>,
        resource: &Resource,
    ) -> anyhow::Result<Self> {
        // One HTTP client for the three exporters, built when first used.
        let client: Arc<dyn opentelemetry_http::HttpClient> = Arc::new(
            missive_otlp::LazyClient::new(timeout("OTEL_EXPORTER_OTLP_TIMEOUT")),
        );
        let endpoint = |signal: &str| endpoints.get(signal).cloned();

        let mut spans = None;
        if let Some(url) = endpoint("traces") {
            // Spans have a layer, processor and exporter of our own (see `spans` and
            // `otlp_traces`): they are most of what is exported, and built with
            // `tracing-opentelemetry`, the SDK's tracer and batch processor and
            // `opentelemetry-otlp`'s exporter, tracing cost about twice as much.
            if let Some(compression) = [
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ]
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .filter(|c| !c.is_empty() && c != "none")
            {
                anyhow::bail!("OTLP compression {compression:?} is not built in");
            }
            let sender = otlp_traces::OtlpSender::new(
                client.clone(),
                &url,
                otlp_traces::headers_from_env()?,
                timeout("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
            )?;
            spans = Some(Arc::new(otlp_traces::BatchSpanEncoder::start(
                sender,
                otlp_traces::Limits::from_env(),
                resource,
            )?));
        }
        let mut meter = SdkMeterProvider::builder().with_resource(resource.clone());
        if let Some(url) = endpoint("metrics") {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_shared_http_client(client.clone())
                .build()?;
            meter = meter.with_periodic_exporter(exporter);
        }
        let mut logger = SdkLoggerProvider::builder().with_resource(resource.clone());
        if let Some(url) = endpoint("logs") {
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_shared_http_client(client)
                .build()?;
            logger = logger.with_batch_exporter(exporter);
        }
        Ok(Self {
            spans,
            meter: meter.build(),
            logger: logger.build(),
        })
    }
}

/// An export's timeout from `var` (milliseconds), else from `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// else 10 s (the OTLP exporter specification).
fn timeout(var: &str) -> Duration {
    [var, "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// The resource every signal carries: `service.*`, and the Knative revision this process
/// is serving, so a trace or a log line points at the exact deployment.
fn resource(service: &'static str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", service),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.namespace", "missive"),
    ];
    // Knative's runtime contract sets these; the `faas.*` names are the semantic
    // conventions' names for the same things.
    for (var, keys) in [
        ("K_SERVICE", ["knative.service", "faas.name"].as_slice()),
        ("K_REVISION", &["knative.revision", "faas.version"]),
        ("K_CONFIGURATION", &["knative.configuration"]),
    ] {
        if let Ok(value) = std::env::var(var) {
            for key in keys {
                attributes.push(KeyValue::new(*key, value.clone()));
            }
        }
    }
    // OTEL_RESOURCE_ATTRIBUTES overrides the defaults, and OTEL_SERVICE_NAME overrides
    // both (the SDK specification's order).
    let mut builder = Resource::builder_empty()
        .with_attributes(attributes)
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_detector(Box::new(
            opentelemetry_sdk::resource::EnvResourceDetector::new(),
        ));
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// Runs `f` with the current tracing span's OpenTelemetry context made current (with
/// spans off, the task's light trace context), so that what reads
/// `opentelemetry::Context::current()`, the OTLP log bridge, sees it. Spans do not activate their context on enter (see `init`); a log
/// line, written far less often than spans are entered, pays for it instead.
pub(crate) fn with_span_context<R>(f: impl FnOnce() -> R) -> R {
    if !spans_enabled() {
        // No spans: the task's light trace context, if there is one.
        return match LIGHT_CONTEXT.try_with(|t| context_from_traceparent(t)) {
            Ok(cx) => {
                let _guard = cx.attach();
                f()
            }
            Err(_) => f(),
        };
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return f();
    }
    let _guard = span.context().attach();
    f()
}

/// Whether a log record's `target` is one of [`EXPORT_LOOP_TARGETS`] or inside one.
fn feeds_the_exporter(target: &str) -> bool {
    EXPORT_LOOP_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// A layer whose events are handled inside the current span's OpenTelemetry context.
struct InSpanContext<L>(L);

impl<S: tracing::Subscriber, L: tracing_subscriber::Layer<S>> tracing_subscriber::Layer<S>
    for InSpanContext<L>
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        // The exporter's own HTTP client logging its requests would feed itself.
        if feeds_the_exporter(event.metadata().target()) {
            return;
        }
        with_span_context(|| self.0.on_event(event, ctx));
    }
}

/// The process-wide filter: spans at [`SPAN_LEVEL`] only while they are exported (without
/// a collector no span is ever built), events as the log filter (`RUST_LOG`, else the
/// function's log level) allows. The log layers then take every event that gets through.
struct Select {
    logs: EnvFilter,
    spans: bool,
}

impl Select {
    fn span_enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        self.spans && *meta.level() <= SPAN_LEVEL
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Select {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.is_span() {
            return if self.span_enabled(meta) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            };
        }
        tracing_subscriber::Layer::<S>::register_callsite(&self.logs, meta)
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if meta.is_span() {
            return self.span_enabled(meta);
        }
        tracing_subscriber::Layer::<S>::enabled(&self.logs, meta, ctx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let logs = tracing_subscriber::Layer::<S>::max_level_hint(&self.logs);
        if self.spans {
            let spans = tracing::level_filters::LevelFilter::from_level(SPAN_LEVEL);
            Some(logs.map_or(spans, |logs| logs.max(spans)))
        } else {
            logs
        }
    }
}

/// The W3C trace context of the current span, as a `traceparent` value; `None` outside
/// any span (or when no tracing subscriber is installed).
pub fn current_traceparent() -> Option<String> {
    if !spans_enabled() {
        return LIGHT_CONTEXT.try_with(Clone::clone).ok();
    }
    spans::current_traceparent()
}

/// Whether spans are built (a traces endpoint is set). Otherwise no OpenTelemetry layer
/// is installed, spans cost nothing, and the trace context travels in a task-local
/// `traceparent` instead: enough for events to continue the request's trace and for log
/// lines to carry its ids. Private: callers use [`continue_trace`] and
/// [`handle_event`], which choose.
fn spans_enabled() -> bool {
    SPANS.get().copied().unwrap_or(false)
}

static SPANS: OnceLock<bool> = OnceLock::new();

tokio::task_local! {
    /// The trace context of the work in progress when spans are off.
    static LIGHT_CONTEXT: String;
}

/// Where an incoming request's trace continues: the caller's context from its headers
/// (W3C `traceparent`/`tracestate` and `baggage`, or a binary-mode CloudEvent's
/// `ce-traceparent`), read as cheaply as the process's telemetry allows.
pub struct RemoteParent(Parent);

enum Parent {
    /// Spans off: the `traceparent` value, if any.
    Light(Option<String>),
    /// Spans on: the extracted context.
    Context(opentelemetry::Context),
}

impl RemoteParent {
    /// The parent named by a request's headers.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        if spans_enabled() {
            return Self(Parent::Context(context_from_headers(headers)));
        }
        let traceparent = ["traceparent", "ce-traceparent"]
            .iter()
            .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
            .map(str::to_owned);
        Self(Parent::Light(traceparent))
    }
}

/// Runs `work` on `input` as the next unit of `parent`'s trace. With spans exported, in
/// the span `span` builds from `input` (a child of `parent`), which `work` also gets to
/// record on; without, `span` is never called, `work` gets a disabled span, and the unit
/// has a light trace context of its own.
pub async fn continue_trace<R, Fut: std::future::Future>(
    parent: RemoteParent,
    input: R,
    span: impl FnOnce(&R) -> tracing::Span,
    work: impl FnOnce(R, tracing::Span) -> Fut,
) -> Fut::Output {
    use tracing::Instrument as _;
    match parent.0 {
        Parent::Light(traceparent) => {
            in_light_context(traceparent.as_deref(), work(input, tracing::Span::none())).await
        }
        Parent::Context(cx) => {
            let span = span(&input);
            span.set_parent(cx);
            work(input, span.clone()).instrument(span).await
        }
    }
}

/// Runs `work` as a unit of the trace `parent` names (a `traceparent`, or none for a new
/// trace) when spans are off: it gets its own span id, which events and log lines carry.
/// With spans on it just runs `work` (its span does this job).
pub async fn in_light_context<F: std::future::Future>(parent: Option<&str>, work: F) -> F::Output {
    if spans_enabled() {
        return work.await;
    }
    let traceparent = parent
        .and_then(trace_context::child_of)
        .unwrap_or_else(trace_context::new_traceparent);
    LIGHT_CONTEXT.scope(traceparent, work).await
}

/// The `traceparent` of the span in `cx`, if it is valid.
pub fn traceparent_of(cx: &opentelemetry::Context) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| missive_otlp::traceparent(sc))
}

/// The caller's trace context from HTTP headers: W3C `traceparent`/`tracestate` and
/// `baggage`, or, for a binary-mode CloudEvent without them, `ce-traceparent`.
pub fn context_from_headers(headers: &http::HeaderMap) -> opentelemetry::Context {
    let extractor = opentelemetry_http::HeaderExtractor(headers);
    if headers.contains_key("traceparent") {
        return global::get_text_map_propagator(|p| p.extract(&extractor));
    }
    match headers.get("ce-traceparent").and_then(|v| v.to_str().ok()) {
        Some(traceparent) => context_from_traceparent(traceparent),
        None => opentelemetry::Context::new(),
    }
}

/// Puts a new (not yet entered) `span` in the trace an event belongs to. If the event's
/// `traceparent` names another trace than the current span's (a relay publishing an old
/// row, a structured event delivered without the header), the span becomes a child of the
/// event's context and links the current span; otherwise it stays the current span's
/// child.
pub fn join_trace(span: &tracing::Span, event_traceparent: Option<&str>) {
    use opentelemetry::trace::TraceContextExt as _;
    let Some(traceparent) = event_traceparent.filter(|t| trace_context::valid_traceparent(t))
    else {
        return;
    };
    let origin = context_from_traceparent(traceparent);
    let current = tracing::Span::current().context();
    let current_span = current.span();
    let caller = current_span.span_context();
    if caller.trace_id() != origin.span().span_context().trace_id() {
        span.set_parent(origin);
        if caller.is_valid() {
            span.add_link(caller.clone());
        }
    }
}

/// The remote context a `traceparent` value names (an empty context if it is invalid).
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// Writes `cx` into outgoing HTTP headers (`traceparent`, `tracestate`, `baggage`).
pub fn inject_headers(cx: &opentelemetry::Context, headers: &mut http::HeaderMap) {
    global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

#[cfg(test)]
mod tests {
    use super::feeds_the_exporter;

    #[test]
    fn the_exporters_own_logs_are_not_exported() {
        for target in [
            "hyper",
            "hyper_util::client::legacy",
            "reqwest::connect",
            "opentelemetry_sdk",
        ] {
            assert!(feeds_the_exporter(target), "{target}");
        }
        for target in ["missive", "missive_serve", "hyperion", "h2o", "sqlx::query"] {
            assert!(!feeds_the_exporter(target), "{target}");
        }
    }
}
