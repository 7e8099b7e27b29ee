//! How every Kafka client of ours (producer, consumer, admin) reaches the brokers:
//! bootstrap servers, TLS, SASL, and any other librdkafka setting an operator needs,
//! passed through as `KAFKA_PROP_<NAME>` so a missing option never blocks a deployment.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use rdkafka::ClientConfig;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use secrecy::{ExposeSecret as _, SecretString};

/// `security.protocol`: whether the connection is encrypted, authenticated, both or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Neither (a private network, `missive dev`).
    #[default]
    Plaintext,
    /// TLS, the server's certificate verified (name included).
    Ssl,
    /// SASL without TLS: credentials cross the network in the clear (PLAIN) or hashed
    /// (SCRAM); only for networks that are themselves private.
    SaslPlaintext,
    /// SASL over TLS: what managed Kafka services (MSK, Confluent Cloud) and Strimzi's
    /// `scram-sha-512` listeners want.
    SaslSsl,
}

impl SecurityProtocol {
    fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "ssl" => Ok(Self::Ssl),
            "sasl_plaintext" => Ok(Self::SaslPlaintext),
            "sasl_ssl" => Ok(Self::SaslSsl),
            _ => Err(format!(
                "`{value}` is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"
            )),
        }
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// User name and password as they are (TLS is what protects them).
    Plain,
    /// Salted challenge-response, SHA-256.
    ScramSha256,
    /// Salted challenge-response, SHA-512.
    ScramSha512,
    /// A bearer token (OAuth 2, OIDC) from a file, read again before it expires.
    OAuthBearer,
    /// Amazon MSK IAM: OAUTHBEARER with a token signed from the process's AWS identity
    /// (the `aws` feature), signed again before it expires.
    AwsMskIam,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer | Self::AwsMskIam => "OAUTHBEARER",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            "OAUTHBEARER" => Ok(Self::OAuthBearer),
            "AWS_MSK_IAM" => Ok(Self::AwsMskIam),
            _ => Err(format!(
                "`{value}` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM"
            )),
        }
    }
}

/// Everything about reaching Kafka but the brokers' addresses.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// Encryption and authentication.
    pub protocol: SecurityProtocol,
    /// Required with the SASL protocols, refused without them.
    pub mechanism: Option<SaslMechanism>,
    /// PLAIN and SCRAM.
    pub username: Option<String>,
    /// PLAIN and SCRAM.
    pub password: Option<SecretString>,
    /// OAUTHBEARER: a file holding the token (a JWT, such as a projected Kubernetes
    /// service-account token), read again before each expiry, so a rotated file is
    /// picked up.
    pub token_file: Option<PathBuf>,
    /// AWS_MSK_IAM: the signer of MSK IAM tokens (`missive_adapters::aws`, built with
    /// the `aws` feature).
    pub token_source: Option<Arc<dyn TokenSource>>,
    /// PEM bundle of the CA(s) that sign the brokers' certificates, instead of the
    /// system's (`SSL_CERT_FILE`, else the usual locations).
    pub ca_file: Option<PathBuf>,
}

/// How to reach Kafka; cheap to clone, and what every client of ours is built from.
#[derive(Clone)]
pub struct KafkaConnection {
    brokers: String,
    /// librdkafka settings, in the order they are applied (later ones win).
    settings: Vec<(String, String)>,
    tokens: Option<Arc<dyn TokenSource>>,
}

/// Where OAUTHBEARER tokens come from. librdkafka asks on its own thread, before the
/// current token expires, so this is a blocking call.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token, with its expiry and principal.
    fn token(&self) -> anyhow::Result<OAuthToken>;
}

/// A token kept in a file (`KAFKA_OAUTHBEARER_TOKEN_FILE`), read again for each renewal.
#[derive(Debug)]
struct TokenFile(PathBuf);

impl TokenSource for TokenFile {
    fn token(&self) -> anyhow::Result<OAuthToken> {
        read_token(&self.0)
    }
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| {
                let shown = if SECRET_PROPS.contains(&k.as_str()) {
                    "<redacted>"
                } else {
                    v
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConnection")
            .field("brokers", &self.brokers)
            .field("settings", &settings)
            .finish()
    }
}

/// The prefix of the environment variables passed to librdkafka as they are:
/// `KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE=true` sets `socket.keepalive.enable`.
pub const PROP_PREFIX: &str = "KAFKA_PROP_";

/// Property names (lower case) that carry secrets, whichever way they were set: never
/// printed.
const SECRET_PROPS: [&str; 5] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
];

