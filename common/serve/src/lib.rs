//! The Knative runtime contract, implemented once for every function.
//!
//! Contract: <https://github.com/knative/specs/blob/main/specs/serving/runtime-contract.md>
//! - listen on `$PORT` (HTTP/1.1 and h2c on the same port);
//! - answer liveness (`/healthz`) and readiness (`/readyz`) probes;
//! - on SIGTERM stop accepting, drain in-flight requests within a grace period, exit 0.
//!
//! Also here: the request limits every function shares (body size, time, panics), the
//! `Content-Type` rule that, with `SameSite=Lax` cookies, is our CSRF defence, and the
//! error shape every answer uses ([`ApiError`]).
//!
//! This crate knows no app state and no backend: a function gives it a router, its
//! [`Limits`] and its [`Readiness`] checks. `web`, which has no backend, uses it alone.
//!
//! # Layout
//! - this file: [`run`] (the whole runtime around a built app), [`app`] and
//!   [`observed`] (the layers), [`serve_until`], [`bind`], [`cancel_on_signal`].
//! - [`error`]: [`ApiError`], the one error type handlers return, and its JSON shape.
//! - [`extract`]: request extractors that reject in that shape.
//! - `idle`: the header-read timeout (a watchdog per connection).

pub mod error;
pub mod extract;
mod idle;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorBody, ErrorDetail, error_response};
pub use extract::{ApiJson, ApiQuery};

/// What [`run`] serves: built by the binary, served by the contract.
pub struct Serving {
    /// Bound to `$PORT`.
    pub listener: TcpListener,
    /// The app, with whatever layers it needs ([`app`] or [`observed`]).
    pub app: Router,
    /// Cancelled on SIGTERM/SIGINT (long-lived responses end with it).
    pub shutdown: CancellationToken,
    /// How long in-flight requests may drain after the signal.
    pub grace: Duration,
    /// Runs after draining: close pools, so MariaDB sees a clean disconnect.
    pub on_stop: Option<BoxFuture<'static, ()>>,
    /// Connection limits of the server.
    pub connections: ConnectionLimits,
}

/// What one instance lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; one more is answered 503 `overloaded` and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (the first on a connection, and
    /// each next one on a kept-alive connection); then, within half as long again, the
    /// connection is closed. A client that opens connections and trickles bytes holds
    /// nothing for long.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The runtime contract around any app: telemetry, a multi-threaded runtime, signal
/// handlers registered before readiness is announced, serving until SIGTERM, draining,
/// flushing telemetry, and exit status 0 or 1 with the cause on stderr.
pub fn run(
    name: &'static str,
    log_level: &str,
    build: impl Future<Output = anyhow::Result<Serving>>,
) -> ExitCode {
    let telemetry = missive_telemetry::init(name, log_level);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| {
            runtime.block_on(async move {
                let serving = build.await?;
                cancel_on_signal(serving.shutdown.clone())?;
                let addr = serving.listener.local_addr()?;
                let ready = missive_telemetry::metrics::record_ready();
                tracing::info!(function = name, %addr, start_to_ready_ms = ready.as_secs_f64() * 1e3, "serving");
                serve_until(serving).await
            })
        });
    // The runtime is gone; export what is still buffered before the process exits.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "function failed");
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `0.0.0.0:port`, as the runtime contract asks (port 0 picks a free one; read it
/// back from the listener).
pub async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    bind_on(Ipv4Addr::UNSPECIFIED, port).await
}

/// Binds `ip:port`.
pub async fn bind_on(ip: Ipv4Addr, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding {ip}:{port}"))
}

/// The limits every function's requests share (from the function's configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Time a request may take before it is answered with 503 `timeout`.
    pub request_timeout: Duration,
    /// Origins (`https://host[:port]`) a browser may send state-changing API requests
    /// from. Empty: only the request's own `Host`. A request with another `Origin` gets
    /// 403 `cross_origin`: with `SameSite=Lax` cookies and the JSON content type, the
    /// second CSRF layer.
    pub allowed_origins: Vec<String>,
    /// Send `Strict-Transport-Security` (served over HTTPS only).
    pub hsts: bool,
}

