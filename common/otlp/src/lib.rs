//! Spans for OpenTelemetry without `tracing-opentelemetry` and the SDK's tracer: a
//! `tracing` layer of our own ([`spans`]) records each span's fields as OTLP protobuf the
//! moment they are recorded, and an exporter of our own ([`otlp_traces`]) adds each ended
//! span to the pending batch and sends the batches over OTLP/HTTP.
//!
//! Why this exists, the figures it was measured by, the byte-for-byte test against
//! `opentelemetry-proto` + prost that gates every OpenTelemetry upgrade, and what would
//! make us go back to `tracing-opentelemetry`: docs/decisions/span-exporter.md.
//!
//! # Layout
//! - [`spans`]: [`SpanLayer`] and [`SpanExt`] (`context`, `set_parent`, `add_link`).
//! - [`otlp_traces`]: the protobuf encoder, the batch processor and [`OtlpSender`].
//! - [`LazyClient`]: the exporters' HTTP client, built on first export.
//! - `receiver` (feature `receiver`): an OTLP/HTTP receiver for tests.

pub mod otlp_traces;
#[cfg(any(test, feature = "receiver"))]
pub mod receiver;
pub mod spans;

pub use otlp_traces::{BatchSpanEncoder, Limits, OtlpSender, headers_from_env};
pub use spans::{SpanExt, SpanLayer};

use std::sync::OnceLock;
use std::time::Duration;

/// `sc` as a W3C `traceparent` value: the one place it is written.
pub fn traceparent(sc: &opentelemetry::trace::SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The exporters' HTTP client, built on the first export, on an exporter thread. Built at
/// start-up it cost ~5 ms of every cold start (TLS roots, the blocking client's own
/// runtime thread), before the first request could be served.
#[derive(Debug)]
pub struct LazyClient {
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
    /// Of one HTTP request.
    timeout: Duration,
}

impl LazyClient {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: OnceLock::new(),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for LazyClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.get_or_init(|| {
            // HTTPS to a remote collector: rustls with ring (no OpenSSL in the image). Also
            // needed when another crate turned reqwest's TLS on: building a client
            // without a provider panics. Another part of the process may have set one.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::blocking::Client::builder()
                .timeout(self.timeout)
                .build()
                .map_err(|e| format!("building the OTLP HTTP client: {e}"))
        });
        match client {
            Ok(client) => client.send_bytes(request).await,
            Err(err) => Err(err.clone().into()),
        }
    }
}
