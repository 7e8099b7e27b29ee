//! The app's HTTP edge: the session cookie, the [`CurrentUser`] extractor, the
//! [`ClientAddr`] extractor (who is asking, for rate limits), and the [`Event`]
//! extractor that reads a CloudEvent within the body limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use missive_adapters::events::http_binding;
use missive_core::domain::SessionId;
use missive_core::event::CloudEvent;
use missive_serve::ApiError;

use crate::AppState;
use crate::auth::CurrentUser;

/// Name of the session cookie over plain HTTP (`missive dev`).
pub const SESSION_COOKIE: &str = "missive_session";

/// Name of the session cookie over HTTPS: the `__Host-` prefix makes the browser accept
/// it only with `Secure`, `Path=/` and no `Domain`, so neither a sibling subdomain nor a
/// plain-HTTP response can set or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-missive_session";

/// The session cookie's name under `state`'s configuration (`COOKIE_SECURE`).
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.config.cookie_secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The session id from the request's cookie, if it has a well-formed one. Only the
/// configured name counts: with `COOKIE_SECURE`, a plain `missive_session` cookie
/// (which anyone on the network could have planted) is ignored.
pub fn session_id(state: &AppState, headers: &HeaderMap) -> Option<SessionId> {
    let name = cookie_name(state);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .and_then(|(_, value)| SessionId::parse(value))
}

/// `Set-Cookie` for a new session.
pub fn session_cookie(state: &AppState, id: &SessionId) -> HeaderValue {
    cookie(state, id.expose(), state.sessions.ttl().as_secs())
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie(state: &AppState) -> HeaderValue {
    cookie(state, "", 0)
}

fn cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let name = cookie_name(state);
    HeaderValue::try_from(format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("BUG: base64url ids and our attributes are valid header text")
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = session_id(state, &parts.headers).ok_or(ApiError::Unauthenticated)?;
        state
            .sessions
            .get(&id)
            .await?
            .ok_or(ApiError::Unauthenticated)
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        match <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(user) => Ok(Some(user)),
            Err(ApiError::Unauthenticated) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// The client's address, for rate limits: the peer address, or with
/// `TRUSTED_PROXY_HOPS` = n > 0 the address the outermost of those n proxies saw (the
/// n-th `X-Forwarded-For` entry from the right). Entries further left are the client's
/// own words and are ignored. IPv6 addresses count per /64, what one host usually gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

impl ClientAddr {
    /// From the request's headers and peer address, trusting `hops` proxies.
    pub fn from_parts(headers: &HeaderMap, peer: Option<std::net::IpAddr>, hops: usize) -> Self {
        let forwarded = (hops > 0)
            .then(|| {
                let entries: Vec<&str> = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                // Fewer entries than trusted proxies: the request did not come through
                // them all, so nothing in the header is vouched for.
                entries.len().checked_sub(hops).map(|i| entries[i])
            })
            .flatten()
            .and_then(|entry| entry.parse::<std::net::IpAddr>().ok());
        match forwarded.or(peer) {
            Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                Self(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
            Some(std::net::IpAddr::V6(v6)) => Self(
                v6.to_ipv4_mapped()
                    .map_or_else(String::new, |v4| v4.to_string()),
            ),
            Some(ip) => Self(ip.to_string()),
            None => Self("unknown".to_owned()),
        }
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(Self::from_parts(
            &parts.headers,
            peer,
            state.config.trusted_proxy_hops,
        ))
    }
}

/// A CloudEvent delivered over HTTP, binary or structured mode. The body is read within
/// the function's body limit (413 past it) before the binding sees it; a request that is
/// not a valid event is 400 `invalid_event`.
pub struct Event(pub CloudEvent);

impl<S: Send + Sync> FromRequest<S> for Event {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        // Bytes honours the body limit layer (the reason we do not use an extractor that
        // reads the body unbounded).
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(0)
            } else {
                ApiError::InvalidEvent("could not read the body".into())
            }
        })?;
        http_binding::from_request(&headers, &body)
            .map(Self)
            .map_err(|invalid| ApiError::InvalidEvent(invalid.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(xff: &[&str], peer: &str, hops: usize) -> String {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        ClientAddr::from_parts(&headers, peer.parse().ok(), hops).0
    }

    #[test]
    fn the_forwarded_header_counts_only_as_far_as_the_trusted_hops() {
        // Untrusted by default: a client cannot pick its own identity.
        assert_eq!(addr(&["203.0.113.9"], "10.0.0.7", 0), "10.0.0.7");
        // One trusted proxy: its entry, the rightmost; what the client wrote is ignored.
        assert_eq!(
            addr(&["1.1.1.1, 203.0.113.9"], "10.0.0.7", 1),
            "203.0.113.9"
        );
        // Two (gateway, then activator): the gateway's entry.
        assert_eq!(
            addr(&["1.1.1.1, 203.0.113.9, 10.1.2.3"], "10.0.0.7", 2),
            "203.0.113.9"
        );
        assert_eq!(
            addr(&["1.1.1.1", "203.0.113.9, 10.1.2.3"], "10.0.0.7", 2),
            "203.0.113.9"
        );
        // Fewer entries than proxies, or garbage: the peer.
        assert_eq!(addr(&[], "10.0.0.7", 1), "10.0.0.7");
        assert_eq!(addr(&["203.0.113.9"], "10.0.0.7", 2), "10.0.0.7");
        assert_eq!(addr(&["not-an-ip"], "10.0.0.7", 1), "10.0.0.7");
        // IPv6 per /64; IPv4-mapped as IPv4.
        assert_eq!(
            addr(&["2001:db8:1:2:aaaa::1"], "10.0.0.7", 1),
            "2001:db8:1:2::/64"
        );
        assert_eq!(addr(&[], "::ffff:192.0.2.1", 0), "192.0.2.1");
        assert_eq!(addr(&[], "bad", 0), "unknown");
    }
}
