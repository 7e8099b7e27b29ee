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

/// The client's address, for rate limits. By default the peer address. Behind proxies
/// that append to `X-Forwarded-For`, one of its entries, chosen so a client cannot pick
/// its own: with `TRUSTED_PROXIES` (CIDRs), the rightmost address that is not one of
/// those proxies (the peer counts as the last hop); else with `TRUSTED_PROXY_HOPS` = n,
/// the n-th entry from the right. IPv6 addresses count per /64, what one host usually
/// gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

/// An IP network, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let network: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Which forwarding proxies are believed (see [`ClientAddr`]).
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// `TRUSTED_PROXIES`.
    pub proxies: Vec<Cidr>,
    /// `TRUSTED_PROXY_HOPS` (used when `proxies` is empty).
    pub hops: usize,
}

impl ClientAddr {
    /// From the request's headers and peer address.
    pub fn from_parts(
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        trust: &ProxyTrust,
    ) -> Self {
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let chosen = if !trust.proxies.is_empty() {
            let trusted = |ip: std::net::IpAddr| trust.proxies.iter().any(|net| net.contains(ip));
            match peer {
                // The peer is not a proxy of ours: it is the client, whatever it says.
                Some(ip) if !trusted(ip) => Some(ip),
                _ => {
                    let mut client = peer;
                    for entry in entries.iter().rev() {
                        let Ok(ip) = entry.parse::<std::net::IpAddr>() else {
                            break;
                        };
                        client = Some(ip);
                        if !trusted(ip) {
                            break;
                        }
                    }
                    client
                }
            }
        } else if trust.hops > 0 {
            // Fewer entries than trusted proxies: the request did not come through them
            // all, so nothing in the header is vouched for.
            entries
                .len()
                .checked_sub(trust.hops)
                .and_then(|i| entries[i].parse().ok())
                .or(peer)
        } else {
            peer
        };
        match chosen {
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
            &state.config.proxy_trust(),
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

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    fn addr(xff: &[&str], peer: &str, hops: usize) -> String {
        let trust = ProxyTrust {
            proxies: vec![],
            hops,
        };
        ClientAddr::from_parts(&headers(xff), peer.parse().ok(), &trust).0
    }

    fn behind(xff: &[&str], peer: &str, proxies: &str) -> String {
        let trust = ProxyTrust {
            proxies: proxies
                .split(',')
                .map(|c| c.parse().expect("CIDR"))
                .collect(),
            hops: 0,
        };
        ClientAddr::from_parts(&headers(xff), peer.parse().ok(), &trust).0
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let cluster = "127.0.0.0/8,10.0.0.0/8";
        // Gateway only, or gateway and activator: the same client either way.
        assert_eq!(
            behind(&["203.0.113.9"], "127.0.0.1", cluster),
            "203.0.113.9"
        );
        assert_eq!(
            behind(&["203.0.113.9, 10.1.2.3"], "127.0.0.1", cluster),
            "203.0.113.9"
        );
        // What the client wrote itself, left of the gateway's entry, is ignored, even an
        // address that looks like one of ours.
        assert_eq!(
            behind(
                &["10.9.9.9, 1.1.1.1, 203.0.113.9, 10.1.2.3"],
                "127.0.0.1",
                cluster
            ),
            "203.0.113.9"
        );
        // A peer that is not a proxy of ours is the client.
        assert_eq!(
            behind(&["1.1.1.1"], "198.51.100.4", cluster),
            "198.51.100.4"
        );
        // All trusted (a request from inside): the leftmost.
        assert_eq!(behind(&["10.0.0.5"], "127.0.0.1", cluster), "10.0.0.5");
        assert_eq!(behind(&[], "127.0.0.1", cluster), "127.0.0.1");
        // IPv6 networks, and IPv4-mapped peers.
        assert_eq!(
            behind(&["2001:db8::1"], "::ffff:10.0.0.1", "10.0.0.0/8,fd00::/8"),
            "2001:db8:0:0::/64"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let one: Cidr = "10.1.2.3".parse().unwrap();
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
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
