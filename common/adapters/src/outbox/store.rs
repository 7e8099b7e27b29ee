//! Outbox rows, the relay's lease, and the processed-events ledger of consumers.

use sqlx::{AnyConnection, Row};

use missive_core::event::{AttributesReader as _, CloudEvent};
use missive_core::time::now_millis;

use crate::sql::traced::{self, query, query_built};
use crate::sql::{Db, is_unique_violation};

/// An event written to the outbox, not yet known to be published. Rows are marked sent
/// by the event's id. Hand it to [`super::Outbox::publish`] once its transaction has
/// committed; the feature services in `missive-app` do, so a handler cannot forget.
#[derive(Debug, Clone)]
#[must_use = "an outbox entry must be published (Outbox::publish) once committed"]
pub struct OutboxEntry {
    /// The event.
    pub event: CloudEvent,
}

/// Largest number of bind parameters in one statement (SQLite allows 32,766).
const MAX_PARAMS: usize = 30_000;

/// Writes `events` to the outbox on `conn`, inside the caller's transaction, with as few
/// statements as the parameter limit allows.
pub async fn insert(
    conn: &mut AnyConnection,
    events: Vec<CloudEvent>,
) -> anyhow::Result<Vec<OutboxEntry>> {
    let now = now_millis();
    let rows = events
        .iter()
        .map(|event| Ok((event.id().to_owned(), serde_json::to_string(event)?)))
        .collect::<anyhow::Result<Vec<(String, String)>>>()?;
    for chunk in rows.chunks(MAX_PARAMS / 3) {
        let sql = format!(
            "INSERT INTO outbox (event_id, event, created_at) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        // Safe: a fixed placeholder group repeated; the values are bound.
        let mut query = query_built(sql);
        for (id, json) in chunk {
            query = query.bind(id.as_str()).bind(json.as_str()).bind(now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(events
        .into_iter()
        .map(|event| OutboxEntry { event })
        .collect())
}

/// Writes one event to the outbox on `conn`.
pub async fn insert_one(
    conn: &mut AnyConnection,
    event: CloudEvent,
) -> anyhow::Result<OutboxEntry> {
    let mut entries = insert(conn, vec![event]).await?;
    Ok(entries.remove(0))
}

/// Records that `source`+`id` was applied; `false` if it was before (a redelivery).
pub async fn claim_event(conn: &mut AnyConnection, source: &str, id: &str) -> anyhow::Result<bool> {
    let done =
        query("INSERT INTO processed_events (source, event_id, processed_at) VALUES (?, ?, ?)")
            .bind(source)
            .bind(id)
            .bind(now_millis())
            .execute(&mut *conn)
            .await;
    match done {
        Ok(_) => Ok(true),
        Err(err) if is_unique_violation(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

impl Db {
    /// Writes `event` to the outbox in a transaction of its own, for events whose state
    /// change is not in the database (a login lives in the session store).
    pub async fn outbox_alone(&self, event: CloudEvent) -> anyhow::Result<OutboxEntry> {
        let mut conn = traced::acquire(self.writer()).await?;
        insert_one(&mut conn, event).await
    }

    /// Marks the rows of these event ids as published.
    pub async fn mark_sent(&self, event_ids: &[String]) -> anyhow::Result<()> {
        for chunk in event_ids.chunks(MAX_PARAMS) {
            let sql = format!(
                "UPDATE outbox SET sent_at = ? WHERE event_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            // Safe: a fixed placeholder list; the ids are bound.
            let mut query = query_built(sql).bind(now_millis());
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query
                .execute(&mut *traced::acquire(self.writer()).await?)
                .await?;
        }
        Ok(())
    }

    /// Takes the relay lease for `ttl_ms` if it is free or expired (or already ours).
    pub async fn acquire_relay_lease(&self, holder: &str, ttl_ms: i64) -> anyhow::Result<bool> {
        let now = now_millis();
        let done = query(
            "UPDATE outbox_lease SET holder = ?, expires_at = ? \
             WHERE name = 'relay' AND (expires_at < ? OR holder = ?)",
        )
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .bind(holder)
        .execute(&mut *traced::acquire(self.writer()).await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease back early.
    pub async fn release_relay_lease(&self, holder: &str) -> anyhow::Result<()> {
        query("UPDATE outbox_lease SET expires_at = 0 WHERE name = 'relay' AND holder = ?")
            .bind(holder)
            .execute(&mut *traced::acquire(self.writer()).await?)
            .await?;
        Ok(())
    }

    /// Unsent rows created before `before_ms`, oldest first.
    pub async fn unsent(&self, before_ms: i64, limit: i64) -> anyhow::Result<Vec<OutboxEntry>> {
        let rows = query(
            "SELECT event FROM outbox WHERE sent_at IS NULL AND created_at < ? \
             ORDER BY id LIMIT ?",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&mut *traced::acquire(self.reader()).await?)
        .await?;
        rows.iter()
            .map(|row| {
                let event: String = row.try_get(0)?;
                Ok(OutboxEntry {
                    event: decode(&event)?,
                })
            })
            .collect()
    }

    /// Number of unsent rows (for tests and the relay's report).
    pub async fn unsent_count(&self) -> anyhow::Result<i64> {
        query("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&mut *traced::acquire(self.reader()).await?)
            .await?
            .try_get(0)
            .map_err(Into::into)
    }

    /// Deletes rows published before `before_ms`.
    pub async fn purge_sent(&self, before_ms: i64) -> anyhow::Result<u64> {
        let done = query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?")
            .bind(before_ms)
            .execute(&mut *traced::acquire(self.writer()).await?)
            .await?;
        Ok(done.rows_affected())
    }
}

/// An outbox row's event. Rows are the SDK's JSON event format; rows written before the
/// model was the SDK's (issue 16) lack `specversion` and are read as 1.0, so events
/// waiting in the outbox across that upgrade are still relayed.
fn decode(stored: &str) -> anyhow::Result<CloudEvent> {
    if let Ok(event) = serde_json::from_str(stored) {
        return Ok(event);
    }
    let mut value: serde_json::Value = serde_json::from_str(stored)?;
    if let Some(object) = value.as_object_mut()
        && !object.contains_key("specversion")
    {
        object.insert("specversion".into(), "1.0".into());
    }
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::event::{Data, EventExt as _};

    #[test]
    fn rows_from_before_the_sdk_model_are_still_read() {
        let old = r#"{"id":"9","source":"/functions/message-create",
            "type":"io.missive.message.created.v1","subject":"alice",
            "time":"2026-12-01T10:00:00.123Z","data":{"id":"7"},
            "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        let event = decode(old).expect("old row");
        assert_eq!(event.id(), "9");
        assert_eq!(event.subject(), Some("alice"));
        assert_eq!(
            event.data(),
            Some(&Data::Json(serde_json::json!({"id": "7"})))
        );
        assert_eq!(
            event.traceparent(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let stored = serde_json::to_string(&event).expect("row");
        assert_eq!(decode(&stored).expect("new row"), event);
        assert!(decode(r#"{"specversion":"0.2","id":"1"}"#).is_err());
    }
}
