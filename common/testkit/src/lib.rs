//! Test helpers (a dev-dependency only): the real app on either backend, a small request
//! builder that drives a router in process, child processes, and an OTLP receiver.
//!
//! Each [`TestBackends`] instance is isolated: its own SQLite file, or its own MariaDB
//! database and Redis key prefix, so tests run in parallel. It removes them (the
//! database and the prefix's keys) when dropped,
//! so a test that fails half-way leaves nothing behind.
//!
//! # Layout
//! - this file: [`TestBackends`], [`TestRequest`], [`TestResponse`].
//! - [`process`]: signals and exits of child processes (runtime-contract tests).
//! - [`proxy`]: a TCP proxy a test cuts, to take a backend away.
//! - [`otlp`]: an OTLP/HTTP receiver that decodes what the exporters send.
//! - [`oidc`]: a fake token issuer (JWKS endpoint, good and bad sender tokens).

pub mod oidc;
pub mod process;
pub mod proxy;
pub mod tls;

/// An OTLP/HTTP receiver for tests.
pub mod otlp {
    pub use missive_otlp::receiver::*;
}

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use secrecy::SecretString;
use tower::ServiceExt;

use missive_adapters::sql::Db;
use missive_app::AppState;
use missive_app::config::Config;

/// Which backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite file and in-process store: what `missive dev` uses by default.
    Embedded,
    /// MariaDB and Redis, from `MISSIVE_TEST_DATABASE_URL` (default
    /// `mysql://root@127.0.0.1:3306`) and `MISSIVE_TEST_REDIS_URL` (default
    /// `redis://127.0.0.1:6379`). A missing server fails the test; it never skips.
    Real,
}

/// Backends made for one test, removed when this is dropped.
pub struct TestBackends {
    /// Config pointing at them; adjust fields before building state.
    pub config: Config,
    cleanup: Option<Cleanup>,
}

enum Cleanup {
    File(std::path::PathBuf),
    Database {
        server: String,
        name: String,
        /// Redis URL and the test's key prefix.
        redis: (String, String),
    },
}

impl TestBackends {
    /// Creates a fresh, migrated database (and key prefix) for one test.
    pub async fn new(backends: Backends) -> Self {
        // Logs of a failing test show up in its captured output.
        let _ = missive_telemetry::init("missive-test", "warn");
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut config = Config::default();
        let (url, cleanup) = match backends {
            Backends::Embedded => {
                let path = std::env::temp_dir().join(format!("missive-test-{unique}.db"));
                config.redis_url = None;
                (format!("sqlite://{}", path.display()), Cleanup::File(path))
            }
            Backends::Real => {
                let server = std::env::var("MISSIVE_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
                let server = server.trim_end_matches('/').to_owned();
                let redis = redis_url();
                config.redis_url = Some(SecretString::from(redis.clone()));
                config.redis_key_prefix = format!("missive-test:{unique}:");
                let name = format!("missive_test_{unique}");
                (
                    format!("{server}/{name}"),
                    Cleanup::Database {
                        server,
                        name,
                        redis: (redis, config.redis_key_prefix.clone()),
                    },
                )
            }
        };
        Db::create_if_missing(&url)
            .await
            .unwrap_or_else(|e| panic!("test database {url}: {e:#}"));
        let db = Db::connect_lazy(
            &url,
            missive_adapters::sql::PoolSettings {
                max_connections: 5,
                idle_timeout: Duration::from_secs(60),
                acquire_timeout: Duration::from_secs(10),
                statement_timeout: None,
            },
        )
        .expect("test database URL");
        db.migrate().await.expect("migrations apply");
        missive_app::messages::store::reindex_search(&db)
            .await
            .expect("the search index is current");
        db.close().await;
        config.database_url = Some(SecretString::from(url));
        // Tests sign up many users from one (absent) address; the tests of that limit
        // set it back.
        config.signups_per_client_per_hour = 1_000_000;
        Self {
            config,
            cleanup: Some(cleanup),
        }
    }

    /// Removes the database now (dropping does the same).
    pub async fn cleanup(mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run().await;
        }
    }