impl KafkaConnection {
    /// Plaintext, no authentication: `missive dev`, tests.
    pub fn plaintext(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            settings: Vec::new(),
            tokens: None,
        }
    }

    /// Checks that `security` is complete and consistent (a mechanism without SASL, a
    /// CA without TLS, SCRAM without a password are configuration errors, said at
    /// start), then applies `props` (the `KAFKA_PROP_*` environment) over it.
    /// `ssl_cert_file` is `SSL_CERT_FILE`: the CA bundle when no CA file is given.
    pub fn new(
        brokers: &str,
        security: &KafkaSecurity,
        ssl_cert_file: Option<&Path>,
        props: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut conn = Self::plaintext(brokers);
        let protocol = security.protocol;
        conn.set("security.protocol", protocol.name());
        match (protocol.sasl(), security.mechanism) {
            (true, None) => anyhow::bail!(
                "KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_MECHANISM",
                protocol.name()
            ),
            (false, Some(_)) => anyhow::bail!(
                "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is {} (sasl_ssl or sasl_plaintext)",
                protocol.name()
            ),
            (false, None) => {}
            (true, Some(mechanism)) => {
                conn.set("sasl.mechanism", mechanism.name());
                if mechanism == SaslMechanism::OAuthBearer {
                    let file = security.token_file.as_ref().context(
                        "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_OAUTHBEARER_TOKEN_FILE",
                    )?;
                    read_token(file)?;
                    conn.tokens = Some(Arc::new(TokenFile(file.clone())));
                } else if mechanism == SaslMechanism::AwsMskIam {
                    // MSK's IAM listener is TLS only (port 9098).
                    anyhow::ensure!(
                        protocol == SecurityProtocol::SaslSsl,
                        "KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs KAFKA_SECURITY_PROTOCOL=sasl_ssl"
                    );
                    let source = security.token_source.clone().context(
                        "KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs a build with the `aws` feature \
                         (the release images have it)",
                    )?;
                    conn.tokens = Some(source);
                } else {
                    let (Some(user), Some(password)) = (&security.username, &security.password)
                    else {
                        anyhow::bail!(
                            "KAFKA_SASL_MECHANISM={} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                            mechanism.name()
                        );
                    };
                    conn.set("sasl.username", user);
                    conn.set("sasl.password", password.expose_secret());
                }
            }
        }
        if security.token_file.is_some() && security.mechanism != Some(SaslMechanism::OAuthBearer) {
            anyhow::bail!(
                "KAFKA_OAUTHBEARER_TOKEN_FILE is set but KAFKA_SASL_MECHANISM is not OAUTHBEARER"
            );
        }
        match (&security.ca_file, protocol.tls()) {
            (Some(_), false) => anyhow::bail!(
                "KAFKA_CA_FILE is set but KAFKA_SECURITY_PROTOCOL is {} (ssl or sasl_ssl)",
                protocol.name()
            ),
            (Some(file), true) => conn.set_ca(file, "KAFKA_CA_FILE")?,
            // OpenSSL reads SSL_CERT_FILE itself only where librdkafka asks it for its
            // default paths; said explicitly, one bundle covers all three backends.
            (None, true) => {
                if let Some(file) = ssl_cert_file {
                    conn.set_ca(file, "SSL_CERT_FILE")?;
                }
            }
            (None, false) => {}
        }
        for (name, value) in props {
            let Some(rest) = name.strip_prefix(PROP_PREFIX) else {
                continue;
            };
            anyhow::ensure!(
                !rest.is_empty(),
                "{PROP_PREFIX} needs a property name after it"
            );
            let key = rest.to_ascii_lowercase().replace('_', ".");
            conn.set(&key, &value);
        }
        Ok(conn)
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    fn set(&mut self, key: &str, value: &str) {
        self.settings.push((key.to_owned(), value.to_owned()));
    }

    fn set_ca(&mut self, file: &Path, var: &str) -> anyhow::Result<()> {
        std::fs::metadata(file).with_context(|| format!("{var} {}", file.display()))?;
        let path = file
            .to_str()
            .with_context(|| format!("{var} is not a UTF-8 path"))?;
        self.set("ssl.ca.location", path);
        Ok(())
    }

    /// A librdkafka configuration with the brokers and every connection setting; the
    /// caller adds what its role needs (producer, consumer).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }

    /// The context every client of ours is created with (see [`KafkaContext`]).
    pub fn context(&self) -> KafkaContext {
        KafkaContext {
            tokens: self.tokens.clone(),
            errors: LastError::default(),
        }
    }
}

/// Our librdkafka client context: supplies OAUTHBEARER tokens, and keeps the last error
/// the client reported (a TLS or SASL failure surfaces only there; a send just times
/// out), so that a failed send or start can say why.
pub struct KafkaContext {
    tokens: Option<Arc<dyn TokenSource>>,
    errors: LastError,
}

impl KafkaContext {
    /// A handle on this client's last error, kept by whoever owns the client (librdkafka
    /// owns the context itself).
    pub fn errors(&self) -> LastError {
        self.errors.clone()
    }
}

