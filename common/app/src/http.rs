//! The app's HTTP edge: the session cookie, the [`CurrentUser`] extractor, and the
//! [`Event`] extractor that reads a CloudEvent within the body limit.

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

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "missive_session";

/// The session id from the request's cookie, if it has a well-formed one.
pub fn session_id(headers: &HeaderMap) -> Option<SessionId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
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
    HeaderValue::try_from(format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("BUG: base64url ids and our attributes are valid header text")
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = session_id(&parts.headers).ok_or(ApiError::Unauthenticated)?;
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
