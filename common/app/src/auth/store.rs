//! The users table. Only [`super`]'s services call this, and they publish what it returns.

use missive_adapters::outbox::{self, OutboxEntry};
use missive_adapters::sql::traced::{self, query};
use missive_adapters::sql::{Db, is_unique_violation};
use missive_core::domain::Username;
use missive_core::event::CloudEvent;
use missive_core::time::now_millis;
use sqlx::Row;

use super::UserId;

/// Inserts a user and its `user.registered` event in one transaction, which commits only
/// once `then(id)` has succeeded (signup starts the session there: a session store that
/// is down must not leave an account behind whose retry would say "taken"). `Ok(None)`
/// when the username is taken (the unique index decides, so racing signups cannot both
/// succeed).
pub(super) async fn insert_user<T>(
    db: &Db,
    username: &Username,
    password_hash: &str,
    event: CloudEvent,
    then: impl AsyncFnOnce(UserId) -> anyhow::Result<T>,
) -> anyhow::Result<Option<(UserId, OutboxEntry, T)>> {
    let mut tx = traced::begin(db.writer()).await?;
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
        Err(err) => return Err(err),
    };
    let entry = outbox::insert_one(&mut tx, event).await?;
    // Dropping `tx` on an error rolls it back.
    let done = then(id).await?;
    traced::commit(tx).await?;
    Ok(Some((id, entry, done)))
}

/// A user's id and password hash.
pub(super) async fn find_user(
    db: &Db,
    username: &Username,
) -> anyhow::Result<Option<(UserId, String)>> {
    let row = query("SELECT id, password_hash FROM users WHERE username = ?")
        .bind(username.as_str())
        .fetch_optional(&mut *traced::acquire(db.reader()).await?)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((UserId(row.try_get(0)?), row.try_get(1)?)))
}