/// The last connection-level error (TLS handshake, authentication, unreachable broker)
/// of one client, as librdkafka words it.
#[derive(Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    /// The error, if there was one.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, reason: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// `err` with the client's last error attached, naming Kafka.
    pub fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        match self.get() {
            Some(last) => err.context(format!("Kafka (KAFKA_BROKERS): {last}")),
            None => err,
        }
    }
}

impl ClientContext for KafkaContext {
    // Only called when `sasl.mechanism` is OAUTHBEARER.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    // Connection failures (a TLS handshake, SASL, a listener of another protocol) are
    // often only logged by librdkafka, not raised as errors: keep the last one too.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error, Warning};
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            tracing::warn!(backend = "kafka", facility, message, "Kafka client");
            self.errors.set(message);
        } else {
            tracing::debug!(backend = "kafka", facility, message, "Kafka client");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(backend = "kafka", error = %error, reason, "Kafka client error");
        // "1/1 brokers are down" follows the failure that says why; keep that one.
        if !(reason.contains("brokers are down") && self.errors.get().is_some()) {
            self.errors.set(reason);
        }
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or("OAUTHBEARER without KAFKA_OAUTHBEARER_TOKEN_FILE or AWS_MSK_IAM")?;
        match tokens.token() {
            Ok(token) => Ok(token),
            Err(err) => {
                // librdkafka retries; say why in the meantime (and on a failed send).
                let reason = format!("no OAUTHBEARER token: {err:#}");
                tracing::warn!(backend = "kafka", reason, "Kafka client");
                self.errors.set(&reason);
                Err(reason.into())
            }
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// A token whose expiry cannot be read (not a JWT) is used for this long, then read again.
const OPAQUE_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The OAUTHBEARER token in `file`: its expiry and principal from the JWT claims
/// (`exp`, `sub`) when it is one.
pub fn read_token(file: &Path) -> anyhow::Result<OAuthToken> {
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading KAFKA_OAUTHBEARER_TOKEN_FILE {}", file.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "KAFKA_OAUTHBEARER_TOKEN_FILE {} is empty",
        file.display()
    );
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let exp_ms = claims
        .as_ref()
        .and_then(|c| c.get("exp")?.as_i64())
        .map(|exp| exp.saturating_mul(1000));
    if let Some(exp_ms) = exp_ms {
        anyhow::ensure!(
            exp_ms > now_ms,
            "the token in KAFKA_OAUTHBEARER_TOKEN_FILE {} has expired",
            file.display()
        );
    }
    let lifetime_ms = exp_ms.unwrap_or(now_ms + OPAQUE_TOKEN_LIFETIME.as_millis() as i64);
    let principal_name = claims
        .as_ref()
        .and_then(|c| c.get("sub")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "missive".to_owned());
    Ok(OAuthToken {
        token,
        principal_name,
        lifetime_ms,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn settings(conn: &KafkaConnection) -> Vec<(String, String)> {
        conn.settings.clone()
    }

    fn get<'a>(conn: &'a KafkaConnection, key: &str) -> Option<&'a str> {
        conn.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn scram() -> KafkaSecurity {
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("missive".into()),
            password: Some(SecretString::from("s3cret")),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn sasl_ssl_with_scram_sets_what_librdkafka_needs_and_hides_the_password() {
        let conn = KafkaConnection::new("b:9096", &scram(), None, []).unwrap();
        assert_eq!(get(&conn, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&conn, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&conn, "sasl.username"), Some("missive"));
        assert_eq!(get(&conn, "sasl.password"), Some("s3cret"));
        let shown = format!("{conn:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn inconsistent_settings_are_refused_at_start_naming_the_variable() {
        let cases: Vec<(KafkaSecurity, &str)> = vec![
            (
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslSsl,
                    ..KafkaSecurity::default()
                },
                "needs KAFKA_SASL_MECHANISM",
            ),
            (
                KafkaSecurity {
                    mechanism: Some(SaslMechanism::Plain),
                    ..KafkaSecurity::default()
                },
                "KAFKA_SECURITY_PROTOCOL is plaintext",
            ),
            (
                KafkaSecurity {
                    password: None,
                    ..scram()
                },
                "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
            ),
            (
                KafkaSecurity {
                    mechanism: Some(SaslMechanism::OAuthBearer),
                    ..scram()
                },
                "needs KAFKA_OAUTHBEARER_TOKEN_FILE",
            ),
            (
                KafkaSecurity {
                    ca_file: Some("/etc/hostname".into()),
                    ..KafkaSecurity::default()
                },
                "KAFKA_CA_FILE is set but",
            ),
            (
                KafkaSecurity {
                    protocol: SecurityProtocol::Ssl,
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..KafkaSecurity::default()
                },
                "KAFKA_CA_FILE /nonexistent/ca.pem",
            ),
        ];
        for (security, expected) in cases {
            let err = KafkaConnection::new("b:9092", &security, None, []).unwrap_err();
            assert!(
                format!("{err:#}").contains(expected),
                "{err:#} vs {expected}"
            );
        }
        assert!("tls".parse::<SecurityProtocol>().is_err());
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
        assert_eq!("SASL_SSL".parse(), Ok(SecurityProtocol::SaslSsl));
        assert_eq!("scram-sha-256".parse(), Ok(SaslMechanism::ScramSha256));
    }

    #[test]
    fn the_ca_comes_from_kafka_ca_file_else_ssl_cert_file_and_only_with_tls() {
        let ssl = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ..KafkaSecurity::default()
        };
        let system = Path::new("/etc/hostname");
        let conn = KafkaConnection::new("b", &ssl, Some(system), []).unwrap();
        assert_eq!(get(&conn, "ssl.ca.location"), Some("/etc/hostname"));
        let own = KafkaSecurity {
            ca_file: Some("/etc/passwd".into()),
            ..ssl.clone()
        };
        let conn = KafkaConnection::new("b", &own, Some(system), []).unwrap();
        assert_eq!(get(&conn, "ssl.ca.location"), Some("/etc/passwd"));
        let plain = KafkaConnection::new("b", &KafkaSecurity::default(), Some(system), []).unwrap();
        assert_eq!(get(&plain, "ssl.ca.location"), None);
    }

    #[test]
    fn kafka_prop_variables_become_librdkafka_settings_applied_last() {
        let props = [
            ("KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE", "true"),
            ("KAFKA_PROP_SECURITY_PROTOCOL", "ssl"),
            ("KAFKA_PROP_SSL_KEY_PASSWORD", "hidden"),
            ("KAFKA_BROKERS", "ignored"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let conn = KafkaConnection::new("b", &KafkaSecurity::default(), None, props).unwrap();
        assert_eq!(get(&conn, "socket.keepalive.enable"), Some("true"));
        // Applied after ours: the operator has the last word.
        assert_eq!(get(&conn, "security.protocol"), Some("ssl"));
        assert!(!settings(&conn).iter().any(|(k, _)| k.contains("brokers")));
        assert!(!format!("{conn:?}").contains("hidden"));
        // librdkafka itself refuses a name it does not know, at start.
        let unknown = [("KAFKA_PROP_NO_SUCH_THING".to_owned(), "1".to_owned())];
        let conn = KafkaConnection::new("b", &KafkaSecurity::default(), None, unknown).unwrap();
        let created: Result<rdkafka::producer::BaseProducer, _> = conn.client_config().create();
        let err = created
            .err()
            .expect("librdkafka refuses an unknown property");
        assert!(err.to_string().contains("no.such.thing"), "{err}");
    }

    /// Removes its file on drop.
    struct Remove(PathBuf);

    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn token_file(contents: &str) -> (PathBuf, Remove) {
        let path = std::env::temp_dir().join(format!("missive-token-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        (path.clone(), Remove(path))
    }

    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn oauthbearer_tokens_are_read_from_the_file_with_their_expiry() {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token =
            jwt(&serde_json::json!({"sub": "system:serviceaccount:missive:fn", "exp": exp}));
        let (path, _guard) = token_file(&format!("{token}\n"));
        let read = read_token(&path).unwrap();
        assert_eq!(read.token, token);
        assert_eq!(read.principal_name, "system:serviceaccount:missive:fn");
        assert_eq!(read.lifetime_ms, exp as i64 * 1000);

        // An opaque token: used for a few minutes, then read again.
        let (path, _guard) = token_file("opaque-token");
        let read = read_token(&path).unwrap();
        assert_eq!(read.principal_name, "missive");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((read.lifetime_ms - now_ms - 300_000).abs() < 5_000);

        // An expired one, an empty file, no file: errors that say which.
        let (path, _guard) = token_file(&jwt(&serde_json::json!({"exp": 1})));
        assert!(
            read_token(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("has expired")
        );
        let (path, _guard) = token_file("  \n");
        assert!(
            read_token(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("is empty")
        );
        assert!(
            format!("{:#}", read_token(Path::new("/nonexistent")).err().unwrap())
                .contains("KAFKA_OAUTHBEARER_TOKEN_FILE")
        );

        // The context hands librdkafka the file's current token.
        let (path, _guard) = token_file(&token);
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            mechanism: Some(SaslMechanism::OAuthBearer),
            token_file: Some(path),
            ..KafkaSecurity::default()
        };
        let conn = KafkaConnection::new("b", &security, None, []).unwrap();
        assert_eq!(get(&conn, "sasl.mechanism"), Some("OAUTHBEARER"));
        let generated = conn.context().generate_oauth_token(None).unwrap();
        assert_eq!(generated.token, token);
    }
}
