//! The messages' SQL: each statement runs through `missive_adapters::sql::traced`, so it
//! has its client span; each change writes its event to the outbox in the same
//! transaction. Only [`super`]'s services call this, and they publish what it returns.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use missive_adapters::outbox::{self, OutboxEntry};
use missive_adapters::sql::Db;
use missive_adapters::sql::traced::{self, query, query_built};
use missive_core::domain::{Cursor, IdempotencyKey, Limit, MessageId, MessageText, Username};
use missive_core::event::CloudEvent;
use missive_core::time::{now_millis, rfc3339_millis};
use sqlx::Row;

use super::batch;
use super::{Message, MessagePage};
use crate::auth::UserId;
use missive_adapters::sql::is_unique_violation;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Builds the event of a new message once its id is known. `Fn`, not `FnOnce`: a failed
/// batch is retried message by message.
pub type EventFor = Arc<dyn Fn(&Message) -> CloudEvent + Send + Sync>;

/// The outcome of creating a message.
pub enum Created {
    /// A new message, and its `message.created` event in the outbox.
    New(Box<(Message, OutboxEntry)>),
    /// The idempotency key was used before for the same text, and that message still
    /// exists: the first response, nothing created.
    Replayed(Message),
    /// The idempotency key was used before for another text, or its message has been
    /// deleted since: nothing created, and nothing to replay.
    KeyReused,
}

/// The outcome of ingesting a submitted message.
pub enum Ingested {
    /// Stored, with its event in the outbox.
    Created(Box<(Message, OutboxEntry)>),
    /// This event was applied before; nothing changed.
    Duplicate,
    /// No such user.
    UnknownUser,
}

/// The messages table and its search tokens, on the shared pool; cheap to clone.
#[derive(Clone)]
pub struct MessageStore {
    db: Db,
    /// Group commit for new messages, started on first use.
    batcher: Arc<OnceLock<batch::Batcher>>,
}

