//! [`ApiError`]: the one error type handlers return, and the JSON error shape
//! `{"error": {"code": "<snake_case>", "message": "<text for humans>"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a request can fail with. Each variant documents its status; the mapping is
/// the single `match` in [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON or a field has the wrong type.
    #[error("{0}")]
    InvalidJson(String),
    /// 400: a request that claims to be a CloudEvent is not a valid one.
    #[error("{0}")]
    InvalidEvent(String),
    /// 400: another malformed request; `code` says what.
    #[error("{message}")]
    BadRequest {
        /// Snake-case code.
        code: &'static str,
        /// Explanation for humans.
        message: String,
    },
    /// 401: no valid session.
    #[error("log in first")]
    Unauthenticated,
    /// 401: an event delivery without a valid sender token; says why (never the token).
    #[error("{0}")]
    BadToken(String),
    /// 401: unknown user or wrong password (deliberately indistinguishable).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// 403: the request is refused whoever sends it; `code` says why.
    #[error("{message}")]
    Forbidden {
        /// Snake-case code, e.g. `cross_origin`.
        code: &'static str,
        /// Explanation for humans.
        message: String,
    },
    /// 404: nothing here, or it belongs to someone else (we never say which).
    #[error("not found")]
    NotFound,
    /// 409: the username is taken.
    #[error("this username is taken")]
    UsernameTaken,
    /// 409: the request conflicts with the state the server holds; `code` says how.
    #[error("{message}")]
    Conflict {
        /// Snake-case code, e.g. `idempotency_key_reused`.
        code: &'static str,
        /// Explanation for humans.
        message: String,
    },
    /// 413: the body exceeds the configured limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: a mutating request without `Content-Type: application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 422: a field parsed but broke a rule; `code` names the field's rule.
    #[error("{message}")]
    Validation {
        /// Snake-case code, e.g. `invalid_username`.
        code: &'static str,
        /// What the rule is, for humans.
        message: String,
    },
    /// 429: too many failed logins; `Retry-After` says when to try again.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts {
        /// Time until the next attempt is allowed.
        retry_after: Duration,
    },
    /// 429: a per-client or per-account limit other than failed logins; `code` says
    /// which, `Retry-After` when to try again.
    #[error("{message}")]
    TooManyRequests {
        /// Snake-case code, e.g. `too_many_streams`.
        code: &'static str,
        /// Explanation for humans.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// 503: this instance is at a capacity limit (password hashing, live streams);
    /// `Retry-After` says when to try again. Not a backend fault: nothing is logged
    /// above debug, so a flood does not flood the log too.
    #[error("{what} is busy; try again shortly")]
    Overloaded {
        /// What is full, for humans.
        what: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// 503: the request did not finish within the configured time.
    #[error("the request took too long")]
    Timeout,
    /// 503: a backend is down, unreachable or too slow (an error marked
    /// [`missive_core::Unavailable`] by its adapter); `Retry-After` says when to try
    /// again. The cause goes to the log.
    #[error("{} is unavailable; try again shortly", .backend.backend)]
    Unavailable {
        /// Which backend.
        backend: missive_core::Unavailable,
        /// What happened, for the log.
        cause: anyhow::Error,
    },
    /// 500: a bug or an unexpected failure. The cause goes to the log, never to the client.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// How long a client is asked to wait before retrying after a 503 `unavailable`: long
/// enough not to hammer a backend that is coming back, short enough that a blip costs a
/// second.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<anyhow::Error> for ApiError {
    /// A failure an adapter marked [`missive_core::Unavailable`] (anywhere in its context
    /// chain) is a 503; anything else is a 500.
    fn from(cause: anyhow::Error) -> Self {
        match cause.downcast_ref::<missive_core::Unavailable>() {
            Some(&backend) => Self::Unavailable { backend, cause },
            None => Self::Internal(cause),
        }
    }
}

impl ApiError {
    /// A 422 with the given code and message.
    pub fn validation(code: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            code,
            message: message.into(),
        }
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::InvalidEvent(_) | Self::BadRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthenticated | Self::BadToken(_) | Self::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::UsernameTaken | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyAttempts { .. } | Self::TooManyRequests { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Timeout | Self::Unavailable { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidEvent(_) => "invalid_event",
            Self::BadRequest { code, .. } => code,
            Self::Unauthenticated => "unauthenticated",
            Self::BadToken(_) => "invalid_token",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden { code, .. } => code,
            Self::NotFound => "not_found",
            Self::UsernameTaken => "username_taken",
            Self::Conflict { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation { code, .. } => code,
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::TooManyRequests { code, .. } => code,
            Self::Overloaded { .. } => "overloaded",
            Self::Timeout => "timeout",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// The JSON error body, as documented in the OpenAPI spec.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code for programs, e.g. `invalid_text`.
    pub code: String,
    /// Explanation for humans.
    pub message: String,
}

/// Builds an error response from parts; also used where no [`ApiError`] exists (panics,
/// readiness).
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // 5xx bodies stay generic; the cause chain is logged here, once.
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "internal error".to_owned()
            }
            Self::Unavailable { backend, cause } => {
                // Ours to see (and alert on), not a bug: a warning, with the cause.
                tracing::warn!(
                    backend = backend.backend,
                    error = format!("{cause:#}"),
                    "backend unavailable"
                );
                self.to_string()
            }
            other => {
                // The client's mistake, not ours: visible when debugging, never noise.
                tracing::debug!(
                    status = status.as_u16(),
                    code = self.code(),
                    "request refused"
                );
                other.to_string()
            }
        };
        let mut response = error_response(status, self.code(), &message);
        let retry_after = match self {
            Self::TooManyAttempts { retry_after }
            | Self::TooManyRequests { retry_after, .. }
            | Self::Overloaded { retry_after, .. } => Some(retry_after),
            Self::Unavailable { .. } => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            // Round up so a client that waits exactly this long is not refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<missive_core::DomainError> for ApiError {
    /// A broken domain rule is the client's: 422 with the rule's code.
    fn from(err: missive_core::DomainError) -> Self {
        Self::Validation {
            code: err.code,
            message: err.message,
        }
    }
}
