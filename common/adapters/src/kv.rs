//! The key-value store under sessions, login throttling and the activity log: Redis in
//! production, an in-process map for `missive dev`.
//!
//! Both implement the same small set of Redis-shaped primitives, so everything built on
//! them (sessions, activity, rate limits) is written once. Keys are given without the
//! deployment prefix; the Redis implementation adds it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use tokio::sync::{OnceCell, broadcast};

use crate::credentials::{CredentialCache, CredentialSource};

/// A stream of `(channel, message)` published on channels under one prefix; the channel
/// is given without the deployment prefix.
pub type Subscription = Pin<Box<dyn Stream<Item = (String, String)> + Send>>;

/// Redis-shaped primitives. Every method is one atomic step.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Sets `key` to `value`, expiring after `ttl`.
    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Sets `key` only if it does not exist; `true` when this call set it.
    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<bool>;
    /// Reads `key` and, if present, resets its expiry to `ttl` (Redis `GETEX`).
    async fn get_ex(&self, key: &str, ttl: Duration) -> anyhow::Result<Option<String>>;
    /// Reads `key` and its remaining lifetime.
    async fn get_with_ttl(&self, key: &str) -> anyhow::Result<Option<(String, Duration)>>;
    /// Deletes `key`; deleting a missing key is not an error.
    async fn del(&self, key: &str) -> anyhow::Result<()>;
    /// Adds to several counters in one atomic step (one round trip): each [`Counter`]'s
    /// `by` (0 reads it) is added to its key; a new counter expires after its `ttl` (a
    /// fixed window). Returns each new count (never below 0) and the time left in its
    /// window, in order.
    async fn incr_windows(&self, counters: &[Counter<'_>]) -> anyhow::Result<Vec<(u64, Duration)>>;
    /// [`Kv::incr_windows`] for one counter, by 1.
    async fn incr_window(&self, key: &str, ttl: Duration) -> anyhow::Result<(u64, Duration)> {
        let counted = self.incr_windows(&[Counter { key, by: 1, ttl }]).await?;
        counted
            .into_iter()
            .next()
            .context("one counter in, one out")
    }
    /// Pushes `value` on the front of the list at `key` and trims it to `max_len`.
    async fn push_front_capped(&self, key: &str, value: &str, max_len: usize)
    -> anyhow::Result<()>;
    /// The first `count` items of the list at `key`, front first.
    async fn list_front(&self, key: &str, count: usize) -> anyhow::Result<Vec<String>>;
    /// Publishes `message` to every current subscriber of `channel`.
    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()>;
    /// Subscribes to every channel whose name starts with `prefix` (Redis `PSUBSCRIBE
    /// prefix*`), on one connection however many channels there are; only messages
    /// published after this returns arrive. The stream ends when the connection is lost.
    async fn subscribe_prefix(&self, prefix: &str) -> anyhow::Result<Subscription>;
    /// Appends one numbered entry to a log in one atomic step (one round trip): unless
    /// [`LogEntry::once`]'s key exists (then `None`, nothing written), numbers the entry
    /// from the log's counter, pushes it on the front of the list (trimmed to
    /// `max_len`) and publishes it on the channel of the same name. Returns its number.
    async fn append_to_log(&self, entry: LogEntry<'_>) -> anyhow::Result<Option<u64>>;
}

/// One entry of [`Kv::append_to_log`]; its text is `before`, its number, then `after`.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// The list (newest first) and the channel its entries are published on.
    pub log: &'a str,
    /// Entries the list keeps.
    pub max_len: usize,
    /// The counter that numbers the entries (from 1, never expiring).
    pub counter: &'a str,
    /// A key set (for the duration) with the entry: when it already exists, the entry
    /// was appended before and is not appended again.
    pub once: Option<(&'a str, Duration)>,
    /// Text before the number.
    pub before: &'a str,
    /// Text after the number.
    pub after: &'a str,
}

/// One counter of [`Kv::incr_windows`].
#[derive(Debug, Clone, Copy)]
pub struct Counter<'a> {
    /// Its key.
    pub key: &'a str,
    /// What to add (0 reads it; negative takes back).
    pub by: i64,
    /// Length of the window a new counter starts.
    pub ttl: Duration,
}

/// Builds the store from config: Redis when a URL is given, in-process otherwise.
pub fn from_url(url: Option<&str>, options: &RedisOptions) -> anyhow::Result<Arc<dyn Kv>> {
    Ok(match url {
        Some(url) => Arc::new(RedisKv::with_options(url, options)?),
        None => Arc::new(MemoryKv::default()),
    })
}

/// How [`RedisKv`] connects, besides its URL.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Bounds connecting and each command (see [`RedisKv::new`]).
    pub timeout: Duration,
    /// PEM CA bundle that signs the server's certificate (`rediss://`), instead of the
    /// system's (which `SSL_CERT_FILE` and `SSL_CERT_DIR` change).
    pub ca_file: Option<std::path::PathBuf>,
    /// Where the user name and password come from when not from the URL (a rotated
    /// secret, an ElastiCache IAM token): fetched for every new connection (at most
    /// once per few seconds), and, for tokens, again before they expire, sent to the
    /// open connection with `AUTH`.
    pub credentials: Option<Arc<dyn CredentialSource>>,
}

