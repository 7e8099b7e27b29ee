//! `missive dev` answers only requests addressed to it by a loopback name.
//!
//! It listens on 127.0.0.1, but a web page can still reach it: DNS rebinding points an
//! attacker's name at 127.0.0.1, and the browser then sends that name as `Host`. A
//! request whose `Host` is not on the list (by default `localhost`, `127.0.0.1`, `[::1]`,
//! any port) is refused with 403 `host_not_allowed`.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use missive_serve::error_response;

/// The host names `missive dev` answers to when `DEV_ALLOWED_HOSTS` is unset.
pub const DEFAULT_HOSTS: &str = "localhost,127.0.0.1,[::1]";

/// `router`, refusing requests whose `Host` (or HTTP/2 `:authority`) is not one of
/// `hosts` (names without port; case-insensitive).
pub fn only_hosts(router: Router, hosts: Vec<String>) -> Router {
    let hosts: Vec<String> = hosts
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    router.layer(middleware::from_fn_with_state(
        std::sync::Arc::new(hosts),
        check_host,
    ))
}

async fn check_host(
    State(hosts): State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .map(without_port)
        .map(str::to_ascii_lowercase);
    match host {
        Some(host) if hosts.contains(&host) => next.run(request).await,
        _ => {
            tracing::warn!(host = ?request.headers().get(header::HOST), "request for another host refused");
            error_response(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this development server answers only to its loopback names (DEV_ALLOWED_HOSTS)",
            )
        }
    }
}

/// `name:port` → `name`; `[::1]:8080` → `[::1]`.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::without_port;

    #[test]
    fn ports_are_ignored() {
        assert_eq!(without_port("localhost:8080"), "localhost");
        assert_eq!(without_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
