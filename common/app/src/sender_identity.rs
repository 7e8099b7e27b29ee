//! Who may deliver events: Knative Eventing's sender identity (feature
//! `authentication-oidc`). A KafkaSource or PingSource with an `audience` on its sink
//! sends `Authorization: Bearer <JWT>`, a token the cluster's service-account issuer
//! signed for that audience, whose subject is the source's own service account
//! (`system:serviceaccount:<namespace>:<source>-oidc-sources.knative.dev-<kind>`).
//!
//! An event function checks, before it reads the body: the signature against the
//! issuer's JWKS (cached; fetched again when a token names an unknown `kid`, at most once
//! per [`REFETCH_MIN_INTERVAL`]), an asymmetric algorithm that matches the key, `iss`,
//! `aud`, `exp` and `nbf` with [`Settings::leeway`] of clock skew, and `sub` against an
//! allow-list. Any failure is 401 `invalid_token` and the event is neither stored nor
//! recorded. Without a way to verify (the JWKS endpoint is down and no key is cached),
//! the answer is 503 so that Knative retries rather than dead-letters.
//!
//! Required in every deployed event function; `EVENT_AUTH=none` turns it off, loudly.
//! `missive dev` delivers in process and does not use it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use missive_serve::ApiError;
use serde::Deserialize;
use tokio::sync::Mutex;

/// Whether event endpoints require a sender token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventAuth {
    /// Verify Knative Eventing's OIDC token on every delivery (the default).
    Oidc,
    /// Accept any delivery. Only for clusters without `authentication-oidc`; logged as a
    /// warning at start.
    None,
}

/// Settings of the check (`OIDC_*` variables; see README's configuration table).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// `oidc` (default): event deliveries must carry a valid sender token; `none`: accept
    /// any (logged as a warning at start).
    #[arg(long, env = "EVENT_AUTH", value_enum, default_value_t = EventAuth::Oidc)]
    pub event_auth: EventAuth,

    /// The token issuer (`iss`): the cluster's service-account issuer, e.g.
    /// `https://kubernetes.default.svc.cluster.local`.
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The audience (`aud`) this function's sources request tokens for (their
    /// `sink.audience`).
    #[arg(long, env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// Comma-separated subjects (`sub`) allowed to deliver: the sources' service accounts.
    #[arg(long, env = "OIDC_ALLOWED_SUBJECTS", value_delimiter = ',')]
    pub oidc_allowed_subjects: Vec<String>,

    /// Where the issuer's keys are. The API server serves them to any service account.
    #[arg(
        long,
        env = "OIDC_JWKS_URL",
        default_value = "https://kubernetes.default.svc/openid/v1/jwks"
    )]
    pub oidc_jwks_url: String,

    /// CA bundle that signs the JWKS endpoint's certificate; when the file exists it is
    /// the only trust root for that endpoint (the pod's own service-account CA by
    /// default).
    #[arg(
        long,
        env = "OIDC_JWKS_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub oidc_jwks_ca_file: PathBuf,

    /// A bearer token for the JWKS endpoint, read afresh on every fetch (Kubernetes
    /// rotates it); sent only over HTTPS and only when the file exists.
    #[arg(
        long,
        env = "OIDC_JWKS_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub oidc_jwks_token_file: PathBuf,

    /// Allowed clock skew for `exp` and `nbf`, seconds.
    #[arg(long, env = "OIDC_CLOCK_SKEW_SECS", default_value_t = 30)]
    pub oidc_clock_skew_secs: u64,
}

impl Settings {
    /// Allowed clock skew.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.oidc_clock_skew_secs)
    }
}

/// A key set is fetched again for an unknown `kid` at most this often, so tokens with
/// made-up `kid`s cannot turn into a flood of requests to the API server.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Keys are refreshed at least this often even when every `kid` is known (a rotated-out
/// key stops being accepted within this time).
pub const MAX_KEY_AGE: Duration = Duration::from_secs(300);

/// How long one JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The asymmetric algorithms accepted, per key type. Never HMAC: a JWKS holds public
/// keys, and a token "signed" with one must not verify.
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC_ALGORITHMS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const OKP_ALGORITHMS: &[Algorithm] = &[Algorithm::EdDSA];

/// Verifies sender tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    subjects: Vec<String>,
    leeway: Duration,
    jwks_url: String,
    token_file: PathBuf,
    client: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, &'static [Algorithm])>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// Last fetch, successful or not.
    attempted_at: Option<Instant>,
}