/// One readiness check: a name for the log and the 503's message, and the check.
pub type Check = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// What `/readyz` checks, asked afresh on every probe: the backends a function uses.
pub type Readiness = Arc<dyn Fn() -> Vec<Check> + Send + Sync>;

/// Adds the probes, limits and error shapes of the runtime contract to a function's
/// routes. `missive dev` applies it once around all routers merged.
pub fn app(routes: Router, limits: Limits, readiness: Readiness) -> Router {
    let timeout = limits.request_timeout;
    let origins: Arc<[String]> = limits.allowed_origins.clone().into();
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    // The content-type check runs only once a route and method matched (`route_layer`), so
    // a path that does not exist is 404 and a method it does not serve is 405 with
    // `Allow`, whatever the request's body or type.
    let routes = routes
        .merge(probes)
        .route_layer(middleware::from_fn_with_state(origins, check_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(timeout, req, next)
        }))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            limits.body_limit_bytes,
            size_the_413,
        ));
    let routes = if limits.hsts {
        with_hsts(routes)
    } else {
        routes
    };
    observed(routes)
}

/// Adds `Strict-Transport-Security` (one year) to every response: browsers then never
/// try the site over plain HTTP, where the cookie could be stripped or injected.
pub fn with_hsts(routes: Router) -> Router {
    routes.layer(middleware::map_response(
        |mut response: Response| async move {
            response.headers_mut().insert(
                header::STRICT_TRANSPORT_SECURITY,
                header::HeaderValue::from_static("max-age=31536000"),
            );
            response
        },
    ))
}

/// The outer layers every app gets, [`app`]'s or one without backends (the web app's):
/// a panic becomes a 500 in our error shape, and each request its server span, access
/// line and duration metric.
pub fn observed(routes: Router) -> Router {
    routes
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("handler panicked");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }))
        // Outermost, so the span and the access line see every answer, 413s and
        // timeouts included.
        .layer(middleware::from_fn(http_span))
}

/// Serves until `serving.shutdown` is cancelled, then drains in-flight requests for at
/// most the grace period and closes the database pool.
pub async fn serve_until(serving: Serving) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use tower::ServiceExt as _;

    let Serving {
        listener,
        app,
        shutdown,
        grace,
        on_stop,
        connections: limits,
    } = serving;
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper timer for HTTP/1: it would arm its 30 s header-read timeout, a timer per
    // request. `idle::watchdog` times headers out instead, off the request path.
    builder.http2().timer(TokioTimer::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little, as hyper does.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(idle::Activity::default());
        let watched = Arc::downgrade(&activity);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
                let in_flight = idle::InFlight::start(&activity);
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let response = app.clone().oneshot(req);
                async move {
                    let response = response.await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| idle::Watched {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let task = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
        tokio::spawn(idle::watchdog(
            watched,
            limits.header_read_timeout,
            task.abort_handle(),
        ));
    }
    // Stop accepting (new connections are refused by the kernel), then drain.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; exiting with requests in flight"),
    }
    if let Some(on_stop) = on_stop {
        on_stop.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Answers a connection over [`ConnectionLimits::max_connections`] with a 503 in our
/// shape and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    const BODY: &str = r#"{"error":{"code":"overloaded","message":"this instance has too many connections; try again shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::warn!("connection refused: at the connection limit");
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Cancels `token` on SIGTERM or SIGINT. The handlers are registered before this returns,
/// so call it before announcing readiness: a signal that arrives from then on drains
/// instead of killing the process. Once per process; later calls do nothing.
pub fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    static REGISTERED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if REGISTERED.set(()).is_err() {
        return Ok(());
    }
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
    Ok(())
}

/// Liveness: the process serves.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: every check of the function answers, each within 2 s, run side by side.
async fn readyz(State(readiness): State<Readiness>) -> Response {
    let limit = Duration::from_secs(2);
    let checks = readiness();
    let results = futures_util::future::join_all(
        checks
            .into_iter()
            .map(|(name, check)| async move { (name, tokio::time::timeout(limit, check).await) }),
    )
    .await;
    let mut failed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(check = name, error = format!("{err:#}"), "not ready");
                failed.push(name);
            }
            Err(_) => {
                tracing::warn!(check = name, "not ready: timed out");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        "ready".into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            &format!("unavailable: {}", failed.join(", ")),
        )
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    )
}

