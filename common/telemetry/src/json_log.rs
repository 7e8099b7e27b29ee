//! The stdout log format: one JSON object per line, which Loki (or any collector tailing
//! container logs) parses without configuration:
//!
//! `{"timestamp":"2026-11-27T12:00:00.123456Z","level":"INFO","message":"...",
//!   "target":"...","service.name":"...","trace_id":"...","span_id":"...", <fields>}`
//!
//! `trace_id`/`span_id` are those of the OpenTelemetry span current when the event was
//! logged (absent outside spans), so a log line leads to its trace and back.

use std::fmt::Write as _;
use std::io::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Writes each event as one JSON line on stdout.
pub(super) struct JsonLog {
    service: String,
}

impl JsonLog {
    pub(super) fn new(service: String) -> Self {
        Self { service }
    }
}

impl<S: Subscriber> Layer<S> for JsonLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_line(&self.service, event);
        // One write per line, under stdout's lock, so concurrent lines never interleave.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

fn format_line(service: &str, event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let timestamp = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut line = String::with_capacity(256);
    line.push_str("{\"timestamp\":");
    push_json(&mut line, &timestamp);
    line.push_str(",\"level\":");
    push_json(&mut line, meta.level().as_str());
    line.push_str(",\"message\":");
    push_json(&mut line, fields.message.as_deref().unwrap_or_default());
    line.push_str(",\"target\":");
    push_json(&mut line, meta.target());
    line.push_str(",\"service.name\":");
    push_json(&mut line, service);
    // The current span's ids, or with spans off the task's light trace context: a
    // `traceparent` is `00-{trace_id}-{span_id}-{flags}`.
    if let Some(traceparent) = super::current_traceparent() {
        let _ = write!(
            line,
            ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
            &traceparent[3..35],
            &traceparent[36..52]
        );
    }
    for (name, value) in fields.rest {
        line.push(',');
        push_json(&mut line, name);
        line.push(':');
        line.push_str(&value);
    }
    line.push_str("}\n");
    line
}

fn push_json(out: &mut String, value: &str) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// An event's fields: `message`, and the rest as (name, JSON text) in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Fields {
    fn push(&mut self, field: &Field, json: String) {
        self.rest.push((field.name(), json));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.push(field, serde_json::to_string(value).unwrap_or_default());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, serde_json::to_string(&value).unwrap_or_default());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, as `{:#}` prints an anyhow error.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.record_str(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Captures formatted lines instead of writing them to stdout.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let line = format_line("svc", event);
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn a_line_has_every_field_in_order() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                count = 3,
                ok = true,
                ratio = 0.5,
                name = "a\"b",
                "hello {}",
                "world"
            );
        });
        let lines = lines.lock().unwrap();
        let line = &lines[0];
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["message"], "hello world");
        assert_eq!(value["service.name"], "svc");
        assert_eq!(value["count"], 3);
        assert_eq!(value["ok"], true);
        assert_eq!(value["ratio"], 0.5);
        assert_eq!(value["name"], "a\"b");
        assert!(value.get("trace_id").is_none(), "no span, no trace id");
        let timestamp = value["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with('Z'), "UTC: {timestamp}");
        OffsetDateTime::parse(timestamp, &Rfc3339).unwrap();
        let keys: Vec<&str> = line
            .trim_start_matches('{')
            .split(",\"")
            .map(|k| k.trim_matches('"').split('"').next().unwrap())
            .collect();
        assert_eq!(
            &keys[..5],
            ["timestamp", "level", "message", "target", "service.name"]
        );
    }

    #[test]
    fn errors_carry_their_cause_chain() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        let err = std::io::Error::other(anyhow::anyhow!("disk full"));
        let err: &(dyn std::error::Error + 'static) = &err;
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(error = err, "write failed");
        });
        let value: serde_json::Value = serde_json::from_str(&lines.lock().unwrap()[0]).unwrap();
        assert_eq!(value["error"], "disk full");
    }
}