/// Redis, through a lazily created, auto-reconnecting connection.
pub struct RedisKv {
    client: redis::Client,
    // Created on first use so that start-up does no network I/O (a cold start serves
    // `/healthz` before Redis has answered anything).
    conn: OnceCell<redis::aio::ConnectionManager>,
    /// Set once the server was found new enough ([`MIN_REDIS_MAJOR`]).
    version_ok: OnceCell<()>,
    prefix: String,
    timeout: Duration,
    credentials: Option<Arc<CredentialCache>>,
}

/// The oldest Redis major version that works: rate-limit windows use `PEXPIRE … NX`
/// (7.0). Readiness says so instead of every login failing.
pub const MIN_REDIS_MAJOR: u32 = 7;

/// The major version in an `INFO server` reply.
fn redis_major(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .and_then(|version| version.trim().split('.').next()?.parse().ok())
}

impl RedisKv {
    /// Parses the URL; connects on first use. Connecting and each command give up after
    /// `timeout`: a Redis that is down or unreachable then costs a request about that
    /// long, and the request is answered 503 (errors are marked
    /// [`missive_core::Unavailable`]) instead of waiting for the request timeout.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_options(
            url,
            &RedisOptions {
                prefix: prefix.to_owned(),
                timeout,
                ca_file: None,
                credentials: None,
            },
        )
    }

    /// [`RedisKv::new`] with every option. A `rediss://` URL connects over TLS and
    /// verifies the server's certificate and name; there is no way to turn that off.
    pub fn with_options(url: &str, options: &RedisOptions) -> anyhow::Result<Self> {
        let tls = url.starts_with("rediss://");
        if tls {
            // rustls, built without a default: ring, as for the other TLS clients here.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &options.ca_file {
            Some(path) if tls => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading REDIS_CA_FILE {}", path.display()))?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            Some(_) => anyhow::bail!("REDIS_CA_FILE is set but REDIS_URL is not rediss://"),
            None => redis::Client::open(url),
        }
        .context("REDIS_URL is not a valid Redis URL")?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            version_ok: OnceCell::new(),
            prefix: options.prefix.clone(),
            timeout: options.timeout,
            credentials: options
                .credentials
                .clone()
                .map(|source| Arc::new(CredentialCache::new(source))),
        })
    }

    /// A client for a connection of its own (pub/sub), with fresh credentials when
    /// they do not come from the URL.
    async fn client_for_new_connection(&self) -> anyhow::Result<redis::Client> {
        let Some(cache) = &self.credentials else {
            return Ok(self.client.clone());
        };
        let credentials = cache
            .get_for_new_connection()
            .await
            .context(missive_core::Unavailable::SESSION_STORE)?;
        let info = self.client.get_connection_info().clone();
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &credentials.username {
            settings = settings.set_username(username);
        }
        settings = settings.set_password(credentials.password.expose_secret());
        redis::Client::open(info.set_redis_settings(settings))
            .context("REDIS_URL is not a valid Redis URL")
    }

    async fn conn(&self) -> anyhow::Result<redis::aio::ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                redis::aio::ConnectionManager::new_with_config(
                    self.client.clone(),
                    self.manager_config(),
                )
            })
            .await
            .map_err(outage)
            .context("connecting to Redis")?;
        Ok(conn.clone())
    }

    /// How the connection manager connects; built once, when it is created.
    fn manager_config(&self) -> redis::aio::ConnectionManagerConfig {
        // No retry inside a command: the manager reconnects in the background, and the
        // request's client is the one to retry (it is told when, by `Retry-After`).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        match &self.credentials {
            Some(cache) => config.set_credentials_provider(StreamingCredentials {
                cache: cache.clone(),
                url_username: self
                    .client
                    .get_connection_info()
                    .redis_settings()
                    .username()
                    .map(str::to_owned),
            }),
            None => config,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Credentials for redis' connection manager: it takes the first item of a fresh
/// subscription for each connection it opens, and sends each later item of a second one
/// to the open connection as `AUTH` (tokens, before they expire).
struct StreamingCredentials {
    cache: Arc<CredentialCache>,
    /// When the source names no user, the URL's (else Redis' `default`).
    url_username: Option<String>,
}

impl redis::StreamingCredentialsProvider for StreamingCredentials {
    fn subscribe(
        &self,
    ) -> Pin<Box<dyn Stream<Item = redis::RedisResult<redis::BasicAuth>> + Send + 'static>> {
        let (cache, url_username) = (self.cache.clone(), self.url_username.clone());
        let stream = futures_util::stream::unfold(true, move |first| {
            let (cache, url_username) = (cache.clone(), url_username.clone());
            async move {
                let credentials = if first {
                    cache.get_for_new_connection().await
                } else {
                    // Passwords last until refused; a refused connection is a new one.
                    let lifetime = cache.lifetime()?;
                    tokio::time::sleep(lifetime).await;
                    cache.get().await
                };
                let auth = credentials
                    .map(|credentials| {
                        let username = credentials
                            .username
                            .or(url_username)
                            .unwrap_or_else(|| "default".to_owned());
                        redis::BasicAuth::new(
                            username,
                            credentials.password.expose_secret().to_owned(),
                        )
                    })
                    .map_err(|err| {
                        redis::RedisError::from((
                            redis::ErrorKind::AuthenticationFailed,
                            "fetching Redis credentials failed",
                            format!("{err:#}"),
                        ))
                    });
                Some((auth, false))
            }
        });
        Box::pin(stream)
    }
}