/// API requests that change state must say `Content-Type: application/json`. A
/// cross-site HTML form cannot send that type, so (with `SameSite=Lax`) it cannot forge
/// a request. DELETE has no body and cannot come from a form at all.
/// The request rules of a state-changing API request, in one layer (each layer costs
/// every request a boxed future):
/// - a body is sent as `application/json`, else 415: what a cross-site HTML form cannot
///   send (with `SameSite=Lax` cookies, the CSRF defence);
/// - a browser's `Origin` is the site's own (`allowed`, or the request's `Host` when
///   empty), else 403 `cross_origin`: the second CSRF layer. Requests without `Origin`
///   (not from a browser) pass.
async fn check_request(State(allowed): State<Arc<[String]>>, req: Request, next: Next) -> Response {
    let method = req.method();
    let api = req.uri().path().starts_with("/api/");
    let with_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if api && with_body {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return ApiError::UnsupportedMediaType.into_response();
        }
    }
    if api
        && mutating
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        let same = if allowed.is_empty() {
            // Same origin as the request: `Origin`'s host[:port] is the `Host` header.
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| Some(authority) == host)
        } else {
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        };
        if !same {
            return ApiError::Forbidden {
                code: "cross_origin",
                message: format!("requests from {origin} are not accepted here"),
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// The method as a `'static` str (no allocation per request for the common ones).
fn method_name(method: &Method) -> StringValue {
    match *method {
        Method::GET => "GET".into(),
        Method::POST => "POST".into(),
        Method::PUT => "PUT".into(),
        Method::DELETE => "DELETE".into(),
        Method::PATCH => "PATCH".into(),
        Method::HEAD => "HEAD".into(),
        Method::OPTIONS => "OPTIONS".into(),
        _ => "_OTHER".into(),
    }
}

/// The HTTP server span of a request (OpenTelemetry HTTP semantic conventions),
/// continuing the caller's trace from `traceparent` (or a binary-mode CloudEvent's
/// `ce-traceparent`), plus its access log line and duration metric. Probes get neither:
/// they would bury real traffic under a trace every few seconds per instance.
async fn http_span(req: Request, next: Next) -> Response {
    let mut response = http_span_inner(req, next).await;
    // On every answer, errors and panics included (this layer is the outermost, so no
    // layer of its own for them): no content sniffing (a JSON body is never run as a
    // script), and no full URLs in Referer to other sites.
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    response
}

async fn http_span_inner(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(req).await;
    }
    let method = req.method().clone();
    // Shared, not copied: it goes into the span, the metric and the access line.
    let route: Option<Arc<str>> = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Arc::from(p.as_str()));
    let parent = missive_telemetry::RemoteParent::from_headers(req.headers());
    // Built only when spans are exported: without a collector a request has no span,
    // only its trace context (for events and log lines).
    let span = |(req, method, route): &(Request, Method, Option<Arc<str>>)| {
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        };
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        tracing::info_span!(
            "HTTP request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = route.as_deref(),
            url.path = req.uri().path(),
            client.address = client,
            user_agent.original = user_agent,
            http.response.status_code = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        )
    };
    let input = (req, method, route);
    missive_telemetry::continue_trace(
        parent,
        input,
        span,
        |(req, method, route), span| async move {
            let started = Instant::now();
            let response = next.run(req).await;
            let latency = started.elapsed();
            let status = response.status().as_u16();
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "error");
                span.record("error.type", status.to_string());
            }
            span.in_scope(|| finish(&method, route, status, latency));
            response
        },
    )
    .await
}

/// The duration metric and the access line of a finished request.
fn finish(method: &Method, route: Option<Arc<str>>, status: u16, latency: Duration) {
    tracing::info!(
        method = %method,
        route = route.as_deref().unwrap_or("(unmatched)"),
        status,
        latency_ms = latency.as_secs_f64() * 1e3,
        "request"
    );
    missive_telemetry::metrics::get().http_duration.record(
        latency.as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method_name(method)),
            KeyValue::new(
                "http.route",
                route.map_or_else(|| StringValue::from(""), StringValue::from),
            ),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
}

async fn with_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Extractors know only that the limit was hit; fill in the configured size, and refuse
/// a declared `Content-Length` over it before reading anything.
async fn size_the_413(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    response
}
