//! A fake OIDC token issuer for sender-identity tests: a JWKS endpoint on a free port and
//! tokens signed the way Kubernetes' service-account issuer signs them (RS256 with a
//! `kid`), or signed wrongly on purpose.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The key id the JWKS publishes.
pub const KID: &str = "test-key-1";
/// The issuer the tokens name.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const ISSUER_KEY: &[u8] = include_bytes!("../keys/issuer-rsa.der");
const OTHER_KEY: &[u8] = include_bytes!("../keys/other-rsa.der");

/// A running JWKS endpoint, stopped when dropped.
pub struct Issuer {
    /// Where the JWKS is (`OIDC_JWKS_URL`).
    pub jwks_url: String,
    /// How many times the JWKS was fetched.
    pub fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The public JWK of the issuer's key.
pub fn issuer_jwk() -> Jwk {
    let key = EncodingKey::from_rsa_der(ISSUER_KEY);
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("test key is RSA");
    jwk.common.key_id = Some(KID.to_owned());
    jwk
}

impl Issuer {
    /// Serves the JWKS (the issuer's public key under [`KID`]) on 127.0.0.1.
    pub async fn start() -> Self {
        let set = JwkSet {
            keys: vec![issuer_jwk()],
        };
        let body = serde_json::to_string(&set).expect("JWKS serializes");
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = fetches.clone();
        let app = Router::new().route(
            "/openid/v1/jwks",
            get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the JWKS server");
        let addr: SocketAddr = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            jwks_url: format!("http://{addr}/openid/v1/jwks"),
            fetches,
            task,
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Claims of a good token for `audience` and `subject`, valid for ten minutes.
pub fn claims(audience: &str, subject: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": [audience],
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    })
}

/// `claims` signed with the issuer's key under [`KID`] (RS256).
pub fn sign(claims: &Value) -> String {
    sign_with(claims, ISSUER_KEY, Some(KID))
}

/// `claims` signed with a key the JWKS does not have, under the given `kid`.
pub fn sign_with_other_key(claims: &Value, kid: Option<&str>) -> String {
    sign_with(claims, OTHER_KEY, kid)
}

fn sign_with(claims: &Value, der: &[u8], kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der)).expect("signing")
}

/// A token with `alg: none` and no signature, naming [`KID`].
pub fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": KID});
    format!("{}.{}.", b64(&header), b64(claims))
}

/// A token "signed" with HS256 using the issuer's public key bytes as the HMAC secret
/// (the classic algorithm-confusion attack), naming [`KID`].
pub fn hs256_with_public_key(claims: &Value) -> String {
    let jwk = serde_json::to_vec(&issuer_jwk()).expect("JWK serializes");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.to_owned());
    let secret = EncodingKey::from_secret(&jwk).expect("an HMAC key");
    jsonwebtoken::encode(&header, claims, &secret).expect("signing")
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(value).expect("JSON serializes"))
}