/// A Redis command's client span. It is held, not entered, while the command runs: it has
/// no children, and entering it on every poll would cost for nothing (as for SQL
/// statements, `db::traced`).
fn command_span(command: &'static str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = command,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = command,
    )
}

/// A Redis error as the layers above see it: one that says Redis is down, unreachable, too
/// slow or not ready (loading, failing over) is marked [`missive_core::Unavailable`]; any
/// other (a wrong reply type, a refused command) stays a plain failure, a bug of ours.
fn outage(err: redis::RedisError) -> anyhow::Error {
    use redis::RetryMethod;
    let down = err.is_io_error()
        || err.is_timeout()
        || matches!(
            err.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::Reconnect
        ) && err.kind() != redis::ErrorKind::AuthenticationFailed;
    if down {
        anyhow::Error::new(err).context(missive_core::Unavailable::SESSION_STORE)
    } else {
        err.into()
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Kv for RedisKv {
    async fn ping(&self) -> anyhow::Result<()> {
        let _span = command_span("PING");
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        self.version_ok
            .get_or_try_init(|| async {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(outage)?;
                // A server that hides its version (some managed services) is given the
                // benefit of the doubt.
                match redis_major(&info) {
                    Some(major) if major < MIN_REDIS_MAJOR => anyhow::bail!(
                        "Redis {MIN_REDIS_MAJOR}.0 or newer is required (this one is {major}.x)"
                    ),
                    _ => Ok(()),
                }
            })
            .await?;
        Ok(())
    }

    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        let _span = command_span("SET");
        let mut conn = self.conn().await?;
        let () = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(())
    }

    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<bool> {
        let _span = command_span("SET");
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(set.is_some())
    }

    async fn get_ex(&self, key: &str, ttl: Duration) -> anyhow::Result<Option<String>> {
        let _span = command_span("GETEX");
        let mut conn = self.conn().await?;
        Ok(redis::cmd("GETEX")
            .arg(self.key(key))
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut conn)
            .await
            .map_err(outage)?)
    }

    async fn get_with_ttl(&self, key: &str) -> anyhow::Result<Option<(String, Duration)>> {
        let _span = command_span("GET");
        let mut conn = self.conn().await?;
        let key = self.key(key);
        let (value, pttl): (Option<String>, i64) = redis::pipe()
            .atomic()
            .get(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(value.map(|v| (v, Duration::from_millis(pttl.max(0).unsigned_abs()))))
    }

    async fn del(&self, key: &str) -> anyhow::Result<()> {
        let _span = command_span("DEL");
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(())
    }

    async fn incr_windows(&self, counters: &[Counter<'_>]) -> anyhow::Result<Vec<(u64, Duration)>> {
        let _span = command_span("INCRBY");
        let mut conn = self.conn().await?;
        // MULTI: per counter INCRBY, start the window only if it has none (PEXPIRE NX,
        // Redis 7), read it.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for counter in counters {
            let key = self.key(counter.key);
            pipe.cmd("INCRBY")
                .arg(&key)
                .arg(counter.by)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms(counter.ttl))
                .arg("NX")
                .ignore()
                .cmd("PTTL")
                .arg(&key);
        }
        let replies: Vec<i64> = pipe.query_async(&mut conn).await.map_err(outage)?;
        Ok(replies
            .chunks(2)
            .map(|pair| {
                (
                    pair[0].max(0).unsigned_abs(),
                    Duration::from_millis(pair[1].max(0).unsigned_abs()),
                )
            })
            .collect())
    }

    async fn push_front_capped(
        &self,
        key: &str,
        value: &str,
        max_len: usize,
    ) -> anyhow::Result<()> {
        let _span = command_span("LPUSH");
        let mut conn = self.conn().await?;
        let key = self.key(key);
        let stop = isize::try_from(max_len).unwrap_or(isize::MAX) - 1;
        let () = redis::pipe()
            .atomic()
            .lpush(&key, value)
            .ignore()
            .ltrim(&key, 0, stop)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(())
    }

    async fn list_front(&self, key: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let _span = command_span("LRANGE");
        let mut conn = self.conn().await?;
        let stop = isize::try_from(count).unwrap_or(isize::MAX) - 1;
        Ok(redis::cmd("LRANGE")
            .arg(self.key(key))
            .arg(0)
            .arg(stop)
            .query_async(&mut conn)
            .await
            .map_err(outage)?)
    }

    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()> {
        let _span = command_span("PUBLISH");
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.key(channel))
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(outage)?;
        Ok(())
    }

    async fn subscribe_prefix(&self, prefix: &str) -> anyhow::Result<Subscription> {
        let _span = command_span("PSUBSCRIBE");
        // Pub/sub needs a connection of its own; it lives as long as the stream.
        let client = self.client_for_new_connection().await?;
        let mut pubsub = tokio::time::timeout(self.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| {
                anyhow::Error::msg("timed out").context(missive_core::Unavailable::SESSION_STORE)
            })?
            .map_err(outage)
            .context("connecting to Redis for pub/sub")?;
        // `*`, `?` and `[` in the prefix would be pattern syntax: escaped.
        let mut pattern = String::new();
        for c in self.key(prefix).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pubsub.psubscribe(pattern).await.map_err(outage)?;
        let strip = self.prefix.len();
        let stream = pubsub.into_on_message().filter_map(move |msg| async move {
            let channel = msg.get_channel_name().get(strip..)?.to_owned();
            Some((channel, msg.get_payload::<String>().ok()?))
        });
        Ok(Box::pin(stream))
    }

    async fn append_to_log(&self, entry: LogEntry<'_>) -> anyhow::Result<Option<u64>> {
        // One script: the server runs it whole, so a crash between steps cannot leave an
        // entry stored but not numbered, or marked seen but not stored.
        static APPEND: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                r"
                if #KEYS == 3 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then
                    return -1
                end
                local n = redis.call('INCR', KEYS[2])
                local entry = ARGV[1] .. n .. ARGV[2]
                redis.call('LPUSH', KEYS[1], entry)
                redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
                redis.call('PUBLISH', KEYS[1], entry)
                return n
                ",
            )
        });
        let _span = command_span("EVALSHA");
        let mut conn = self.conn().await?;
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .key(self.key(entry.log))
            .key(self.key(entry.counter))
            .arg(entry.before)
            .arg(entry.after)
            .arg(entry.max_len);
        if let Some((once, ttl)) = entry.once {
            invocation.key(self.key(once)).arg(ttl_ms(ttl));
        }
        let n: i64 = invocation.invoke_async(&mut conn).await.map_err(outage)?;
        Ok(u64::try_from(n).ok())
    }
}

