//! The SQL database: MariaDB in production, SQLite for `missive dev`, through one code
//! path (sqlx's `Any` driver) so every query is written once. Queries are parameterized;
//! the only SQL built at run time repeats fixed fragments, never user text.
//!
//! Timestamps are Unix milliseconds; ids are `BIGINT AUTO_INCREMENT` row ids, read back
//! with `INSERT ... RETURNING` (MariaDB 10.5+, SQLite 3.35+; plain MySQL lacks it).

mod batch;
mod outbox;
mod traced;

pub use outbox::OutboxEntry;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateDatabase, Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Connection, Row, SqlSafeStr};
use time::OffsetDateTime;
use traced::{query, query_built};
use utoipa::ToSchema;

use crate::domain::{Cursor, IdempotencyKey, Limit, MessageId, MessageText, Username};
use crate::events::CloudEvent;

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

/// A user's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A message as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Opaque id.
    pub id: String,
    /// The text as written.
    pub text: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub items: Vec<Message>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The outcome of creating a message.
pub enum Created {
    /// A new message, and its `message.created` event in the outbox.
    New(Message, OutboxEntry),
    /// The idempotency key was used before: the first response, nothing created.
    Replayed(Message),
}

/// Builds the event of a new message once its id is known. `Fn`, not `FnOnce`: a failed
/// batch is retried message by message.
pub type EventFor = Arc<dyn Fn(&Message) -> CloudEvent + Send + Sync>;

/// The outcome of ingesting a submitted message.
pub enum Ingested {
    /// Stored, with its event in the outbox.
    Created(Box<(Message, OutboxEntry)>),
    /// This event was applied before; nothing changed.
    Duplicate,
    /// No such user.
    UnknownUser,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The database handle every function shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// Where writes go. SQLite allows one writer at a time and makes the others sleep in
    /// its busy handler (up to 100 ms a try), which under load gave a p99 of 300 ms; a
    /// one-connection pool queues writers fairly in process instead. On MariaDB this is
    /// the same pool as `pool`: InnoDB locks rows, not the database.
    writer: AnyPool,
    /// Group commit for new messages, started on first use.
    batcher: Arc<OnceLock<batch::Batcher>>,
    backend: Backend,
    /// Set once the schema was seen migrated as far as this build needs (see [`Db::ping`]).
    schema_current: Arc<std::sync::atomic::AtomicBool>,
}

