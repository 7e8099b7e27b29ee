//! The SQL database: MariaDB in production, SQLite for `missive dev`, through one code
//! path (sqlx's `Any` driver) so every query is written once. Queries are parameterized;
//! the only SQL built at run time repeats fixed fragments, never user text.
//!
//! Timestamps are Unix milliseconds; ids are `BIGINT AUTO_INCREMENT` row ids, read back
//! with `INSERT ... RETURNING` (MariaDB 10.5+, SQLite 3.35+; plain MySQL lacks it).
//!
//! This module is the pool, the migrations and readiness; each feature's queries live
//! with the feature (`missive-app`: `auth::store`, `messages::store`), and the outbox's
//! in [`crate::outbox`]. Every statement goes through [`traced`], so it has its span.

pub mod traced;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::ConnectOptions;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateDatabase, Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection, Row, SqlSafeStr};
use traced::query;

use crate::credentials::{CredentialCache, CredentialSource, Credentials};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MariaDB (or MySQL), `mysql://`.
    MariaDb,
    /// SQLite, `sqlite://`.
    Sqlite,
}

impl Backend {
    /// From a database URL; fails for anything else.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Self::MariaDb)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!("DATABASE_URL must start with mysql:// or sqlite:")
        }
    }

    /// The OpenTelemetry `db.system.name` of this backend.
    pub fn system_name(self) -> &'static str {
        match self {
            Self::MariaDb => "mariadb",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A connection pool, and where its credentials come from when the URL does not hold
/// them (a rotated secret, a token). Statements take connections through
/// [`traced::acquire`], which goes through [`Pool::acquire`].
#[derive(Debug, Clone)]
pub struct Pool {
    pool: AnyPool,
    credentials: Option<Arc<PoolCredentials>>,
}

#[derive(Debug)]
struct PoolCredentials {
    cache: CredentialCache,
    /// The configured URL: user name, database and options; its password (if any) is
    /// replaced by the fetched one.
    url: SecretString,
    /// What new connections currently use; `None` before the first fetch.
    applied: std::sync::Mutex<Option<Credentials>>,
}

impl Pool {
    /// The sqlx pool, for what runs outside [`traced`] (tests, the migrator).
    pub fn any(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection, with current credentials. When the database refuses them (a rotated
    /// secret), they are fetched again and the connection is tried once more.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let Some(credentials) = &self.credentials else {
            return self.pool.acquire().await;
        };
        self.apply_credentials(credentials, false).await?;
        match self.pool.acquire().await {
            Err(err) if access_denied(&err) => {
                let used = lock(&credentials.applied).clone();
                let retry = match used {
                    Some(used) => credentials.cache.refused(&used).await,
                    None => false,
                };
                if !retry {
                    return Err(err);
                }
                tracing::warn!(
                    source = %credentials.cache.describe(),
                    "MariaDB refused the credentials; fetched them again"
                );
                self.apply_credentials(credentials, true).await?;
                self.pool.acquire().await
            }
            other => other,
        }
    }

    /// Makes new connections use the current credentials: before the first connection,
    /// when a token is due, and after a refusal (`force`).
    async fn apply_credentials(
        &self,
        credentials: &PoolCredentials,
        force: bool,
    ) -> Result<(), sqlx::Error> {
        let applied = lock(&credentials.applied).is_some();
        if applied && !force && !credentials.cache.due() {
            return Ok(());
        }
        let fresh = credentials
            .cache
            .get()
            .await
            .map_err(|err| sqlx::Error::Configuration(err.into()))?;
        if lock(&credentials.applied).as_ref() == Some(&fresh) {
            return Ok(());
        }
        let url = parsed_with_credentials(credentials.url.expose_secret(), &fresh)
            .map_err(|err| sqlx::Error::Configuration(err.into()))?;
        self.pool
            .set_connect_options(AnyConnectOptions::from_url(&url)?);
        *lock(&credentials.applied) = Some(fresh);
        Ok(())
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// MariaDB's "Access denied" (1045, SQLSTATE 28000): the credentials were refused.
fn access_denied(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("28000"))
}

/// `url` with the user name (when given) and password of `credentials`.
pub fn url_with_credentials(url: &str, credentials: &Credentials) -> anyhow::Result<SecretString> {
    parsed_with_credentials(url, credentials).map(|parsed| String::from(parsed).into())
}

fn parsed_with_credentials(url: &str, credentials: &Credentials) -> anyhow::Result<url::Url> {
    let mut parsed = url::Url::parse(url).context("DATABASE_URL is not a valid URL")?;
    if let Some(username) = &credentials.username {
        parsed
            .set_username(username)
            .ok()
            .context("DATABASE_URL cannot take a user name")?;
    }
    parsed
        .set_password(Some(credentials.password.expose_secret()))
        .ok()
        .context("DATABASE_URL cannot take a password")?;
    Ok(parsed)
}

/// The database handle every function shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    /// Where writes go. SQLite allows one writer at a time and makes the others sleep in
    /// its busy handler (up to 100 ms a try), which under load gave a p99 of 300 ms; a
    /// one-connection pool queues writers fairly in process instead. On MariaDB this is
    /// the same pool as `pool`: InnoDB locks rows, not the database.
    writer: Pool,
    backend: Backend,
    /// Set once the schema was seen migrated as far as this build needs (see [`Db::ping`]).
    schema_current: Arc<std::sync::atomic::AtomicBool>,
}

fn migrator(backend: Backend) -> Migrator {
    let files: [(&str, &str); 4] = match backend {
        Backend::MariaDb => [
            (
                "init",
                include_str!("../../../migrations/mysql/0001_init.sql"),
            ),
            (
                "outbox",
                include_str!("../../../migrations/mysql/0002_outbox.sql"),
            ),
            (
                "idempotency utf8",
                include_str!("../../../migrations/mysql/0003_idempotency_utf8.sql"),
            ),
            (
                "search nfc",
                include_str!("../../../migrations/mysql/0004_search_nfc.sql"),
            ),
        ],
        Backend::Sqlite => [
            (
                "init",
                include_str!("../../../migrations/sqlite/0001_init.sql"),
            ),
            (
                "outbox",
                include_str!("../../../migrations/sqlite/0002_outbox.sql"),
            ),
            (
                "idempotency utf8",
                include_str!("../../../migrations/sqlite/0003_idempotency_utf8.sql"),
            ),
            (
                "search nfc",
                include_str!("../../../migrations/sqlite/0004_search_nfc.sql"),
            ),
        ],
    };
    Migrator::with_migrations(
        files
            .into_iter()
            .zip(1..)
            .map(|((description, sql), version)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// How a process uses the database.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Upper bound of open connections. A function sizes it to the requests one instance
    /// serves at once (its container concurrency): more could never be used, and every
    /// instance's bound counts against the database's `max_connections`.
    pub max_connections: u32,
    /// A connection unused this long is closed, so an instance whose traffic dropped
    /// gives its connections back to the database instead of holding its peak.
    pub idle_timeout: Duration,
    /// The longest wait for a connection, connecting included: past it, the database is
    /// down or saturated, and a request is answered 503 (see `traced::outage`).
    pub acquire_timeout: Duration,
    /// MariaDB stops any statement running longer (`max_statement_time`), so a request
    /// that timed out does not leave its query running; `None` for none (migrations).
    /// SQLite statements run in process and end with their request.
    pub statement_timeout: Option<Duration>,
}

impl Db {
    /// A pool that connects on first use: start-up does no network I/O.
    pub fn connect_lazy(url: &str, settings: PoolSettings) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        traced::set_target(backend.system_name(), namespace(url));
        let pool = Pool {
            pool: Self::pool(url, backend, settings)?,
            credentials: None,
        };
        let writer = match backend {
            Backend::Sqlite => Pool {
                pool: Self::pool(
                    url,
                    backend,
                    PoolSettings {
                        max_connections: 1,
                        ..settings
                    },
                )?,
                credentials: None,
            },
            Backend::MariaDb => pool.clone(),
        };
        Ok(Self {
            pool,
            writer,
            backend,
            schema_current: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    fn pool(url: &str, backend: Backend, settings: PoolSettings) -> anyhow::Result<AnyPool> {
        // Fixed text from a number, not user input.
        let limit = settings.statement_timeout.map(|limit| {
            format!(
                "SET SESSION max_statement_time = {:.3}",
                limit.as_secs_f64()
            )
        });
        AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .idle_timeout(settings.idle_timeout)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let limit = limit.clone();
                Box::pin(async move {
                    if let (Backend::MariaDb, Some(limit)) = (backend, limit) {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(limit))
                            .execute(&mut *conn)
                            .await?;
                    }
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL sync is durable
                        // across application crashes, which is what a dev database needs.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(url)
            .context("DATABASE_URL is not a valid database URL")
    }

    /// Connects with credentials from `source` instead of the URL's password (a secret
    /// that rotates, a token): fetched before the first connection, again when MariaDB
    /// refuses them, and before a token's lifetime ends. No I/O here either.
    pub fn with_credentials(
        mut self,
        url: &str,
        source: Arc<dyn CredentialSource>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.backend == Backend::MariaDb,
            "{} is for MariaDB, and DATABASE_URL is not mysql://",
            source.describe()
        );
        let credentials = Arc::new(PoolCredentials {
            cache: CredentialCache::new(source),
            url: url.to_owned().into(),
            applied: std::sync::Mutex::new(None),
        });
        self.pool.credentials = Some(credentials);
        self.writer = self.pool.clone();
        Ok(self)
    }

    /// Creates the database when it does not exist yet (`missive migrate`, `missive dev`).
    pub async fn create_if_missing(url: &str) -> anyhow::Result<()> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        if !Any::database_exists(url)
            .await
            .map_err(connect_error)
            .context("checking the database")?
        {
            Any::create_database(url)
                .await
                .map_err(connect_error)
                .context("creating the database")?;
        }
        Ok(())
    }

    /// Applies the migrations of this backend. Only `missive migrate` and `missive dev`
    /// call this; production functions never migrate at start-up.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        // The migrator takes sqlx's pool: give it current credentials first.
        drop(self.writer.acquire().await.map_err(connect_error)?);
        migrator(self.backend)
            .run(&self.writer.pool)
            .await
            .map_err(|err| match err {
                sqlx::migrate::MigrateError::Execute(err) => connect_error(err),
                other => other.into(),
            })
            .context("applying migrations")
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool reads use.
    pub fn reader(&self) -> &Pool {
        &self.pool
    }

    /// The pool writes use: on SQLite a single connection (see the field), on MariaDB the
    /// same pool as [`Db::reader`].
    pub fn writer(&self) -> &Pool {
        &self.writer
    }

    /// Readiness: a round trip to the database, and (until seen once) a schema migrated
    /// at least as far as this build needs. A new revision deployed before the release's
    /// `missive migrate` Job has finished therefore stays unready and takes no traffic;
    /// an older revision on a newer schema is ready (migrations only add).
    pub async fn ping(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let mut conn = self.pool.acquire().await.map_err(connect_error)?;
        if self.schema_current.load(Ordering::Relaxed) {
            conn.ping().await?;
            return Ok(());
        }
        let needed = migrator(self.backend).iter().count() as i64;
        // Versions are 1..=N without gaps, so the count of applied ones is the version. No
        // table yet (a database never migrated) counts as none.
        let applied: i64 = query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&mut *conn)
            .await
            .ok()
            .and_then(|row| row.try_get(0).ok())
            .unwrap_or(0);
        if applied < needed {
            anyhow::bail!(
                "the database schema is at migration {applied}, this build needs {needed}: run `missive migrate`"
            );
        }
        self.schema_current.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.writer.pool.close().await;
        self.pool.pool.close().await;
    }
}

/// A database error; a TLS failure says which backend it was and where the trust comes from: "invalid peer certificate: UnknownIssuer" alone does not tell an
/// operator that the MariaDB server's certificate is the one at fault.
pub fn connect_error(err: sqlx::Error) -> anyhow::Error {
    // A refused certificate comes back as an I/O error wrapping rustls' error.
    let tls = match &err {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    };
    if !tls {
        return err.into();
    }
    anyhow::Error::new(err).context(
        "TLS to MariaDB (DATABASE_URL) failed: the server's certificate is checked against \
         DATABASE_CA_FILE, or else the system's CAs (SSL_CERT_FILE), as its ssl-mode says",
    )
}

/// `url` with the CA bundle the server's certificate must chain to (`DATABASE_CA_FILE`):
/// `ssl-ca=<file>`, and `ssl-mode=verify_identity` unless the URL names a mode, so that
/// giving a CA means the certificate and the host name are checked. Without `ca_file`, the
/// URL is used as written (its `ssl-mode` and `ssl-ca`, if any; sqlx's default mode is
/// `preferred`: TLS when the server offers it, unverified, as the MySQL client does).
pub fn with_ca_file(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let Some(ca_file) = ca_file else {
        return Ok(url.to_owned());
    };
    if Backend::from_url(url)? != Backend::MariaDb {
        anyhow::bail!("DATABASE_CA_FILE is set but DATABASE_URL is not mysql://");
    }
    let ca_file = ca_file
        .to_str()
        .context("DATABASE_CA_FILE is not a UTF-8 path")?;
    let mut parsed = url::Url::parse(url).context("DATABASE_URL is not a valid URL")?;
    let keys: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    if keys.iter().any(|k| k == "ssl-ca" || k == "sslca") {
        anyhow::bail!("DATABASE_CA_FILE is set and DATABASE_URL has ssl-ca too: give one");
    }
    {
        let mut query = parsed.query_pairs_mut();
        query.append_pair("ssl-ca", ca_file);
        if !keys.iter().any(|k| k == "ssl-mode" || k == "sslmode") {
            query.append_pair("ssl-mode", "verify_identity");
        }
    }
    Ok(parsed.into())
}

/// `db.namespace`: the database name of a MariaDB URL, the file name of a SQLite one.
fn namespace(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name = match path
        .strip_prefix("mysql://")
        .or_else(|| path.strip_prefix("mariadb://"))
    {
        Some(rest) => rest.split_once('/').map_or("", |(_, db)| db),
        None => path.rsplit(['/', ':']).next().unwrap_or_default(),
    };
    name.to_owned()
}

/// Whether `err` (from [`traced`]) is a unique or primary key violation.
pub fn is_unique_violation(err: &anyhow::Error) -> bool {
    matches!(err.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Database(db)) if db.is_unique_violation())
}
