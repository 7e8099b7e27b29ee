//! Configuration, read from environment variables only (Knative injects them), parsed
//! with clap so a bad value fails at start with a message that names the variable.
//!
//! Every variable here is documented in README's configuration table; keep them in step.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use missive_adapters::credentials::CredentialSource;
use missive_adapters::events::kafka::{
    KafkaConnection, KafkaSecurity, PROP_PREFIX, SaslMechanism, SecurityProtocol, TokenSource,
};
use secrecy::{ExposeSecret as _, SecretString};

/// Settings every function shares. Functions embed it with `#[command(flatten)]`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Port to listen on (Knative sets `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// `mysql://user:pass@host:3306/db` for MariaDB or `sqlite://path` for SQLite. Kept
    /// secret because it usually carries a password.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// PEM file of the CA(s) that sign the MariaDB server's certificate. Adds
    /// `ssl-ca` to `DATABASE_URL`, and `ssl-mode=verify_identity` unless the URL gives a
    /// mode (`required`: encrypted, not verified; `verify_ca`: the CA, not the name).
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<std::path::PathBuf>,

    /// AWS Secrets Manager secret (ARN or name) holding the MariaDB password (JSON with
    /// `password` and optionally `username`, as RDS-managed secrets are, or the password
    /// itself): replaces the URL's. Read before the first connection and again when
    /// MariaDB refuses it (after a rotation). Needs the `aws` build feature.
    #[arg(long, env = "DATABASE_SECRET_ARN")]
    pub database_secret_arn: Option<String>,

    /// Upper bound of the connection pool of this process: the requests one instance
    /// serves at once (the Knative Service's `containerConcurrency`), since a request
    /// holds at most one connection. Every instance counts against the database's
    /// `max_connections` (`scripts/check_deploy.py` adds them up).
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Seconds a pooled database connection may sit unused before it is closed, so an
    /// instance whose traffic dropped hands its connections back.
    #[arg(long, env = "DB_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub db_idle_timeout_secs: u64,

    /// How long a request waits for a backend before it is answered 503 `unavailable`:
    /// for a database connection from the pool (connecting included), and for Redis to
    /// connect or answer a command. Milliseconds.
    #[arg(long, env = "BACKEND_TIMEOUT_MS", default_value_t = 1000)]
    pub backend_timeout_ms: u64,

    /// `redis://host:6379`, or `rediss://host:6380` for TLS (the server's certificate is
    /// verified against the system's CAs, `SSL_CERT_FILE`/`SSL_CERT_DIR` included, or
    /// `REDIS_CA_FILE`). Unset means an in-process store, which is only correct when
    /// every function runs in one process (`missive dev`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// PEM file of the CA(s) that sign the Redis server's certificate (`rediss://`),
    /// instead of the system's.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// AWS Secrets Manager secret holding the Redis password (and optionally user name),
    /// as `DATABASE_SECRET_ARN`: read for each new connection (at most every few
    /// seconds). Needs the `aws` build feature.
    #[arg(long, env = "REDIS_SECRET_ARN")]
    pub redis_secret_arn: Option<String>,

    /// ElastiCache IAM authentication: the replication group (or serverless cache) id.
    /// The user is `REDIS_URL`'s (the ElastiCache user id, equal to its name); its
    /// password is a token signed with the process's AWS identity, renewed every 10
    /// minutes. Needs `rediss://` and the `aws` build feature.
    #[arg(long, env = "REDIS_IAM_CACHE_NAME")]
    pub redis_iam_cache_name: Option<String>,

    /// `REDIS_IAM_CACHE_NAME` names a serverless cache, not a replication group.
    #[arg(long, env = "REDIS_IAM_SERVERLESS", default_value_t = false)]
    pub redis_iam_serverless: bool,

    /// Prefix of every Redis key and channel, so several deployments (or tests) can share
    /// one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "missive:")]
    pub redis_key_prefix: String,

    /// Session lifetime in seconds; every authenticated request slides it forward.
    #[arg(long, env = "SESSION_TTL", default_value_t = 7 * 24 * 3600)]
    pub session_ttl_secs: u64,

    /// Absolute session lifetime in seconds: however active, a session ends this long
    /// after its login.
    #[arg(long, env = "SESSION_MAX_AGE", default_value_t = 30 * 24 * 3600)]
    pub session_max_age_secs: u64,

    /// Serving over HTTPS: the session cookie is `__Host-missive_session` with `Secure`,
    /// and responses carry `Strict-Transport-Security`.
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// The site's public origins (`https://missive.example.com`, comma-separated): a
    /// browser's state-changing API request from any other `Origin` gets 403. Unset:
    /// the request's own `Host` (right for `missive dev`; behind a gateway that rewrites
    /// `Host`, set it).
    #[arg(long, env = "PUBLIC_ORIGINS", value_delimiter = ',')]
    pub public_origins: Vec<String>,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,

    /// Time a request may take before it is answered with 503 `timeout`, in seconds.
    /// Streaming responses (SSE) are only bounded until their headers are sent.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// After SIGTERM, how long in-flight requests may run before the process exits anyway.
    /// Knative's default termination grace period is 30 s; stay under it.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,

    /// Log filter when `RUST_LOG` is unset (`error`, `warn`, `info`, `debug`, `trace`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Where events are sent as HTTP CloudEvents (Knative's SinkBinding injects `K_SINK`).
    /// Used when `KAFKA_BROKERS` is unset. Neither set: the in-process bus.
    #[arg(long, env = "K_SINK")]
    pub k_sink: Option<String>,

    /// Kafka bootstrap servers (`host:9092,...`): events are published there.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// `plaintext` (default), `ssl`, `sasl_ssl` or `sasl_plaintext`.
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", default_value = "plaintext")]
    pub kafka_security_protocol: SecurityProtocol,

    /// With the SASL protocols: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`,
    /// `OAUTHBEARER` (a token file), or `AWS_MSK_IAM` (tokens signed with the process's
    /// AWS identity; `sasl_ssl` and the `aws` build feature).
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,

    /// SASL user (PLAIN, SCRAM).
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// SASL password (PLAIN, SCRAM).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<SecretString>,

    /// OAUTHBEARER: a file holding the bearer token (e.g. a projected service-account
    /// token), read again before each expiry.
    #[arg(long, env = "KAFKA_OAUTHBEARER_TOKEN_FILE")]
    pub kafka_oauthbearer_token_file: Option<std::path::PathBuf>,

    /// PEM file of the CA(s) that sign the brokers' certificates (`ssl`, `sasl_ssl`),
    /// instead of the system's. Any other librdkafka setting: `KAFKA_PROP_<NAME>`.
    #[arg(long, env = "KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<std::path::PathBuf>,

    /// Topic of the domain events functions emit.
    #[arg(long, env = "KAFKA_EVENTS_TOPIC", default_value = "missive.events")]
    pub kafka_events_topic: String,

    /// Topic event producers publish `message.submitted` to.
    #[arg(long, env = "KAFKA_INBOX_TOPIC", default_value = "missive.inbox")]
    pub kafka_inbox_topic: String,

    /// Topic of events that failed permanently.
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = "missive.dlq")]
    pub kafka_dlq_topic: String,

    /// The outbox relay publishes rows at least this old (seconds), leaving newer ones
    /// to the request that wrote them.
    #[arg(long, env = "OUTBOX_RELAY_MIN_AGE_SECS", default_value_t = 5)]
    pub outbox_relay_min_age_secs: u64,

    /// The networks of the proxies in front (comma-separated CIDRs: the cluster's pod
    /// and service ranges, and 127.0.0.0/8 for queue-proxy): the client is the
    /// rightmost `X-Forwarded-For` address outside them. Takes precedence over
    /// `TRUSTED_PROXY_HOPS`.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::http::Cidr>,

    /// How many proxies in front append the client's address to `X-Forwarded-For`
    /// (when their addresses are not known; see `TRUSTED_PROXIES`). 0 (default) and no
    /// `TRUSTED_PROXIES`: the header is not trusted and the peer address is the client.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,

    /// Failed logins allowed per username from one client within 15 minutes; more get
    /// 429 for that username from that client only.
    #[arg(long, env = "LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 5)]
    pub login_failures_per_account: u64,

    /// Failed logins allowed from one client across usernames within 15 minutes.
    #[arg(long, env = "LOGIN_FAILURES_PER_CLIENT", default_value_t = 50)]
    pub login_failures_per_client: u64,

    /// Failed logins per minute across all clients past which clients that failed
    /// recently are refused (those that did not fail still log in).
    #[arg(long, env = "LOGIN_FAILURES_GLOBAL_PER_MINUTE", default_value_t = 600)]
    pub login_failures_global_per_minute: u64,

    /// Signups allowed from one client per hour.
    #[arg(long, env = "SIGNUPS_PER_CLIENT_PER_HOUR", default_value_t = 20)]
    pub signups_per_client_per_hour: u64,

    /// Connections one instance serves at once; one more is answered 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers before its connection is
    /// closed (slow clients cannot hold connections open).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Live activity streams one user may hold open on one instance; more get 429.
    #[arg(long, env = "STREAMS_PER_USER", default_value_t = 5)]
    pub streams_per_user: usize,

    /// Live activity streams one instance serves; more get 503.
    #[arg(long, env = "STREAMS_PER_INSTANCE", default_value_t = 1000)]
    pub streams_per_instance: usize,

    /// A live stream ends after this many seconds (the browser reconnects and resumes
    /// where it was): keep it under the platform's request timeout (the Knative
    /// Service's `timeoutSeconds`, 600 for activity-stream).
    #[arg(long, env = "STREAM_MAX_SECS", default_value_t = 540)]
    pub stream_max_secs: u64,

    /// Who may deliver events to event functions (`EVENT_AUTH`, `OIDC_*`).
    #[command(flatten)]
    pub sender_identity: crate::sender_identity::Settings,
}