enum Value {
    Str(String),
    Counter(u64),
    List(VecDeque<String>),
}

struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

struct MemoryInner {
    entries: HashMap<String, Entry>,
    /// Every publish, `(channel, message)`; subscribers filter by prefix.
    published: broadcast::Sender<(String, String)>,
    writes_since_sweep: usize,
}

impl Default for MemoryInner {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            published: broadcast::channel(1024).0,
            writes_since_sweep: 0,
        }
    }
}

impl MemoryInner {
    fn live_entry(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    // Expired keys nobody reads again would otherwise stay forever; sweep now and then.
    fn note_write(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= 10_000 {
            self.writes_since_sweep = 0;
            self.entries.retain(|_, e| e.live(now));
        }
    }
}

/// In-process store for `missive dev` and tests: correct only while every function runs
/// in this one process.
#[derive(Default)]
pub struct MemoryKv {
    inner: Mutex<MemoryInner>,
}

impl MemoryKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding this lock leaves the map consistent (every operation is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Kv for MemoryKv {
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.note_write(now);
        inner.entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Str(value.to_owned()),
                expires_at: Some(now + ttl),
            },
        );
        Ok(())
    }

    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live_entry(key, now).is_some() {
            return Ok(false);
        }
        inner.note_write(now);
        inner.entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Str(value.to_owned()),
                expires_at: Some(now + ttl),
            },
        );
        Ok(true)
    }

    async fn get_ex(&self, key: &str, ttl: Duration) -> anyhow::Result<Option<String>> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.live_entry(key, now).and_then(|entry| {
            entry.expires_at = Some(now + ttl);
            match &entry.value {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            }
        }))
    }

    async fn get_with_ttl(&self, key: &str) -> anyhow::Result<Option<(String, Duration)>> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.live_entry(key, now).and_then(|entry| {
            let left = entry.expires_at.map_or(Duration::MAX, |at| at - now);
            match &entry.value {
                Value::Str(s) => Some((s.clone(), left)),
                Value::Counter(n) => Some((n.to_string(), left)),
                Value::List(_) => None,
            }
        }))
    }

    async fn del(&self, key: &str) -> anyhow::Result<()> {
        self.lock().entries.remove(key);
        Ok(())
    }

    async fn incr_windows(&self, counters: &[Counter<'_>]) -> anyhow::Result<Vec<(u64, Duration)>> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.note_write(now);
        let mut counted = Vec::with_capacity(counters.len());
        for counter in counters {
            let entry = match inner.live_entry(counter.key, now) {
                Some(entry) => entry,
                None => inner
                    .entries
                    .entry(counter.key.to_owned())
                    .or_insert(Entry {
                        value: Value::Counter(0),
                        expires_at: Some(now + counter.ttl),
                    }),
            };
            let count = match &mut entry.value {
                Value::Counter(n) => {
                    *n = n.saturating_add_signed(counter.by);
                    *n
                }
                _ => anyhow::bail!("key {} does not hold a counter", counter.key),
            };
            let left = entry.expires_at.map_or(counter.ttl, |at| at - now);
            counted.push((count, left));
        }
        Ok(counted)
    }

    async fn push_front_capped(
        &self,
        key: &str,
        value: &str,
        max_len: usize,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.note_write(now);
        if inner.live_entry(key, now).is_none() {
            inner.entries.insert(
                key.to_owned(),
                Entry {
                    value: Value::List(VecDeque::new()),
                    expires_at: None,
                },
            );
        }
        let entry = inner
            .entries
            .get_mut(key)
            .expect("BUG: list entry inserted above");
        match &mut entry.value {
            Value::List(list) => {
                list.push_front(value.to_owned());
                list.truncate(max_len);
                Ok(())
            }
            _ => anyhow::bail!("key {key} does not hold a list"),
        }
    }

    async fn list_front(&self, key: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(match inner.live_entry(key, now).map(|e| &e.value) {
            Some(Value::List(list)) => list.iter().take(count).cloned().collect(),
            _ => Vec::new(),
        })
    }

    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()> {
        // No receivers is fine: like Redis, a message nobody listens to is dropped (and
        // not even copied).
        let inner = self.lock();
        if inner.published.receiver_count() > 0 {
            let _ = inner
                .published
                .send((channel.to_owned(), message.to_owned()));
        }
        Ok(())
    }

    async fn subscribe_prefix(&self, prefix: &str) -> anyhow::Result<Subscription> {
        let rx = self.lock().published.subscribe();
        let prefix = prefix.to_owned();
        // A subscriber that falls more than 1024 messages behind skips the gap, as a slow
        // Redis subscriber would be disconnected.
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |item| {
            let keep = item
                .ok()
                .filter(|(channel, _)| channel.starts_with(&prefix));
            async move { keep }
        });
        Ok(Box::pin(stream))
    }

    async fn append_to_log(&self, entry: LogEntry<'_>) -> anyhow::Result<Option<u64>> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.note_write(now);
        if let Some((once, ttl)) = entry.once {
            if inner.live_entry(once, now).is_some() {
                return Ok(None);
            }
            inner.entries.insert(
                once.to_owned(),
                Entry {
                    value: Value::Str("1".to_owned()),
                    expires_at: Some(now + ttl),
                },
            );
        }
        let counter = match inner.live_entry(entry.counter, now) {
            Some(counter) => counter,
            None => inner
                .entries
                .entry(entry.counter.to_owned())
                .or_insert(Entry {
                    value: Value::Counter(0),
                    expires_at: None,
                }),
        };
        let n = match &mut counter.value {
            Value::Counter(n) => {
                *n += 1;
                *n
            }
            _ => anyhow::bail!("key {} does not hold a counter", entry.counter),
        };
        let text = format!("{}{n}{}", entry.before, entry.after);
        // Like Redis: a message nobody listens to is dropped, and not even copied.
        let published = (inner.published.receiver_count() > 0).then(|| text.clone());
        let log = match inner.live_entry(entry.log, now) {
            Some(log) => log,
            None => inner.entries.entry(entry.log.to_owned()).or_insert(Entry {
                value: Value::List(VecDeque::new()),
                expires_at: None,
            }),
        };
        let Value::List(list) = &mut log.value else {
            anyhow::bail!("key {} does not hold a list", entry.log);
        };
        list.push_front(text);
        list.truncate(entry.max_len);
        if let Some(text) = published {
            let _ = inner.published.send((entry.log.to_owned(), text));
        }
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(super::redis_major(info), Some(7));
        assert_eq!(super::redis_major("redis_version:6.2.14\r\n"), Some(6));
        assert_eq!(super::redis_major("# Server\r\n"), None);
    }
}