impl MessageStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            batcher: Arc::new(OnceLock::new()),
        }
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
                    .get_or_init(|| batch::Batcher::spawn(self.db.writer().clone()))
                    .submit(user, text.clone(), event)
                    .await?;
                Ok(Created::New(Box::new((message, entry))))
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
            let mut tx = traced::begin(self.db.writer()).await?;
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
                        Some(first) if first.text != text.as_str() => {
                            return Ok(Created::KeyReused);
                        }
                        // Replaying a deleted message would answer 201 for something a
                        // GET then says does not exist.
                        Some(first) if !self.exists(user, &first).await? => {
                            return Ok(Created::KeyReused);
                        }
                        Some(first) => return Ok(Created::Replayed(first)),
                        None => continue,
                    }
                }
                Err(err) => return Err(err),
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
            return Ok(Created::New(Box::new((message, entry))));
        }
        anyhow::bail!("idempotency key kept expiring while being replaced")
    }

    /// Whether `message` (a replayed response) is still there.
    async fn exists(&self, user: UserId, message: &Message) -> anyhow::Result<bool> {
        let Some(id) = MessageId::parse(&message.id) else {
            return Ok(false);
        };
        Ok(query("SELECT 1 FROM messages WHERE id = ? AND user_id = ?")
            .bind(id.get())
            .bind(user.0)
            .fetch_optional(&mut *traced::acquire(self.db.reader()).await?)
            .await?
            .is_some())
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
        .fetch_optional(&mut *traced::acquire(self.db.reader()).await?)
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
            .execute(&mut *traced::acquire(self.db.writer()).await?)
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
    ) -> anyhow::Result<MessagePage> {
        let before = before.map_or(i64::MAX, |c| c.id().get());
        // One row more than asked tells whether a next page exists.
        let rows = query(
            "SELECT id, text, created_at FROM messages \
             WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(user.0)
        .bind(before)
        .bind(i64::from(limit.get()) + 1)
        .fetch_all(&mut *traced::acquire(self.db.reader()).await?)
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
    pub async fn get_message(
        &self,
        user: UserId,
        id: MessageId,
    ) -> anyhow::Result<Option<Message>> {
        query("SELECT id, text, created_at FROM messages WHERE user_id = ? AND id = ?")
            .bind(user.0)
            .bind(id.get())
            .fetch_optional(&mut *traced::acquire(self.db.reader()).await?)
            .await?
            .as_ref()
            .map(message_from_row)
            .transpose()
            .map_err(Into::into)
    }

    /// Deletes one message of this user (its tokens go by cascade) and writes `event` in
    /// the same transaction; `None` if there was no such message.
    pub async fn delete_message(
        &self,
        user: UserId,
        id: MessageId,
        event: CloudEvent,
    ) -> anyhow::Result<Option<OutboxEntry>> {
        let mut tx = traced::begin(self.db.writer()).await?;
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
        let mut tx = traced::begin(self.db.writer()).await?;
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
    ) -> anyhow::Result<Vec<Message>> {
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
            .fetch_all(&mut *traced::acquire(self.db.reader()).await?)
            .await?;
        Ok(rows
            .iter()
            .map(message_from_row)
            .collect::<sqlx::Result<_>>()?)
    }
}

/// Inserts one message and its search tokens on `conn` (inside the caller's transaction).
async fn insert_message(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    text: &MessageText,
    now: i64,
) -> anyhow::Result<Message> {
    let id = insert_message_row(conn, user, text, now).await?;
    insert_tokens(conn, &[(user, id, text)]).await?;
    Ok(new_message(id, text, now))
}

/// Inserts the message row only; its tokens are the caller's to insert.
pub(super) async fn insert_message_row(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    text: &MessageText,
    now: i64,
) -> anyhow::Result<MessageId> {
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
) -> anyhow::Result<Option<Message>> {
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
pub(super) async fn insert_tokens(
    conn: &mut sqlx::AnyConnection,
    messages: &[(UserId, MessageId, &MessageText)],
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (user, id, text) in messages {
        let mut tokens = missive_core::domain::search_tokens(text.as_str());
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

pub(super) fn new_message(id: MessageId, text: &MessageText, now: i64) -> Message {
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

/// Version of the search index's tokens: 2 since tokens are made from NFC-normalised text.
pub const SEARCH_INDEX_VERSION: i64 = 2;

/// Messages read per round trip while re-indexing.
const REINDEX_BATCH: i64 = 500;

/// Brings the search index to [`SEARCH_INDEX_VERSION`]: re-tokenizes the messages whose
/// tokens an older version made differently (text that is not NFC), a batch per
/// transaction, then records the version. Safe to run again or beside the API: a message
/// re-indexed twice gets the same tokens. `missive migrate` (and `missive dev`) call it
/// after the migrations; returns how many messages were re-indexed.
pub async fn reindex_search(db: &Db) -> anyhow::Result<u64> {
    use unicode_normalization::is_nfc;
    let version: i64 = query("SELECT version FROM search_index")
        .fetch_one(&mut *traced::acquire(db.reader()).await?)
        .await
        .context("reading the search index version")?
        .try_get(0)?;
    if version >= SEARCH_INDEX_VERSION {
        return Ok(0);
    }
    let mut after = 0_i64;
    let mut reindexed = 0;
    loop {
        let rows = query("SELECT id, user_id, text FROM messages WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(REINDEX_BATCH)
            .fetch_all(&mut *traced::acquire(db.reader()).await?)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        let mut stale = Vec::new();
        for row in &rows {
            let text: String = row.try_get(2)?;
            if is_nfc(&text) {
                continue;
            }
            // Stored texts passed MessageText's rule when they were written.
            let Ok(text) = MessageText::parse(text) else {
                continue;
            };
            stale.push((
                UserId(row.try_get(1)?),
                MessageId::from_row(row.try_get(0)?),
                text,
            ));
        }
        if stale.is_empty() {
            continue;
        }
        let mut tx = traced::begin(db.writer()).await?;
        for (_, id, _) in &stale {
            query("DELETE FROM message_tokens WHERE message_id = ?")
                .bind(id.get())
                .execute(&mut *tx)
                .await?;
        }
        let refs: Vec<_> = stale.iter().map(|(u, id, t)| (*u, *id, t)).collect();
        insert_tokens(&mut tx, &refs).await?;
        traced::commit(tx).await?;
        reindexed += stale.len() as u64;
    }
    query("UPDATE search_index SET version = ?")
        .bind(SEARCH_INDEX_VERSION)
        .execute(&mut *traced::acquire(db.writer()).await?)
        .await?;
    tracing::info!(reindexed, "search index at version {SEARCH_INDEX_VERSION}");
    Ok(reindexed)
}