impl Config {
    /// `DATABASE_URL` with `DATABASE_CA_FILE` applied (see there).
    pub fn database_url(&self) -> anyhow::Result<SecretString> {
        let url = self
            .database_url
            .as_ref()
            .context("DATABASE_URL is required (mysql://... or sqlite://...)")?;
        missive_adapters::sql::with_ca_file(url.expose_secret(), self.database_ca_file.as_deref())
            .map(SecretString::from)
    }

    /// How this process's database pool behaves, `max_connections` and the acquire bound
    /// aside from the defaults when a caller needs others (migrations).
    pub fn pool_settings(&self) -> missive_adapters::sql::PoolSettings {
        missive_adapters::sql::PoolSettings {
            max_connections: self.db_max_connections.max(1),
            idle_timeout: Duration::from_secs(self.db_idle_timeout_secs.max(1)),
            acquire_timeout: self.backend_timeout(),
            // No statement outlives the request that started it.
            statement_timeout: Some(self.request_timeout()),
        }
    }

    /// How to reach Kafka, when `KAFKA_BROKERS` is set: the `KAFKA_*` security settings,
    /// `SSL_CERT_FILE`, and every `KAFKA_PROP_*` variable of the environment.
    pub fn kafka(&self) -> anyhow::Result<Option<KafkaConnection>> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        let security = KafkaSecurity {
            protocol: self.kafka_security_protocol,
            mechanism: self.kafka_sasl_mechanism,
            username: self.kafka_sasl_username.clone(),
            password: self.kafka_sasl_password.clone(),
            token_file: self.kafka_oauthbearer_token_file.clone(),
            token_source: self.kafka_token_source(),
            ca_file: self.kafka_ca_file.clone(),
        };
        let ssl_cert_file = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
        KafkaConnection::new(
            brokers,
            &security,
            ssl_cert_file.as_deref(),
            std::env::vars().filter(|(name, _)| name.starts_with(PROP_PREFIX)),
        )
        .map(Some)
    }

    /// Where the database password comes from when not from `DATABASE_URL`.
    pub fn database_credentials(&self) -> anyhow::Result<Option<Arc<dyn CredentialSource>>> {
        let Some(arn) = &self.database_secret_arn else {
            return Ok(None);
        };
        aws::secret(arn, "DATABASE_SECRET_ARN").map(Some)
    }

    /// Where the Redis credentials come from when not from `REDIS_URL`.
    pub fn redis_credentials(&self) -> anyhow::Result<Option<Arc<dyn CredentialSource>>> {
        match (&self.redis_secret_arn, &self.redis_iam_cache_name) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                anyhow::bail!("REDIS_SECRET_ARN and REDIS_IAM_CACHE_NAME are both set: give one")
            }
            (Some(arn), None) => aws::secret(arn, "REDIS_SECRET_ARN").map(Some),
            (None, Some(cache)) => {
                let url = self
                    .redis_url
                    .as_ref()
                    .context("REDIS_IAM_CACHE_NAME needs REDIS_URL")?;
                let url =
                    url::Url::parse(url.expose_secret()).context("REDIS_URL is not a valid URL")?;
                anyhow::ensure!(
                    url.scheme() == "rediss",
                    "REDIS_IAM_CACHE_NAME needs TLS: REDIS_URL must be rediss://"
                );
                anyhow::ensure!(
                    !url.username().is_empty() && url.password().is_none(),
                    "REDIS_IAM_CACHE_NAME needs the IAM user in REDIS_URL and no password \
                     (rediss://user@host:6379)"
                );
                aws::elasticache(cache, url.username(), self.redis_iam_serverless).map(Some)
            }
        }
    }

    /// The MSK IAM token signer (`KAFKA_SASL_MECHANISM=AWS_MSK_IAM`), when built in.
    fn kafka_token_source(&self) -> Option<Arc<dyn TokenSource>> {
        if self.kafka_sasl_mechanism == Some(SaslMechanism::AwsMskIam) {
            aws::msk_iam()
        } else {
            None
        }
    }

    /// The request limits of the runtime contract.
    pub fn limits(&self) -> missive_serve::Limits {
        missive_serve::Limits {
            body_limit_bytes: self.body_limit_bytes,
            request_timeout: self.request_timeout(),
            allowed_origins: self.public_origins.clone(),
            hsts: self.cookie_secure,
        }
    }

    /// Which forwarding proxies are believed.
    pub fn proxy_trust(&self) -> crate::http::ProxyTrust {
        crate::http::ProxyTrust {
            proxies: self.trusted_proxies.clone(),
            hops: self.trusted_proxy_hops,
        }
    }

    /// The server's connection limits.
    pub fn connection_limits(&self) -> missive_serve::ConnectionLimits {
        missive_serve::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
        }
    }

    /// Session lifetime.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    /// Absolute session lifetime.
    pub fn session_max_age(&self) -> Duration {
        Duration::from_secs(self.session_max_age_secs)
    }

    /// See [`Config::backend_timeout_ms`].
    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms)
    }

    /// Per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Bound on draining in-flight requests after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for Config {
    /// The defaults above, with no database or Redis: what tests start from.
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        // Parse from an empty argument list and no environment lookups beyond the
        // process's own; tests override fields afterwards.
        Wrapper::parse_from(["missive"]).config
    }
}