/// Why a token was refused (safe to log: never the token itself).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 401: missing, malformed, or not valid for us.
    #[error("{0}")]
    Invalid(String),
    /// 503: the keys could not be fetched.
    #[error("the token issuer's keys are unavailable")]
    KeysUnavailable(#[source] anyhow::Error),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Verifier {
    /// A verifier for `settings`; `None` when checking is off. Fails when checking is on
    /// and issuer, audience or subjects are missing, so a function never starts open by
    /// accident.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Self>> {
        if settings.event_auth == EventAuth::None {
            tracing::warn!(
                "EVENT_AUTH=none: event deliveries are not authenticated; anyone who can reach this function can submit events"
            );
            return Ok(None);
        }
        let issuer = settings.oidc_issuer.clone().filter(|s| !s.is_empty()).context(
            "OIDC_ISSUER is required for event functions (or EVENT_AUTH=none to accept unauthenticated deliveries)",
        )?;
        let audience = settings
            .oidc_audience
            .clone()
            .filter(|s| !s.is_empty())
            .context(
                "OIDC_AUDIENCE is required for event functions (their sources' sink.audience)",
            )?;
        let subjects: Vec<String> = settings
            .oidc_allowed_subjects
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        anyhow::ensure!(
            !subjects.is_empty(),
            "OIDC_ALLOWED_SUBJECTS is required for event functions (the sources' service accounts)"
        );
        // reqwest's TLS needs a provider installed before any client is built (ring: no
        // C build). Another part of the process may have installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
        if settings.oidc_jwks_url.starts_with("https://")
            && let Ok(pem) = std::fs::read(&settings.oidc_jwks_ca_file)
        {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("reading {}", settings.oidc_jwks_ca_file.display()))?;
            client = client.tls_certs_only(certs);
        }
        let verifier = Self {
            inner: Arc::new(Inner {
                issuer,
                audience,
                subjects,
                leeway: settings.leeway(),
                jwks_url: settings.oidc_jwks_url.clone(),
                token_file: settings.oidc_jwks_token_file.clone(),
                client: client.build().context("building the JWKS client")?,
                keys: Mutex::new(Keys::default()),
            }),
        };
        tracing::info!(
            issuer = %verifier.inner.issuer,
            audience = %verifier.inner.audience,
            subjects = ?verifier.inner.subjects,
            "event deliveries require a sender token"
        );
        Ok(Some(verifier))
    }

    /// Verifies a bearer token; `Ok` with its subject.
    pub async fn verify(&self, token: &str) -> Result<String, Refusal> {
        let invalid = |why: &str| Refusal::Invalid(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("token has no kid"))?;
        let (key, algorithms) = self.key(kid).await?;
        if !algorithms.contains(&header.alg) {
            return Err(invalid("token algorithm does not match its key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.inner.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match err.kind() {
                K::ExpiredSignature => "token has expired",
                K::ImmatureSignature => "token is not valid yet",
                K::InvalidAudience => "token is for another audience",
                K::InvalidIssuer => "token is from another issuer",
                K::InvalidSignature => "token signature does not verify",
                K::MissingRequiredClaim(_) => "token lacks a required claim",
                _ => "token is invalid",
            })
        })?;
        let subject = claims.claims.sub;
        if !self.inner.subjects.contains(&subject) {
            return Err(Refusal::Invalid(format!(
                "subject {subject} may not deliver events here"
            )));
        }
        Ok(subject)
    }

    /// The key named `kid`, fetching the key set when it is unknown or old.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, &'static [Algorithm]), Refusal> {
        let mut keys = self.inner.keys.lock().await;
        let stale = keys.fetched_at.is_none_or(|at| at.elapsed() > MAX_KEY_AGE);
        let unknown = !keys.by_kid.contains_key(kid);
        let may_fetch = keys
            .attempted_at
            .is_none_or(|at| at.elapsed() >= REFETCH_MIN_INTERVAL);
        if (stale || unknown) && may_fetch {
            keys.attempted_at = Some(Instant::now());
            match self.fetch().await {
                Ok(fresh) => {
                    keys.by_kid = fresh;
                    keys.fetched_at = keys.attempted_at;
                }
                // Keep serving from the keys we have; without any, nobody can be verified.
                Err(err) if keys.by_kid.is_empty() => return Err(Refusal::KeysUnavailable(err)),
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "refreshing the JWKS failed; using the cached keys"
                ),
            }
        } else if keys.by_kid.is_empty() {
            return Err(Refusal::KeysUnavailable(anyhow::anyhow!(
                "no keys yet; the last fetch failed less than {REFETCH_MIN_INTERVAL:?} ago"
            )));
        }
        keys.by_kid
            .get(kid)
            .cloned()
            .ok_or_else(|| Refusal::Invalid("token is signed with an unknown key".into()))
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, (DecodingKey, &'static [Algorithm])>> {
        let url = &self.inner.jwks_url;
        let mut request = self.inner.client.get(url);
        if url.starts_with("https://")
            && let Ok(token) = std::fs::read_to_string(&self.inner.token_file)
        {
            request = request.bearer_auth(token.trim());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "fetching {url}: {status}");
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading {url}"))?;
        let set: JwkSet =
            serde_json::from_slice(&body).with_context(|| format!("parsing the JWKS at {url}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithms = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA_ALGORITHMS,
                AlgorithmParameters::EllipticCurve(_) => EC_ALGORITHMS,
                AlgorithmParameters::OctetKeyPair(_) => OKP_ALGORITHMS,
                // Symmetric or unknown keys have no place in an issuer's public key set.
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (key, algorithms));
                }
                Err(err) => tracing::warn!(%kid, error = %err, "skipping a JWKS key"),
            }
        }
        tracing::debug!(keys = keys.len(), "fetched the JWKS");
        Ok(keys)
    }
}

/// Middleware: the request goes on only with a valid sender token (see the module
/// docs). Apply with `route_layer`, so probes and unknown paths are unaffected.
pub async fn require_sender(
    State(verifier): State<Verifier>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let refusal = match token {
        None => Refusal::Invalid("a sender token (Authorization: Bearer) is required".into()),
        Some(token) => match verifier.verify(token).await {
            Ok(subject) => {
                tracing::debug!(%subject, "sender verified");
                return next.run(request).await;
            }
            Err(refusal) => refusal,
        },
    };
    match refusal {
        Refusal::Invalid(why) => {
            tracing::warn!(reason = %why, "event delivery refused");
            let mut response = ApiError::BadToken(why).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            response
        }
        Refusal::KeysUnavailable(cause) => {
            ApiError::from(cause.context(missive_core::Unavailable {
                backend: "token issuer",
            }))
            .into_response()
        }
    }
}