    /// The environment a function binary needs to run on these backends (the Secret's
    /// URLs and the test's key prefix), for process-level tests.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        use secrecy::ExposeSecret;
        let c = &self.config;
        let mut env = Vec::new();
        if let Some(url) = &c.database_url {
            env.push(("DATABASE_URL", url.expose_secret().to_owned()));
        }
        if let Some(url) = &c.redis_url {
            env.push(("REDIS_URL", url.expose_secret().to_owned()));
        }
        env.push(("REDIS_KEY_PREFIX", c.redis_key_prefix.clone()));
        env
    }

    /// Builds the app state on these backends.
    pub fn state(&self) -> AppState {
        AppState::build(self.config.clone()).expect("test state builds")
    }
}

impl Drop for TestBackends {
    /// Removes the database (the Redis keys carry a unique prefix and expire or are
    /// tiny), also when the test panicked. Runs on a thread of its own: `Drop` cannot
    /// await, and the test's runtime may be the one panicking.
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        let done = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(cleanup.run()),
                Err(err) => eprintln!("test clean-up: no runtime: {err}"),
            }
        });
        let _ = done.join();
    }
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Database {
                server,
                name,
                redis,
            } => {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&server).await {
                    let drop = format!("DROP DATABASE IF EXISTS `{name}`");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await;
                }
                let _ = delete_keys(&redis.0, &redis.1).await;
            }
        }
    }
}

/// The Redis server tests use: `MISSIVE_TEST_REDIS_URL`, default the local one.
pub fn redis_url() -> String {
    std::env::var("MISSIVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes every key under `prefix` (sessions, activity, counters of one test).
async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = {
        use futures_util::StreamExt as _;
        let mut scan =
            redis::AsyncCommands::scan_match::<_, String>(&mut conn, format!("{prefix}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        keys
    };
    if !keys.is_empty() {
        redis::AsyncCommands::del::<_, ()>(&mut conn, keys).await?;
    }
    Ok(())
}

/// A request to send through a router.
pub struct TestRequest {
    builder: axum::http::request::Builder,
    body: Body,
}

impl TestRequest {
    /// A request without body.
    pub fn new(method: Method, uri: &str) -> Self {
        Self {
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(value.to_string());
        self
    }

    /// Sets a raw body (no content type).
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.builder = self.builder.header(
            HeaderName::try_from(name.as_ref()).expect("test header name"),
            HeaderValue::try_from(value.as_ref()).expect("test header value"),
        );
        self
    }

    /// Adds the session cookie, if any.
    pub fn cookie(self, cookie: Option<&str>) -> Self {
        match cookie {
            Some(c) => self.header("cookie", c),
            None => self,
        }
    }

    /// Comes from `ip` (the peer address a server would see).
    pub fn from_ip(mut self, ip: &str) -> Self {
        let addr = std::net::SocketAddr::new(ip.parse().expect("test IP address"), 40000);
        self.builder = self.builder.extension(axum::extract::ConnectInfo(addr));
        self
    }

    /// The request's path.
    pub fn path(&self) -> &str {
        self.builder.uri_ref().map(|u| u.path()).unwrap_or("")
    }

    /// Sends it through `router` and reads the whole response.
    pub async fn send(self, router: &Router) -> TestResponse {
        let request = self.builder.body(self.body).expect("test request builds");
        let response = router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
            .await
            .expect("response body within 30 s")
            .expect("response body reads")
            .to_bytes();
        TestResponse {
            status,
            headers,
            body: bytes.to_vec(),
        }
    }
}

/// A complete response.
#[derive(Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "body is not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.json()))
            .to_owned()
    }

    /// `name=value` of the session cookie set by this response, for the next request.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| {
                v.starts_with(missive_app::http::SESSION_COOKIE)
                    || v.starts_with(missive_app::http::SECURE_SESSION_COOKIE)
            })
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    }
}
