//! Server-side sessions in the key-value store, with sliding expiry.
//!
//! The cookie carries a random [`SessionId`]; the store keys the session by a hash of it,
//! so neither a Redis dump nor a key name in a trace or log reveals a usable session.

use std::sync::Arc;
use std::time::Duration;

use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};

use missive_adapters::kv::Kv;
use missive_core::domain::{SessionId, Username};

use super::UserId;

/// Who a session belongs to. Stored in the session so that authenticated requests need
/// no database round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// Row id, for queries.
    pub id: UserId,
    /// Name, for responses and events.
    pub username: Username,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    uid: i64,
    name: String,
}

/// The session store.
#[derive(Clone)]
pub struct Sessions {
    kv: Arc<dyn Kv>,
    ttl: Duration,
}

impl Sessions {
    /// Sessions that live `ttl` after their last use.
    pub fn new(kv: Arc<dyn Kv>, ttl: Duration) -> Self {
        Self { kv, ttl }
    }

    /// Session lifetime (also the cookie's `Max-Age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(id: &SessionId) -> String {
        let digest = Blake2s256::digest(id.expose().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("session:{hex}")
    }

    /// Starts a new session with a fresh id.
    pub async fn create(&self, user: &CurrentUser) -> anyhow::Result<SessionId> {
        let id = SessionId::generate();
        self.store(&id, user).await?;
        Ok(id)
    }

    /// Starts session `id` (a fresh [`SessionId::generate`]) for `user`.
    pub async fn store(&self, id: &SessionId, user: &CurrentUser) -> anyhow::Result<()> {
        let stored = serde_json::to_string(&Stored {
            uid: user.id.0,
            name: user.username.as_str().to_owned(),
        })?;
        self.kv.set_ex(&Self::key(id), &stored, self.ttl).await
    }

    /// The session's user, sliding its expiry forward; `None` if unknown or expired.
    pub async fn get(&self, id: &SessionId) -> anyhow::Result<Option<CurrentUser>> {
        let raw = self.kv.get_ex(&Self::key(id), self.ttl).await?;
        missive_telemetry::metrics::session_lookup(raw.is_some());
        let Some(raw) = raw else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_str(&raw)?;
        Ok(Some(CurrentUser {
            id: UserId(stored.uid),
            username: Username::parse(&stored.name)
                .map_err(|_| anyhow::anyhow!("stored session holds an invalid username"))?,
        }))
    }

    /// Ends the session server-side.
    pub async fn delete(&self, id: &SessionId) -> anyhow::Result<()> {
        self.kv.del(&Self::key(id)).await
    }
}
