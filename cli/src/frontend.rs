//! The browser app next to the API in `missive dev`: one port, the way the public host
//! routes it in production (`/api/...` to the functions, the rest to the `web` function).

use axum::Router;
use axum::extract::Request;
use tower::ServiceExt;

/// Routes every request: the API (and probes) to `api`, the rest to `site`.
pub fn with_site(api: Router, site: Router) -> Router {
    Router::new().fallback(move |req: Request| {
        let (api, site) = (api.clone(), site.clone());
        async move {
            let path = req.uri().path();
            let to_api = path.starts_with("/api/")
                || path == "/api"
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
