//! The `web` function: the browser app's files (`frontend/dist`, `FRONTEND_DIR`) at `/`
//! of the public host, while the routing layer sends `/api/...` to the API functions.
//! `missive dev` serves the same router next to the API.
//!
//! - SPA fallback: any path that is not a file gets `index.html`;
//! - hashed files under `/assets/` cached for a year (`immutable`: their names change
//!   when their content does), everything else `no-cache` (revalidated each time, so a
//!   new deploy is picked up at once);
//! - the `.br`/`.gz` files the build writes next to each asset, chosen by
//!   `Accept-Encoding`.
//!
//! When the app is not built, `/` says how to build it (and start-up logs it) instead of
//! answering a bare 404, and `/readyz` says 503 so such a revision never takes traffic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, get_service};
use clap::Parser;
use tower_http::services::{ServeDir, ServeFile};

/// The function's name (Knative Service, `service.name`).
pub const NAME: &str = "web";

/// Settings of the web function, from the environment like every function's.
#[derive(Debug, Parser)]
#[command(about = "Serves the Missive browser app per the Knative runtime contract")]
pub struct WebConfig {
    /// Port to listen on (Knative sets `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// The built app (`index.html`, `assets/`); the image puts it at `/app/site`.
    #[arg(long, env = "FRONTEND_DIR", default_value = "/app/site")]
    pub frontend_dir: PathBuf,
    /// Log filter when `RUST_LOG` is unset.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// After SIGTERM, how long in-flight requests may run before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Served over HTTPS (the API's `COOKIE_SECURE`): responses carry
    /// `Strict-Transport-Security`.
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,
    /// The site's security headers.
    #[command(flatten)]
    pub site: SiteOptions,
}

/// What the site's security headers allow besides its own origin.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SiteOptions {
    /// More sources the app may connect to (Content-Security-Policy `connect-src`),
    /// comma-separated, beyond its own origin and the collector of `config.json`'s
    /// `otlpTracesUrl`.
    #[arg(long, env = "CSP_CONNECT_SRC", value_delimiter = ',')]
    pub csp_connect_src: Vec<String>,
    /// Send `Strict-Transport-Security` (set from `COOKIE_SECURE`, served over HTTPS).
    #[arg(skip)]
    pub hsts: bool,
}

/// The whole binary: serve [`router`] on `$PORT` until SIGTERM.
pub fn main() -> ExitCode {
    let mut config = WebConfig::parse();
    config.site.hsts = config.cookie_secure;
    missive_serve::run(NAME, &config.log_level.clone(), async move {
        if !is_built(&config.frontend_dir) {
            tracing::warn!(dir = %config.frontend_dir.display(), build = BUILD_HINT, "the web app is not built; not ready");
        }
        Ok(missive_serve::Serving {
            listener: missive_serve::bind(config.port).await?,
            app: router(config.frontend_dir, &config.site),
            shutdown: tokio_util::sync::CancellationToken::new(),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            on_stop: None,
            connections: missive_serve::ConnectionLimits::default(),
        })
    })
}

/// The site with its probes and the shared outer layers (span, access line, panics).
pub fn router(dir: PathBuf, options: &SiteOptions) -> Router {
    let built = is_built(&dir);
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if built {
                    "ready".into_response()
                } else {
                    missive_serve::error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        "unavailable: the web app is not built",
                    )
                }
            }),
        );
    // The public host sends /api paths that no function serves here; they get the API's
    // JSON 404, not the app's index.html. One of them is the API's own document, which
    // no function owns: the build puts it in the site (frontend/public/api/), the same
    // bytes `missive dev` serves.
    let document = dir.join("api/openapi.json");
    let mut api = Router::new()
        .route("/api", any(api_not_found))
        .route("/api/{*rest}", any(api_not_found));
    if document.is_file() {
        api = api.route(
            "/api/openapi.json",
            get_service(ServeFile::new(document)).layer(middleware::from_fn(cache_control)),
        );
    }
    let app = probes.merge(api).merge(site(dir, options));
    missive_serve::observed(if options.hsts {
        missive_serve::with_hsts(app)
    } else {
        app
    })
}

async fn api_not_found() -> missive_serve::ApiError {
    missive_serve::ApiError::NotFound
}

/// How to build the app, for people who have not yet.
pub const BUILD_HINT: &str = "npm --prefix frontend ci && npm --prefix frontend run build";

/// Whether `dir` holds a built app.
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// The app in `dir` (no probes), or the build instructions if it is not built.
pub fn site(dir: PathBuf, options: &SiteOptions) -> Router {
    let csp = content_security_policy(&dir, &options.csp_connect_src);
    if !is_built(&dir) {
        return Router::new().fallback(move |req: Request| {
            let dir = dir.clone();
            async move { not_built(req.uri().path(), &dir) }
        });
    }
    let index = ServeFile::new(dir.join("index.html"))
        .precompressed_br()
        .precompressed_gzip();
    let files = ServeDir::new(&dir)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(index);
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_control))
        .layer(middleware::map_response(move |mut response: Response| {
            let csp = csp.clone();
            async move {
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_SECURITY_POLICY, csp);
                // Also where the site is served without `missive_serve::observed`
                // (`missive dev` puts it beside the API).
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                headers.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("strict-origin-when-cross-origin"),
                );
                response
            }
        }))
}

/// The app's Content-Security-Policy: scripts, styles and everything else only from the
/// site itself (the build has no inline code), connections to the site and to the
/// browser-tracing collector that `config.json` names (plus `extra`), and no framing.
/// An injected `<script>` or a foreign `<iframe>` parent gets nothing.
pub fn content_security_policy(dir: &Path, extra: &[String]) -> HeaderValue {
    let collector = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|config| config["otlpTracesUrl"].as_str().and_then(origin_of));
    let mut connect = vec!["'self'".to_owned()];
    connect.extend(collector);
    connect.extend(
        extra
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {}; object-src 'none'; base-uri 'self'; form-action 'self'; \
         frame-ancestors 'none'",
        connect.join(" ")
    );
    HeaderValue::try_from(policy).unwrap_or_else(|_| {
        tracing::warn!(
            "CSP_CONNECT_SRC or config.json has characters a header cannot carry; ignoring them"
        );
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
             frame-ancestors 'none'",
        )
    })
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty() && !authority.contains(char::is_whitespace))
        .then(|| format!("{scheme}://{authority}"))
}

async fn cache_control(req: Request, next: Next) -> Response {
    let immutable = req.uri().path().starts_with("/assets/");
    let mut response = next.run(req).await;
    let value = if immutable && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    response
}

fn not_built(path: &str, dir: &Path) -> Response {
    if path != "/" && path != "/index.html" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Missive</title>\
         <h1>The web app is not built yet</h1>\
         <p>No <code>index.html</code> in <code>{}</code>. Build it (Node 20 and npm), then reload:</p>\
         <pre>{BUILD_HINT}</pre><p>The API is already served under <code>/api</code>.</p>",
        dir.display()
    );
    (StatusCode::SERVICE_UNAVAILABLE, Html(page)).into_response()
}
