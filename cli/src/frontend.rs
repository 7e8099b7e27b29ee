//! The browser app, served by `missive dev` at `/` next to the API, as production serves
//! it from its own origin path: the files of `frontend/dist` (`FRONTEND_DIR`), with
//!
//! - SPA fallback: any other path that is not the API gets `index.html`;
//! - hashed files under `/assets/` cached for a year (`immutable`: their names change
//!   when their content does), everything else `no-cache` (revalidated each time, so a
//!   new deploy is picked up at once);
//! - the `.br`/`.gz` files the build writes next to each asset, chosen by
//!   `Accept-Encoding`.
//!
//! When the app is not built, `/` says how to build it (and start-up logs it) instead of
//! answering a bare 404.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// How to build the app, for people who have not yet.
pub const BUILD_HINT: &str = "npm --prefix frontend ci && npm --prefix frontend run build";

/// Whether `dir` holds a built app.
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// The app in `dir`, or the build instructions if it is not built.
pub fn site(dir: PathBuf) -> Router {
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
}

/// Routes every request: the API (and probes, event endpoints) to `api`, the rest to
/// `site`.
pub fn with_site(api: Router, site: Router) -> Router {
    Router::new().fallback(move |req: Request| {
        let (api, site) = (api.clone(), site.clone());
        async move {
            let path = req.uri().path();
            let to_api = path.starts_with("/api/")
                || path == "/api"
                || path.starts_with("/_events/")
                || path == "/healthz"
                || path == "/readyz";
            let response = if to_api {
                api.oneshot(req).await
            } else {
                site.oneshot(req).await
            };
            match response {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
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