fn migrator(backend: Backend) -> Migrator {
    let files: [(&str, &str); 3] = match backend {
        Backend::MariaDb => [
            ("init", include_str!("../../migrations/mysql/0001_init.sql")),
            (
                "outbox",
                include_str!("../../migrations/mysql/0002_outbox.sql"),
            ),
            (
                "idempotency utf8",
                include_str!("../../migrations/mysql/0003_idempotency_utf8.sql"),
            ),
        ],
        Backend::Sqlite => [
            (
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                "outbox",
                include_str!("../../migrations/sqlite/0002_outbox.sql"),
            ),
            (
                "idempotency utf8",
                include_str!("../../migrations/sqlite/0003_idempotency_utf8.sql"),
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

impl Db {
    /// A pool that connects on first use: start-up does no network I/O.
    pub fn connect_lazy(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        traced::set_target(backend.system_name(), namespace(url));
        let pool = Self::pool(url, backend, max_connections)?;
        let writer = match backend {
            Backend::Sqlite => Self::pool(url, backend, 1)?,
            Backend::MariaDb => pool.clone(),
        };
        Ok(Self {
            pool,
            writer,
            batcher: Arc::new(OnceLock::new()),
            backend,
            schema_current: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    fn pool(url: &str, backend: Backend, max_connections: u32) -> anyhow::Result<AnyPool> {
        AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
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
            .context("checking the database")?
        {
            Any::create_database(url)
                .await
                .context("creating the database")?;
        }
        Ok(())
    }

    /// Applies the migrations of this backend. Only `missive migrate` and `missive dev`
    /// call this; production functions never migrate at start-up.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrator(self.backend)
            .run(&self.writer)
            .await
            .context("applying migrations")
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness: a round trip to the database, and (until seen once) a schema migrated
    /// at least as far as this build needs. A new revision deployed before the release's
    /// `missive migrate` Job has finished therefore stays unready and takes no traffic;
    /// an older revision on a newer schema is ready (migrations only add).
    pub async fn ping(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let mut conn = self.pool.acquire().await?;
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
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Inserts a user and its `user.registered` event in one transaction; `Ok(None)`
    /// when the username is taken (the unique index decides, so racing signups cannot
    /// both succeed).
    pub async fn insert_user(
        &self,
        username: &Username,
        password_hash: &str,
        event: CloudEvent,
    ) -> anyhow::Result<Option<(UserId, OutboxEntry)>> {
        let mut tx = traced::begin(&self.writer).await?;
        let result = query(
            "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?) \
             RETURNING id",
        )
        .bind(username.as_str())
        .bind(password_hash)
        .bind(now_millis())
        .fetch_one(&mut *tx)
        .await;
        let id = match result {
            Ok(row) => UserId(row.try_get(0)?),
            Err(err) if is_unique_violation(&err) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let entry = outbox::insert_one(&mut tx, event).await?;
        traced::commit(tx).await?;
        Ok(Some((id, entry)))
    }

    /// A user's id and password hash.
    pub async fn find_user(&self, username: &Username) -> sqlx::Result<Option<(UserId, String)>> {
        let row = query("SELECT id, password_hash FROM users WHERE username = ?")
            .bind(username.as_str())
            .fetch_optional(&mut *traced::acquire(&self.pool).await?)
            .await?;
        row.map(|row| Ok((UserId(row.try_get(0)?), row.try_get(1)?)))
            .transpose()
    }

    /// Stores a message and its search tokens atomically. With an idempotency key, a
    /// repeat within [`IDEMPOTENCY_WINDOW`] returns the first response instead.
    pub async fn create_message(
        &self,
        user: UserId,
        text: &MessageText,
        key: Option<&IdempotencyKey>,
        event: EventFor,
    ) -> anyhow::Result<Created> {
        match key {
            None => {
                let (message, entry) = self
                    .batcher
                    .get_or_init(|| batch::Batcher::spawn(self.writer.clone()))
                    .submit(user, text.clone(), event)
                    .await?;
                Ok(Created::New(message, entry))
            }
            Some(key) => self.create_idempotent(user, text, key, event).await,
        }
    }

    async fn create_idempotent(
        &self,
        user: UserId,
        text: &MessageText,
        key: &IdempotencyKey,
        event: EventFor,
    ) -> anyhow::Result<Created> {
        // Two attempts: the second runs only after an expired key was cleared.
        for _ in 0..2 {
            let mut tx = traced::begin(&self.writer).await?;
            let now = now_millis();
            // Claim the key first: a concurrent request with the same key blocks on this
            // row (InnoDB) or the write lock (SQLite) until we commit, then fails the
            // primary key and replays our response below.
            let claimed = query(
                "INSERT INTO idempotency_keys (user_id, idem_key, response, created_at) \
                 VALUES (?, ?, '', ?)",
            )
            .bind(user.0)
            .bind(key.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await;
            match claimed {
                Ok(_) => {}
                Err(err) if is_unique_violation(&err) => {
                    tx.rollback().await?;
                    match self.replay(user, key, now).await? {
                        Some(first) => return Ok(Created::Replayed(first)),
                        None => continue,
                    }
                }
                Err(err) => return Err(err.into()),
            }
            let message = insert_message(&mut tx, user, text, now).await?;
            let entry = outbox::insert_one(&mut tx, event(&message)).await?;
            query("UPDATE idempotency_keys SET response = ? WHERE user_id = ? AND idem_key = ?")
                .bind(serde_json::to_string(&message)?)
                .bind(user.0)
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?;
            traced::commit(tx).await?;
            return Ok(Created::New(message, entry));
        }
        anyhow::bail!("idempotency key kept expiring while being replaced")
    }

    /// The stored response for a used key; `None` (after deleting it) when it expired.
    async fn replay(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: i64,
    ) -> anyhow::Result<Option<Message>> {
        let row = query(
            "SELECT response, created_at FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
        )
        .bind(user.0)
        .bind(key.as_str())
        .fetch_optional(&mut *traced::acquire(&self.pool).await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (response, created_at): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        let window = i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        if now - created_at >= window {
            query(
                "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND created_at = ?",
            )
            .bind(user.0)
            .bind(key.as_str())
            .bind(created_at)
            .execute(&mut *traced::acquire(&self.writer).await?)
            .await?;
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&response).context("stored idempotent response")?,
        ))
    }

    /// One page of a user's messages, newest first.
    pub async fn list_messages(
        &self,
        user: UserId,
        before: Option<Cursor>,
        limit: Limit,
    ) -> sqlx::Result<MessagePage> {
        let before = before.map_or(i64::MAX, |c| c.id().get());
        // One row more than asked tells whether a next page exists.
        let rows = query(
            "SELECT id, text, created_at FROM messages \
             WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(user.0)
        .bind(before)
        .bind(i64::from(limit.get()) + 1)
        .fetch_all(&mut *traced::acquire(&self.pool).await?)
        .await?;
        let mut items = rows
            .iter()
            .map(message_from_row)
            .collect::<sqlx::Result<Vec<_>>>()?;
        let more = items.len() > limit.get() as usize;
        items.truncate(limit.get() as usize);
        let next_cursor = if more {
            items
                .last()
                .and_then(|m| MessageId::parse(&m.id))
                .map(|id| Cursor::after(id).encode())
        } else {
            None
        };
        Ok(MessagePage { items, next_cursor })
    }

    /// One message of this user.
    pub async fn get_message(&self, user: UserId, id: MessageId) -> sqlx::Result<Option<Message>> {
        query("SELECT id, text, created_at FROM messages WHERE user_id = ? AND id = ?")
            .bind(user.0)
            .bind(id.get())
            .fetch_optional(&mut *traced::acquire(&self.pool).await?)
            .await?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }

    /// Deletes one message of this user (its tokens go by cascade) and writes `event` in
    /// the same transaction; `None` if there was no such message.
    pub async fn delete_message(
        &self,
        user: UserId,
        id: MessageId,
        event: CloudEvent,
    ) -> anyhow::Result<Option<OutboxEntry>> {
        let mut tx = traced::begin(&self.writer).await?;
        let done = query("DELETE FROM messages WHERE user_id = ? AND id = ?")
            .bind(user.0)
            .bind(id.get())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let entry = outbox::insert_one(&mut tx, event).await?;
        traced::commit(tx).await?;
        Ok(Some(entry))
    }

    /// Applies a submitted message once per event `source`+`id`: the ledger entry, the
    /// message and its event commit together, so a redelivery changes nothing.
    pub async fn ingest_message(
        &self,
        source: &str,
        event_id: &str,
        username: &Username,
        text: &MessageText,
        event: EventFor,
    ) -> anyhow::Result<Ingested> {
        let mut tx = traced::begin(&self.writer).await?;
        if !outbox::claim_event(&mut tx, source, event_id).await? {
            return Ok(Ingested::Duplicate);
        }
        let Some(message) = insert_message_by_name(&mut tx, username, text, now_millis()).await?
        else {
            return Ok(Ingested::UnknownUser);
        };
        let entry = outbox::insert_one(&mut tx, event(&message)).await?;
        traced::commit(tx).await?;
        Ok(Ingested::Created(Box::new((message, entry))))
    }

    /// This user's messages in which every word is a prefix of some word, newest first.
    pub async fn search_messages(
        &self,
        user: UserId,
        words: &[String],
        limit: Limit,
    ) -> sqlx::Result<Vec<Message>> {
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Each word is a range scan of the token index; no LIKE, so `%` and `_` are text.
        let per_word = " AND id IN (SELECT message_id FROM message_tokens \
                        WHERE user_id = ? AND token >= ? AND token < ?)";
        let sql = format!(
            "SELECT id, text, created_at FROM messages WHERE user_id = ?{} \
             ORDER BY id DESC LIMIT ?",
            per_word.repeat(words.len())
        );
        // Safe: the SQL repeats a fixed fragment once per word; the words are bound.
        let mut query = query_built(sql).bind(user.0);
        for word in words {
            // Every token that starts with `word` sorts below `word` + the last code point.
            query = query
                .bind(user.0)
                .bind(word.as_str())
                .bind(format!("{word}\u{10FFFF}"));
        }
        let rows = query
            .bind(i64::from(limit.get()))
            .fetch_all(&mut *traced::acquire(&self.pool).await?)
            .await?;
        rows.iter().map(message_from_row).collect()
    }
}

/// Inserts one message and its search tokens on `conn` (inside the caller's transaction).
async fn insert_message(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    text: &MessageText,
    now: i64,
) -> sqlx::Result<Message> {
    let id = insert_message_row(conn, user, text, now).await?;
    insert_tokens(conn, &[(user, id, text)]).await?;
    Ok(new_message(id, text, now))
}

/// Inserts the message row only; its tokens are the caller's to insert.
async fn insert_message_row(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    text: &MessageText,
    now: i64,
) -> sqlx::Result<MessageId> {
    let row =
        query("INSERT INTO messages (user_id, text, created_at) VALUES (?, ?, ?) RETURNING id")
            .bind(user.0)
            .bind(text.as_str())
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
    Ok(MessageId::from_row(row.try_get(0)?))
}

/// Like [`insert_message`] for a user known by name, in one statement: `None` when there
/// is no such user (and nothing was written).
async fn insert_message_by_name(
    conn: &mut sqlx::AnyConnection,
    username: &Username,
    text: &MessageText,
    now: i64,
) -> sqlx::Result<Option<Message>> {
    let row = query(
        "INSERT INTO messages (user_id, text, created_at) \
         SELECT id, ?, ? FROM users WHERE username = ? RETURNING id, user_id",
    )
    .bind(text.as_str())
    .bind(now)
    .bind(username.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id = MessageId::from_row(row.try_get(0)?);
    insert_tokens(conn, &[(UserId(row.try_get(1)?), id, text)]).await?;
    Ok(Some(new_message(id, text, now)))
}

/// Inserts the search tokens of several messages with as few statements as the
/// parameter limit allows (one, for a normal batch).
async fn insert_tokens(
    conn: &mut sqlx::AnyConnection,
    messages: &[(UserId, MessageId, &MessageText)],
) -> sqlx::Result<()> {
    let mut rows = Vec::new();
    for (user, id, text) in messages {
        let mut tokens = crate::domain::search_tokens(text.as_str());
        tokens.sort();
        tokens.dedup();
        rows.extend(tokens.into_iter().map(|token| (*user, token, *id)));
    }
    // SQLite allows 32,766 bind parameters per statement; three per row.
    for chunk in rows.chunks(10_000) {
        let sql = format!(
            "INSERT INTO message_tokens (user_id, token, message_id) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        // Safe: the SQL repeats a fixed placeholder group; the tokens are bound.
        let mut insert = query_built(sql);
        for (user, token, id) in chunk {
            insert = insert.bind(user.0).bind(token.as_str()).bind(id.get());
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

fn new_message(id: MessageId, text: &MessageText, now: i64) -> Message {
    Message {
        id: id.to_string(),
        text: text.as_str().to_owned(),
        created_at: rfc3339_millis(now),
    }
}

fn message_from_row(row: &sqlx::any::AnyRow) -> sqlx::Result<Message> {
    let id: i64 = row.try_get(0)?;
    let created_at: i64 = row.try_get(2)?;
    Ok(Message {
        id: MessageId::from_row(id).to_string(),
        text: row.try_get(1)?,
        created_at: rfc3339_millis(created_at),
    })
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

/// Whether `err` is a unique or primary key violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Now, as Unix milliseconds.
pub fn now_millis() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .expect("BUG: the clock is within i64 milliseconds")
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_millis(millis: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}
