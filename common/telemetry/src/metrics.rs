//! The metrics every function reports (OTLP, through the global meter provider). Without
//! a collector the provider is a no-op and recording costs a function call.
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `http.server.request.duration` (s) | histogram | `http.request.method`, `http.route`, `http.response.status_code` |
//! | `db.client.operation.duration` (s) | histogram | `db.system.name`, `db.operation.name`, `db.collection.name` |
//! | `missive.events.published` | counter | `messaging.destination.name`, `cloudevents.event_type` |
//! | `missive.events.consumed` / `.retried` / `.dead_lettered` | counter | `missive.sink` |
//! | `missive.events.lag` (s) | histogram | `cloudevents.event_type` (event `time` to handling) |
//! | `missive.outbox.backlog` | gauge | (unsent outbox rows the relay saw) |
//! | `missive.session.lookups` | counter | `missive.result` = `hit` or `miss` |
//! | `missive.signups` / `missive.logins` / `missive.messages.created` | counter | |
//! | `missive.process.start_to_ready` (s) | gauge | (process start to listening) |

use std::sync::OnceLock;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

/// The instruments, created on first use from the global meter provider.
pub struct Metrics {
    /// `http.server.request.duration`.
    pub http_duration: Histogram<f64>,
    /// `db.client.operation.duration`.
    pub db_duration: Histogram<f64>,
    /// Events handed to the transport.
    pub events_published: Counter<u64>,
    /// Events an event function finished (2xx).
    pub events_consumed: Counter<u64>,
    /// Event time to the start of its handling.
    pub events_lag: Histogram<f64>,
    /// Deliveries retried.
    pub events_retried: Counter<u64>,
    /// Events sent to the dead-letter topic.
    pub events_dead_lettered: Counter<u64>,
    /// Unsent outbox rows.
    pub outbox_backlog: Gauge<u64>,
    /// Session lookups by outcome.
    pub session_lookups: Counter<u64>,
    /// New users.
    pub signups: Counter<u64>,
    /// Successful logins.
    pub logins: Counter<u64>,
    /// Messages stored (HTTP and ingested).
    pub messages_created: Counter<u64>,
    /// Process start to listening.
    pub start_to_ready: Gauge<f64>,
}

/// The process's instruments.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("missive");
        // Buckets for sub-millisecond to multi-second calls (the default starts at 5 s
        // granularity, useless for an API answering in microseconds).
        let seconds = vec![
            0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            5.0, 10.0,
        ];
        Metrics {
            http_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(seconds.clone())
                .build(),
            db_duration: meter
                .f64_histogram("db.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of database client operations.")
                .with_boundaries(seconds)
                .build(),
            events_published: meter
                .u64_counter("missive.events.published")
                .with_description("Events handed to the event transport.")
                .build(),
            events_consumed: meter
                .u64_counter("missive.events.consumed")
                .with_description("Events delivered to an event function and accepted.")
                .build(),
            events_lag: meter
                .f64_histogram("missive.events.lag")
                .with_unit("s")
                .with_description(
                    "Time from an event's `time` to an event function starting on it.",
                )
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0,
                ])
                .build(),
            events_retried: meter
                .u64_counter("missive.events.retried")
                .with_description("Event deliveries retried after a retryable answer.")
                .build(),
            events_dead_lettered: meter
                .u64_counter("missive.events.dead_lettered")
                .with_description("Events sent to the dead-letter topic.")
                .build(),
            outbox_backlog: meter
                .u64_gauge("missive.outbox.backlog")
                .with_description("Outbox rows not yet published, as the relay last saw.")
                .build(),
            session_lookups: meter
                .u64_counter("missive.session.lookups")
                .with_description("Session lookups, by result (hit or miss).")
                .build(),
            signups: meter
                .u64_counter("missive.signups")
                .with_description("Users registered.")
                .build(),
            logins: meter
                .u64_counter("missive.logins")
                .with_description("Successful logins.")
                .build(),
            messages_created: meter
                .u64_counter("missive.messages.created")
                .with_description("Messages stored.")
                .build(),
            start_to_ready: meter
                .f64_gauge("missive.process.start_to_ready")
                .with_unit("s")
                .with_description("Time from process start to accepting connections.")
                .build(),
        }
    })
}

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Remembers when the process started (the first call wins); called first thing in `main`.
pub(crate) fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// Records start-to-ready once the listener is bound, and returns it.
pub fn record_ready() -> std::time::Duration {
    let elapsed = PROCESS_START.get_or_init(Instant::now).elapsed();
    get().start_to_ready.record(elapsed.as_secs_f64(), &[]);
    elapsed
}

/// Counts a session lookup.
pub fn session_lookup(hit: bool) {
    get().session_lookups.add(
        1,
        &[KeyValue::new(
            "missive.result",
            if hit { "hit" } else { "miss" },
        )],
    );
}
