//! Server-side sessions in the key-value store, with sliding expiry and an absolute
//! lifetime: use keeps a session alive for `SESSION_TTL` more, but never past
//! `SESSION_MAX_AGE` after login. Each user's sessions are also listed (newest
//! [`MAX_LISTED_SESSIONS`]) so that "log out everywhere" can end them all.
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
    /// Absolute end, Unix milliseconds (absent in sessions stored before it existed:
    /// they end by their sliding TTL alone).
    #[serde(default)]
    exp: Option<i64>,
}

/// Sessions listed per user for "log out everywhere"; older ones still end by their
/// lifetime.
pub const MAX_LISTED_SESSIONS: usize = 500;

/// The session store.
#[derive(Clone)]
pub struct Sessions {
    kv: Arc<dyn Kv>,
    ttl: Duration,
    max_age: Duration,
}

impl Sessions {
    /// Sessions that live `ttl` after their last use, and at most `max_age` in all.
    pub fn new(kv: Arc<dyn Kv>, ttl: Duration, max_age: Duration) -> Self {
        Self { kv, ttl, max_age }
    }

    fn index_key(user: UserId) -> String {
        format!("user_sessions:{}", user.0)
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
        let max_age_ms = i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
        let stored = serde_json::to_string(&Stored {
            uid: user.id.0,
            name: user.username.as_str().to_owned(),
            exp: Some(missive_core::time::now_millis().saturating_add(max_age_ms)),
        })?;
        let key = Self::key(id);
        self.kv
            .set_ex(&key, &stored, self.ttl.min(self.max_age))
            .await?;
        self.kv
            .push_front_capped(&Self::index_key(user.id), &key, MAX_LISTED_SESSIONS)
            .await
    }

    /// Whether the session is still live, without sliding it (a long-lived stream checks
    /// this; it must not keep a session alive by itself).
    pub async fn is_live(&self, id: &SessionId) -> anyhow::Result<bool> {
        let Some((raw, _)) = self.kv.get_with_ttl(&Self::key(id)).await? else {
            return Ok(false);
        };
        let stored: Stored = serde_json::from_str(&raw)?;
        Ok(stored
            .exp
            .is_none_or(|exp| missive_core::time::now_millis() < exp))
    }

    /// Ends every session of `user` ("log out everywhere").
    pub async fn delete_all(&self, user: UserId) -> anyhow::Result<usize> {
        let index = Self::index_key(user);
        let keys = self.kv.list_front(&index, MAX_LISTED_SESSIONS).await?;
        for key in &keys {
            self.kv.del(key).await?;
        }
        self.kv.del(&index).await?;
        Ok(keys.len())
    }

    /// The session's user, sliding its expiry forward; `None` if unknown or expired.
    pub async fn get(&self, id: &SessionId) -> anyhow::Result<Option<CurrentUser>> {
        let raw = self.kv.get_ex(&Self::key(id), self.ttl).await?;
        missive_telemetry::metrics::session_lookup(raw.is_some());
        let Some(raw) = raw else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_str(&raw)?;
        if stored
            .exp
            .is_some_and(|exp| missive_core::time::now_millis() >= exp)
        {
            // Past its absolute lifetime, however recently it was used.
            self.kv.del(&Self::key(id)).await?;
            return Ok(None);
        }
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