/// The AWS credential sources, or a clear error in a build without the `aws` feature.
#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;

    use missive_adapters::aws::{Aws, ElastiCacheIam, MskIam, SecretPassword};
    use missive_adapters::credentials::CredentialSource;
    use missive_adapters::events::kafka::TokenSource;

    pub(super) fn secret(
        arn: &str,
        variable: &'static str,
    ) -> anyhow::Result<Arc<dyn CredentialSource>> {
        Ok(Arc::new(SecretPassword::new(Aws::shared(), arn, variable)))
    }

    pub(super) fn elasticache(
        cache: &str,
        user: &str,
        serverless: bool,
    ) -> anyhow::Result<Arc<dyn CredentialSource>> {
        Ok(Arc::new(ElastiCacheIam::new(
            Aws::shared(),
            cache,
            user,
            serverless,
        )))
    }

    pub(super) fn msk_iam() -> Option<Arc<dyn TokenSource>> {
        Some(Arc::new(MskIam::new(Aws::shared())))
    }
}

#[cfg(not(feature = "aws"))]
mod aws {
    use std::sync::Arc;

    use missive_adapters::credentials::CredentialSource;
    use missive_adapters::events::kafka::TokenSource;

    const NOT_BUILT: &str = "needs a build with the `aws` feature (the release images have it; \
                             `cargo build --features aws`)";

    pub(super) fn secret(
        _arn: &str,
        variable: &'static str,
    ) -> anyhow::Result<Arc<dyn CredentialSource>> {
        anyhow::bail!("{variable} {NOT_BUILT}")
    }

    pub(super) fn elasticache(
        _cache: &str,
        _user: &str,
        _serverless: bool,
    ) -> anyhow::Result<Arc<dyn CredentialSource>> {
        anyhow::bail!("REDIS_IAM_CACHE_NAME {NOT_BUILT}")
    }

    /// `None`: KafkaConnection says what is missing.
    pub(super) fn msk_iam() -> Option<Arc<dyn TokenSource>> {
        None
    }
}
